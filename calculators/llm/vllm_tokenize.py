"""vLLM's ``/tokenize`` and ``/detokenize`` for LLM/VLM graphs.

``/tokenize`` takes ``{"model", "prompt", "add_special_tokens": true}`` or ``{"model",
"messages", "add_generation_prompt": true, "add_special_tokens": false, "tools",
"chat_template_kwargs"}`` (the prompt the chat template makes of them) and answers ``{"count",
"max_model_len", "tokens", "token_strs": null}``; ``/detokenize`` takes ``{"model", "tokens"}``
and answers ``{"prompt"}``. The paths are vLLM's (``/tokenize``, ``/detokenize``) and also take
the ``/v3/`` and ``/v1/`` prefixes; a tokenize body with ``text`` is OVMS's (``tokenize.py``).

Refused, naming the field: ``return_token_strs: true`` (genai's tokenizer has no id-to-string
table), ``continue_final_message: true``, a request ``chat_template``, and pictures in
``messages`` (their tokens exist only inside the pipeline).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from calculators.llm.request_validation import ChatRequest, RequestLimits, parse_chat_request
from ovgraph.errors import InvalidParameterError

__all__ = [
    "MAX_DETOKENIZE_TOKENS",
    "detokenize_body",
    "is_detokenize_endpoint",
    "is_vllm_tokenize",
    "vllm_tokenize_body",
]

MAX_DETOKENIZE_TOKENS = 1 << 20
_CHAT_KEYS = ("model", "messages", "tools", "tool_choice", "chat_template_kwargs")


def _fail(message: str, param: str) -> InvalidParameterError:
    return InvalidParameterError(message, param=param)


def is_detokenize_endpoint(path: str) -> bool:
    """A graph URI ending in ``detokenize``."""
    return path.endswith("detokenize")


def is_vllm_tokenize(body: dict[str, Any]) -> bool:
    """Whether a tokenize body is vLLM's (``prompt`` or ``messages``, no OVMS ``text``)."""
    return "text" not in body and ("prompt" in body or "messages" in body)


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _fail(f"{name} is not a boolean", name)
    return value


def vllm_tokenize_body(
    tokenizer: Any,
    body: dict[str, Any],
    max_model_len: int | None,
    render: Callable[[Any, ChatRequest], str],
) -> bytes:
    """Encode a vLLM tokenize request; ``render`` is the chat template step of the graph."""
    for name in ("return_token_strs", "continue_final_message"):
        if _flag(body, name, False):
            raise _fail(f"{name}: true is not supported", name)
    if body.get("chat_template") is not None:
        raise _fail("chat_template is not supported: the model's own template is used",
                    "chat_template")
    if "messages" in body:
        if "prompt" in body:
            raise _fail("set either prompt or messages", "prompt")
        chat = {key: body[key] for key in _CHAT_KEYS if key in body}
        kwargs = chat.get("chat_template_kwargs")
        kwargs = dict(kwargs) if isinstance(kwargs, dict) else {}
        kwargs["add_generation_prompt"] = _flag(body, "add_generation_prompt", True)
        chat["chat_template_kwargs"] = kwargs
        request = parse_chat_request(chat, endpoint="chat", limits=RequestLimits())
        if request.image_urls:
            raise _fail("pictures cannot be tokenized on their own: send text only", "messages")
        text = render(tokenizer, request)
        special = _flag(body, "add_special_tokens", False)
    else:
        text = body["prompt"]
        if not isinstance(text, str):
            raise _fail("prompt is not a string", "prompt")
        special = _flag(body, "add_special_tokens", True)
    ids = tokenizer.encode([text], add_special_tokens=special).input_ids.data[0].tolist()
    tokens = [int(i) for i in ids]
    answer = {"count": len(tokens), "max_model_len": max_model_len, "tokens": tokens,
              "token_strs": None}
    return json.dumps(answer, separators=(",", ":")).encode()


def detokenize_body(tokenizer: Any, body: dict[str, Any], vocab_size: int) -> bytes:
    """Decode ``tokens`` (ids below ``vocab_size``) to ``{"prompt": text}``."""
    tokens = body.get("tokens")
    if not isinstance(tokens, list):
        raise _fail("tokens is not an array of token ids", "tokens")
    if len(tokens) > MAX_DETOKENIZE_TOKENS:
        raise _fail(f"tokens exceeds the limit of {MAX_DETOKENIZE_TOKENS} ids", "tokens")
    for token in tokens:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab_size:
            raise _fail(f"tokens must be token ids from 0 to {vocab_size - 1}", "tokens")
    text = tokenizer.decode(tokens, skip_special_tokens=False) if tokens else ""
    return json.dumps({"prompt": text}, ensure_ascii=False, separators=(",", ":")).encode()
