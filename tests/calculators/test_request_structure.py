"""Tools, response formats and vLLM's guided decoding fields as the request parser reads them."""

from __future__ import annotations

import json

import pytest

from calculators.llm.request_structure import parse_guided_decoding
from calculators.llm.structured_output import json_schema_grammar, structured_output_fields
from ovgraph.errors import InvalidParameterError

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, None),
        ({"guided_json": SCHEMA},
         ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "guided_json")),
        # vLLM also takes the schema as a JSON string
        ({"guided_json": json.dumps(SCHEMA)},
         ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "guided_json")),
        ({"guided_choice": ["yes", "no", "yes"]},
         ({"type": "choice", "choices": ["yes", "no"]}, "guided_choice")),
        ({"structured_outputs": {"choice": ["a", "b"]}},
         ({"type": "choice", "choices": ["a", "b"]}, "structured_outputs.choice")),
        ({"structured_outputs": {"json": SCHEMA, "regex": None}},
         ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "structured_outputs.json")),
        ({"structured_outputs": {"json_object": True}},
         ({"type": "json_object"}, "structured_outputs.json_object")),
        ({"guided_decoding_backend": "xgrammar"}, None),
    ],
)
def test_guided_fields_become_a_response_format(body: dict, expected: object) -> None:
    assert parse_guided_decoding(body) == expected


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"guided_regex": "a+"}, "guided_regex", "guided_regex is not supported"),
        ({"guided_grammar": "root ::= x"}, "guided_grammar", "guided_grammar is not supported"),
        ({"guided_whitespace_pattern": " "}, "guided_whitespace_pattern", "is not supported"),
        ({"structured_outputs": {"regex": "a+"}}, "structured_outputs.regex",
         "structured_outputs.regex is not supported"),
        ({"structured_outputs": {"grammar": "x"}}, "structured_outputs.grammar", "not supported"),
        ({"structured_outputs": {}}, "structured_outputs", "exactly one of"),
        ({"structured_outputs": {"json": SCHEMA, "choice": ["a"]}}, "structured_outputs",
         "exactly one of"),
        ({"structured_outputs": "a"}, "structured_outputs", "is not an object"),
        ({"guided_json": SCHEMA, "guided_choice": ["a"]}, "guided_json", "set only one of"),
        ({"guided_choice": ["a"], "response_format": {"type": "json_object"}}, "guided_choice",
         "set only one of: guided_choice, response_format"),
        ({"guided_json": "{not json"}, "guided_json", "guided_json is not valid JSON"),
        ({"guided_json": 3}, "guided_json", "is not a JSON schema object"),
        ({"guided_choice": []}, "guided_choice", "non-empty array of strings"),
        ({"guided_choice": "yes"}, "guided_choice", "non-empty array of strings"),
        ({"guided_choice": ["", "a"]}, "guided_choice", "non-empty strings"),
        ({"guided_choice": ["a\x00"]}, "guided_choice", "control character"),
        ({"guided_choice": ["oui", "d\u00e9j\u00e0"]}, "guided_choice", "only ASCII choices"),
        ({"guided_choice": ["a"] * 300}, "guided_choice", "limit of 256 choices"),
    ],
)
def test_guided_fields_refused(body: dict, param: str, message: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse_guided_decoding(body)
    assert info.value.param == param
    assert message in str(info.value)


def test_choice_grammar_matches_each_string_exactly() -> None:
    fields = structured_output_fields(
        {"type": "choice", "choices": ['say "hi"', "back\\slash", "a\nb"]}, None, "none", None,
        False,
    )
    assert fields == {"grammar": 'root ::= "say \\"hi\\"" | "back\\\\slash" | "a\\nb"'}


def test_json_literals_are_ascii() -> None:
    # an enum value with non-ASCII characters is forced as its \\u escapes
    grammar = json_schema_grammar({"enum": ["d\u00e9j\u00e0"]})
    assert "\\\\u00e9" in grammar and "\u00e9" not in grammar


def test_schema_errors_name_the_field_the_format_came_from() -> None:
    fmt = {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "a"}}}
    with pytest.raises(InvalidParameterError) as info:
        structured_output_fields(fmt, None, "none", None, False, format_param="guided_json")
    assert info.value.param == "guided_json"
    assert str(info.value).startswith("guided_json cannot be enforced:")
