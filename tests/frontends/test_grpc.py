"""KServe v2 gRPC frontend driven by the real ``tritonclient.grpc`` client."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from ovgraph.framework import registry
from ovgraph.framework.calculator import Calculator, CalculatorContext, Input, Output
from ovgraph.frontends.grpc import start_grpc_server
from ovgraph.serving.kserve import InferRequest, InferResponse, Tensor
from ovgraph.serving.repository import GraphEntry, ModelRepository
from tests.conftest import ServerProcess, free_port
from tests.frontends._kserve_helpers import (
    BROKEN_GRAPH,
    VLM,
    RestServer,
    build_dummy_add,
    build_repository,
    chat_body,
    sse_text,
)

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    return build_repository(tmp_path_factory.mktemp("kserve"))


@pytest.fixture(scope="module")
def address(repository: ModelRepository) -> Iterator[str]:
    port = free_port()
    server = start_grpc_server(repository, {}, port, "127.0.0.1")
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def client(address: str) -> Iterator[tg.InferenceServerClient]:
    c = tg.InferenceServerClient(address)
    yield c
    c.close()


@pytest.fixture
def stub(address: str) -> Iterator[Any]:
    """tritonclient's own generated stub, for requests its helpers refuse to build."""
    with grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", 2**31 - 1)]
    ) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _input(name: str, array: np.ndarray, datatype: str | None = None) -> tg.InferInput:
    dt = datatype or {np.dtype(np.object_): "BYTES"}.get(array.dtype) or tg_dtype(array)
    item = tg.InferInput(name, list(array.shape), dt)
    item.set_data_from_numpy(array)
    return item


def tg_dtype(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(array.dtype))


def _add_inputs(x: np.ndarray, y: np.ndarray) -> list[tg.InferInput]:
    return [_input("in1", x), _input("in2", y)]


def _code(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status())


def _raw_request(model: str, tensors: list[tuple[str, str, list[int], bytes]]) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


F32 = np.arange(10, dtype=np.float32).reshape(1, 10)


# ------------------------------------------------------------------------- health and metadata


def test_server_live_ready_and_metadata(client: tg.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "OpenVINO Model Server"
    assert meta.version


def test_model_ready_and_metadata(client: tg.InferenceServerClient) -> None:
    assert client.is_model_ready("dummyAdd")
    assert client.is_model_ready("dummyAdd", "1")
    meta = client.get_model_metadata("dummyAdd")
    assert meta.name == "dummyAdd"
    assert list(meta.versions) == ["1"]
    assert sorted(i.name for i in meta.inputs) == ["in1", "in2"]
    assert [o.name for o in meta.outputs] == ["out"]
    assert {i.datatype for i in meta.inputs} == {"INVALID"}
    assert all(list(i.shape) == [] for i in meta.inputs)


def test_unknown_model_is_not_found(client: tg.InferenceServerClient) -> None:
    for call in (
        lambda: client.is_model_ready("nope"),
        lambda: client.get_model_metadata("nope"),
        lambda: client.infer("nope", _add_inputs(F32, F32)),
    ):
        with pytest.raises(InferenceServerException) as exc:
            call()
        assert _code(exc) == "StatusCode.NOT_FOUND"
        assert "Mediapipe graph definition with requested name is not found" in exc.value.message()


def test_model_config_is_unimplemented(client: tg.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.get_model_config("dummyAdd")
    assert _code(exc) == "StatusCode.UNIMPLEMENTED"


# ------------------------------------------------------------------------- ModelInfer


def test_dummy_add_graph_numeric(client: tg.InferenceServerClient) -> None:
    x = RNG.standard_normal((1, 10)).astype(np.float32)
    y = RNG.standard_normal((1, 10)).astype(np.float32)
    result = client.infer("dummyAdd", _add_inputs(x, y), request_id="req-7")
    out = result.as_numpy("out")
    assert out.dtype == np.float32
    assert out.shape == (1, 10)
    np.testing.assert_allclose(out, x + 1 + y, rtol=1e-6)
    response = result.get_response()
    assert response.id == "req-7"
    assert response.model_name == "dummyAdd"
    assert response.model_version == "1"
    assert response.parameters["OVMS_MP_TIMESTAMP"].int64_param > 1_600_000_000_000_000


def test_timestamp_parameter_sets_packet_timestamp(client: tg.InferenceServerClient) -> None:
    result = client.infer(
        "dummyAdd", _add_inputs(F32, F32), parameters={"OVMS_MP_TIMESTAMP": 1234}
    )
    assert result.get_response().parameters["OVMS_MP_TIMESTAMP"].int64_param == 1234
    np.testing.assert_allclose(result.as_numpy("out"), 2 * F32 + 1)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),  # FP32 2-D
        np.array([[0.5, -1.25]], dtype=np.float16),  # FP16 (raw bytes only)
        np.array([-(2**40), 7], dtype=np.int64),  # INT64
        np.array([1, 255], dtype=np.uint8),  # UINT8
        np.array([True, False, True]),  # BOOL
        np.array([2**63 + 5], dtype=np.uint64),  # UINT64
        np.array([1.0, np.pi], dtype=np.float64),  # FP64
    ],
)
def test_passthrough_every_stream_type(
    client: tg.InferenceServerClient, array: np.ndarray
) -> None:
    names = ("in", "ov_in", "py_in", "np_in")
    result = client.infer("passthrough", [_input(n, array) for n in names])
    for out in ("out", "ov_out", "py_out", "np_out"):
        got = result.as_numpy(out)
        assert got.dtype == array.dtype, out
        np.testing.assert_array_equal(got, array)


