"""``ModelStreamInfer`` and gRPC under hostile clients, against a real ``ovgraph serve``.

Driven by ``tritonclient.grpc`` (as Triton users do) and by its raw generated stub where the
client library hides what is checked (error responses' ids, idle streams).
"""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess, free_port

pytestmark = pytest.mark.e2e
MODEL = "qwen2vl-tiny"


def _serve(*extra: str) -> tuple[ServerProcess, str]:
    port = free_port()
    proc = ServerProcess(
        ["--port", str(port), "--grpc_bind_address", "127.0.0.1", *extra]
    ).wait_ready()
    return proc, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ServerProcess, str]]:
    proc, address = _serve()
    yield proc, address
    proc.stop()


@pytest.fixture
def client(served: tuple[ServerProcess, str]) -> Iterator[tg.InferenceServerClient]:
    c = tg.InferenceServerClient(served[1])
    yield c
    c.close()


def _chat(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 3,
        **extra,
    }


def _input(body: dict[str, Any] | bytes) -> list[tg.InferInput]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    item = tg.InferInput("input", [1], "BYTES")
    item.set_data_from_numpy(np.array([data], dtype=np.object_))
    return [item]


def _raw_request(request_id: str, body: dict[str, Any] | bytes) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    message = service_pb2.ModelInferRequest(model_name=MODEL, id=request_id)
    message.inputs.add(name="input", datatype="BYTES", shape=[1])
    message.raw_input_contents.append(len(data).to_bytes(4, "little") + data)
    return message


class _Stream:
    def __init__(self, client: tg.InferenceServerClient) -> None:
        self.items: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: self.items.put((result, error)))

    def collect(self, count: int, timeout: float = 60.0) -> list[tuple[Any, Any]]:
        return [self.items.get(timeout=timeout) for _ in range(count)]


# ------------------------------------------------------------------------- request ids


@pytest.mark.parametrize("run", range(3))  # the old code mislabelled most runs
def test_requests_in_flight_keep_their_own_ids(client: tg.InferenceServerClient, run: int) -> None:
    stream = _Stream(client)
    for i in range(4):  # back to back, no waiting for answers
        client.async_stream_infer(MODEL, _input(_chat(f"hello {i}")), request_id=f"m{i}")
    answers = stream.collect(4)
    client.stop_stream()
    assert [error for _, error in answers] == [None] * 4
    ids = sorted(result.get_response().id for result, _ in answers)
    assert ids == ["m0", "m1", "m2", "m3"]
    for result, _ in answers:
        assert json.loads(result.as_numpy("output")[0])["object"] == "chat.completion"


def _sse_text(chunks: list[bytes]) -> tuple[str, int]:
    """The content streamed in SSE ``chunks`` and how many ``[DONE]`` markers they hold."""
    text, done = "", 0
    for event in b"".join(chunks).decode().split("\n\n"):
        data = event.removeprefix("data: ").strip()
        if data == "[DONE]":
            done += 1
        elif data:
            text += json.loads(data)["choices"][0]["delta"].get("content") or ""
    return text, done


def test_streamed_chats_in_flight_on_one_stream(client: tg.InferenceServerClient) -> None:
    # Four streamed chats sent back to back with timestamps 1..4 (as a client may set them):
    # each id gets its own whole answer (the same text as a unary request with that prompt),
    # one [DONE] and its final response. The old code ran them in one graph and labelled the
    # answers by timestamp, which the streamed chats' loopbacks (one step per chunk) overtake.
    prompts = [f"hello {i}" for i in range(4)]
    expected = []
    for text in prompts:
        result = client.infer(MODEL, _input(_chat(text, max_tokens=40, ignore_eos=True)))
        expected.append(
            json.loads(result.as_numpy("output")[0])["choices"][0]["message"]["content"]
        )
    stream = _Stream(client)
    for i, text in enumerate(prompts):
        body = _chat(text, max_tokens=40, ignore_eos=True, stream=True)
        client.async_stream_infer(
            MODEL,
            _input(body),
            request_id=f"s{i}",
            enable_empty_final_response=True,
            parameters={"OVMS_MP_TIMESTAMP": i + 1},
        )
    chunks: dict[str, list[bytes]] = {f"s{i}": [] for i in range(4)}
    finals: list[str] = []
    while len(finals) < 4:
        result, error = stream.items.get(timeout=60)
        assert error is None
        response = result.get_response()
        if response.parameters["triton_final_response"].bool_param:
            assert chunks[response.id], "the final response came before the answer"
            finals.append(response.id)
        else:
            assert response.id not in finals, "an answer after its final response"
            chunks[response.id].append(result.as_numpy("output")[0])
    client.stop_stream()
    assert sorted(finals) == sorted(chunks)
    for i in range(4):
        assert _sse_text(chunks[f"s{i}"]) == (expected[i], 1)


