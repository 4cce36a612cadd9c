"""Tool calls, structured output and reasoning through a real server and the ``openai`` client.

The fixture model's weights are random, so these tests use what does not depend on them: a
forced tool call and a ``response_format`` are generated under a grammar (valid whatever the
weights), and with ``enable_thinking`` the template opens ``<think>`` so that everything the
model writes is reasoning.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Literal

import openai
import pydantic
import pytest

from tests.agentic_model import MODEL, make_agentic_model
from tests.conftest import ServerProcess

REPORT_SHAPE = {
    "type": "function",
    "function": {
        "name": "report_shape",
        "description": "Report the shape and colour seen in the picture.",
        "parameters": {
            "type": "object",
            "properties": {
                "shape": {"type": "string", "enum": ["circle", "square", "triangle"]},
                "color": {"type": "string", "enum": ["red", "green", "blue"]},
            },
            "required": ["shape", "color"],
        },
    },
}
GET_TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"utc": {"type": "boolean"}},
                       "required": ["utc"]},
    },
}
ASK = [{"role": "user", "content": "Report the shape in the picture."}]


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The fixture with a tool-aware template; the graph names hermes3 and qwen3."""
    folder = make_agentic_model(
        tmp_path_factory.mktemp("agent") / MODEL,
        ', tool_parser: "hermes3", reasoning_parser: "qwen3"',
    )
    proc = ServerProcess(["--model_path", str(folder), "--model_name", MODEL]).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(agent_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=agent_server.url + "/v3", api_key="unused", max_retries=0)


def _check_call(call: object, name: str = "report_shape") -> dict:
    assert call.type == "function"
    assert len(call.id) == 9 and set(call.id) <= set(string.ascii_letters + string.digits)
    assert call.function.name == name
    return json.loads(call.function.arguments)


# --- tool calls -------------------------------------------------------------------------------


def test_required_tool_choice_returns_a_parsed_call(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[REPORT_SHAPE], tool_choice="required", max_tokens=120,
        temperature=0,
    )
    choice = response.choices[0]
    # "required" forces at least one call; the random model then writes on to max_tokens
    # (a call that ends in EOS finishes with "tool_calls", see the named-choice test).
    assert choice.finish_reason == "length"
    assert choice.message.tool_calls, choice.message
    arguments = _check_call(choice.message.tool_calls[0])
    assert arguments["shape"] in ("circle", "square", "triangle")
    assert arguments["color"] in ("red", "green", "blue")
    assert "<tool_call>" not in (choice.message.content or "")


def test_parallel_tool_calls_false_ends_after_one_call(client: openai.OpenAI) -> None:
    # The same request as the "required" test above, which writes on to max_tokens: with
    # parallel calls off, generation ends after the first call.
    for stream in (False, True):
        answer = client.chat.completions.create(
            model=MODEL, messages=ASK, tools=[REPORT_SHAPE], tool_choice="required",
            max_tokens=120, temperature=0, parallel_tool_calls=False, stream=stream,
        )
        if stream:
            chunks = list(answer)
            indexes = {c.index for ch in chunks for c in (ch.choices[0].delta.tool_calls or [])}
            assert indexes == {0}
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
        else:
            assert len(answer.choices[0].message.tool_calls) == 1
            assert answer.choices[0].finish_reason == "tool_calls"
            _check_call(answer.choices[0].message.tool_calls[0])


def test_named_tool_choice_forces_that_function(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[REPORT_SHAPE, GET_TIME], max_tokens=120,
        tool_choice={"type": "function", "function": {"name": "get_time"}}, temperature=0,
    )
    calls = response.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]
    assert isinstance(_check_call(calls[0], "get_time")["utc"], bool)
    assert response.choices[0].finish_reason == "tool_calls"


def test_allowed_tools_restrict_the_calls(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[REPORT_SHAPE, GET_TIME], max_tokens=120,
        temperature=0, parallel_tool_calls=False,
        tool_choice={"type": "allowed_tools", "allowed_tools": {
            "mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}],
        }},
    )
    calls = response.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]
    assert isinstance(_check_call(calls[0], "get_time")["utc"], bool)


def test_tool_choice_none_never_calls(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[REPORT_SHAPE], tool_choice="none", max_tokens=8,
        temperature=0,
    )
    assert not response.choices[0].message.tool_calls
    assert response.choices[0].finish_reason == "length"


def test_unknown_named_tool_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="not in tools"):
        client.chat.completions.create(
            model=MODEL, messages=ASK, tools=[REPORT_SHAPE], max_tokens=8,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )


