"""Encoding of OpenAI chat/completions responses: unary bodies, SSE chunks and error bodies.

Layouts follow OVMS (``ovms-api.md`` §4.1-§4.2) with our additions (§4.4): an ``id`` on the
unary body and on every chunk, and ``"refusal": null`` in every ``message``. Keys keep OVMS'
order; the added ``id`` sits between ``created`` and ``model`` and ``refusal`` between
``content`` and ``role``, matching OVMS' alphabetical ordering of those objects.

JSON is written compactly with non-ASCII characters left as UTF-8 (as rapidjson does). Control
characters, quotes and backslashes are escaped, so a ``data:`` line never breaks; lone UTF-16
surrogates, which cannot be encoded as UTF-8, become U+FFFD.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_ERROR_MESSAGE_CHARS",
    "SSE_DONE",
    "TokenLogprob",
    "Usage",
    "chat_logprobs",
    "completion_body",
    "completion_logprobs",
    "new_request_id",
    "openai_error_body",
    "sse_content_chunk",
    "sse_delta_chunk",
    "sse_error_event",
    "sse_role_chunk",
    "sse_text_chunk",
    "sse_usage_chunk",
    "unary_chat_body",
    "with_verbose",
]

SSE_DONE = b"data: [DONE]\n\n"
MAX_ERROR_MESSAGE_CHARS = 1024
_MAX_ERROR_FIELD_CHARS = 256
_CHUNK_OBJECT = "chat.completion.chunk"
_TEXT_OBJECT = "text_completion"
_SURROGATES = re.compile("[\ud800-\udfff]")

#: One choice of a unary response: generated text and finish reason (``stop``, ``length``,
#: ``tool_calls``; None is written as ``null``), optionally followed by its ``logprobs`` object
#: (`chat_logprobs`, `completion_logprobs`).
Choice = tuple[str, str | None] | tuple[str, str | None, dict[str, Any] | None]
#: One generated token for ``logprobs``: its bytes and its log probability.
TokenLogprob = tuple[bytes, float]
#: What OpenAI-compatible servers write for a log probability of minus infinity (vLLM's value).
_MIN_LOGPROB = -9999.0


@dataclass(frozen=True)
class Usage:
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """``prompt_tokens + completion_tokens``."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        """The OpenAI ``usage`` object, keys in OVMS' order."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def new_request_id(prefix: str = "chatcmpl") -> str:
    """Return a fresh response id such as ``chatcmpl-<32 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def _dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON that stays valid for any Python string content."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text).encode("utf-8")


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def unary_chat_body(
    request_model: str,
    request_id: str,
    created: int,
    choices: Sequence[Choice],
    usage: Usage,
    *,
    parsed: Sequence[tuple[str | None, list[dict[str, Any]]]] | None = None,
) -> bytes:
    """Return the body of a non-streaming ``/chat/completions`` response.

    Args:
        request_model: the ``model`` of the request, echoed back.
        request_id: the response id (see `new_request_id`).
        created: Unix time in seconds.
        choices: ``(text, finish_reason[, logprobs])`` per choice, in index order.
        usage: token counts.
        parsed: per choice, ``(reasoning_content, tool_calls)`` found by the output parsers;
            ``reasoning_content`` is written between ``content`` and ``refusal`` when not None.
    """
    return _dumps(
        {
            "choices": [
                {
                    "finish_reason": choice[1],
                    "index": index,
                    "logprobs": _choice_logprobs(choice),
                    "message": _message(choice[0], parsed[index] if parsed else None),
                }
                for index, choice in enumerate(choices)
            ],
            "created": created,
            "id": request_id,
            "model": request_model,
            "object": "chat.completion",
            "usage": usage.to_dict(),
        }
    )


def _message(
    text: str, parsed: tuple[str | None, list[dict[str, Any]]] | None
) -> dict[str, Any]:
    reasoning, tool_calls = parsed or (None, [])
    message: dict[str, Any] = {"content": text}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    message.update({"refusal": None, "role": "assistant", "tool_calls": tool_calls})
    return message


def completion_body(
    request_model: str,
    request_id: str,
    created: int,
    choices: Sequence[Choice],
    usage: Usage,
) -> bytes:
    """Return the body of a non-streaming ``/completions`` response (``text`` per choice)."""
    return _dumps(
        {
            "choices": [
                {
                    "finish_reason": choice[1],
                    "index": index,
                    "logprobs": _choice_logprobs(choice),
                    "text": choice[0],
                }
                for index, choice in enumerate(choices)
            ],
            "created": created,
            "id": request_id,
            "model": request_model,
            "object": "text_completion",
            "usage": usage.to_dict(),
        }
    )


def _choice_logprobs(choice: Choice) -> dict[str, Any] | None:
    return choice[2] if len(choice) > 2 else None  # type: ignore[misc]


def _logprob(value: float) -> float:
    """A finite JSON number: -inf becomes `_MIN_LOGPROB`, a positive rounding error 0."""
    if value != value:  # NaN
        return _MIN_LOGPROB
    return min(0.0, max(_MIN_LOGPROB, float(value)))


def _token_text(piece: bytes) -> str:
    return piece.decode("utf-8", "replace")


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
    """OpenAI's chat ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}]}``.

    ``bytes`` are the token's own UTF-8 bytes (a token may hold part of a character, which its
    ``token`` text shows as U+FFFD); ``top_logprobs`` is empty (genai reports the chosen token).
    """
    return {
        "content": [
            {
                "token": _token_text(piece),
                "logprob": _logprob(value),
                "bytes": list(piece),
                "top_logprobs": [],
            }
            for piece, value in tokens
        ],
        "refusal": None,
    }


def completion_logprobs(tokens: Sequence[TokenLogprob], echo: bool = False) -> dict[str, Any]:
    """OpenAI's legacy ``/completions`` ``logprobs``.

    ``tokens``, ``token_logprobs``, ``top_logprobs`` (the chosen token only, as OVMS) and
    ``text_offset``: each token's character offset in the answer's text. With ``echo`` the
    tokens start with the prompt's, and the first one has no logprob (nothing precedes it):
    ``null`` in ``token_logprobs`` and ``top_logprobs``, as OpenAI and vLLM write it.
    """
    texts = [_token_text(piece) for piece, _ in tokens]
    offsets: list[int] = []
    consumed = b""
    for piece, _ in tokens:
        offsets.append(len(consumed.decode("utf-8", "replace")))
        consumed += piece
    token_logprobs: list[float | None] = [_logprob(value) for _, value in tokens]
    top_logprobs: list[dict[str, float] | None] = [
        {text: _logprob(value)} for text, (_, value) in zip(texts, tokens)
    ]
    if echo and tokens:
        token_logprobs[0] = top_logprobs[0] = None
    return {
        "tokens": texts,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }


def sse_role_chunk(
    request_model: str,
    request_id: str,
    created: int,
    *,
    index: int = 0,
    usage: Usage | None = None,
) -> bytes:
    """Return OVMS' handshake chunk: delta ``{"role":"assistant","content":null}``.

    It has no ``usage`` key unless ``usage`` is given (``continuous_usage_stats``).
    """
    chunk: dict[str, Any] = {
        "choices": [
            {
                "index": index,
                "delta": {"role": "assistant", "content": None},
                "finish_reason": None,
            }
        ],
        "created": created,
        "id": request_id,
        "model": request_model,
        "object": _CHUNK_OBJECT,
    }
    if usage is not None:
        chunk["usage"] = usage.to_dict()
    return _sse(chunk)


def sse_content_chunk(
    request_model: str,
    request_id: str,
    created: int,
    delta_text: str,
    finish_reason: str | None,
    include_usage: bool,
    *,
    index: int = 0,
    usage: Usage | None = None,
) -> bytes:
    """Return one content chunk.

    Args:
        request_model: the ``model`` of the request, echoed back.
        request_id: the response id, the same on every chunk.
        created: Unix time in seconds, the same on every chunk.
        delta_text: new text; when empty the delta is ``{}`` (a final chunk whose last token
            was swallowed, e.g. by a stop string).
        finish_reason: None on intermediate chunks.
        include_usage: ``stream_options.include_usage``; the ``usage`` key is present iff true.
        index: the choice index.
        usage: running counts for ``continuous_usage_stats``; written only with include_usage,
            otherwise ``usage`` is null.
    """
    return sse_delta_chunk(
        request_model, request_id, created, {"content": delta_text} if delta_text else {},
        finish_reason, include_usage, index=index, usage=usage,
    )


def sse_delta_chunk(
    request_model: str,
    request_id: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None,
    include_usage: bool,
    *,
    index: int = 0,
    usage: Usage | None = None,
) -> bytes:
    """Return one chunk carrying a parsed ``delta``.

    ``delta`` holds ``content``, ``reasoning_content`` or ``tool_calls`` (see
    ``calculators.llm.output_parser``); ``usage`` is written as with `sse_content_chunk`.
    """
    chunk: dict[str, Any] = {
        "choices": [
            {"index": index, "logprobs": None, "delta": delta, "finish_reason": finish_reason}
        ],
        "created": created,
        "id": request_id,
        "model": request_model,
        "object": _CHUNK_OBJECT,
    }
    if include_usage:
        chunk["usage"] = usage.to_dict() if usage is not None else None
    return _sse(chunk)


def sse_text_chunk(
    request_model: str,
    request_id: str,
    created: int,
    text: str,
    finish_reason: str | None,
    include_usage: bool,
    *,
    index: int = 0,
    usage: Usage | None = None,
) -> bytes:
    """Return one ``/completions`` stream chunk: ``text`` per choice, ``text_completion`` object.

    Args:
        request_model: the ``model`` of the request, echoed back.
        request_id: the response id, the same on every chunk.
        created: Unix time in seconds, the same on every chunk.
        text: new text (may be empty on the final chunk).
        finish_reason: None on intermediate chunks.
        include_usage: ``stream_options.include_usage``; ``"usage": null`` is present iff true.
        index: the choice index.
        usage: running counts for ``continuous_usage_stats`` (written only with include_usage).
    """
    chunk: dict[str, Any] = {
        "choices": [
            {"finish_reason": finish_reason, "index": index, "logprobs": None, "text": text}
        ],
        "created": created,
        "id": request_id,
        "model": request_model,
        "object": _TEXT_OBJECT,
    }
    if include_usage:
        chunk["usage"] = usage.to_dict() if usage is not None else None
    return _sse(chunk)


def sse_usage_chunk(
    request_model: str, request_id: str, created: int, usage: Usage, *, completions: bool = False
) -> bytes:
    """Return the final usage chunk (``choices: []``), sent before `SSE_DONE`.

    ``completions`` selects the ``/completions`` object name (``text_completion``).
    """
    return _sse(
        {
            "choices": [],
            "created": created,
            "id": request_id,
            "model": request_model,
            "object": _TEXT_OBJECT if completions else _CHUNK_OBJECT,
            "usage": usage.to_dict(),
        }
    )


def with_verbose(body: bytes, prompt: str, content: str) -> bytes:
    """Add OVMS's ``--verbose_response`` object as the last key of a body or ``data:`` event.

    ``"__verbose": {"prompt": <templated prompt>, "content": <raw output, special tokens
    kept>}``; streams carry it on the chunk with the ``finish_reason``.
    """
    extra = b',"__verbose":' + _dumps({"prompt": prompt, "content": content})
    if body.startswith(b"data: ") and body.endswith(b"}\n\n"):
        return body[:-3] + extra + b"}\n\n"
    if not body.endswith(b"}"):
        raise ValueError("not a JSON object body")
    return body[:-1] + extra + b"}"


def _bound(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _error_object(
    message: str, error_type: str, param: str | None, code: str | None
) -> dict[str, Any]:
    return {
        "error": {
            "message": _bound(str(message), MAX_ERROR_MESSAGE_CHARS),
            "type": _bound(str(error_type), _MAX_ERROR_FIELD_CHARS),
            "param": None if param is None else _bound(str(param), _MAX_ERROR_FIELD_CHARS),
            "code": None if code is None else _bound(str(code), _MAX_ERROR_FIELD_CHARS),
        }
    }


def openai_error_body(
    message: str,
    type: str,
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    """Return ``{"error": {"message", "type", "param", "code"}}``.

    The message is cut to `MAX_ERROR_MESSAGE_CHARS` characters (ending in an ellipsis) so that
    an error echoing client input stays small; ``type``, ``param`` and ``code`` are cut to 256.
    """
    return _dumps(_error_object(message, type, param, code))


def sse_error_event(
    message: str,
    type: str,
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    """Return the error body as one ``data:`` event, for failures after streaming began."""
    return _sse(_error_object(message, type, param, code))
