"""The tiny fixture with a Qwen3-style chat template (tools, tool history, thinking).

The model files are linked, not copied; only ``openvino_tokenizer.xml`` (whose ``rt_info``
holds the chat template genai reads) and ``graph.pbtxt`` are written.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from tests.conftest import TINY_MODEL

MODEL = "qwen2vl-agent"

TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>\n"
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n</tools>\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags.<|im_end|>\n{% endif %}"
    "{%- for message in messages %}"
    '{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant\n'
    "{{ message.content }}{%- for call in message.tool_calls %}<tool_call>\n"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}'
    "\n</tool_call>{%- endfor %}<|im_end|>\n"
    '{%- elif message.role == "tool" %}<|im_start|>user\n<tool_response>\n'
    "{{ message.content }}\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking %}<think>\n{%- endif %}{%- endif %}"
)

GRAPH = """
input_stream: "HTTP_REQUEST_PAYLOAD:input"
output_stream: "HTTP_RESPONSE_PAYLOAD:output"
node: {
  name: "LLMExecutor"
  calculator: "HttpLLMCalculator"
  input_stream: "LOOPBACK:loopback"
  input_stream: "HTTP_REQUEST_PAYLOAD:input"
  input_side_packet: "LLM_NODE_RESOURCES:llm"
  output_stream: "LOOPBACK:loopback"
  output_stream: "HTTP_RESPONSE_PAYLOAD:output"
  input_stream_info: { tag_index: 'LOOPBACK:0', back_edge: true }
  node_options: {
    [type.googleapis.com / mediapipe.LLMCalculatorOptions]: {
      models_path: "./", cache_size: 0, enable_prefix_caching: false%s
    }
  }
  input_stream_handler {
    input_stream_handler: "SyncSetInputStreamHandler",
    options {
      [mediapipe.SyncSetInputStreamHandlerOptions.ext] { sync_set { tag_index: "LOOPBACK:0" } }
    }
  }
}
"""


def make_agentic_model(folder: Path, options: str = "") -> Path:
    """Write the model folder; ``options`` are extra ``LLMCalculatorOptions`` fields."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in TINY_MODEL.iterdir():
        if source.name not in ("openvino_tokenizer.xml", "graph.pbtxt", "chat_template.jinja"):
            (folder / source.name).symlink_to(source.resolve())
    xml = (TINY_MODEL / "openvino_tokenizer.xml").read_text(encoding="utf-8")
    value = html.escape(TEMPLATE, quote=True).replace("\n", "&#10;")
    xml, count = re.subn(
        r'<chat_template value="[^"]*"', lambda _: f'<chat_template value="{value}"', xml
    )
    assert count == 1
    (folder / "openvino_tokenizer.xml").write_text(xml, encoding="utf-8")
    (folder / "graph.pbtxt").write_text(GRAPH % options, encoding="utf-8")
    return folder
