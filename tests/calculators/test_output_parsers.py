"""Tool-call and reasoning parsers on canned outputs of each model family, unary and streamed."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import pytest

from calculators.llm.output_parser import OutputParser, detect_parsers, graph_parsers
from calculators.llm.reasoning_parsers import get_reasoning_parser
from calculators.llm.structured_output import (
    SchemaError,
    json_schema_grammar,
    structured_output_fields,
)
from calculators.llm.tool_parsers import TOOL_PARSERS, get_tool_parser

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                       "units": {"type": "object"}},
    }}},
]

# (parser, model text, expected content, expected [(name, arguments)])
CASES = [
    # Qwen2.5 / Qwen3 / Hermes: text before the block, two calls
    ("hermes3",
     'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
     '"days": 3}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": '
     '{"city": "Rome"}}\n</tool_call>',
     "Let me check.",
     [("get_weather", {"city": "Paris", "days": 3}), ("get_weather", {"city": "Rome"})]),
    # Llama 3.1 with <|python_tag|> kept (skip_special_tokens=false)
    ("llama3",
     '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
     "", [("get_weather", {"city": "Paris"})]),
    # Llama 3.2 bare JSON, two calls separated by ';'
    ("llama3",
     '{"name": "get_weather", "parameters": {"city": "Paris"}}; '
     '{"name": "get_weather", "parameters": {"city": "Rome", "units": {"t": "C"}}}',
     "", [("get_weather", {"city": "Paris"}),
          ("get_weather", {"city": "Rome", "units": {"t": "C"}})]),
    # Mistral with the [TOOL_CALLS] token decoded
    ("mistral",
     '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
     '{"name": "get_weather", "arguments": {"city": "Rome"}}]',
     "", [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]),
    # Mistral with the special token skipped
    ("mistral", '[{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
     "", [("get_weather", {"city": "Oslo"})]),
    # Phi-4-mini
    ("phi4",
     'I will call it. functools[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
     "I will call it. ", [("get_weather", {"city": "Paris"})]),
    # Qwen3-Coder XML, parameters typed by the tool schema
    ("qwen3coder",
     "Sure.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
     "<parameter=days>\n3\n</parameter>\n<parameter=units>\n{\"t\": \"C\"}\n</parameter>\n"
     "</function>\n</tool_call>",
     "Sure.\n", [("get_weather", {"city": "Paris", "days": 3, "units": {"t": "C"}})]),
    # plain answers stay content
    ("hermes3", "A red circle.", "A red circle.", []),
    ("llama3", "A red circle.", "A red circle.", []),
    ("mistral", "A red circle.", "A red circle.", []),
    ("phi4", "A red circle.", "A red circle.", []),
    ("qwen3coder", "A red circle.", "A red circle.", []),
]


def _stream(parser: OutputParser, text: str, step: int) -> list[dict[str, Any]]:
    deltas = []
    for i in range(0, len(text), step):
        deltas += parser.feed(text[i : i + step])
    return deltas + parser.feed("", final=True)


def _collect(deltas: list[dict[str, Any]]) -> tuple[str, str, dict[int, list]]:
    content = "".join(d.get("content", "") for d in deltas)
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    calls: dict[int, list] = {}
    for delta in deltas:
        for call in delta.get("tool_calls", ()):
            entry = calls.setdefault(call["index"], [None, None, ""])
            if "id" in call:
                assert entry[0] is None, "a call is announced once"
                entry[0], entry[1] = call["id"], call["function"]["name"]
            entry[2] += call["function"].get("arguments", "")
    return content, reasoning, calls


@pytest.mark.parametrize(("name", "text", "content", "calls"), CASES)
def test_unary(name: str, text: str, content: str, calls: list) -> None:
    message = OutputParser(get_tool_parser(name), None, TOOLS).finish(text)
    assert message.content == content
    assert [(c.name, json.loads(c.arguments)) for c in message.tool_calls] == calls
    assert all(len(c.id) == 9 for c in message.tool_calls)
    assert message.reasoning is None


@pytest.mark.parametrize(("name", "text", "content", "calls"), CASES)
@pytest.mark.parametrize("step", [1, 4, 1000])  # per character, a few at a time, all at once
def test_streamed_matches_unary(
    name: str, text: str, content: str, calls: list, step: int
) -> None:
    got_content, _, got_calls = _collect(_stream(OutputParser(get_tool_parser(name), None, TOOLS),
                                                 text, step))
    assert got_content == content
    assert [(got_calls[i][1], json.loads(got_calls[i][2])) for i in sorted(got_calls)] == calls


@pytest.mark.parametrize("step", [1, 7, 1000])
def test_one_call_when_parallel_calls_are_off(step: int) -> None:
    """``parallel_tool_calls: false``: the first call only, unary and streamed."""
    name, text, content, calls = CASES[0]  # two calls
    unary = OutputParser(get_tool_parser(name), None, TOOLS, max_calls=1).finish(text)
    assert [(c.name, json.loads(c.arguments)) for c in unary.tool_calls] == calls[:1]
    parser = OutputParser(get_tool_parser(name), None, TOOLS, max_calls=1)
    got_content, _, got_calls = _collect(_stream(parser, text, step))
    assert got_content == content
    assert [(got_calls[i][1], json.loads(got_calls[i][2])) for i in sorted(got_calls)] == calls[:1]


def test_arguments_stream_in_fragments() -> None:
    text = CASES[0][1]
    deltas = _stream(OutputParser(get_tool_parser("hermes3"), None, TOOLS), text, 2)
    fragments = [d for d in deltas if "tool_calls" in d and "id" not in d["tool_calls"][0]]
    assert len(fragments) > 5
    first = next(d for d in deltas if "tool_calls" in d)["tool_calls"][0]
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert first["type"] == "function"


def test_no_tools_means_no_tool_parsing() -> None:
    message = OutputParser(get_tool_parser("hermes3"), None, None).finish(CASES[0][1])
    assert message.tool_calls == [] and "<tool_call>" in message.content


def test_invalid_call_json_is_dropped() -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>'
    message = OutputParser(get_tool_parser("hermes3"), None, TOOLS).finish(text)
    assert message.tool_calls == [] and message.content == ""


def test_partial_tag_is_held_back_while_streaming() -> None:
    parser = OutputParser(get_tool_parser("hermes3"), None, TOOLS)
    assert parser.feed("Hi <tool_") == [{"content": "Hi "}]
    assert parser.feed("ca") == []
    assert parser.feed("t!", final=True) == [{"content": "<tool_cat!"}]


# --- reasoning --------------------------------------------------------------------------------

THINK = "<think>\nThe shape has no corners.\n</think>\n\nA red circle."


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_qwen3_reasoning(step: int) -> None:
    unary = OutputParser(None, get_reasoning_parser("qwen3"), None).finish(THINK)
    assert unary.reasoning == "The shape has no corners."
    assert unary.content == "A red circle."
    content, reasoning, _ = _collect(
        _stream(OutputParser(None, get_reasoning_parser("qwen3"), None), THINK, step)
    )
    assert (reasoning, content) == (unary.reasoning, unary.content)


def test_reasoning_with_implicit_start_and_tool_call() -> None:
    text = "Need the weather.</think><tool_call>{\"name\": \"get_weather\", \"arguments\": {}}"
    parser = OutputParser(get_tool_parser("hermes3"), get_reasoning_parser("qwen3"), TOOLS,
                          implicit_reasoning=True)
    message = parser.finish(text)
    assert message.reasoning == "Need the weather."
    assert [c.name for c in message.tool_calls] == ["get_weather"]


def test_no_think_block_is_all_content() -> None:
    message = OutputParser(None, get_reasoning_parser("qwen3"), None).finish("Just this.")
    assert (message.reasoning, message.content) == ("", "Just this.")


def test_unfinished_reasoning_is_reasoning() -> None:
    message = OutputParser(None, get_reasoning_parser("qwen3"), None).finish("<think>hmm")
    assert (message.reasoning, message.content) == ("hmm", "")


# --- selection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ '<tool_call>' }}{{ '</tool_call>' }}<think>", ("hermes3", "qwen3")),  # Qwen3
        ("<tool_call></tool_call>", ("hermes3", "")),  # Qwen2.5
        ("<tool_call><function=x><parameter=y></parameter>", ("qwen3coder", "")),
        ("<|python_tag|>", ("llama3", "")),
        ("[TOOL_CALLS]", ("mistral", "")),
        ("functools[", ("phi4", "")),
        ("<|im_start|>{{ message.content }}", ("", "")),  # the fixture's Qwen2-VL template
    ],
)
def test_detect_parsers(template: str, expected: tuple[str, str]) -> None:
    assert detect_parsers(template) == expected


def _options(**fields: Any) -> Any:
    return SimpleNamespace(
        HasField=lambda name: name in fields, enable_tool_guided_generation=False,
        tool_parser=fields.get("tool_parser", ""),
        reasoning_parser=fields.get("reasoning_parser", ""),
    )


def test_graph_option_wins_and_none_disables() -> None:
    qwen3 = "<tool_call></tool_call><think>"
    assert graph_parsers(_options(), qwen3).tool_parser is not None
    assert graph_parsers(_options(tool_parser="none"), qwen3).tool_parser is None
    chosen = graph_parsers(_options(tool_parser="llama3", reasoning_parser="none"), qwen3)
    assert chosen.tool_parser.name == "llama3" and chosen.reasoning_parser is None


def test_unknown_parser_names_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="Supported tool parsers are: hermes3, llama3"):
        get_tool_parser("gptoss")
    with pytest.raises(ValueError, match='Unsupported reasoning parser: "x"'):
        get_reasoning_parser("x")


# --- structured output ------------------------------------------------------------------------


def test_schema_grammar_keeps_property_order_and_optionals() -> None:
    grammar = json_schema_grammar({
        "type": "object", "required": ["a"],
        "properties": {"a": {"enum": ["x", "y"]}, "b": {"type": "boolean"}},
    })
    assert 'root-value-from0 ::= "\\"a\\"" ":" root-value-a ("," "\\"b\\"" ":" boolean)?' in (
        grammar
    )


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "integer", "minimum": 3}, "#: keyword 'minimum' is not supported"),
        ({"type": "object", "properties": {"a": {"format": "date"}}},
         "#/properties/a: keyword 'format' is not supported"),
        ({"type": "object", "required": ["b"], "properties": {}},
         "'b' is not in properties"),
        ({"type": "array", "maxItems": 1000}, "maxItems"),
        # a reference cycle that writes nothing first would be a left-recursive grammar
        ({"$ref": "#/$defs/A", "$defs": {"A": {"anyOf": [{"$ref": "#/$defs/A"}, True]}}},
         "'#/$defs/A' refers to itself"),
        ({"$ref": "#/$defs/A", "$defs": []}, "'#/$defs/A' is not defined"),
    ],
)
def test_schema_errors_name_keyword_and_place(schema: dict, message: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(message)):
        json_schema_grammar(schema)


def test_recursion_through_an_object_is_allowed() -> None:
    grammar = json_schema_grammar({
        "$ref": "#/$defs/Node",
        "$defs": {"Node": {"type": "object", "properties": {
            "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
    })
    assert "def-Node ::= def-Node-body" in grammar


@pytest.mark.parametrize("name", sorted(TOOL_PARSERS))
def test_forced_call_is_a_triggered_structural_tag(name: str) -> None:
    fields = structured_output_fields(None, TOOLS, "get_weather", get_tool_parser(name), False)
    tag = json.loads(fields["structural_tags_config"])["format"]
    assert tag["type"] == "triggered_tags"
    assert tag["at_least_one"] and tag["stop_after_first"]
    assert tag["tags"][0]["begin"].startswith(tag["triggers"][0][:1])
    assert "get_weather" in tag["tags"][0]["begin"]


def test_auto_tool_choice_is_only_guided_when_enabled() -> None:
    parser = get_tool_parser("hermes3")
    assert structured_output_fields(None, TOOLS, "auto", parser, False) is None
    guided = structured_output_fields(None, TOOLS, "auto", parser, True)
    assert not json.loads(guided["structural_tags_config"])["format"]["at_least_one"]


def test_one_call_ends_a_forced_or_guided_generation_after_the_first_call() -> None:
    parser = get_tool_parser("hermes3")
    for choice, guided in (("required", False), ("auto", True)):
        def tag(one_call: bool, choice: str = choice, guided: bool = guided) -> dict:
            fields = structured_output_fields(None, TOOLS, choice, parser, guided, one_call)
            return json.loads(fields["structural_tags_config"])["format"]

        assert not tag(False)["stop_after_first"]
        assert tag(True)["stop_after_first"]