def test_streamed_tool_call_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[REPORT_SHAPE, GET_TIME], max_tokens=120,
        tool_choice={"type": "function", "function": {"name": "report_shape"}}, temperature=0,
        stream=True,
    )
    first, fragments, finish, content = None, [], None, ""
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or ():
            assert call.index == 0
            if call.id is not None:
                assert first is None  # id and name come once, first
                first = call
            elif call.function.arguments:
                fragments.append(call.function.arguments)
        finish = chunk.choices[0].finish_reason or finish
    assert first is not None and first.function.name == "report_shape"
    assert len(first.id) == 9
    assert fragments  # after the announcement (pieces per step: see the parser unit tests)
    assert set(json.loads("".join(fragments))) == {"shape", "color"}
    assert finish == "tool_calls"
    assert "<tool_call>" not in content


def test_tool_history_reaches_the_template(client: openai.OpenAI) -> None:
    call = {"id": "abc123XYZ", "type": "function",
            "function": {"name": "report_shape",
                         "arguments": '{"shape": "circle", "color": "red"}'}}
    plain = [*ASK, {"role": "assistant", "content": ""}]
    with_call = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]}]
    tool = {"role": "tool", "tool_call_id": "abc123XYZ", "content": "recorded"}

    def prompt_tokens(messages: list) -> int:
        return client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=1, tools=[REPORT_SHAPE]
        ).usage.prompt_tokens

    without = prompt_tokens(plain)
    assert prompt_tokens(with_call) > without + 10  # the rendered <tool_call> block
    assert prompt_tokens([*with_call, tool]) > prompt_tokens(with_call)


# --- structured output ------------------------------------------------------------------------


class Color(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Shape(pydantic.BaseModel):
    shape: Literal["circle", "square", "triangle"]
    color: Color
    filled: bool


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=MODEL, messages=ASK, response_format=Shape, max_tokens=40, temperature=0
    )
    message = completion.choices[0].message
    assert isinstance(message.parsed, Shape)
    assert completion.choices[0].finish_reason == "stop"


def test_json_schema_stream_is_valid_json(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "enum": [1, 2, 3]},
                                               "ok": {"type": "boolean"}},
              "required": ["n", "ok"], "additionalProperties": False}
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=40, temperature=0, stream=True,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "x", "schema": schema, "strict": True}},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    value = json.loads(text)
    assert value["n"] in (1, 2, 3) and isinstance(value["ok"], bool)


def test_json_object(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=40, temperature=0,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(response.choices[0].message.content), dict)


def test_non_ascii_enum_values_come_out_right(client: openai.OpenAI) -> None:
    # Written as raw characters under genai's grammar they came out as other characters.
    values = ["d\u00e9j\u00e0 vu", "\u00fcber", "\u732b \U0001f642"]
    schema = {"type": "object", "properties": {"w": {"enum": values}}, "required": ["w"]}
    for seed in range(3):
        response = client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=60, temperature=1.5, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}},
        )
        assert json.loads(response.choices[0].message.content)["w"] in values


def test_vllm_guided_choice_and_json(client: openai.OpenAI) -> None:
    choices = ['say "hi"', "back\\slash", "two\nlines", "[not] a (regex)*"]
    for seed in range(4):
        response = client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=40, temperature=1.5, seed=seed,
            extra_body={"guided_choice": choices},
        )
        assert response.choices[0].message.content in choices
    streamed = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=40, stream=True,
        extra_body={"structured_outputs": {"choice": ["alpha", "beta"]}},
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) in (
        "alpha", "beta")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=40, temperature=0,
        extra_body={"guided_json": json.dumps(schema)},
    )
    assert isinstance(json.loads(response.choices[0].message.content)["n"], int)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"guided_regex": "[a-z]+"}, "guided_regex"),
        ({"structured_outputs": {"grammar": "root ::= x"}}, "structured_outputs.grammar"),
        ({"guided_json": {"type": "string", "pattern": "a"}}, "guided_json"),
        ({"guided_choice": ["caf\u00e9"]}, "guided_choice"),
    ],
)
def test_vllm_guided_fields_refused(client: openai.OpenAI, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, extra_body=extra)
    assert info.value.body["param"] == param


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        # a constraint the grammar cannot enforce
        ({"type": "string", "pattern": "^a+$"}, "keyword 'pattern' is not supported"),
        # a type that does not exist
        ({"type": "strange"}, 'unsupported type "strange"'),
        # a reference to nothing
        ({"$ref": "#/$defs/Missing"}, "'#/$defs/Missing' is not defined"),
    ],
)
def test_schema_that_cannot_be_enforced_is_a_400(
    client: openai.OpenAI, schema: dict, problem: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {"name": "x",
                                                                    "schema": schema}},
        )
    assert problem in info.value.message
    assert info.value.body["param"] == "response_format"


def test_server_survives_a_bad_schema(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=4,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "x", "schema": {"type": "nope"}}},
        )
    ok = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2)
    assert ok.choices[0].finish_reason == "length"


# --- reasoning --------------------------------------------------------------------------------


