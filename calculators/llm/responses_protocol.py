"""The OpenAI Responses API request (``/v3/responses``) as a chat request.

A Responses body is rewritten into the ``/chat/completions`` body it means and validated by
`calculators.llm.request_validation` (so sampling fields keep OVMS's rules and messages):

* ``input`` — a string (one user message) or a list of items: messages whose ``content`` is a
  string or ``input_text`` / ``input_image`` / ``output_text`` parts (``developer`` becomes
  ``system``), ``function_call`` items (assistant tool calls) and ``function_call_output`` items
  (``tool`` messages); ``reasoning`` items are skipped;
* ``instructions`` — a system message before the input;
* ``max_output_tokens`` — the output limit;
* ``tools`` — function tools (flat ``{"type": "function", "name", "parameters"}``);
* ``text.format`` — ``text``, ``json_object`` or ``json_schema`` (``name``, ``schema``,
  ``strict``), i.e. ``response_format``;
* ``reasoning.effort`` — reaches the template as ``reasoning_effort`` and turns
  ``chat_template_kwargs.enable_thinking`` on (as OVMS), or off for ``"none"``;
* ``parallel_tool_calls: false`` and ``max_tool_calls`` — the most calls the answer carries;
* ``metadata``, ``user``, ``safety_identifier``, ``prompt_cache_key``, ``service_tier`` —
  accepted, no effect on the answer (``metadata`` is repeated in the response).

``stream_options`` is refused (usage is always in ``response.completed``, as in OVMS), and so
are ``store: true``, ``previous_response_id``, ``conversation`` and ``background``, which need
stored responses, and what the server cannot do: ``n`` above 1 (one output per response; ``best_of``
answers the best beam), ``include``, ``logprobs``, ``prompt``,
``truncation: "auto"``, ``text.verbosity`` other than ``"medium"``, ``top_logprobs``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from calculators.llm.request_structure import with_reasoning_effort
from calculators.llm.request_validation import (
    METADATA_FIELDS,
    ChatRequest,
    RequestLimits,
    parse_chat_request,
)
from ovgraph.errors import InvalidParameterError

__all__ = ["ResponsesEcho", "parse_responses_request"]

# Fields of the Responses request that mean the same in a chat request.
_SHARED = (
    "model", "stream", "temperature", "top_p", "tools", "tool_choice", "stop", "ignore_eos",
    "include_stop_str_in_output", "chat_template_kwargs", "skip_special_tokens",
    "n", "best_of", "length_penalty", "min_p", "top_k", "repetition_penalty",
    "frequency_penalty", "presence_penalty", "seed", "num_assistant_tokens",
    "assistant_confidence_threshold", "max_ngram_size", "response_format",
    "parallel_tool_calls", "top_logprobs",
)  # fmt: skip
_OWN = frozenset({
    "input", "instructions", "max_output_tokens", "text", "reasoning", "stream_options",
    "max_tool_calls", "truncation", "include", "prompt", "logprobs",
})  # fmt: skip
_STORED = ("store", "previous_response_id", "conversation", "background")
_ROLES = ("user", "assistant", "system", "developer")


@dataclass
class ResponsesEcho:
    """Request values the response object repeats."""

    instructions: str | None = None
    max_output_tokens: int | None = None
    tools: list[Any] = field(default_factory=list)
    tool_choice: Any = "auto"
    text_format: dict[str, Any] = field(default_factory=lambda: {"type": "text"})
    temperature: float | None = None
    top_p: float | None = None
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    parallel_tool_calls: bool = True
    max_tool_calls: int | None = None


def _fail(message: str, param: str) -> InvalidParameterError:
    return InvalidParameterError(message, param=param)


def parse_responses_request(body: dict[str, Any], limits: RequestLimits) -> ChatRequest:
    """Validate a Responses body and return the chat request it means.

    The returned request has ``endpoint == "responses"`` and ``responses`` set to the values
    the response repeats.

    Raises:
        InvalidParameterError: the first problem found, naming the Responses parameter.
    """
    for name in _STORED:
        if body.get(name) not in (None, False):
            raise _fail(f"{name} is not supported: responses are not stored", name)
    if "stream_options" in body:
        raise _fail("stream_options is not supported in Responses API.", "stream_options")
    _refuse_what_cannot_be_done(body)
    chat: dict[str, Any] = {key: body[key] for key in _SHARED if key in body}
    messages = _messages(body)
    chat["messages"] = messages
    echo = ResponsesEcho(
        instructions=body.get("instructions") if isinstance(body.get("instructions"), str)
        else None,
        tools=copy.deepcopy(body.get("tools") or []),
        tool_choice=body.get("tool_choice") or "auto",
        temperature=body.get("temperature"), top_p=body.get("top_p"),
    )
    if body.get("max_output_tokens") is not None:
        value = body["max_output_tokens"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise _fail("max_output_tokens is not an unsigned integer", "max_output_tokens")
        if value == 0:
            raise _fail("max_output_tokens value should be greater than 0", "max_output_tokens")
        if limits.max_tokens_limit is not None and value > limits.max_tokens_limit:
            raise _fail(
                "max_output_tokens exceeds limit provided in graph config: "
                f"{limits.max_tokens_limit}", "max_output_tokens",
            )
        chat["max_completion_tokens"] = value
        echo.max_output_tokens = value
    text_format = _text_format(body.get("text"))
    if text_format is not None:
        echo.text_format = text_format
        chat["response_format"] = _response_format(text_format)
    reasoning = body.get("reasoning")
    if reasoning is not None:
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        if not isinstance(reasoning, dict):
            raise _fail("reasoning is not an object", "reasoning")
        if effort is not None:
            kwargs = chat.get("chat_template_kwargs")
            chat["chat_template_kwargs"] = with_reasoning_effort(
                kwargs if isinstance(kwargs, dict) else None, effort, "reasoning.effort"
            )
        echo.reasoning = {"effort": effort, "summary": reasoning.get("summary")}
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _fail("metadata is not an object", "metadata")
    echo.metadata = dict(metadata or {})
    request = parse_chat_request(chat, endpoint="chat", limits=limits)
    echo.parallel_tool_calls = request.max_tool_calls is None
    if body.get("max_tool_calls") is not None:
        value = body["max_tool_calls"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _fail("max_tool_calls is not a positive integer", "max_tool_calls")
        request.max_tool_calls = min(value, request.max_tool_calls or value)
        echo.max_tool_calls = value
    request.endpoint = "responses"
    request.responses = echo
    request.ignored_fields = [
        key for key in body
        if key not in _SHARED and key not in _OWN and key not in _STORED
        and key not in METADATA_FIELDS
    ]  # fmt: skip
    return request


def _refuse_what_cannot_be_done(body: dict[str, Any]) -> None:
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        raise _fail("n above 1 is not supported in Responses API: a response has one output", "n")
    if body.get("include"):
        raise _fail("include is not supported", "include")
    if body.get("logprobs") not in (None, False):
        raise _fail("logprobs is not supported in Responses API", "logprobs")
    if body.get("prompt") is not None:
        raise _fail("prompt is not supported: there are no stored prompts", "prompt")
    if body.get("truncation") not in (None, "disabled"):
        raise _fail('truncation: only "disabled" is supported', "truncation")
    text = body.get("text")
    if isinstance(text, dict) and text.get("verbosity") not in (None, "medium"):
        raise _fail("text.verbosity is not supported", "text.verbosity")


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _fail("instructions is not a string", "instructions")
        messages.append({"role": "system", "content": instructions})
    if "input" not in body:
        raise _fail("input missing in request", "input")
    value = body["input"]
    if isinstance(value, str):
        if not value:
            raise _fail("input cannot be empty", "input")
        messages.append({"role": "user", "content": value})
        return messages
    if not isinstance(value, list):
        raise _fail("input is not a string or array", "input")
    if not value:
        raise _fail("input array must not be empty", "input")
    for i, item in enumerate(value):
        _add_item(messages, item, f"input[{i}]")
    return messages


def _add_item(messages: list[dict[str, Any]], item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise _fail("input item is not an object", where)
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise _fail(f"input item role must be one of: {', '.join(_ROLES)}", where)
        messages.append({
            "role": "system" if role == "developer" else role,
            "content": _content(item.get("content"), where),
        })
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(item.get(key), str):
                raise _fail(f"function_call item needs a string {key}", where)
        call = {"id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        else:
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise _fail("function_call_output item needs a string call_id", where)
        output = item.get("output")
        messages.append({
            "role": "tool", "tool_call_id": item["call_id"],
            "content": output if isinstance(output, str) else _content(output, where),
        })
    elif kind == "reasoning":
        return
    else:
        raise _fail(f"input item type '{kind}' is not supported", where)


def _content(content: Any, where: str) -> Any:
    """A Responses content value as chat content (a string or chat parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _fail("content must be a string or an array", f"{where}.content")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise _fail("input_image needs an image_url string", f"{where}.content")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise _fail(f"content part type '{kind}' is not supported", f"{where}.content")
    return parts


def _text_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _fail("text is not an object", "text")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise _fail("text.format.type must be one of: text, json_object, json_schema",
                    "text.format")
    if fmt["type"] == "json_schema" and not isinstance(fmt.get("schema"), dict):
        raise _fail("text.format.schema is not an object", "text.format.schema")
    return fmt


def _response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt["type"] != "json_schema":
        return {"type": fmt["type"]}
    spec = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
    return {"type": "json_schema", "json_schema": spec}
