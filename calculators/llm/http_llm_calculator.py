"""HttpLLMCalculator: OVMS's one-node LLM/VLM graph, expanded into ovgraph's six-node DAG."""

from __future__ import annotations

from typing import Any, ClassVar

from calculators.llm.common import LLMCalculatorOptions
from ovgraph.errors import ContractError
from ovgraph.framework.calculator import Subgraph
from ovgraph.framework.textformat import parse_graph_config

_TEMPLATE = """
input_stream: "HTTP_REQUEST_PAYLOAD:payload"
input_stream: "LOOPBACK:loopback_in"
output_stream: "HTTP_RESPONSE_PAYLOAD:response"
output_stream: "LOOPBACK:loopback_out"
input_side_packet: "LLM_NODE_RESOURCES:llm"
input_side_packet: "LLM_NODE_EXECUTION_CONTEXTS:llm_ctx"
node {
  name: "request"
  calculator: "OpenAIRequestCalculator"
  input_stream: "HTTP_REQUEST_PAYLOAD:payload"
  output_stream: "REQUEST:request"
  output_stream: "DIRECT:direct"
}
node {
  name: "images"
  calculator: "ImageDecodeCalculator"
  input_stream: "REQUEST:request"
  output_stream: "REQUEST:decoded"
}
node {
  name: "template"
  calculator: "ChatTemplateCalculator"
  input_stream: "REQUEST:decoded"
  output_stream: "PROMPT:prompt"
}
node {
  name: "generation"
  calculator: "VLMGenerationCalculator"
  input_stream: "PROMPT:prompt"
  input_stream: "LOOPBACK:loopback_in"
  output_stream: "TOKENS:tokens"
  output_stream: "LOOPBACK:loopback_out"
  input_stream_info: { tag_index: "LOOPBACK:0" back_edge: true }
  input_stream_handler {
    input_stream_handler: "SyncSetInputStreamHandler"
    options {
      [mediapipe.SyncSetInputStreamHandlerOptions.ext] { sync_set { tag_index: "LOOPBACK:0" } }
    }
  }
}
node {
  name: "detokenizer"
  calculator: "DetokenizerCalculator"
  input_stream: "TOKENS:tokens"
  output_stream: "TEXT:text"
}
node {
  name: "response"
  calculator: "OpenAIResponseCalculator"
  input_stream: "TEXT:text"
  input_stream: "DIRECT:direct"
  output_stream: "HTTP_RESPONSE_PAYLOAD:response"
}
"""


class HttpLLMCalculator(Subgraph):
    """OVMS's one-node LLM/VLM graph node, expanded into ovgraph's six calculators.

    request → images → template → generation (LOOPBACK) → detokenizer → response; every inner
    node carries the node's ``LLMCalculatorOptions``.

    node {
      name: "llmNode1"
      calculator: "HttpLLMCalculator"
      input_side_packet: "LLM_NODE_RESOURCES:llm"
      input_stream: "LOOPBACK:loopback"
      input_stream: "HTTP_REQUEST_PAYLOAD:input"
      output_stream: "LOOPBACK:loopback"
      output_stream: "HTTP_RESPONSE_PAYLOAD:output"
      input_stream_info: { tag_index: 'LOOPBACK:0', back_edge: true }
      node_options: {
        [type.googleapis.com/mediapipe.LLMCalculatorOptions]: { models_path: "./" }
      }
      input_stream_handler {
        input_stream_handler: "SyncSetInputStreamHandler",
        options {
          [mediapipe.SyncSetInputStreamHandlerOptions.ext] { sync_set { tag_index: "LOOPBACK:0" } }
        }
      }
    }
    """

    Options: ClassVar[Any] = LLMCalculatorOptions

    @classmethod
    def get_config(cls, node: Any, options: Any) -> Any:
        """Return the six-node graph, each node carrying the LLM options."""
        if not options.HasField("models_path"):
            raise ContractError(
                f'LLM node "{node.name or node.calculator}" has no LLMCalculatorOptions with '
                "models_path."
            )
        config = parse_graph_config(_TEMPLATE).config
        for inner in config.node:
            inner.node_options.add().Pack(options)
        return config
