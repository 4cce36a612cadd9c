"""Response encoding: exact bytes, key order, hostile text, error bodies."""

from __future__ import annotations

import json
import re

import pytest

from calculators.llm import chunks
from calculators.llm.chunks import (
    MAX_ERROR_MESSAGE_CHARS,
    SSE_DONE,
    Usage,
    completion_body,
    new_request_id,
    openai_error_body,
    sse_content_chunk,
    sse_error_event,
    sse_role_chunk,
    sse_usage_chunk,
    unary_chat_body,
)

MODEL = "vlm"
RID = "chatcmpl-0123abcd"
CREATED = 1767225600
USAGE = Usage(prompt_tokens=98, completion_tokens=20)


def sse_json(event: bytes) -> dict:
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    payload = event[len(b"data: ") : -2]
    # one event = one line: no raw newline may leak out of the JSON
    assert b"\n" not in payload
    assert b"\r" not in payload
    return json.loads(payload)


def test_usage_total() -> None:
    assert USAGE.total_tokens == 118
    assert USAGE.to_dict() == {"prompt_tokens": 98, "completion_tokens": 20, "total_tokens": 118}
    assert list(USAGE.to_dict()) == ["prompt_tokens", "completion_tokens", "total_tokens"]


def test_new_request_id() -> None:
    first, second = new_request_id(), new_request_id()
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", first)
    assert first != second
    assert re.fullmatch(r"cmpl-[0-9a-f]{32}", new_request_id("cmpl"))


def test_unary_chat_body_exact_bytes() -> None:
    body = unary_chat_body(MODEL, RID, CREATED, [("A red square.", "stop")], USAGE)
    assert body == (
        b'{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,'
        b'"message":{"content":"A red square.","refusal":null,"role":"assistant",'
        b'"tool_calls":[]}}],'
        b'"created":1767225600,"id":"chatcmpl-0123abcd","model":"vlm","object":"chat.completion",'
        b'"usage":{"prompt_tokens":98,"completion_tokens":20,"total_tokens":118}}'
    )


def test_unary_chat_body_several_choices_keep_index_and_key_order() -> None:
    body = json.loads(unary_chat_body(MODEL, RID, CREATED, [("a", "stop"), ("b", "length")], USAGE))
    assert list(body) == ["choices", "created", "id", "model", "object", "usage"]
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]
    assert list(body["choices"][1]) == ["finish_reason", "index", "logprobs", "message"]
    assert list(body["choices"][1]["message"]) == ["content", "refusal", "role", "tool_calls"]


def test_completion_body_exact_bytes() -> None:
    body = completion_body(MODEL, "cmpl-1", CREATED, [("text", "length")], Usage(3, 4))
    assert body == (
        b'{"choices":[{"finish_reason":"length","index":0,"logprobs":null,"text":"text"}],'
        b'"created":1767225600,"id":"cmpl-1","model":"vlm","object":"text_completion",'
        b'"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}'
    )


def test_role_chunk_exact_bytes() -> None:
    assert sse_role_chunk(MODEL, RID, CREATED) == (
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null},'
        b'"finish_reason":null}],"created":1767225600,"id":"chatcmpl-0123abcd","model":"vlm",'
        b'"object":"chat.completion.chunk"}\n\n'
    )


def test_content_chunk_without_usage_exact_bytes() -> None:
    assert sse_content_chunk(MODEL, RID, CREATED, "A red", None, False) == (
        b'data: {"choices":[{"index":0,"logprobs":null,"delta":{"content":"A red"},'
        b'"finish_reason":null}],"created":1767225600,"id":"chatcmpl-0123abcd","model":"vlm",'
        b'"object":"chat.completion.chunk"}\n\n'
    )


def test_content_chunk_with_usage_null_exact_bytes() -> None:
    assert sse_content_chunk(MODEL, RID, CREATED, " square.", "stop", True) == (
        b'data: {"choices":[{"index":0,"logprobs":null,"delta":{"content":" square."},'
        b'"finish_reason":"stop"}],"created":1767225600,"id":"chatcmpl-0123abcd","model":"vlm",'
        b'"object":"chat.completion.chunk","usage":null}\n\n'
    )


