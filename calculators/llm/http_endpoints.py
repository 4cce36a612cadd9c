"""The OpenAI paths the LLM graphs answer, contributed to the REST frontend's route table.

Registered in the ``ovgraph.http_endpoints`` entry-point group: each path is handed to the graph
named by the body's ``model`` as is (the request calculator decides what it means), and requests
to it are counted under the path's metrics label. Paths under ``/v3/`` reach the graph anyway;
listing them here gives them their own label.
"""

from __future__ import annotations

from ovgraph.frontends.rest.routes import HttpEndpoint

__all__ = ["openai_endpoints"]

_PREFIX = r"/(?:v3/|v1/|v3/v1/)"


def openai_endpoints() -> list[HttpEndpoint]:
    """Chat completions, completions, responses, tokenize and detokenize.

    Under ``/v3`` (also ``/v1`` and ``/v3/v1``); tokenize and detokenize also at vLLM's paths.
    """
    return [
        HttpEndpoint("/v3/chat/completions", _PREFIX + "chat/completions"),
        HttpEndpoint("/v3/completions", _PREFIX + "completions"),
        HttpEndpoint("/v3/responses", _PREFIX + "responses"),
        # vLLM's paths (no prefix) as well; detokenize first: "…/detokenize" ends in "tokenize"
        HttpEndpoint("/v3/detokenize", r"/(?:v3/|v1/)?detokenize"),
        HttpEndpoint("/v3/tokenize", r"/(?:v3/.*|v1/)?tokenize"),
    ]
