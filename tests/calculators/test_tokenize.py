"""Tokenize request parsing (OVMS's messages) and answers from the fixture's real tokenizer."""

from __future__ import annotations

import json

import openvino_genai as ov_genai
import pytest

from calculators.llm.tokenize import (
    MAX_TEXTS,
    TokenizeRequest,
    is_tokenize_endpoint,
    parse_tokenize_request,
    tokenize_body,
)
from ovgraph.errors import InvalidParameterError, RequestError
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def tokenizer() -> ov_genai.Tokenizer:
    return ov_genai.Tokenizer(str(TINY_MODEL))


def test_endpoint_rule() -> None:
    assert is_tokenize_endpoint("/v3/tokenize")
    assert is_tokenize_endpoint("/v1/tokenize")
    assert not is_tokenize_endpoint("/v3/chat/completions")


def test_defaults() -> None:
    assert parse_tokenize_request({"model": "m", "text": "x"}) == TokenizeRequest(texts=["x"])


def test_options_are_read() -> None:
    request = parse_tokenize_request(
        {"text": ["a", "b"], "max_length": 4, "pad_to_max_length": True,
         "add_special_tokens": False, "padding_side": "left"}
    )
    assert request == TokenizeRequest(["a", "b"], 4, True, False, "left")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # text is a number
        ({"text": 5}, "text should be string, array of strings or array of integers"),
        # empty array
        ({"text": []}, "text array should not be empty"),
        # empty inner array
        ({"text": [[]]}, "inner arrays in text should not be empty"),
        # nested string arrays are not texts
        ({"text": [["a"]]}, "Input should be string or array of strings"),
        # a float element
        ({"text": [1.5]}, "every element in text array should be either string or int"),
        # max_length as a bool
        ({"text": "a", "max_length": True}, "max_length should be unsigned integer"),
        # padding_side not a string
        ({"text": "a", "padding_side": 1}, "padding_side should be string, either left or right"),
        # too many texts
        ({"text": ["a"] * (MAX_TEXTS + 1)}, f"text array exceeds the limit of {MAX_TEXTS} strings"),
    ],
)
def test_invalid_bodies(body: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        parse_tokenize_request(body)


def test_body_must_be_an_object() -> None:
    with pytest.raises(RequestError, match="Received json is not an object"):
        parse_tokenize_request([])


def test_one_text_is_a_flat_list(tokenizer: ov_genai.Tokenizer) -> None:
    body = json.loads(tokenize_body(tokenizer, TokenizeRequest(["hello world"])))
    assert body == {"tokens": tokenizer.encode("hello world").input_ids.data[0].tolist()}


def test_padding_without_max_length_uses_the_tokenizer_limit(
    tokenizer: ov_genai.Tokenizer,
) -> None:
    # The IR's own maximum length applies (OVMS passes no max_length either).
    body = json.loads(tokenize_body(tokenizer, TokenizeRequest(["a"], pad_to_max_length=True)))
    expected = tokenizer.encode(["a"], pad_to_max_length=True).input_ids.data[0].tolist()
    assert body["tokens"] == expected
    assert len(expected) > 1