def test_final_chunk_with_empty_delta() -> None:
    assert sse_content_chunk(MODEL, RID, CREATED, "", "stop", True) == (
        b'data: {"choices":[{"index":0,"logprobs":null,"delta":{},"finish_reason":"stop"}],'
        b'"created":1767225600,"id":"chatcmpl-0123abcd","model":"vlm",'
        b'"object":"chat.completion.chunk","usage":null}\n\n'
    )


def test_content_chunk_continuous_usage() -> None:
    chunk = sse_json(
        sse_content_chunk(MODEL, RID, CREATED, "x", None, True, usage=Usage(5, 1), index=2)
    )
    assert chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    assert chunk["choices"][0]["index"] == 2
    # without include_usage the running usage is not written at all
    chunk = sse_json(sse_content_chunk(MODEL, RID, CREATED, "x", None, False, usage=Usage(5, 1)))
    assert "usage" not in chunk


def test_usage_chunk_exact_bytes() -> None:
    assert sse_usage_chunk(MODEL, RID, CREATED, USAGE) == (
        b'data: {"choices":[],"created":1767225600,"id":"chatcmpl-0123abcd","model":"vlm",'
        b'"object":"chat.completion.chunk",'
        b'"usage":{"prompt_tokens":98,"completion_tokens":20,"total_tokens":118}}\n\n'
    )


def test_done_event() -> None:
    assert SSE_DONE == b"data: [DONE]\n\n"


def test_stream_key_orders() -> None:
    role = sse_json(sse_role_chunk(MODEL, RID, CREATED))
    content = sse_json(sse_content_chunk(MODEL, RID, CREATED, "t", None, True))
    usage = sse_json(sse_usage_chunk(MODEL, RID, CREATED, USAGE))
    assert list(role) == ["choices", "created", "id", "model", "object"]
    assert list(role["choices"][0]) == ["index", "delta", "finish_reason"]
    assert list(content) == ["choices", "created", "id", "model", "object", "usage"]
    assert list(content["choices"][0]) == ["index", "logprobs", "delta", "finish_reason"]
    assert list(usage) == ["choices", "created", "id", "model", "object", "usage"]