def test_enable_thinking_reaches_the_template_and_reasoning_is_split(
    client: openai.OpenAI,
) -> None:
    thinking = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=12, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}},
    )
    plain = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=12, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    assert thinking.usage.prompt_tokens > plain.usage.prompt_tokens  # "<think>" rendered
    reasoning = thinking.choices[0].message.model_extra.get("reasoning_content")
    assert reasoning  # no "</think>" in 12 random tokens: all of it is reasoning
    assert thinking.choices[0].message.content == ""
    assert plain.choices[0].message.content
    assert not plain.choices[0].message.model_extra.get("reasoning_content")


def test_reasoning_effort_turns_thinking_on_and_off(client: openai.OpenAI) -> None:
    def ask(effort: str) -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=12, temperature=0, reasoning_effort=effort,
        )

    high, none = ask("high"), ask("none")
    assert high.usage.prompt_tokens > none.usage.prompt_tokens  # "<think>" rendered
    assert high.choices[0].message.model_extra.get("reasoning_content")
    assert none.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="reasoning_effort must be one of"):
        ask("extreme")


def test_streamed_reasoning_matches_unary(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL, "messages": ASK, "max_tokens": 12, "temperature": 0,
              "extra_body": {"chat_template_kwargs": {"enable_thinking": True}}}
    unary = client.chat.completions.create(**kwargs)
    reasoning, content = "", ""
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        content += delta.content or ""
    assert reasoning == unary.choices[0].message.model_extra["reasoning_content"]
    assert content == ""


def test_skip_special_tokens_false_turns_parsers_off(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=12, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": True},
                    "skip_special_tokens": False},
    )
    assert response.choices[0].message.content
    assert "reasoning_content" not in (response.choices[0].message.model_extra or {})


def _forced_call(url: str) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=url + "/v3", api_key="unused", max_retries=0)
    return client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[REPORT_SHAPE], max_tokens=120, temperature=0,
        tool_choice={"type": "function", "function": {"name": "report_shape"}},
    )


def test_parsers_are_detected_from_the_template(tmp_path: Path) -> None:
    """Without parser options the Qwen3-style template selects hermes3 and qwen3."""
    folder = make_agentic_model(tmp_path / MODEL)
    proc = ServerProcess(["--model_path", str(folder), "--model_name", MODEL]).wait_ready()
    try:
        response = _forced_call(proc.url)
        assert [c.function.name for c in response.choices[0].message.tool_calls] == [
            "report_shape"
        ]
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("flag", "written"),
    [
        # Llama's call format is forced and parsed instead of Hermes's
        ("llama3", '{"name": "report_shape", "parameters": '),
        # no parser: a call can be neither forced nor returned
        ("none", None),
    ],
)
def test_tool_parser_flag(tmp_path: Path, flag: str, written: str | None) -> None:
    folder = make_agentic_model(tmp_path / MODEL)
    proc = ServerProcess([
        "--model_path", str(folder), "--model_name", MODEL, "--task", "text_generation",
        "--cache_size", "0", "--tool_parser", flag,
    ]).wait_ready()
    try:
        if written is None:
            with pytest.raises(openai.BadRequestError, match="needs a tool parser"):
                _forced_call(proc.url)
            client = openai.OpenAI(base_url=proc.url + "/v3", api_key="unused", max_retries=0)
            auto = client.chat.completions.create(
                model=MODEL, messages=ASK, tools=[REPORT_SHAPE], max_tokens=8, temperature=0
            )  # "auto" without a parser: the text stays content, as in OVMS
            assert not auto.choices[0].message.tool_calls and auto.choices[0].message.content
        else:
            message = _forced_call(proc.url).choices[0].message
            assert [c.function.name for c in message.tool_calls] == ["report_shape"]
            raw = _forced_call_raw(proc.url)
            assert raw.startswith(written)
    finally:
        proc.stop()


def _forced_call_raw(url: str) -> str:
    """The same request with the parsers off (``skip_special_tokens: false``)."""
    client = openai.OpenAI(base_url=url + "/v3", api_key="unused", max_retries=0)
    return client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[REPORT_SHAPE], max_tokens=120, temperature=0,
        tool_choice={"type": "function", "function": {"name": "report_shape"}},
        extra_body={"skip_special_tokens": False},
    ).choices[0].message.content


def test_unknown_parser_fails_the_load(tmp_path: Path) -> None:
    folder = make_agentic_model(tmp_path / MODEL, ', tool_parser: "nonesuch"')
    proc = ServerProcess(["--model_path", str(folder), "--model_name", MODEL])
    try:
        with pytest.raises((RuntimeError, TimeoutError)):
            proc.wait_ready(timeout=30)
        assert 'Unsupported tool parser: "nonesuch"' in proc.logs()
    finally:
        proc.stop()
