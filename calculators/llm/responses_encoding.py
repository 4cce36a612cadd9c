"""Encoding of Responses API answers: the ``response`` object and its streaming events.

Layout as OVMS's ``docs/model_server_rest_api_responses.md`` documents it: ``output`` holds a
``reasoning`` item (when a reasoning parser found some), ``function_call`` items and a
``message`` item with one ``output_text`` part (left out when the model only called tools).
A stream sends ``response.created`` and ``response.in_progress``, then per item
``response.output_item.added`` … ``response.output_item.done`` with the text, reasoning-summary
or function-argument deltas in between, then ``response.completed`` (or
``response.incomplete`` when ``max_output_tokens`` cut the answer) with the usage, and
``data: [DONE]``. Every event carries ``type`` and a growing ``sequence_number`` and, as in
OpenAI's streams, an ``event:`` line.

Differences from OVMS, for OpenAI clients: ``incomplete_details.reason`` is
``"max_output_tokens"`` (OpenAI's value; OVMS writes ``"max_tokens"``), ``store`` is false
(responses are not stored), ``instructions`` and ``text.format`` echo the request, and
``usage`` has the ``*_tokens_details`` objects the OpenAI schema requires.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from calculators.llm.chunks import Usage
from calculators.llm.output_parser import ParsedMessage
from calculators.llm.responses_protocol import ResponsesEcho

__all__ = ["ResponsesStream", "new_response_id", "response_body"]

_SURROGATES = re.compile("[\ud800-\udfff]")
SSE_DONE = b"data: [DONE]\n\n"


def _dumps(obj: Any) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _SURROGATES.sub("\ufffd", text).encode("utf-8")


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def new_response_id() -> str:
    """``resp-<32 hex digits>``."""
    return _id("resp")


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def _response(
    echo: ResponsesEcho, model: str, response_id: str, created: int, status: str,
    output: list[dict[str, Any]], usage: Usage | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": response_id, "object": "response", "created_at": created}
    if status == "completed":
        body["completed_at"] = int(time.time())
    body.update({
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "metadata": echo.metadata,
        "model": model,
        "output": output,
        "parallel_tool_calls": echo.parallel_tool_calls,
        "max_tool_calls": echo.max_tool_calls,
        "previous_response_id": None,
        "reasoning": echo.reasoning,
        "status": status,
        "store": False,
        "temperature": echo.temperature,
        "text": {"format": echo.text_format},
        "tool_choice": echo.tool_choice,
        "tools": echo.tools,
        "top_p": echo.top_p,
        "truncation": "disabled",
        "usage": _usage(usage) if usage is not None else None,
    })
    return body


def _reasoning_item(item_id: str, text: str | None) -> dict[str, Any]:
    summary = [] if text is None else [{"type": "summary_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "summary": summary}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _message_item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    return {
        "id": item_id, "type": "message", "role": "assistant", "status": status,
        "content": [] if text is None else [_text_part(text)],
    }


def _call_item(item_id: str, status: str, call_id: str, name: str, args: str) -> dict[str, Any]:
    return {
        "id": item_id, "type": "function_call", "status": status, "call_id": call_id,
        "name": name, "arguments": args,
    }


def _status(finish_reason: str) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


def response_body(
    echo: ResponsesEcho, model: str, response_id: str, created: int, message: ParsedMessage,
    finish_reason: str, usage: Usage,
) -> bytes:
    """The unary ``response`` object."""
    status = _status(finish_reason)
    output: list[dict[str, Any]] = []
    if message.reasoning:
        output.append(_reasoning_item(_id("rs"), message.reasoning))
    for call in message.tool_calls:
        output.append(_call_item(_id("fc"), status, call.id, call.name, call.arguments))
    if message.content or not message.tool_calls:
        output.append(_message_item(_id("msg"), status, message.content))
    return _dumps(_response(echo, model, response_id, created, status, output, usage))


class ResponsesStream:
    """The events of one streamed response, from the output parser's deltas."""

    def __init__(self, echo: ResponsesEcho, model: str, response_id: str, created: int) -> None:
        self.echo, self.model, self.response_id, self.created = echo, model, response_id, created
        self.sequence = 0
        self.output: list[dict[str, Any]] = []  # finished items
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.text = ""
        self.calls: dict[int, dict[str, Any]] = {}  # tool call index -> item

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\n".encode() + b"data: " + _dumps(payload) + b"\n\n"

    def _snapshot(self, status: str, usage: Usage | None = None) -> dict[str, Any]:
        return _response(
            self.echo, self.model, self.response_id, self.created, status, list(self.output),
            usage,
        )

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress``."""
        return self._event("response.created", response=self._snapshot("in_progress")) + (
            self._event("response.in_progress", response=self._snapshot("in_progress"))
        )

    def _index(self) -> int:
        return len(self.output)

    def _close(self, status: str = "completed") -> bytes:
        item, self.open = self.open, None
        if item is None:
            return b""
        index = self._index()
        events = b""
        if item["type"] == "reasoning":
            part = {"type": "summary_text", "text": self.text}
            where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            events += self._event("response.reasoning_summary_text.done", **where,
                                  text=self.text)
            events += self._event("response.reasoning_summary_part.done", **where, part=part)
            done = _reasoning_item(item["id"], self.text)
        elif item["type"] == "message":
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            events += self._event("response.output_text.done", **where, text=self.text,
                                  logprobs=[])
            events += self._event("response.content_part.done", **where,
                                  part=_text_part(self.text))
            done = _message_item(item["id"], status, self.text)
        else:
            events += self._event("response.function_call_arguments.done", item_id=item["id"],
                                  output_index=index, arguments=item["arguments"])
            done = dict(item, status=status)
        events += self._event("response.output_item.done", output_index=index, item=done)
        self.output.append(done)
        self.text = ""
        return events

    def _open(self, item: dict[str, Any]) -> bytes:
        self.open = item
        index = self._index()
        events = self._event("response.output_item.added", output_index=index, item=item)
        if item["type"] == "reasoning":
            events += self._event(
                "response.reasoning_summary_part.added", item_id=item["id"],
                output_index=index, summary_index=0, part={"type": "summary_text", "text": ""},
            )
        elif item["type"] == "message":
            events += self._event(
                "response.content_part.added", item_id=item["id"], output_index=index,
                content_index=0, part=_text_part(""),
            )
        return events

    def deltas(self, deltas: list[dict[str, Any]]) -> bytes:
        """Events for the deltas of `calculators.llm.output_parser.OutputParser.feed`."""
        events = b""
        for delta in deltas:
            if "reasoning_content" in delta:
                if self.open is None or self.open["type"] != "reasoning":
                    events += self._close() + self._open(_reasoning_item(_id("rs"), None))
                self.text += delta["reasoning_content"]
                events += self._event(
                    "response.reasoning_summary_text.delta", item_id=self.open["id"],
                    output_index=self._index(), summary_index=0,
                    delta=delta["reasoning_content"],
                )
            if "content" in delta:
                if self.open is None or self.open["type"] != "message":
                    events += self._close() + self._open(
                        _message_item(_id("msg"), "in_progress", None)
                    )
                self.text += delta["content"]
                events += self._event(
                    "response.output_text.delta", item_id=self.open["id"],
                    output_index=self._index(), content_index=0, delta=delta["content"],
                    logprobs=[],
                )
            for call in delta.get("tool_calls", ()):
                events += self._call_delta(call)
        return events

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        events = b""
        if "id" in call:
            item = _call_item(_id("fc"), "in_progress", call["id"], call["function"]["name"], "")
            self.calls[call["index"]] = item
            events += self._close() + self._open(item)
        item = self.calls.get(call["index"])
        fragment = call["function"].get("arguments", "")
        if item is not None and fragment:
            item["arguments"] += fragment
            events += self._event(
                "response.function_call_arguments.delta", item_id=item["id"],
                output_index=self._index(), delta=fragment,
            )
        return events

    def finish(self, finish_reason: str, usage: Usage) -> bytes:
        """Close the open item; ``response.completed`` (or ``.incomplete``) and ``[DONE]``."""
        status = _status(finish_reason)
        events = b""
        if self.open is None and not self.output:  # nothing generated: an empty message
            events += self._open(_message_item(_id("msg"), "in_progress", None))
        events += self._close(status)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return events + self._event(kind, response=self._snapshot(status, usage)) + SSE_DONE