HOSTILE = [
    # replacement character from a partial UTF-8 sequence
    pytest.param("\ufffd", id="fffd"),
    # NUL
    pytest.param("a\x00b", id="nul"),
    # quotes
    pytest.param('"', id="lone-quote"),
    pytest.param("'\"'", id="mixed-quotes"),
    # backslashes, including one that looks like an escape
    pytest.param("\\", id="backslash"),
    pytest.param("\\u0000\\n", id="fake-escapes"),
    # line breaks that would split an SSE event
    pytest.param("line1\nline2\r\n\r\n", id="newlines"),
    # an embedded SSE terminator
    pytest.param("data: [DONE]\n\n", id="embedded-done"),
    # other control characters
    pytest.param("\t\x1b[31m\x7f\x08\x0c", id="controls"),
    # JS line separators and HTML
    pytest.param("\u2028\u2029</script>", id="separators-html"),
    # non-BMP
    pytest.param("\U0001f600 \u4e2d\u6587", id="emoji-cjk"),
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_round_trips(text: str) -> None:
    unary = json.loads(unary_chat_body(text, RID, CREATED, [(text, "stop")], USAGE))
    assert unary["choices"][0]["message"]["content"] == text
    assert unary["model"] == text
    completion = json.loads(completion_body(MODEL, RID, CREATED, [(text, "stop")], USAGE))
    assert completion["choices"][0]["text"] == text
    chunk = sse_json(sse_content_chunk(text, RID, CREATED, text, None, True))
    assert chunk["choices"][0]["delta"]["content"] == text
    assert chunk["model"] == text


def test_non_ascii_is_written_as_utf8() -> None:
    body = unary_chat_body(MODEL, RID, CREATED, [("\u00e9\ufffd", "stop")], USAGE)
    assert "\u00e9\ufffd".encode() in body
    assert b"\\u" not in body


def test_lone_surrogate_becomes_replacement_character() -> None:
    body = unary_chat_body(MODEL, RID, CREATED, [("a\ud800b\udfff", "stop")], USAGE)
    body.decode("utf-8")  # strict: must be valid UTF-8
    assert json.loads(body)["choices"][0]["message"]["content"] == "a\ufffdb\ufffd"
    chunk = sse_json(sse_content_chunk(MODEL, RID, CREATED, "\udc80", None, False))
    assert chunk["choices"][0]["delta"]["content"] == "\ufffd"


def test_error_body_shape() -> None:
    body = openai_error_body("temperature out of range(0.0, 2.0)", "invalid_request_error",
                             "temperature", None)  # fmt: skip
    assert body == (
        b'{"error":{"message":"temperature out of range(0.0, 2.0)",'
        b'"type":"invalid_request_error","param":"temperature","code":null}}'
    )
    body = openai_error_body("too big", "invalid_request_error", code="content_too_large")
    assert json.loads(body) == {
        "error": {
            "message": "too big",
            "type": "invalid_request_error",
            "param": None,
            "code": "content_too_large",
        }
    }


def test_error_message_is_bounded() -> None:
    huge = "x" * 100_000 + '"\n'
    body = openai_error_body(huge, "invalid_request_error", "p" * 10_000, "c" * 10_000)
    error = json.loads(body)["error"]
    assert len(error["message"]) == MAX_ERROR_MESSAGE_CHARS
    assert error["message"].endswith("\u2026")
    assert error["message"].startswith("x" * 1000)
    assert len(error["param"]) <= 256
    assert len(error["code"]) <= 256
    assert len(body) < 4096
    # a message at the limit is kept whole
    exact = "y" * MAX_ERROR_MESSAGE_CHARS
    assert json.loads(openai_error_body(exact, "t"))["error"]["message"] == exact


def test_error_message_with_quotes_stays_valid_json() -> None:
    message = 'bad "value" \\ here\n\ud800'
    error = json.loads(openai_error_body(message, "invalid_request_error"))["error"]
    assert error["message"] == 'bad "value" \\ here\n\ufffd'


def test_sse_error_event() -> None:
    event = sse_error_event('oops "x"', "server_error")
    assert sse_json(event) == {
        "error": {"message": 'oops "x"', "type": "server_error", "param": None, "code": None}
    }


def test_chat_logprobs_shape() -> None:
    # "é" split over two tokens: each token's text shows U+FFFD, its bytes stay exact
    tokens = [(b"caf", -0.5), (b"\xc3", -1.0), (b"\xa9", float("-inf"))]
    assert chunks.chat_logprobs(tokens) == {
        "content": [
            {"token": "caf", "logprob": -0.5, "bytes": [99, 97, 102], "top_logprobs": []},
            {"token": "\ufffd", "logprob": -1.0, "bytes": [195], "top_logprobs": []},
            {"token": "\ufffd", "logprob": -9999.0, "bytes": [169], "top_logprobs": []},
        ],
        "refusal": None,
    }


def test_completion_logprobs_shape() -> None:
    tokens = [(b"He", -0.25), (b"llo", -0.5), (b" \xc3\xa9", -1.5), (b"!", 1e-7)]
    assert chunks.completion_logprobs(tokens) == {
        "tokens": ["He", "llo", " \u00e9", "!"],
        "token_logprobs": [-0.25, -0.5, -1.5, 0.0],
        "top_logprobs": [{"He": -0.25}, {"llo": -0.5}, {" \u00e9": -1.5}, {"!": 0.0}],
        "text_offset": [0, 2, 5, 7],  # characters, not bytes
    }


def test_unary_bodies_carry_logprobs_per_choice() -> None:
    logprobs = chunks.chat_logprobs([(b"a", -0.1)])
    body = json.loads(
        chunks.unary_chat_body("m", "id", 1, [("a", "stop", logprobs), ("b", "length")],
                               chunks.Usage(1, 2))
    )
    assert [c["logprobs"] for c in body["choices"]] == [logprobs, None]
    body = json.loads(chunks.completion_body("m", "id", 1, [("a", "stop", {"x": 1})],
                                             chunks.Usage(1, 1)))
    assert body["choices"][0]["logprobs"] == {"x": 1}


def test_with_verbose_appends_the_last_key() -> None:
    body = chunks.with_verbose(b'{"a":1}', "p", "c")
    assert json.loads(body) == {"a": 1, "__verbose": {"prompt": "p", "content": "c"}}
    event = chunks.with_verbose(b'data: {"a":1}\n\n', "p", "c")
    assert event.startswith(b"data: ") and event.endswith(b"}\n\n")
    assert list(json.loads(event[6:])) == ["a", "__verbose"]
