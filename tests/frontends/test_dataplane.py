"""One data plane for every frontend: the same policy on OpenAI REST, KServe REST and gRPC.

Each test here names a defect of the frontends that ran requests their own way (KServe REST
without admission or deadline, gRPC without admission, ``"stream": null`` judged differently on
``/v3`` and ``/v2``, a lone surrogate in an input name answered with 500).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.utils import InferenceServerException

from ovgraph.errors import InvalidParameterError, RequestError
from ovgraph.framework import registry
from ovgraph.framework.calculator import Calculator, CalculatorContext, Input, Output
from ovgraph.frontends.errors import KSERVE, OPENAI, to_grpc, to_http
from ovgraph.frontends.grpc import start_grpc_server
from ovgraph.frontends.rest.protection import ServerState
from ovgraph.serving.dataplane import DataPlane
from ovgraph.serving.repository import GraphEntry, ModelRepository
from tests.conftest import TINY_MODEL, free_port
from tests.frontends._kserve_helpers import VLM, RestServer, chat_body

GATE_GRAPH = """
input_stream: "in"
output_stream: "out"
node { calculator: "GateCalculator" input_stream: "IN:in" output_stream: "OUT:out" }
"""


class _OneAtATime:
    """Node resources that bound the servable to one run at a time (as an LLM engine does)."""

    max_concurrent_runs = 1


class GateCalculator(Calculator):
    """Test double: holds every packet until ``gate`` opens (or the run is cancelled)."""

    IN = Input("IN", object)
    OUT = Output("OUT", object)
    gate = threading.Event()
    entered = threading.Event()

    @classmethod
    def create_node_resources(cls, spec: Any, settings: Any) -> Any:
        return _OneAtATime()

    def process(self, cc: CalculatorContext) -> None:
        type(self).entered.set()
        woken = threading.Event()
        cc.on_cancel(woken.set)
        while not type(self).gate.is_set() and not woken.is_set():
            woken.wait(0.02)
        self.OUT(cc).send(self.IN(cc).get())


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[ModelRepository]:
    GateCalculator.gate.clear()
    GateCalculator.entered.clear()
    with registry.override("GateCalculator", GateCalculator):
        repository = ModelRepository()
        repository.add(GraphEntry(name="gate", text=GATE_GRAPH, base_path=tmp_path))
        assert repository.get("gate").available, repository.get("gate").error
        yield repository
        GateCalculator.gate.set()


def _gate_body() -> dict[str, Any]:
    return {"inputs": [{"name": "in", "datatype": "FP32", "shape": [1], "data": [1.0]}]}


def _background(fn: Any) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------------- KServe REST policy


def test_kserve_rest_admission_queue_full_is_503(gated: ModelRepository) -> None:
    plane = DataPlane(gated, max_queued=0)
    server = RestServer(gated, ServerState(plane))
    try:
        first = _background(lambda: server.request("POST", "/v2/models/gate/infer", _gate_body()))
        assert GateCalculator.entered.wait(10)
        status, body = server.request("POST", "/v2/models/gate/infer", _gate_body(), timeout=5)
        assert status == 503, body
        assert "queue is full" in body["error"]
        GateCalculator.gate.set()
        first.join(10)
        status, body = server.request("POST", "/v2/models/gate/infer", _gate_body())
        assert status == 200, body
    finally:
        GateCalculator.gate.set()
        server.stop()


def test_kserve_rest_deadline_is_504(gated: ModelRepository) -> None:
    server = RestServer(gated, ServerState(DataPlane(gated, request_timeout=0.5)))
    try:
        started = time.monotonic()
        status, body = server.request("POST", "/v2/models/gate/infer", _gate_body(), timeout=10)
        assert status == 504, body
        assert "no output within 0.5 seconds" in body["error"]
        assert time.monotonic() - started < 5
    finally:
        server.stop()


# ------------------------------------------------------------------------- gRPC policy


def test_grpc_admission_queue_full_is_resource_exhausted(gated: ModelRepository) -> None:
    port = free_port()
    server = start_grpc_server(gated, {"max_queued_requests": 0}, port, "127.0.0.1")
    client = tg.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        x = np.ones([1], dtype=np.float32)
        item = tg.InferInput("in", [1], "FP32")
        item.set_data_from_numpy(x)
        first = _background(lambda: client.infer("gate", [item]))
        assert GateCalculator.entered.wait(10)
        with pytest.raises(InferenceServerException) as exc:
            client.infer("gate", [item], client_timeout=5)
        assert str(exc.value.status()) == "StatusCode.RESOURCE_EXHAUSTED"
        assert "queue is full" in exc.value.message()
        GateCalculator.gate.set()
        first.join(10)
        result = client.infer("gate", [item])
        np.testing.assert_array_equal(result.as_numpy("out"), x)
    finally:
        GateCalculator.gate.set()
        client.close()
        server.stop(0)


def test_grpc_stream_admission_queue_full(gated: ModelRepository) -> None:
    port = free_port()
    server = start_grpc_server(gated, {"max_queued_requests": 0}, port, "127.0.0.1")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            from tritonclient.grpc import service_pb2, service_pb2_grpc

            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = service_pb2.ModelInferRequest(model_name="gate")
            request.inputs.add(name="in", datatype="FP32", shape=[1])
            request.raw_input_contents.append(np.ones([1], np.float32).tobytes())
            first = stub.ModelInfer.future(request)
            assert GateCalculator.entered.wait(10)
            with pytest.raises(grpc.RpcError) as exc:
                list(stub.ModelStreamInfer(iter([request]), timeout=5))
            assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            GateCalculator.gate.set()
            first.result(timeout=10)
    finally:
        GateCalculator.gate.set()
        server.stop(0)


def test_grpc_deadline_exceeded(gated: ModelRepository) -> None:
    port = free_port()
    server = start_grpc_server(gated, {"request_timeout": 0.5}, port, "127.0.0.1")
    client = tg.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        item = tg.InferInput("in", [1], "FP32")
        item.set_data_from_numpy(np.ones([1], dtype=np.float32))
        with pytest.raises(InferenceServerException) as exc:
            client.infer("gate", [item], client_timeout=10)
        assert str(exc.value.status()) == "StatusCode.DEADLINE_EXCEEDED"
    finally:
        client.close()
        server.stop(0)


# ------------------------------------------------------------------------- errors, stream


@pytest.fixture(scope="module")
def vlm_rest() -> Iterator[RestServer]:
    repository = ModelRepository()
    repository.add(GraphEntry(name=VLM, graph_path=TINY_MODEL / "graph.pbtxt",
                              base_path=TINY_MODEL))
    server = RestServer(repository)
    yield server
    server.stop()


def test_surrogate_input_name_is_a_clean_400(vlm_rest: RestServer) -> None:
    # A JSON escape of a lone surrogate decodes to a str that UTF-8 cannot encode.
    raw = b'{"inputs": [{"name": "bad\\ud800", "datatype": "FP32", "shape": [1], "data": [1]}]}'
    status, body = vlm_rest.request("POST", f"/v2/models/{VLM}/infer", raw)
    assert status == 400, body
    assert "inputs[0].name" in body["error"]  # the place is named, the text is not echoed
    assert "lone surrogate" in body["error"]


@pytest.mark.parametrize("shape", [OPENAI, KSERVE])
def test_every_encoder_takes_any_text(shape: str) -> None:
    status, body = to_http(InvalidParameterError("bad\ud800 name", param="x\udc80"), shape)
    assert status == 400
    text = json.loads(body)
    message = text["error"] if shape == KSERVE else text["error"]["message"]
    assert message == "bad? name"
    code, grpc_message = to_grpc(RequestError("bad\ud800"))
    assert (code, grpc_message) == (grpc.StatusCode.INVALID_ARGUMENT, "bad?")


def _kserve_chat(body: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(body)
    return {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": [text]}]}


@pytest.mark.parametrize(
    "stream",
    [
        None,  # null: OVMS's HTTP rule says "stream field is not a boolean"
        "yes",  # a string
    ],
)
def test_stream_not_boolean_judged_once(vlm_rest: RestServer, stream: Any) -> None:
    body = chat_body(stream=False) | {"stream": stream}
    status_v3, answer_v3 = vlm_rest.request("POST", "/v3/chat/completions", body)
    status_v2, answer_v2 = vlm_rest.request("POST", f"/v2/models/{VLM}/infer", _kserve_chat(body))
    assert (status_v3, status_v2) == (400, 400), (answer_v3, answer_v2)
    assert answer_v3["error"]["message"] == "stream field is not a boolean"
    assert answer_v2["error"] == "stream field is not a boolean"


def test_streamed_answer_framed_by_its_type(vlm_rest: RestServer) -> None:
    import urllib.request

    data = json.dumps(chat_body(stream=True, max_tokens=3)).encode()
    req = urllib.request.Request(
        vlm_rest.url + "/v3/chat/completions", data=data,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        raw = response.read()
    assert raw.endswith(b"data: [DONE]\n\n")


# ------------------------------------------------------------------------- binary extension


def test_binary_tensor_extension_refused_by_name(vlm_rest: RestServer) -> None:
    status, body = vlm_rest.request(
        "POST", f"/v2/models/{VLM}/infer", b'{"inputs": []}' + b"\x00\x01",
        headers={"Inference-Header-Content-Length": "14"},
    )
    assert status == 400
    assert "Inference-Header-Content-Length" in body["error"]


def test_tritonclient_http(tmp_path: Path) -> None:
    """The real ``tritonclient.http`` client: JSON tensors work; its errors read cleanly."""
    try:
        import tritonclient.http as th
    except (ImportError, RuntimeError):  # tritonclient without its http extra raises RuntimeError
        pytest.skip("tritonclient[http] is not installed")
    from tests.frontends._kserve_helpers import build_repository

    repository = build_repository(tmp_path, with_vlm=False)
    server = RestServer(repository)
    client = th.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("dummyAdd")
        x = np.arange(10, dtype=np.float32).reshape(1, 10)
        inputs = []
        for name in ("in1", "in2"):
            item = th.InferInput(name, [1, 10], "FP32")
            item.set_data_from_numpy(x, binary_data=False)
            inputs.append(item)
        output = th.InferRequestedOutput("out", binary_data=False)
        result = client.infer("dummyAdd", inputs, outputs=[output])
        np.testing.assert_allclose(result.as_numpy("out"), 2 * x + 1)
        with pytest.raises(th.InferenceServerException) as exc:
            client.infer("nope", inputs)
        assert "Mediapipe graph definition with requested name is not found" in str(exc.value)
        for item in inputs:
            item.set_data_from_numpy(x, binary_data=True)
        with pytest.raises(th.InferenceServerException) as exc:
            client.infer("dummyAdd", inputs)
        assert "binary tensor data extension" in str(exc.value)
        assert "Inference-Header-Content-Length" in str(exc.value)
    finally:
        with contextlib.suppress(Exception):
            client.close()
        server.stop()
