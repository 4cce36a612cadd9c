"""Request limits over real HTTP: body size, JSON shape and depth, field types, fan-out, context.

Every negative test is followed by a healthy request (autouse fixture): the server must keep
serving after each of them.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess
from tests.e2e._reliability import (
    MODEL,
    assert_clean,
    chat,
    raw_http,
    read_response,
    request,
    split_response,
)

pytestmark = pytest.mark.e2e
LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerProcess]:
    proc = ServerProcess(["--max_body_size", str(LIMIT)]).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def healthy_after(limited: ServerProcess) -> Iterator[None]:
    yield
    status, answer = limited.post("/v3/chat/completions", chat(max_tokens=2))
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] == 2


def _padded(size: int) -> bytes:
    """A valid chat body of exactly ``size`` bytes (padding in an ignored field)."""
    body = chat(max_tokens=2, pad="")
    base = len(json.dumps(body).encode())
    body["pad"] = "x" * (size - base)
    data = json.dumps(body).encode()
    assert len(data) == size
    return data


def _error(raw: bytes) -> dict:
    assert_clean(raw)
    return json.loads(raw)["error"]


# --------------------------------------------------------------------------- body size


def test_body_over_limit_413(limited: ServerProcess) -> None:
    status, _, raw = request(limited.url + "/v3/chat/completions", _padded(2 * LIMIT))
    assert status == 413
    error = _error(raw)
    assert error["code"] == "content_too_large"
    assert error["type"] == "invalid_request_error"
    assert str(LIMIT) in error["message"]


def test_chunked_body_over_limit_413(limited: ServerProcess) -> None:
    data = _padded(2 * LIMIT)
    head = (
        f"POST /v3/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{limited.port}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", limited.port), timeout=30) as sock:
        sock.sendall(head)
        for i in range(0, len(data), 65536):
            piece = data[i:i + 65536]
            sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        status, _, body = split_response(read_response(sock))
    assert status == 413
    assert _error(body)["code"] == "content_too_large"


def test_chunked_body_under_limit_ok(limited: ServerProcess) -> None:
    data = json.dumps(chat(max_tokens=2)).encode()
    head = (
        b"POST /v3/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunks = b"".join(b"%x\r\n" % len(data[i:i + 7]) + data[i:i + 7] + b"\r\n"
                      for i in range(0, len(data), 7))
    status, _, body = split_response(raw_http(limited.port, head + chunks + b"0\r\n\r\n"))
    assert status == 200
    assert json.loads(body)["usage"]["completion_tokens"] == 2


def test_huge_declared_body_answered_before_upload(limited: ServerProcess) -> None:
    head = (
        f"POST /v3/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 * LIMIT * 1024}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    status, _, body = split_response(raw_http(limited.port, head, timeout=10))
    assert status == 413
    assert _error(body)["code"] == "content_too_large"


def test_body_at_limit_ok(limited: ServerProcess) -> None:
    status, _, raw = request(limited.url + "/v3/chat/completions", _padded(LIMIT))
    assert status == 200, raw[:300]
    assert json.loads(raw)["usage"]["completion_tokens"] == 2


def test_bad_content_length_400(limited: ServerProcess) -> None:
    raw = raw_http(
        limited.port,
        b"POST /v3/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    )
    assert split_response(raw)[0] == 400


def test_huge_header_rejected(limited: ServerProcess) -> None:
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    try:
        raw = raw_http(limited.port, head, timeout=10)
    except (ConnectionResetError, BrokenPipeError):
        raw = b""
    assert not raw or split_response(raw)[0] in (400, 431)


# --------------------------------------------------------------------------- JSON shape


@pytest.mark.parametrize("raw", [b'"x"', b"[]", b"42", b"null", b"{not json", b"\xff\xfe"])
def test_non_object_or_malformed_400(limited: ServerProcess, raw: bytes) -> None:
    status, _, body = request(limited.url + "/v3/chat/completions", raw)
    assert status == 400
    assert _error(body)["type"] == "invalid_request_error"


def _nested(depth: int) -> bytes:
    """A chat body whose total JSON nesting depth is ``depth`` (the body object counts 1)."""
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    body = json.dumps(chat(max_tokens=2)).encode()
    return body[:-1] + b', "metadata_nest": ' + inner.encode() + b"}"


@pytest.mark.parametrize(("depth", "status"), [(50, 200), (100, 200), (101, 400), (100_000, 400)])
def test_json_depth(limited: ServerProcess, depth: int, status: int) -> None:
    got, _, body = request(limited.url + "/v3/chat/completions", _nested(depth))
    assert got == status, body[:300]
    if status == 400:
        assert _error(body)["message"] == "JSON body exceeds maximum nesting depth"


# --------------------------------------------------------------------------- fields


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"n": "2"}, "n"),
        ({"stop": 5}, "stop"),
        ({"seed": -1}, "seed"),
        ({"logprobs": "x"}, "logprobs"),
        ({"messages": "x"}, "messages"),
        ({"messages": [{"role": 5, "content": "x"}]}, "messages"),
    ],
)
def test_wrong_type_400_with_param(limited: ServerProcess, extra: dict, param: str) -> None:
    status, _, body = request(limited.url + "/v3/chat/completions", {**chat(), **extra})
    assert status == 400
    error = _error(body)
    assert error["param"].split("[")[0].split(".")[0] == param
    assert error["type"] == "invalid_request_error"


def test_stream_not_boolean_400(limited: ServerProcess) -> None:
    status, _, body = request(limited.url + "/v3/chat/completions", chat(stream="yes"))
    assert status == 400
    assert _error(body)["message"] == "stream field is not a boolean"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 1000}, "n"),
        ({"best_of": 100}, "best_of"),
        ({"stop": ["s"] * 100}, "stop"),
        ({"stop": ["s" * 5000]}, "stop"),
    ],
)
def test_fan_out_caps_400(limited: ServerProcess, extra: dict, param: str) -> None:
    status, _, body = request(limited.url + "/v3/chat/completions", {**chat(), **extra})
    assert status == 400
    assert _error(body)["param"] == param


def test_too_many_images_400(limited: ServerProcess) -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    status, _, body = request(limited.url + "/v3/chat/completions", chat([part] * 17))
    assert status == 400
    assert "exceeds the limit of 16" in _error(body)["message"]


def test_prompt_over_context_400(limited: ServerProcess) -> None:
    status, _, body = request(limited.url + "/v3/chat/completions", chat("ab " * 40_000))
    assert status == 400
    error = _error(body)
    assert error["code"] == "context_length_exceeded"
    assert "32768" in error["message"]


def test_prompt_plus_max_tokens_over_context_400(limited: ServerProcess) -> None:
    status, _, body = request(limited.url + "/v3/chat/completions", chat(max_tokens=40_000))
    assert status == 400
    error = _error(body)
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "max_tokens"
    assert "40000" in error["message"]
    assert "32768" in error["message"]


# --------------------------------------------------------------------------- leakage


def test_error_body_bounded_for_many_bad_parts(limited: ServerProcess) -> None:
    parts = [{"type": "bogus", "text": "y" * 100}] * 1000
    status, _, body = request(limited.url + "/v3/chat/completions", chat(parts))
    assert status == 400
    assert len(body) < 4096
    _error(body)


@pytest.mark.parametrize("field", ["temperature", "model", "top_p", "stop"])
def test_input_never_echoed(limited: ServerProcess, field: str) -> None:
    secret = "SECRET-" + "z" * 5000
    value: object = [secret, 5] if field == "stop" else secret
    status, _, body = request(limited.url + "/v3/chat/completions", {**chat(), field: value})
    assert status in (400, 404)
    assert b"SECRET" not in body
    _error(body)


def test_unknown_route_and_method_clean(limited: ServerProcess) -> None:
    for method, path in (("GET", "/v3/chat/completions"), ("POST", "/nope"),
                         ("DELETE", "/v1/config")):
        status, _, body = request(limited.url + path, b"{}" if method == "POST" else None,
                                  method=method)
        assert status in (400, 404, 405), (method, path, status)
        assert_clean(body)


def test_unknown_model_has_model_name_not_echoed(limited: ServerProcess) -> None:
    status, _, body = request(limited.url + "/v3/chat/completions", {**chat(), "model": "nope"})
    assert status == 404
    assert json.loads(body)["error"]["code"] == "model_not_found"
    assert MODEL not in body.decode()
