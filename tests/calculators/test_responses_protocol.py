"""Responses API requests as chat requests, and the event sequence of streamed responses."""

from __future__ import annotations

import json

import pytest

from calculators.llm.chunks import Usage
from calculators.llm.request_validation import RequestLimits
from calculators.llm.responses_encoding import ResponsesStream
from calculators.llm.responses_protocol import ResponsesEcho, parse_responses_request
from ovgraph.errors import InvalidParameterError

LIMITS = RequestLimits()


def test_items_become_messages() -> None:
    request = parse_responses_request({
        "model": "m", "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            ]},
            {"type": "reasoning", "summary": []},
            {"type": "function_call", "call_id": "a1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "a2", "name": "g", "arguments": '{"x":1}'},
            {"type": "function_call_output", "call_id": "a1", "output": "done"},
        ],
    }, LIMITS)
    roles = [m["role"] for m in request.messages]
    assert roles == ["system", "system", "user", "assistant", "tool"]
    assert request.messages[0]["content"] == "Be brief."
    assert request.messages[2]["content"] == "What is this?<ov_genai_image_0>\n"
    assert request.image_urls == ["data:image/png;base64,AAAA"]
    assert [c["id"] for c in request.messages[3]["tool_calls"]] == ["a1", "a2"]
    assert request.messages[4] == {"role": "tool", "content": "done", "tool_call_id": "a1"}
    assert request.endpoint == "responses"


def test_output_limit_format_and_reasoning() -> None:
    request = parse_responses_request({
        "model": "m", "input": "hi", "max_output_tokens": 7, "reasoning": {"effort": "high"},
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"},
    }, LIMITS)
    assert request.max_tokens == 7
    assert request.chat_template_kwargs == {"enable_thinking": True, "reasoning_effort": "high"}
    assert request.response_format["json_schema"]["schema"] == {"type": "object"}
    assert request.tool_choice == "f"
    assert request.responses.max_output_tokens == 7


def test_tool_call_limits_metadata_and_neutral_values() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    request = parse_responses_request({
        "model": "m", "input": "hi", "tools": tools, "store": False, "include": [],
        "truncation": "disabled", "text": {"verbosity": "medium"}, "metadata": {"k": "v"},
        "user": "u", "safety_identifier": "s", "prompt_cache_key": "p", "service_tier": "auto",
    }, LIMITS)
    assert request.max_tool_calls is None and request.ignored_fields == []
    assert request.responses.metadata == {"k": "v"}
    assert request.responses.parallel_tool_calls is True
    request = parse_responses_request(
        {"model": "m", "input": "hi", "tools": tools, "parallel_tool_calls": False}, LIMITS)
    assert request.max_tool_calls == 1 and request.responses.parallel_tool_calls is False
    request = parse_responses_request(
        {"model": "m", "input": "hi", "tools": tools, "max_tool_calls": 3}, LIMITS)
    assert request.max_tool_calls == 3 and request.responses.max_tool_calls == 3
    request = parse_responses_request({
        "model": "m", "input": "hi", "tools": tools, "max_tool_calls": 3,
        "parallel_tool_calls": False,
    }, LIMITS)
    assert request.max_tool_calls == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 3}, "input"),  # neither string nor array
        ({"input": "x", "max_output_tokens": -1}, "max_output_tokens"),
        ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"input": "x", "reasoning": "high"}, "reasoning"),
        # what needs stored responses or what the server cannot do
        ({"input": "x", "store": True}, "store"),
        ({"input": "x", "n": 2, "best_of": 2}, "n"),
        ({"input": "x", "logprobs": True}, "logprobs"),
        ({"input": "x", "include": ["reasoning.encrypted_content"]}, "include"),
        ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": "x", "truncation": "auto"}, "truncation"),
        ({"input": "x", "text": {"verbosity": "high"}}, "text.verbosity"),
        ({"input": "x", "top_logprobs": 3}, "top_logprobs"),
        ({"input": "x", "max_tool_calls": 0}, "max_tool_calls"),
        ({"input": "x", "parallel_tool_calls": "no"}, "parallel_tool_calls"),
        ({"input": "x", "metadata": ["a"]}, "metadata"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content"),
        ({"input": "x", "conversation": "c1"}, "conversation"),
    ],
)
def test_errors_name_the_parameter(body: dict, param: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse_responses_request({"model": "m", **body}, LIMITS)
    assert info.value.param == param


def _events(data: bytes) -> list[dict]:
    return [
        json.loads(line[6:]) for line in data.decode().splitlines()
        if line.startswith("data: {")
    ]


def test_stream_of_reasoning_text_and_call() -> None:
    stream = ResponsesStream(ResponsesEcho(), "m", "resp-1", 0)
    data = stream.start() + stream.deltas([
        {"reasoning_content": "Hm."}, {"content": "Calling."},
        {"tool_calls": [{"index": 0, "id": "abc", "type": "function",
                         "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
    ]) + stream.finish("stop", Usage(3, 4))
    events = _events(data)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call"]
    assert [e.get("output_index") for e in events if e["type"].endswith("item.added")] == [0, 1, 2]
    assert final["output"][2]["call_id"] == "abc"
    assert final["usage"]["total_tokens"] == 7
    assert data.endswith(b"data: [DONE]\n\n")
    assert b"event: response.completed\n" in data
