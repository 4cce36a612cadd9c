"""OVMS's metric families beside ovgraph's, ``--metrics_list``, and gRPC calls counted.

Through a real ``ovgraph serve`` (``--metrics_enable``): a pass-through graph answers KServe
gRPC ``ModelInfer`` (tritonclient) and the tiny VLM answers OpenAI REST (unary and streamed);
``/metrics`` must carry OVMS's names and labels (``docs/metrics.md``) and ovgraph's own.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg

from tests.conftest import TINY_MODEL, ServerProcess, free_port
from tests.e2e._reliability import metric_samples

pytestmark = pytest.mark.e2e

PASSTHROUGH = """
input_stream: "in"
output_stream: "out"
node { calculator: "PassThroughCalculator" input_stream: "in" output_stream: "out" }
"""


def _graph(tmp_path: Path) -> Path:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "graph.pbtxt").write_text(PASSTHROUGH)
    return folder


@pytest.fixture
def grpc_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    port = free_port()
    server = ServerProcess(["--model_path", str(_graph(tmp_path)), "--model_name", "echo",
                            "--port", str(port), "--metrics_enable"])
    try:
        server.wait_ready()
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop()


def _infer(address: str, model: str) -> None:
    array = np.arange(4, dtype=np.float32)
    tensor = tg.InferInput("in", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    client = tg.InferenceServerClient(address)
    try:
        result = client.infer(model, [tensor])
        np.testing.assert_array_equal(result.as_numpy("out"), array)
    finally:
        client.close()


def test_grpc_calls_are_counted(grpc_server: tuple[ServerProcess, str]) -> None:
    server, address = grpc_server
    for _ in range(3):
        _infer(address, "echo")
    samples = metric_samples(server.url)
    assert samples['ovgraph_requests_total{endpoint="grpc:ModelInfer",status="OK"}'] == 3
    labels = 'api="KServe",interface="gRPC",method="ModelInfer",name="echo"'
    assert samples[f"ovms_requests_success{{{labels}}}"] == 3
    assert samples[f"ovms_requests_accepted{{{labels}}}"] == 3
    assert samples[f"ovms_responses{{{labels}}}"] == 3
    assert samples['ovms_graph_processing_time_us_count{method="ModelInfer",name="echo"}'] == 3
    assert samples['ovms_request_time_us_count{interface="gRPC",name="echo"}'] == 3
    assert samples['ovms_current_graphs{name="echo"}'] == 0
    assert samples['ovms_current_requests{name="echo"}'] == 0
    # OVMS writes its counters without the ``_total`` suffix
    assert not any(key.startswith("ovms_requests_success_total") for key in samples)


def test_openai_requests_by_method_and_outcome() -> None:
    model = "vlm"
    server = ServerProcess(["--model_path", str(TINY_MODEL), "--model_name", model,
                            "--metrics_enable"])
    try:
        server.wait_ready()
        chat = {"model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}
        status, _ = server.post("/v3/chat/completions", chat)
        assert status == 200
        request = urllib.request.Request(
            server.url + "/v3/chat/completions", data=json.dumps({**chat, "stream": True}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.read().rstrip().endswith(b"data: [DONE]")
        status, _ = server.post("/v3/chat/completions", {"model": model, "messages": 5})
        assert status == 400
        samples = metric_samples(server.url)
        unary = f'api="V3",interface="REST",method="Unary",name="{model}"'
        stream = f'api="V3",interface="REST",method="Stream",name="{model}"'
        assert samples[f"ovms_requests_success{{{unary}}}"] == 1
        assert samples[f"ovms_requests_success{{{stream}}}"] == 1
        assert samples[f"ovms_responses{{{stream}}}"] >= 2
        assert samples[f"ovms_requests_fail{{{unary}}}"] == 1
        assert samples[f"ovms_graph_error{{{unary}}}"] == 1
        processed = f'ovms_graph_processing_time_us_count{{method="Stream",name="{model}"}}'
        assert samples[processed] == 1
        # the engine's own figures, asked of the engine process at scrape time
        usage = f'ovgraph_llm_kv_cache_usage_perc{{servable="{TINY_MODEL.name}"}}'
        assert 0.0 <= samples[usage] <= 1
        assert samples['ovgraph_requests_total{endpoint="/v3/chat/completions",status="200"}'] == 2
    finally:
        server.stop()


def test_metrics_list_picks_families(tmp_path: Path) -> None:
    server = ServerProcess(["--model_path", str(_graph(tmp_path)), "--model_name", "echo",
                            "--metrics_enable", "--metrics_list",
                            "ovms_requests_success,ovgraph_requests_total"])
    try:
        server.wait_ready()
        status, raw = server.get("/metrics")
        assert status == 200
        families = {line.split()[2] for line in raw.decode().splitlines()
                    if line.startswith("# TYPE")}
        assert families == {"ovms_requests_success", "ovgraph_requests_total"}
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # OVMS: an unknown family fails the start
        (["--metrics_enable", "--metrics_list", "ovms_streams"],
         "Metrics family name not supported: ovms_streams"),
        # OVMS: a list without --metrics_enable is an error
        (["--metrics_list", "ovms_requests_success"], "metrics_enable setting is missing"),
    ],
)
def test_bad_metrics_list_stops_the_server(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    server = ServerProcess(["--model_path", str(_graph(tmp_path)), "--model_name", "echo",
                            *flags])
    try:
        with pytest.raises(RuntimeError, match=message):
            server.wait_ready(60)
    finally:
        server.stop()
