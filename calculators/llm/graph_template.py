"""graph.pbtxt for ``--task text_generation``, in the layout OVMS's pull and export write."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calculators.llm.serve_flags import draft_folder

__all__ = ["text_generation_graph"]

_TEMPLATE = """\
# File created with: ovgraph
# OVMS_GRAPH_QUEUE_MAX_SIZE: AUTO
input_stream: "HTTP_REQUEST_PAYLOAD:input"
output_stream: "HTTP_RESPONSE_PAYLOAD:output"

node: {{
  name: "LLMExecutor"
  calculator: "HttpLLMCalculator"
  input_stream: "LOOPBACK:loopback"
  input_stream: "HTTP_REQUEST_PAYLOAD:input"
  input_side_packet: "LLM_NODE_RESOURCES:llm"
  output_stream: "LOOPBACK:loopback"
  output_stream: "HTTP_RESPONSE_PAYLOAD:output"
  input_stream_info: {{
    tag_index: 'LOOPBACK:0',
    back_edge: true
  }}
  node_options: {{
      [type.googleapis.com / mediapipe.LLMCalculatorOptions]: {{
          models_path: "{models_path}",
          plugin_config: '{plugin_config}',
          enable_prefix_caching: {enable_prefix_caching},
          cache_size: {cache_size},
          max_num_seqs: {max_num_seqs},
          device: "{device}",{extra}
      }}
  }}
  input_stream_handler {{
    input_stream_handler: "SyncSetInputStreamHandler",
    options {{
      [mediapipe.SyncSetInputStreamHandlerOptions.ext] {{
        sync_set {{
          tag_index: "LOOPBACK:0"
        }}
      }}
    }}
  }}
}}
"""


def _quoted(path: str) -> str:
    return path.replace("\\", "/").replace('"', '\\"')


def _flag(value: Any, default: bool) -> str:
    if value is None:
        return "true" if default else "false"
    if isinstance(value, str):
        return "true" if value.lower() in ("1", "true", "yes") else "false"
    return "true" if value else "false"


def text_generation_graph(model_dir: Path | str, settings: Mapping[str, Any]) -> str:
    """Return the LLM/VLM graph for ``model_dir`` with the text-generation flags applied.

    ``model_dir`` is written as given: ``"./"`` for a graph stored next to the model, an
    absolute path for a graph built in memory.
    """
    extra = []
    if settings.get("pipeline_type"):
        extra.append(f"pipeline_type: {settings['pipeline_type']}")
    if settings.get("max_num_batched_tokens"):
        extra.append(f"max_num_batched_tokens: {int(settings['max_num_batched_tokens'])}")
    if settings.get("dynamic_split_fuse") is not None:
        extra.append(f"dynamic_split_fuse: {_flag(settings['dynamic_split_fuse'], True)}")
    if settings.get("max_tokens_limit"):
        extra.append(f"max_tokens_limit: {int(settings['max_tokens_limit'])}")
    draft = draft_folder(settings)
    if draft:
        extra.append(f'draft_models_path: "{_quoted(draft)}"')
    for key in ("tool_parser", "reasoning_parser"):
        if settings.get(key):
            extra.append(f'{key}: "{settings[key]}"')
    if settings.get("enable_tool_guided_generation") is not None:
        flag = _flag(settings["enable_tool_guided_generation"], False)
        extra.append(f"enable_tool_guided_generation: {flag}")
    plugin = settings.get("plugin_config") or {}
    if isinstance(plugin, str):
        plugin = json.loads(plugin) if plugin else {}
    plugin = dict(plugin)
    if settings.get("kv_cache_precision"):
        plugin["KV_CACHE_PRECISION"] = settings["kv_cache_precision"]
    if settings.get("max_prompt_len"):
        plugin["MAX_PROMPT_LEN"] = int(settings["max_prompt_len"])
    if settings.get("ov_cache_dir"):
        plugin["CACHE_DIR"] = settings["ov_cache_dir"]
    return _TEMPLATE.format(
        models_path=_quoted(str(model_dir)),
        plugin_config=json.dumps(plugin),
        enable_prefix_caching=_flag(settings.get("enable_prefix_caching"), True),
        cache_size=int(settings.get("cache_size") or 0),
        max_num_seqs=int(settings.get("max_num_seqs") or 256),
        device=settings.get("target_device") or "CPU",
        extra="".join(f"\n          {line}," for line in extra),
    )
