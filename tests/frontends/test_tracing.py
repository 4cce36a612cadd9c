"""Request traces: one span per request, one child per node process(), traceparent honoured
on REST (OpenAI and KServe) and gRPC. Spans go to the SDK's in-memory exporter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from ovgraph import tracing
from ovgraph.frontends.grpc import start_grpc_server
from ovgraph.serving.repository import GraphEntry, ModelRepository
from tests.conftest import REPO, free_port
from tests.frontends._graph_server import AppServer

SHAPES = REPO / "graphs" / "qwen2vl-shapes"
DEFAULT = "qwen2vl-shapes"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
TWO_NODES = """
input_stream: "in"
output_stream: "out"
node { name: "first" calculator: "PassThroughCalculator" input_stream: "in" output_stream: "mid" }
node { name: "second" calculator: "PassThroughCalculator" input_stream: "mid" output_stream: "out" }
"""
GENERATION_NODES = [
    f"llmexecutor__{n}"
    for n in ("request", "images", "template", "generation", "detokenizer", "response")
]


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.configure(provider)
    yield memory
    tracing.configure(None)
    provider.shutdown()


@pytest.fixture(scope="module")
def repository() -> Iterator[ModelRepository]:
    repo = ModelRepository({})
    repo.add(GraphEntry(name=DEFAULT, graph_path=SHAPES / "graph.pbtxt", base_path=SHAPES))
    repo.add(GraphEntry(name="two", text=TWO_NODES, base_path=Path.cwd()))
    for definition in repo.definitions():
        assert definition.available, definition.error
    yield repo
    for definition in repo.definitions():
        definition.unload()


@pytest.fixture(scope="module")
def server(repository: ModelRepository, exporter: InMemorySpanExporter) -> Iterator[AppServer]:
    app = AppServer(repository)
    yield app
    app.stop()


def _request_span(exporter: InMemorySpanExporter, graph: str, timeout: float = 10.0) -> Any:
    """The request span of the one run of ``graph`` since the exporter was cleared."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = [s for s in exporter.get_finished_spans() if s.name == f"run {graph}"]
        if spans:
            assert len(spans) == 1
            return spans[0]
        time.sleep(0.05)
    raise AssertionError(f"no request span for {graph}")


def _children(exporter: InMemorySpanExporter, parent: Any) -> list[Any]:
    return [
        s for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def _chat_body() -> dict[str, Any]:
    return {"model": DEFAULT, "max_completion_tokens": 4,
            "messages": [{"role": "user", "content": "What shape is in the picture?"}]}


def test_a_chat_request_is_one_span_with_a_child_per_node(
    server: AppServer, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    status, _ = server.json("POST", "/v3/chat/completions", _chat_body(),
                            headers={"traceparent": TRACEPARENT})
    assert status == 200
    request = _request_span(exporter, DEFAULT)
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert request.parent is not None
    assert format(request.parent.span_id, "016x") == PARENT_ID
    assert request.attributes["ovgraph.graph"] == DEFAULT
    children = _children(exporter, request)
    # Unary: a process() call per node, each a child of the request span (the response node,
    # with its immediate input handler, may also be called for a timestamp bound update).
    names = [s.name for s in children]
    assert set(names) == set(GENERATION_NODES)
    assert all(names.count(n) == 1 for n in GENERATION_NODES if n != "llmexecutor__response")
    for span in children:
        assert span.context.trace_id == request.context.trace_id
        assert span.attributes["ovgraph.run_id"] == request.attributes["ovgraph.run_id"]
        assert span.attributes["thread.name"].startswith("ovgraph")
        assert span.start_time >= request.start_time
        assert span.end_time <= request.end_time
    generation = next(s for s in children if s.name == "llmexecutor__generation")
    assert generation.attributes["ovgraph.calculator"] == "VLMGenerationCalculator"
    assert generation.attributes["gen_ai.usage.output_tokens"] >= 1
    assert generation.attributes["gen_ai.usage.input_tokens"] >= 1
    assert generation.attributes["gen_ai.server.time_to_first_token"] > 0
    assert generation.attributes["gen_ai.request.model"] == DEFAULT


def test_without_traceparent_the_request_span_is_a_root(
    server: AppServer, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    status, _ = server.json("POST", "/v3/chat/completions", _chat_body())
    assert status == 200
    request = _request_span(exporter, DEFAULT)
    assert request.parent is None
    assert {s.name for s in _children(exporter, request)} == set(GENERATION_NODES)


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",  # not the W3C format at all
        f"00-{'0' * 32}-{PARENT_ID}-01",  # an all-zero trace id is invalid
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # the forbidden version ff
    ],
)
def test_a_malformed_traceparent_is_ignored(
    server: AppServer, exporter: InMemorySpanExporter, traceparent: str
) -> None:
    exporter.clear()
    status, _ = server.json("POST", "/v3/chat/completions", _chat_body(),
                            headers={"traceparent": traceparent})
    assert status == 200
    assert _request_span(exporter, DEFAULT).parent is None


def test_a_failed_run_marks_its_span(server: AppServer, exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    body = {"model": DEFAULT, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}},
    ]}]}
    status, _ = server.json("POST", "/v3/chat/completions", body)
    assert status == 400
    request = _request_span(exporter, DEFAULT)
    assert request.status.status_code.name == "ERROR"


