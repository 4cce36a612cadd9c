"""The ``/v3/tokenize`` (and ``/v1/tokenize``) endpoint of LLM/VLM graphs, as OVMS has it.

Request ``{"model": …, "text": "…" | ["…", …], "max_length": N, "pad_to_max_length": bool,
"padding_side": "left" | "right", "add_special_tokens": bool}``; answer ``{"tokens": [ids]}``
for one text and ``{"tokens": [[ids], …]}`` for several. ``max_length`` truncates (OVMS sets
``truncation`` with it); padding tokens are returned only with ``pad_to_max_length``. Messages
are OVMS's (``src/tokenize/tokenize_parser.cpp``). Deliberate additions, so that one request
cannot take the server's memory: at most `MAX_TEXTS` texts, each encoded on its own (OVMS pads
the batch to its longest text and drops the padding afterwards: same answer), and at most
`MAX_OUTPUT_TOKENS` ids in a padded answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ovgraph.errors import InvalidParameterError, RequestError

__all__ = [
    "MAX_OUTPUT_TOKENS",
    "MAX_TEXTS",
    "TokenizeRequest",
    "is_tokenize_endpoint",
    "parse_tokenize_request",
    "tokenize_body",
]

MAX_TEXTS = 1024
MAX_OUTPUT_TOKENS = 1 << 22
_UINT32_MAX = 2**32 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class TokenizeRequest:
    """A validated tokenize request; ``None`` leaves the tokenizer's own default."""

    texts: list[str]
    max_length: int | None = None
    pad_to_max_length: bool = False
    add_special_tokens: bool = True
    padding_side: str | None = None


def is_tokenize_endpoint(path: str) -> bool:
    """OVMS's rule: any LLM graph URI ending in ``tokenize`` (``detokenize`` aside)."""
    return path.endswith("tokenize") and not path.endswith("detokenize")


def _is_int32(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and (
        _INT32_MIN <= value <= _INT32_MAX
    )


def _parse_text(body: dict[str, Any]) -> list[str]:
    """OVMS ``parseInput(…, "text")``; token-id input exists there but LLMs refuse it."""
    if "text" not in body:
        raise InvalidParameterError("text field is required", param="text")
    value = body["text"]
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise InvalidParameterError(
            "text should be string, array of strings or array of integers", param="text"
        )
    if not value:
        raise InvalidParameterError("text array should not be empty", param="text")
    kinds = set()
    for item in value:
        if isinstance(item, list):
            if not item:
                raise InvalidParameterError(
                    "inner arrays in text should not be empty", param="text"
                )
            kinds.add("list")
        elif isinstance(item, str):
            kinds.add("str")
        elif _is_int32(item):
            kinds.add("int")
        else:
            raise InvalidParameterError(
                "every element in text array should be either string or int", param="text"
            )
    if len(kinds) > 1:
        raise InvalidParameterError("text must be homogeneous", param="text")
    if kinds != {"str"}:
        raise InvalidParameterError("Input should be string or array of strings", param="text")
    if len(value) > MAX_TEXTS:
        raise InvalidParameterError(
            f"text array exceeds the limit of {MAX_TEXTS} strings", param="text"
        )
    return list(value)


def _parse_bool(body: dict[str, Any], name: str) -> bool | None:
    if name not in body:
        return None
    if not isinstance(body[name], bool):
        raise InvalidParameterError(f"{name} should be boolean", param=name)
    return bool(body[name])


def parse_tokenize_request(body: Any) -> TokenizeRequest:
    """Validate a tokenize body in OVMS's order, with its messages.

    Raises:
        RequestError: the body is not an object.
        InvalidParameterError: the first invalid field.
    """
    if not isinstance(body, dict):
        raise RequestError("Received json is not an object")
    texts = _parse_text(body)
    max_length = None
    if "max_length" in body:
        value = body["max_length"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT32_MAX:
            raise InvalidParameterError("max_length should be unsigned integer", param="max_length")
        if value == 0:
            raise InvalidParameterError("max_length should be greater than 0", param="max_length")
        max_length = value
    pad = _parse_bool(body, "pad_to_max_length")
    special = _parse_bool(body, "add_special_tokens")
    side = None
    if "padding_side" in body:
        side = body["padding_side"]
        if not isinstance(side, str):
            raise InvalidParameterError(
                "padding_side should be string, either left or right", param="padding_side"
            )
        if side not in ("left", "right"):
            raise InvalidParameterError(
                "padding_side should be either left or right", param="padding_side"
            )
    return TokenizeRequest(
        texts=texts,
        max_length=max_length,
        pad_to_max_length=bool(pad),
        add_special_tokens=True if special is None else special,
        padding_side=side,
    )


def _encode(tokenizer: Any, text: str, request: TokenizeRequest) -> list[int]:
    options: dict[str, Any] = {
        "add_special_tokens": request.add_special_tokens,
        "pad_to_max_length": request.pad_to_max_length,
    }
    if request.max_length is not None:
        options.update(max_length=request.max_length, truncation=True)
    if request.padding_side is not None:
        options["padding_side"] = request.padding_side
    encoded = tokenizer.encode([text], **options)
    ids = encoded.input_ids.data[0].tolist()
    if request.pad_to_max_length:
        return [int(i) for i in ids]
    mask = encoded.attention_mask.data[0].tolist()
    return [int(i) for i, keep in zip(ids, mask, strict=True) if keep]


def tokenize_body(tokenizer: Any, request: TokenizeRequest) -> bytes:
    """Encode every text with the model's genai tokenizer and return OVMS's JSON answer.

    Raises:
        InvalidParameterError: a padded answer would hold more than `MAX_OUTPUT_TOKENS` ids.
    """
    if request.pad_to_max_length and request.max_length is not None:
        _check_output_size(len(request.texts) * request.max_length)
    rows: list[list[int]] = []
    for text in request.texts:
        rows.append(_encode(tokenizer, text, request))
        if request.pad_to_max_length:  # without max_length the tokenizer's own limit applies
            _check_output_size(len(request.texts) * len(rows[0]))
    tokens: list[Any] = rows if len(rows) > 1 else rows[0]
    return json.dumps({"tokens": tokens}, separators=(",", ":")).encode()


def _check_output_size(count: int) -> None:
    if count > MAX_OUTPUT_TOKENS:
        raise InvalidParameterError(
            f"The padded answer would hold {count} tokens, more than the limit of "
            f"{MAX_OUTPUT_TOKENS}; lower max_length or send fewer texts",
            param="max_length",
        )