def test_error_answers_its_request_and_the_stream_goes_on(
    served: tuple[ServerProcess, str],
) -> None:
    with grpc.insecure_channel(served[1]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        messages = [
            _raw_request("bad", {"model": MODEL, "messages": []}),
            _raw_request("good", _chat()),
            service_pb2.ModelInferRequest(  # a truncated BYTES length prefix
                model_name=MODEL,
                id="broken",
                inputs=[
                    service_pb2.ModelInferRequest.InferInputTensor(
                        name="input", datatype="BYTES", shape=[1]
                    )
                ],
                raw_input_contents=[b"\x01"],
            ),
            _raw_request("after", _chat()),
        ]
        replies = list(stub.ModelStreamInfer(iter(messages), timeout=60))
    by_id: dict[str, list[Any]] = {}
    for reply in replies:
        by_id.setdefault(reply.infer_response.id, []).append(reply)
    assert set(by_id) == {"bad", "good", "broken", "after"}
    assert "Messages array cannot be empty" in by_id["bad"][0].error_message
    assert "BYTES" in by_id["broken"][0].error_message
    for name in ("good", "after"):
        assert by_id[name][0].error_message == ""
        assert by_id[name][0].infer_response.outputs[0].name == "output"


def test_final_response_when_the_client_asks(client: tg.InferenceServerClient) -> None:
    stream = _Stream(client)
    client.async_stream_infer(
        MODEL, _input(_chat()), request_id="f1", enable_empty_final_response=True
    )
    answers = stream.collect(2)
    client.stop_stream()
    (first, e1), (last, e2) = answers
    assert e1 is None and e2 is None
    assert first.get_response().id == last.get_response().id == "f1"
    assert first.get_response().parameters["triton_final_response"].bool_param is False
    assert last.get_response().parameters["triton_final_response"].bool_param is True
    assert len(last.get_response().outputs) == 0


# ------------------------------------------------------------------------- starvation


def _idle_stream(stub: Any, stop: threading.Event) -> Any:
    def never() -> Iterator[Any]:
        stop.wait()
        return
        yield  # pragma: no cover

    return stub.ModelStreamInfer(never(), timeout=120)


def test_idle_streams_do_not_starve_unary_calls(served: tuple[ServerProcess, str]) -> None:
    stop = threading.Event()
    with grpc.insecure_channel(served[1]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        calls = [_idle_stream(stub, stop) for _ in range(40)]  # more than the 32 workers
        try:
            time.sleep(1.0)
            for _ in range(3):
                t0 = time.monotonic()
                assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live
                assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5).ready
                assert time.monotonic() - t0 < 2.0
            reply = stub.ModelInfer(_raw_request("u1", _chat()), timeout=30)
            assert reply.id == "u1"
            refused = [
                c for c in calls if c.done() and c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ]
            assert refused, "streams beyond the budget are refused at once"
        finally:
            stop.set()
            for call in calls:
                call.cancel()


def test_idle_stream_ends_after_request_timeout() -> None:
    proc, address = _serve("--request_timeout", "2")
    try:
        stop = threading.Event()
        with grpc.insecure_channel(address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            t0 = time.monotonic()
            call = _idle_stream(stub, stop)
            with pytest.raises(grpc.RpcError) as err:
                list(call)
            stop.set()
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 10
    finally:
        proc.stop()


# ------------------------------------------------------------------------- drain, cancel


def test_sigterm_drains_grpc_streams() -> None:
    proc, address = _serve("--drain_timeout", "3")
    client = tg.InferenceServerClient(address)
    try:
        streams = []
        for i in range(4):
            c = tg.InferenceServerClient(address)
            s = _Stream(c)
            if i < 2:  # these two got their answer and stay open, idle
                c.async_stream_infer(MODEL, _input(_chat()), request_id=f"idle{i}")
                assert s.items.get(timeout=30)[1] is None
            streams.append((c, s))
        for i, (c, _) in enumerate(streams[2:]):
            c.async_stream_infer(MODEL, _input(_chat(max_tokens=30)), request_id=f"d{i}")
        time.sleep(0.2)  # the last two requests in flight
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(InferenceServerException) as exc:
            client.infer(MODEL, _input(_chat()))
        assert str(exc.value.status()) == "StatusCode.UNAVAILABLE"
        assert "shutting down" in exc.value.message()
        for i, (_, s) in enumerate(streams[2:]):
            result, error = s.items.get(timeout=30)
            assert error is None, error
            assert result.get_response().id == f"d{i}"
        assert proc.proc.wait(timeout=30) == 0
        for c, _ in streams:
            c.stop_stream()
            c.close()
    finally:
        client.close()
        if proc.proc.poll() is None:
            proc.stop()
    log = proc.logs()
    assert "4 gRPC call(s)" in log  # the drain sees the open streams
    assert "Traceback" not in log
    assert "cannot schedule new futures" not in log


def test_client_cancel_is_logged_without_traceback(served: tuple[ServerProcess, str]) -> None:
    with grpc.insecure_channel(served[1]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        future = stub.ModelInfer.future(_raw_request("c1", _chat(max_tokens=200)), timeout=60)
        time.sleep(0.3)
        future.cancel()
        stream = stub.ModelStreamInfer(iter([_raw_request("c2", _chat(max_tokens=200))]))
        time.sleep(0.3)
        stream.cancel()
    time.sleep(1.0)
    log = served[0].logs()
    assert "Traceback" not in log
    assert "Unexpected server error" not in log


# ------------------------------------------------------------------------- invalid inputs


def test_shape_beyond_numpy_dims_is_invalid_argument(served: tuple[ServerProcess, str]) -> None:
    message = _raw_request("deep", _chat())
    message.inputs[0].shape[:] = [1] * 65  # numpy arrays have at most 64 dimensions
    with grpc.insecure_channel(served[1]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(message, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "65 dimensions" in err.value.details()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        # a lone surrogate in message text, in the role, in stop
        ('{"model":"M","messages":[{"role":"user","content":"a\\ud800b"}]}', "messages[0].content"),
        ('{"model":"M","messages":[{"role":"us\\udfffer","content":"x"}]}', "messages[0].role"),
        ('{"model":"M","messages":[{"role":"user","content":"x"}],"stop":["\\ud800"]}', "stop[0]"),
    ],
)
def test_lone_surrogate_in_payload_is_invalid_argument(
    client: tg.InferenceServerClient, body: str, param: str
) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.infer(MODEL, _input(body.replace("M", MODEL).encode()))
    assert str(exc.value.status()) == "StatusCode.INVALID_ARGUMENT"
    assert param in exc.value.message()


def test_invalid_utf8_string_field_is_invalid_argument(
    served: tuple[ServerProcess, str],
) -> None:
    raw = _raw_request("XX", _chat()).SerializeToString().replace(b"XX", b"\xed\xa0")
    with grpc.insecure_channel(served[1]) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as err:
            call(raw, timeout=30)
        stream = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=lambda b: b,
            response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
        )
        good = _raw_request("ok", _chat()).SerializeToString()
        replies = list(stream(iter([good, raw, good]), timeout=60))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in err.value.details()
    errors = [r.error_message for r in replies if r.error_message]
    assert len(errors) == 1 and "UTF-8" in errors[0]
    assert sum(1 for r in replies if r.infer_response.id == "ok" and not r.error_message) == 2
    assert "Traceback" not in served[0].logs()
