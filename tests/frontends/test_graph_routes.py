"""``/v1/graphs``, ``/v1/graphs/{name}`` and the graphs' Prometheus metrics, in-process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovgraph.framework import registry
from ovgraph.framework.calculator import Calculator, CalculatorContext, Input, Output
from ovgraph.serving.repository import GraphEntry, ModelRepository
from tests.conftest import REPO
from tests.frontends._graph_server import AppServer

SHAPES = REPO / "graphs" / "qwen2vl-shapes"
DEFAULT = "qwen2vl-shapes"


class RaisingCalculator(Calculator):
    """Fails on every request."""

    IN = Input("HTTP_REQUEST_PAYLOAD")
    OUT = Output("HTTP_RESPONSE_PAYLOAD")

    def process(self, cc: CalculatorContext) -> None:
        raise ValueError("raised on purpose")


RAISING_GRAPH = """
input_stream: "HTTP_REQUEST_PAYLOAD:input"
output_stream: "HTTP_RESPONSE_PAYLOAD:output"
node {
  name: "raiser"
  calculator: "RaisingCalculator"
  input_stream: "HTTP_REQUEST_PAYLOAD:input"
  output_stream: "HTTP_RESPONSE_PAYLOAD:output"
}
"""


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelRepository]:
    with registry.override("RaisingCalculator", RaisingCalculator):
        repo = ModelRepository({})
        repo.add(GraphEntry(name=DEFAULT, graph_path=SHAPES / "graph.pbtxt", base_path=SHAPES))
        repo.add(GraphEntry(name="raising", text=RAISING_GRAPH, base_path=Path.cwd()))
        for definition in repo.definitions():
            assert definition.available, (definition.name, definition.error)
        yield repo
        for definition in repo.definitions():
            definition.unload()


@pytest.fixture(scope="module")
def server(repository: ModelRepository) -> Iterator[AppServer]:
    app = AppServer(repository, {"metrics_enable": True})
    yield app
    app.stop()


def _chat(server: AppServer, model: str = DEFAULT) -> int:
    status, _ = server.json("POST", "/v3/chat/completions", {
        "model": model, "max_completion_tokens": 4,
        "messages": [{"role": "user", "content": "What shape is in the picture?"}],
    })
    return status


def test_requests_show_as_finished_runs_and_node_calls(server: AppServer) -> None:
    status, before = server.json("GET", f"/v1/graphs/{DEFAULT}")
    assert status == 200
    runs_before = before["runs"]["finished"]
    calls_before = {n["name"]: n["process_calls"] for n in before["nodes"]}
    n = 3
    for _ in range(n):
        assert _chat(server) == 200
    status, view = server.json("GET", f"/v1/graphs/{DEFAULT}")
    assert status == 200
    assert view["name"] == DEFAULT
    assert view["state"] == "AVAILABLE"
    assert view["runs"]["finished"] == runs_before + n
    assert view["runs"]["started"] == view["runs"]["finished"]
    assert view["runs"]["running"] == 0
    nodes = {node["name"]: node for node in view["nodes"]}
    generation = nodes["llmexecutor__generation"]
    assert generation["calculator"] == "VLMGenerationCalculator"
    # Each request: at least one generation step (LOOPBACK may add more).
    assert generation["process_calls"] - calls_before["llmexecutor__generation"] >= n
    assert nodes["llmexecutor__request"]["process_calls"] - calls_before[
        "llmexecutor__request"] == n
    for node in view["nodes"]:
        assert set(node) >= {"name", "calculator", "process_calls", "errors",
                             "process_time_us", "queued"}
        assert set(node["process_time_us"]) == {"p50", "p99"}
        assert node["errors"] == 0
        assert node["subgraph"] == ["LLMExecutor"]
    assert generation["process_time_us"]["p50"] > 0
    edges = {(e["from"], e["to"], e["stream"]): e["back_edge"] for e in view["edges"]}
    assert edges[("llmexecutor__generation", "llmexecutor__generation", "loopback")] is True
    assert edges[(None, "llmexecutor__request", "input")] is False
    assert edges[("llmexecutor__response", None, "output")] is False
    assert view["subgraphs"] == [
        {"name": "LLMExecutor", "calculator": "HttpLLMCalculator", "parent": None}
    ]


def test_a_raising_calculator_shows_in_errors(server: AppServer) -> None:
    assert _chat(server, "raising") == 500
    status, view = server.json("GET", "/v1/graphs/raising")
    assert status == 200
    (node,) = view["nodes"]
    assert node["name"] == "raiser"
    assert node["errors"] >= 1
    assert node["process_calls"] >= 1
    assert view["runs"]["failed"] >= 1


def test_graph_list(server: AppServer) -> None:
    status, body = server.json("GET", "/v1/graphs")
    assert status == 200
    names = {g["name"]: g for g in body["graphs"]}
    assert set(names) == {DEFAULT, "raising"}
    assert names[DEFAULT]["state"] == "AVAILABLE"
    assert names[DEFAULT]["nodes"] == 6
    assert set(names[DEFAULT]["runs"]) >= {"started", "running", "finished", "failed"}


def test_unknown_graph_is_404_in_the_error_shape(server: AppServer) -> None:
    status, body = server.json("GET", "/v1/graphs/nope")
    assert status == 404
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_prometheus_metrics_have_a_node_label(server: AppServer) -> None:
    assert _chat(server) == 200
    status, _headers, raw = server.request("GET", "/metrics")
    assert status == 200
    text = raw.decode()
    assert (
        'ovgraph_node_calls_total{calculator="VLMGenerationCalculator",'
        f'graph="{DEFAULT}",node="llmexecutor__generation"}}'
    ) in text
    assert 'ovgraph_node_errors_total{calculator="RaisingCalculator",graph="raising",' \
           'node="raiser"}' in text
    assert f'ovgraph_graph_runs_total{{graph="{DEFAULT}",status="finished"}}' in text
    assert 'ovgraph_node_call_seconds{calculator="VLMGenerationCalculator",' in text
    assert 'quantile="0.99"' in text
    assert f'ovgraph_node_queued_packets{{calculator="OpenAIRequestCalculator",graph="{DEFAULT}"' \
        in text


def test_graph_routes_need_the_api_key_when_the_server_has_one(
    repository: ModelRepository,
) -> None:
    app = AppServer(repository, {}, api_key="s3cret")
    try:
        for path in ("/v1/graphs", f"/v1/graphs/{DEFAULT}"):
            status, headers, raw = app.request("GET", path)
            assert status == 401, path
            assert headers["www-authenticate"].startswith("Bearer")
            assert b"api-key" in raw
            status, _h, _raw = app.request(
                "GET", path, headers={"Authorization": "Bearer wrong"}
            )
            assert status == 401
            status, _h, _raw = app.request(
                "GET", path, headers={"Authorization": "Bearer s3cret"}
            )
            assert status == 200
        # The page itself holds no data: it loads, then asks for the key.
        status, _h, raw = app.request("GET", "/dashboard")
        assert status == 200
        assert b"<html" in raw
    finally:
        app.stop()


def test_a_served_graph_with_a_profiler_config_traces_every_request(tmp_path: Path) -> None:
    """The shapes graph with MediaPipe's profiler_config, served: /v1/graphs/{name} carries its
    calculator_profiles, and each request's process() calls land in Chrome trace JSON."""
    import json
    import time
    from collections import Counter

    prefix = tmp_path / "trace_"
    graph = (SHAPES / "graph.pbtxt").read_text().replace(
        'models_path: "./"', f'models_path: "{SHAPES.as_posix()}"'
    )
    graph += f'\nprofiler_config {{ enable_profiler: true trace_enabled: true ' \
             f'trace_log_path: "{prefix}" }}\n'
    repo = ModelRepository({})
    repo.add(GraphEntry(name="profiled", text=graph, base_path=tmp_path))
    (definition,) = repo.definitions()
    assert definition.available, definition.error
    app = AppServer(repo)
    try:
        assert _chat(app, "profiled") == 200
        assert _chat(app, "profiled") == 200
        deadline = time.monotonic() + 10
        while True:  # the answer may go out before its run has ended and logged its trace
            status, view = app.json("GET", "/v1/graphs/profiled")
            assert status == 200
            traces = sorted(tmp_path.glob("trace_*.json"))
            events = [e for path in traces for e in json.loads(path.read_text())["traceEvents"]]
            process = [e for e in events if e.get("cat") == "Process"]
            if view["runs"]["finished"] == 2 and len({e["args"]["run_id"] for e in process}) == 2:
                break
            assert time.monotonic() < deadline, (view["runs"], traces)
            time.sleep(0.1)
        profiles = {p["name"]: p for p in view["calculator_profiles"]}
        nodes = [n["name"] for n in view["nodes"]]
        assert set(profiles) == set(nodes)
        assert {e["name"] for e in process} == set(nodes)
        calls = {n["name"]: n["process_calls"] for n in view["nodes"]}
        # Every process() call of both runs is one event: the trace agrees with the counters.
        assert Counter(e["name"] for e in process) == calls
        assert len({e["args"]["run_id"] for e in process}) == 2
        assert all(e["ph"] == "X" and isinstance(e["tid"], int) for e in process)
    finally:
        app.stop()
        definition.unload()