def test_kserve_rest_honours_traceparent(
    server: AppServer, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    body = {"inputs": [{"name": "in", "shape": [1], "datatype": "INT32", "data": [7]}]}
    status, answer = server.json("POST", "/v2/models/two/infer", body,
                                 headers={"traceparent": TRACEPARENT})
    assert status == 200, answer
    request = _request_span(exporter, "two")
    assert format(request.parent.span_id, "016x") == PARENT_ID
    assert sorted(s.name for s in _children(exporter, request)) == ["first", "second"]


def test_grpc_metadata_traceparent_is_honoured(
    repository: ModelRepository, exporter: InMemorySpanExporter
) -> None:
    import tritonclient.grpc as tg

    port = free_port()
    grpc_server = start_grpc_server(repository, {}, port, "127.0.0.1")
    client = tg.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        exporter.clear()
        tensor = tg.InferInput("in", [1], "INT32")
        tensor.set_data_from_numpy(np.array([5], dtype=np.int32))
        result = client.infer("two", [tensor], headers={"traceparent": TRACEPARENT})
        assert result.as_numpy("out").tolist() == [5]
        request = _request_span(exporter, "two")
        assert format(request.context.trace_id, "032x") == TRACE_ID
        assert format(request.parent.span_id, "016x") == PARENT_ID
        assert sorted(s.name for s in _children(exporter, request)) == ["first", "second"]
        exporter.clear()
        client.infer("two", [tensor])
        assert _request_span(exporter, "two").parent is None
    finally:
        client.close()
        grpc_server.stop(0)


def test_the_environment_selects_the_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracing._from_env() is None  # no endpoint: no traces
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    provider = tracing._from_env()
    assert provider is not None
    try:
        (processor,) = provider._active_span_processor._span_processors
        assert isinstance(processor.span_exporter, OTLPSpanExporter)
        assert provider.resource.attributes["service.name"] == "ovgraph"
    finally:
        provider.shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    assert tracing._from_env() is None  # unsupported protocol: refused with a log line
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing._from_env() is None


def test_tracing_off_adds_no_hooks(repository: ModelRepository) -> None:
    tracing.configure(None)  # the last test of the module: the exporter fixture is done with
    (definition,) = [d for d in repository.definitions() if d.name == "two"]
    run = definition.new_run()
    assert all(node.hooks is None for node in run.stat_nodes())


# ------------------------------------------------------- a real server, a real OTLP receiver


class _OtlpReceiver:
    """An OTLP/HTTP collector on a loopback port: keeps every span it is sent."""

    def __init__(self) -> None:
        import http.server
        import threading

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, span)
        self.paths: list[str] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import gzip

                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                export = ExportTraceServiceRequest.FromString(body)
                receiver.paths.append(self.path)
                for resource_spans in export.resource_spans:
                    resource = {a.key: a.value.string_value
                                for a in resource_spans.resource.attributes}
                    for scope in resource_spans.scope_spans:
                        receiver.spans.extend((resource, span) for span in scope.spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def trace(self, trace_id: str, count: int, timeout: float = 30.0) -> list[Any]:
        """The spans of ``trace_id`` once ``count`` of them have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = [s for _r, s in self.spans if s.trace_id.hex() == trace_id]
            if len(spans) >= count:
                return spans
            time.sleep(0.1)
        raise AssertionError(f"{len(spans)} of {count} spans of trace {trace_id} arrived")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attributes(span: Any) -> dict[str, Any]:
    values = {}
    for attribute in span.attributes:
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value"))
    return values


def _check_trace(spans: list[Any], graph: str, parent: str, nodes: list[str]) -> Any:
    (run,) = [s for s in spans if s.name == f"run {graph}"]
    assert run.parent_span_id.hex() == parent
    children = [s for s in spans if s.parent_span_id == run.span_id]
    assert {s.name for s in children} == set(nodes)
    run_id = _attributes(run)["ovgraph.run_id"]
    for child in children:
        assert _attributes(child)["ovgraph.run_id"] == run_id
        assert run.start_time_unix_nano <= child.start_time_unix_nano
        assert child.end_time_unix_nano <= run.end_time_unix_nano
    return children


@pytest.mark.e2e
def test_a_served_graph_exports_over_otlp_for_rest_and_grpc(tmp_path: Path) -> None:
    """`ovgraph serve` with OTEL_EXPORTER_OTLP_ENDPOINT: REST, gRPC unary and a gRPC stream,
    each parented to the traceparent of its headers / metadata, reach an OTLP collector."""
    import tritonclient.grpc as tg

    from ovgraph.testing import ServeProcess
    from tests.frontends._served_graphs import (
        SHAPES_NODES,
        chat_body,
        post,
        write_repository,
    )

    receiver = _OtlpReceiver()
    grpc_port = free_port()
    server = ServeProcess(
        ["--config_path", str(write_repository(tmp_path)), "--port", str(grpc_port)],
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
         "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "graphs-under-test",
         "OTEL_BSP_SCHEDULE_DELAY": "100"},
        cwd=REPO,
    )
    client = None
    try:
        server.wait_ready()
        rest_trace, unary_trace, stream_trace = (f"{n:032x}" for n in (0xA1, 0xB2, 0xC3))

        status, _ = post(server.url + "/v3/chat/completions", chat_body("shapes"),
                         headers={"traceparent": f"00-{rest_trace}-{PARENT_ID}-01"})
        assert status == 200
        children = _check_trace(receiver.trace(rest_trace, 7), "shapes", PARENT_ID,
                                SHAPES_NODES)
        generation = next(s for s in children if s.name == "llmexecutor__generation")
        attributes = _attributes(generation)
        assert attributes["gen_ai.usage.output_tokens"] >= 1
        assert attributes["gen_ai.server.time_to_first_token"] > 0

        client = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        tensor = tg.InferInput("in", [1], "INT32")
        tensor.set_data_from_numpy(np.array([5], dtype=np.int32))
        result = client.infer("two", [tensor],
                              headers={"traceparent": f"00-{unary_trace}-{PARENT_ID}-01"})
        assert result.as_numpy("out").tolist() == [5]
        _check_trace(receiver.trace(unary_trace, 3), "two", PARENT_ID, ["first", "second"])

        answers: list[Any] = []
        client.start_stream(callback=lambda result, error: answers.append(error or result),
                            headers={"traceparent": f"00-{stream_trace}-{PARENT_ID}-01"})
        client.async_stream_infer("two", [tensor])
        deadline = time.monotonic() + 30
        while not answers and time.monotonic() < deadline:
            time.sleep(0.05)
        client.stop_stream()
        assert [a.as_numpy("out").tolist() for a in answers] == [[5]]
        _check_trace(receiver.trace(stream_trace, 3), "two", PARENT_ID, ["first", "second"])

        assert set(receiver.paths) == {"/v1/traces"}
        assert {r["service.name"] for r, _s in receiver.spans} == {"graphs-under-test"}
    finally:
        if client is not None:
            client.close()
        server.stop()
        receiver.close()


@pytest.mark.e2e
def test_otlp_over_grpc_reaches_a_grpc_collector(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc (the otel extra): a gRPC request's spans, parented to
    its metadata traceparent, reach an OTLP/gRPC collector."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc",
                        reason="the otel extra is not installed (pip install 'ovgraph[otel]')")
    from concurrent import futures

    import grpc
    import tritonclient.grpc as tg
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    from ovgraph.testing import ServeProcess
    from tests.frontends._served_graphs import write_repository

    spans: list[Any] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            for resource_spans in request.resource_spans:
                for scope in resource_spans.scope_spans:
                    spans.extend(scope.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    collector = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), collector)
    collector_port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    grpc_port = free_port()
    server = ServeProcess(
        ["--config_path", str(write_repository(tmp_path, ("two",))), "--port", str(grpc_port)],
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
         "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_BSP_SCHEDULE_DELAY": "100"},
        cwd=REPO,
    )
    client = None
    try:
        server.wait_ready()
        client = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        tensor = tg.InferInput("in", [1], "INT32")
        tensor.set_data_from_numpy(np.array([9], dtype=np.int32))
        client.infer("two", [tensor], headers={"traceparent": TRACEPARENT})
        deadline = time.monotonic() + 30
        while len(spans) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
        _check_trace(spans, "two", PARENT_ID, ["first", "second"])
    finally:
        if client is not None:
            client.close()
        server.stop()
        collector.stop(0)