def test_passthrough_bytes(client: tg.InferenceServerClient) -> None:
    array = np.array([b"abc", b"", "zß".encode()], dtype=np.object_)
    names = ("in", "ov_in", "py_in", "np_in")
    result = client.infer("passthrough", [_input(n, array) for n in names])
    for out in ("out", "ov_out", "py_out", "np_out"):
        assert list(result.as_numpy(out)) == list(array), out


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hello", np.array([b"hello"], dtype=np.object_)),  # string_param → str side packet
        (42, np.array(42, dtype=np.int64)),  # int64_param → int side packet
        (True, np.array(True)),  # bool_param → bool side packet
    ],
)
def test_parameters_become_side_packets(
    client: tg.InferenceServerClient, value: Any, expected: np.ndarray
) -> None:
    result = client.infer(
        "sidepacket", [_input("tick", np.array([1], dtype=np.int32))],
        parameters={"value": value},
    )
    got = result.as_numpy("value_out")
    assert got.shape == expected.shape
    assert got.tolist() == expected.tolist()


def test_missing_side_packet_is_invalid_argument(client: tg.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.infer("sidepacket", [_input("tick", np.array([1], dtype=np.int32))])
    assert _code(exc) == "StatusCode.INVALID_ARGUMENT"
    assert 'Side packet "value" is required but was not provided.' in exc.value.message()


# ------------------------------------------------------------------------- bad requests


def test_model_precision_mismatch(client: tg.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.infer("dummyAdd", _add_inputs(F32.astype(np.int32), F32))
    assert _code(exc) == "StatusCode.INVALID_ARGUMENT"
    assert "Invalid input precision" in exc.value.message()


def test_model_shape_mismatch(client: tg.InferenceServerClient) -> None:
    x = np.ones((1, 5), np.float32)
    with pytest.raises(InferenceServerException) as exc:
        client.infer("dummyAdd", _add_inputs(x, x))
    assert _code(exc) == "StatusCode.INVALID_ARGUMENT"
    assert "Invalid input shape" in exc.value.message()


def test_unexpected_and_missing_inputs(client: tg.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.infer("dummyAdd", [*_add_inputs(F32, F32), _input("in3", F32)])
    assert _code(exc) == "StatusCode.INVALID_ARGUMENT"
    assert exc.value.message().endswith("in3 is unexpected")
    with pytest.raises(InferenceServerException) as exc:
        client.infer("dummyAdd", [_input("in1", F32)])
    assert _code(exc) == "StatusCode.INVALID_ARGUMENT"
    assert "Not all input packets created" in exc.value.message()


def test_bad_timestamp_parameter(client: tg.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.infer("dummyAdd", _add_inputs(F32, F32), parameters={"OVMS_MP_TIMESTAMP": "x"})
    assert _code(exc) == "StatusCode.INVALID_ARGUMENT"
    assert "Should be int64" in exc.value.message()


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FLOAT", [1, 10], F32.tobytes(), 'Invalid datatype "FLOAT"'),  # unknown datatype
        ("FP32", [1, -10], F32.tobytes(), "negative dimension"),  # negative shape
        ("FP32", [1, 11], F32.tobytes(), "needs 44 bytes, got 40"),  # shape vs content size
        ("FP32", [2**40, 2**40], F32.tobytes(), "Invalid content size"),  # huge claimed shape
        ("BYTES", [2], b"\x03\x00\x00\x00ab", "element longer than the data"),  # bad BYTES
    ],
)
def test_malformed_tensors_are_invalid_argument(
    stub: Any, client: tg.InferenceServerClient, datatype: str, shape: list[int], raw: bytes,
    message: str,
) -> None:
    request = _raw_request("dummyAdd", [("in1", datatype, shape, raw), ("in2", "FP32", [1, 10],
                                                                        F32.tobytes())])
    with pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(request)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in exc.value.details()
    # The server keeps serving.
    np.testing.assert_allclose(
        client.infer("dummyAdd", _add_inputs(F32, F32)).as_numpy("out"), 2 * F32 + 1
    )


def test_typed_contents_must_match_datatype(stub: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="dummyAdd")
    a = request.inputs.add(name="in1", datatype="FP32", shape=[1, 10])
    a.contents.int_contents.extend(range(10))  # INT32 field for an FP32 tensor
    b = request.inputs.add(name="in2", datatype="FP32", shape=[1, 10])
    b.contents.fp32_contents.extend([1.0] * 10)
    with pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(request)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "do not match its datatype FP32" in exc.value.details()
    # The typed field of the datatype works.
    del a.contents.int_contents[:]
    a.contents.fp32_contents.extend([2.0] * 10)
    response = stub.ModelInfer(request)
    out = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
    np.testing.assert_allclose(out, [4.0] * 10)


def test_oversized_message_is_resource_exhausted(client: tg.InferenceServerClient) -> None:
    big = np.zeros((1, 17 * 1024 * 1024), dtype=np.float32)  # 68 MiB > the 64 MiB limit
    with pytest.raises(InferenceServerException) as exc:
        client.infer("dummyAdd", _add_inputs(big, F32))
    assert _code(exc) == "StatusCode.RESOURCE_EXHAUSTED"
    np.testing.assert_allclose(
        client.infer("dummyAdd", _add_inputs(F32, F32)).as_numpy("out"), 2 * F32 + 1
    )


def test_graph_not_loaded_is_unavailable(tmp_path: Path) -> None:
    repository = ModelRepository({})
    repository.add(GraphEntry(name="broken", text=BROKEN_GRAPH, base_path=tmp_path))
    port = free_port()
    server = start_grpc_server(repository, {}, port, "127.0.0.1")
    try:
        c = tg.InferenceServerClient(f"127.0.0.1:{port}")
        assert c.is_server_live()
        assert not c.is_server_ready()
        assert not c.is_model_ready("broken")
        with pytest.raises(InferenceServerException) as exc:
            c.infer("broken", [_input("in", F32)])
        assert _code(exc) == "StatusCode.UNAVAILABLE"
        with pytest.raises(InferenceServerException) as exc:
            c.get_model_metadata("broken")
        assert _code(exc) == "StatusCode.UNAVAILABLE"
        c.close()
    finally:
        server.stop(0)


def test_api_key_guards_inference_only(tmp_path: Path, repository: ModelRepository) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    port = free_port()
    server = start_grpc_server(repository, {"api_key_file": str(key_file)}, port, "127.0.0.1")
    try:
        c = tg.InferenceServerClient(f"127.0.0.1:{port}")
        assert c.is_model_ready("dummyAdd")  # health and metadata stay open
        for headers in (None, {"authorization": "Bearer wrong"}):
            with pytest.raises(InferenceServerException) as exc:
                c.infer("dummyAdd", _add_inputs(F32, F32), headers=headers)
            assert _code(exc) == "StatusCode.UNAUTHENTICATED"
        result = c.infer(
            "dummyAdd", _add_inputs(F32, F32), headers={"authorization": "Bearer s3cret"}
        )
        np.testing.assert_allclose(result.as_numpy("out"), 2 * F32 + 1)
        c.close()
    finally:
        server.stop(0)


class _DoubleRequestCalculator(Calculator):
    """Test double: answers a whole KServe request with every input doubled."""

    IN = Input("REQUEST", InferRequest)
    OUT = Output("RESPONSE", InferResponse)

    def process(self, cc: CalculatorContext) -> None:
        request: InferRequest = self.IN(cc).get()
        outputs = [
            Tensor(t.name + "_x2", t.datatype, t.shape, t.data * 2) for t in request.inputs
        ]
        self.OUT(cc).send(
            InferResponse(request.model_name, outputs, id=request.id, parameters={"n": 2})
        )


_REQUEST_GRAPH = """
input_stream: "REQUEST:in"
output_stream: "RESPONSE:out"
node { calculator: "%s" input_stream: "REQUEST:in" output_stream: "RESPONSE:out" }
"""


@contextlib.contextmanager
def _request_graphs(
    tmp_path: Path, graphs: dict[str, type[Calculator]], settings: dict[str, Any] | None = None
) -> Iterator[tg.InferenceServerClient]:
    """A gRPC server with one ``REQUEST → RESPONSE`` graph per ``name: calculator`` entry."""
    repository = ModelRepository({})
    with contextlib.ExitStack() as registered:
        for name, calculator in graphs.items():
            registered.enter_context(registry.override(calculator.__name__, calculator))
            repository.add(GraphEntry(name=name, text=_REQUEST_GRAPH % calculator.__name__,
                                      base_path=tmp_path))
    port = free_port()
    server = start_grpc_server(repository, settings or {}, port, "127.0.0.1")
    client = tg.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        yield client
    finally:
        client.close()
        server.stop(0)


def test_request_response_passthrough(tmp_path: Path) -> None:
    with _request_graphs(tmp_path, {"kfspass": _DoubleRequestCalculator}) as c:
        x = np.array([1, 2, 3], np.int32)
        result = c.infer("kfspass", [_input("a", x), _input("b", 10 * x)], request_id="q")
        np.testing.assert_array_equal(result.as_numpy("a_x2"), 2 * x)
        np.testing.assert_array_equal(result.as_numpy("b_x2"), 20 * x)
        response = result.get_response()
        assert response.id == "q"
        assert response.parameters["n"].int64_param == 2


class _SilentRequestCalculator(Calculator):
    """Test double: never answers; returns once its run is cancelled (and counts that)."""

    IN = Input("REQUEST", InferRequest)
    OUT = Output("RESPONSE", InferResponse)
    started = 0
    cancelled = 0
    lock = threading.Lock()

    def process(self, cc: CalculatorContext) -> None:
        woken = threading.Event()
        cc.on_cancel(woken.set)
        with self.lock:
            type(self).started += 1
        if woken.wait(60):
            with self.lock:
                type(self).cancelled += 1


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[tg.InferenceServerClient, dict[str, Any]]]:
    """A server with one worker, one queue place and a 1.5 s deadline over a silent graph."""
    settings = {"grpc_max_threads": 1, "max_queued_requests": 1, "request_timeout": 1.5}
    graphs = {"silent": _SilentRequestCalculator, "double": _DoubleRequestCalculator}
    with _request_graphs(tmp_path, graphs, settings) as c:
        yield c, settings


def _wait_silent(field: str, count: int, timeout: float = 5.0) -> bool:
    """Wait until ``_SilentRequestCalculator.<field>`` (started / cancelled) reaches ``count``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if getattr(_SilentRequestCalculator, field) >= count:
            return True
        time.sleep(0.02)
    return False


def test_silent_graph_hits_the_server_deadline(guarded: Any) -> None:
    c, settings = guarded
    before = _SilentRequestCalculator.cancelled
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as exc:
        c.infer("silent", [_input("a", np.array([1], np.int32))])
    elapsed = time.monotonic() - started
    assert _code(exc) == "StatusCode.DEADLINE_EXCEEDED"
    assert "no output within 1.5 seconds" in exc.value.message()
    assert settings["request_timeout"] - 0.1 <= elapsed < settings["request_timeout"] + 5
    assert _wait_silent("cancelled", before + 1)


def test_client_deadline_cancels_the_run(guarded: Any) -> None:
    c, _ = guarded
    before = _SilentRequestCalculator.cancelled
    with pytest.raises(InferenceServerException) as exc:
        c.infer("silent", [_input("a", np.array([1], np.int32))], client_timeout=0.3)
    assert _code(exc) == "StatusCode.DEADLINE_EXCEEDED"
    # The run is cancelled when the client's deadline passes, not at the server's 1.5 s.
    assert _wait_silent("cancelled", before + 1, timeout=1.0)


def test_calls_beyond_workers_and_queue_are_resource_exhausted(guarded: Any) -> None:
    c, _ = guarded
    x = np.array([1, 2], np.int32)
    results: queue.Queue[Any] = queue.Queue()
    started = _SilentRequestCalculator.started
    for _ in range(2):  # one running, one queued
        c.async_infer("silent", [_input("a", x)], lambda result, error: results.put(error))
    assert _wait_silent("started", started + 1)
    time.sleep(0.3)  # the second call reaches the server's queue
    with pytest.raises(InferenceServerException) as exc:
        c.infer("double", [_input("a", x)])
    assert _code(exc) == "StatusCode.RESOURCE_EXHAUSTED"
    # Both silent calls end at the deadline; then the server answers again.
    errors = [results.get(timeout=10) for _ in range(2)]
    assert all("DEADLINE_EXCEEDED" in str(e.status()) for e in errors)
    np.testing.assert_array_equal(c.infer("double", [_input("a", x)]).as_numpy("a_x2"), 2 * x)


# ------------------------------------------------------------------------- ModelStreamInfer


class _Stream:
    """Collect ``(result, error)`` callbacks of one tritonclient stream."""

    def __init__(self, client: tg.InferenceServerClient) -> None:
        self.items: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: self.items.put((result, error)))

    def next(self, timeout: float = 60.0) -> tuple[Any, Any]:
        return self.items.get(timeout=timeout)


def test_stream_on_tensor_graph_answers_each_request(client: tg.InferenceServerClient) -> None:
    stream = _Stream(client)
    stamps = []
    for i in range(3):
        x = np.full((1, 10), i, np.float32)
        client.async_stream_infer("dummyAdd", _add_inputs(x, x), request_id=f"r{i}")
        result, error = stream.next()
        assert error is None
        np.testing.assert_allclose(result.as_numpy("out"), 2 * x + 1)
        assert result.get_response().id == f"r{i}"
        stamps.append(result.get_response().parameters["OVMS_MP_TIMESTAMP"].int64_param)
    client.stop_stream()
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 3


def test_stream_timestamps_must_increase(client: tg.InferenceServerClient) -> None:
    stream = _Stream(client)
    client.async_stream_infer(
        "dummyAdd", _add_inputs(F32, F32), parameters={"OVMS_MP_TIMESTAMP": 10}
    )
    result, error = stream.next()
    assert error is None
    assert result.get_response().parameters["OVMS_MP_TIMESTAMP"].int64_param == 10
    client.async_stream_infer(
        "dummyAdd", _add_inputs(F32, F32), parameters={"OVMS_MP_TIMESTAMP": 10}
    )
    result, error = stream.next()
    assert result is None
    assert "Packet timestamp mismatch" in error.message()
    client.stop_stream()


def test_stream_unknown_model_is_not_found(client: tg.InferenceServerClient) -> None:
    stream = _Stream(client)
    client.async_stream_infer("nope", _add_inputs(F32, F32))
    result, error = stream.next()
    assert result is None
    assert str(error.status()) == "StatusCode.NOT_FOUND"
    client.stop_stream()


def _vlm_input(body: dict[str, Any]) -> list[tg.InferInput]:
    return [_input("input", np.array([json.dumps(body).encode()], dtype=np.object_))]


def test_vlm_stream_matches_rest_unary(
    client: tg.InferenceServerClient, repository: ModelRepository
) -> None:
    rest = RestServer(repository)
    try:
        status, unary = rest.request("POST", "/v3/chat/completions", chat_body(stream=False))
    finally:
        rest.stop()
    assert status == 200
    expected = unary["choices"][0]["message"]["content"]
    assert expected

    stream = _Stream(client)
    client.async_stream_infer(VLM, _vlm_input(chat_body(stream=True)), request_id="chat-1")
    chunks: list[bytes] = []
    while not chunks or not chunks[-1].endswith(b"data: [DONE]\n\n"):
        result, error = stream.next()
        assert error is None, error
        assert result.get_response().id == "chat-1"
        (chunk,) = result.as_numpy("output").tolist()
        chunks.append(chunk)
    client.stop_stream()
    # One response per output packet, each a whole number of SSE events.
    assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") for c in chunks)
    assert sse_text(chunks) == expected


def test_vlm_unary_infer_returns_the_json_body(client: tg.InferenceServerClient) -> None:
    result = client.infer(VLM, _vlm_input(chat_body(stream=False, max_tokens=4)))
    (body,) = result.as_numpy("output").tolist()
    answer = json.loads(body)
    assert answer["object"] == "chat.completion"
    assert answer["usage"]["completion_tokens"] == 4


def test_vlm_stream_request_error_arrives_in_stream(client: tg.InferenceServerClient) -> None:
    stream = _Stream(client)
    client.async_stream_infer(VLM, _vlm_input(chat_body(stream=True, max_tokens=-3)))
    result, error = stream.next()
    assert result is None
    assert "max_tokens" in error.message()
    client.stop_stream()
    # A fresh stream on the same server works.
    stream = _Stream(client)
    client.async_stream_infer(VLM, _vlm_input(chat_body(stream=True, max_tokens=2)))
    chunks = []
    while not chunks or not chunks[-1].endswith(b"data: [DONE]\n\n"):
        result, error = stream.next()
        assert error is None
        chunks.extend(result.as_numpy("output").tolist())
    client.stop_stream()
    assert sse_text(chunks)


def test_vlm_stream_cancelled_by_client(client: tg.InferenceServerClient) -> None:
    stream = _Stream(client)
    client.async_stream_infer(VLM, _vlm_input(chat_body(stream=True, max_tokens=1000)))
    result, error = stream.next()
    assert error is None
    started = time.monotonic()
    client.stop_stream(cancel_requests=True)
    assert time.monotonic() - started < 10
    # The server keeps serving both graphs.
    np.testing.assert_allclose(
        client.infer("dummyAdd", _add_inputs(F32, F32)).as_numpy("out"), 2 * F32 + 1
    )
    result = client.infer(VLM, _vlm_input(chat_body(stream=False, max_tokens=3)))
    assert json.loads(result.as_numpy("output")[0])["usage"]["completion_tokens"] == 3


def test_vlm_payload_must_be_one_json_bytes_element(client: tg.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.infer(VLM, [_input("input", np.array([b"{not json"], dtype=np.object_))])
    assert _code(exc) == "StatusCode.INVALID_ARGUMENT"
    assert "Cannot parse JSON body" in exc.value.message()
    with pytest.raises(InferenceServerException) as exc:
        client.infer(VLM, [_input("input", np.zeros(2, np.float32))])
    assert _code(exc) == "StatusCode.INVALID_ARGUMENT"


# ------------------------------------------------------------------------- the real server


def test_ovgraph_serve_grpc_port(tmp_path: Path) -> None:
    graph_dir = build_dummy_add(tmp_path / "dummyAdd")
    grpc_port = free_port()
    proc = ServerProcess([
        "--model_path", str(graph_dir), "--model_name", "dummyAdd",
        "--port", str(grpc_port), "--grpc_bind_address", "127.0.0.1",
    ])
    try:
        proc.wait_ready()
        c = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert c.is_server_ready()
        assert c.is_model_ready("dummyAdd")
        x = RNG.standard_normal((1, 10)).astype(np.float32)
        result = c.infer("dummyAdd", _add_inputs(x, 3 * x))
        np.testing.assert_allclose(result.as_numpy("out"), 4 * x + 1, rtol=1e-6)
        with pytest.raises(InferenceServerException) as exc:
            c.infer("dummyAdd", _add_inputs(x.astype(np.float64), x))
        assert _code(exc) == "StatusCode.INVALID_ARGUMENT"
        c.close()
    finally:
        assert proc.stop() == 0, proc.logs()