def _keys(value: object, into: set[str]) -> set[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            into.add(key)
            _keys(item, into)
    elif isinstance(value, list):
        for item in value:
            _keys(item, into)
    return into


def test_the_readme_documents_every_field_of_a_graph_view(server: AppServer) -> None:
    import re

    assert _chat(server) == 200
    readme = (REPO / "README.md").read_text()
    start = readme.index("`GET /v1/graphs/{name}` shows one:")
    documented = set(re.findall(r'"(\w+)"', readme[start:readme.index("(plus", start)]))
    status, view = server.json("GET", f"/v1/graphs/{DEFAULT}")
    assert status == 200
    view["executors"] = {}  # its keys are executor names, not fields
    assert view["running"] == []  # a run's fields: test_dashboard's served test sees one live
    assert _keys(view, set()) | {"run_id", "age_ms", "nodes_running", "retired"} == documented


def test_graph_names_with_a_slash(tmp_path: Path) -> None:
    """OVMS names pulled models "OpenVINO/…": the route takes the name as is or encoded."""
    repo = ModelRepository({})
    repo.add(GraphEntry(name="OpenVINO/two", base_path=tmp_path, text=(
        'input_stream: "in"\noutput_stream: "out"\n'
        'node { name: "only" calculator: "PassThroughCalculator" '
        'input_stream: "in" output_stream: "out" }\n')))
    repo.definitions()[0].load()
    app = AppServer(repo)
    try:
        for path in ("/v1/graphs/OpenVINO/two", "/v1/graphs/OpenVINO%2Ftwo"):
            status, view = app.json("GET", path)
            assert status == 200, (path, view)
            assert view["name"] == "OpenVINO/two"
            assert [n["name"] for n in view["nodes"]] == ["only"]
        status, body = app.json("GET", "/v1/graphs/OpenVINO/three")
        assert status == 404
        assert set(body["error"]) == {"message", "type", "param", "code"}
    finally:
        app.stop()


class BlockingCalculator(Calculator):
    """Holds every request until :data:`RELEASE` is set."""

    IN = Input("HTTP_REQUEST_PAYLOAD")
    OUT = Output("HTTP_RESPONSE_PAYLOAD")

    def process(self, cc: CalculatorContext) -> None:
        assert RELEASE.wait(60)
        raise ValueError("released")


RELEASE = threading.Event()


def test_runs_on_a_graph_replaced_by_a_reload_stay_listed_until_they_end(tmp_path: Path) -> None:
    folder = tmp_path / "held"
    folder.mkdir()
    graph = RAISING_GRAPH.replace("RaisingCalculator", "BlockingCalculator")
    (folder / "graph.pbtxt").write_text(graph)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(
        {"model_config_list": [{"config": {"name": "held", "base_path": str(folder)}}]}))
    RELEASE.clear()
    with registry.override("BlockingCalculator", BlockingCalculator):
        repo = ModelRepository({})
        repo.load_config(config)
        app = AppServer(repo)
        request = threading.Thread(target=_chat, args=(app, "held"), daemon=True)
        try:
            request.start()
            deadline = time.monotonic() + 30
            while not app.json("GET", "/v1/graphs/held")[1]["running"]:
                assert time.monotonic() < deadline, "the request never showed as running"
                time.sleep(0.05)
            (folder / "graph.pbtxt").write_text(graph + "# changed\n")
            assert repo.reload()["reloaded"] == ["held"]
            running = app.json("GET", "/v1/graphs/held")[1]["running"]
            assert [(r["retired"], r["nodes_running"]) for r in running] == [(True, ["raiser"])]
            RELEASE.set()
            request.join(30)
            assert not request.is_alive()
            assert app.json("GET", "/v1/graphs/held")[1]["running"] == []
        finally:
            RELEASE.set()
            app.stop()
            for definition in repo.definitions():
                definition.unload()


def test_a_reload_reloads_the_graphs_whose_file_changed_and_only_those(tmp_path: Path) -> None:
    passthrough = ('input_stream: "in"\noutput_stream: "out"\nnode { name: "only" '
                   'calculator: "PassThroughCalculator" input_stream: "in" '
                   'output_stream: "out" }\n')
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "graph.pbtxt").write_text(passthrough)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [
        {"config": {"name": n, "base_path": str(tmp_path / n)}} for n in ("a", "b")]}))
    repo = ModelRepository({})
    repo.load_config(config)
    try:
        assert repo.reload() == {"added": [], "removed": [], "reloaded": []}
        (tmp_path / "b" / "graph.pbtxt").write_text(passthrough.replace('"only"', '"renamed"'))
        assert repo.reload() == {"added": [], "removed": [], "reloaded": ["b"]}
        assert [n.name for n in repo.get("b").validated.nodes] == ["renamed"]
        assert repo.reload() == {"added": [], "removed": [], "reloaded": []}
    finally:
        for definition in repo.definitions():
            definition.unload()
