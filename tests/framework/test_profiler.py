"""MediaPipe's profiler_config: calculator profiles and Chrome-trace logs."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ovgraph.framework import registry
from ovgraph.framework.calculator import Calculator, CalculatorContext, Input, Output
from ovgraph.framework.graph import CalculatorGraph
from ovgraph.framework.profiler import profiler_of
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph


class ProfEcho(Calculator):
    IN = Input("IN")
    OUT = Output("OUT")

    def process(self, cc: CalculatorContext) -> None:
        self.OUT(cc).send(self.IN(cc).get())


class ProfDropOdd(Calculator):
    IN = Input("IN", int)
    OUT = Output("OUT", int)
    TIMESTAMP_OFFSET: ClassVar[int | None] = 0

    def process(self, cc: CalculatorContext) -> None:
        value = self.IN(cc).get()
        if value % 2 == 0:
            self.OUT(cc).send(value)


class ProfSleep(Calculator):
    IN = Input("IN")
    OUT = Output("OUT")

    def process(self, cc: CalculatorContext) -> None:
        time.sleep(0.0025)
        self.OUT(cc).send(self.IN(cc).get())


@pytest.fixture(autouse=True)
def _calculators() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for cls in (ProfEcho, ProfDropOdd, ProfSleep):
            stack.enter_context(registry.override(cls.__name__, cls))
        yield


def _graph(profiler: str, body: str | None = None) -> ValidatedGraph:
    body = body or """
node { name: "a" calculator: "ProfEcho" input_stream: "IN:in" output_stream: "OUT:s1" }
node { name: "drop" calculator: "ProfDropOdd" input_stream: "IN:s1" output_stream: "OUT:s2" }
node { name: "b" calculator: "ProfEcho" input_stream: "IN:s2" output_stream: "OUT:out" }
"""
    text = f'input_stream: "in"\noutput_stream: "out"\nprofiler_config {{ {profiler} }}\n{body}'
    return ValidatedGraph(parse_graph_config(text))


def _run(graph: ValidatedGraph, count: int) -> CalculatorGraph:
    run = CalculatorGraph(graph)
    run.start_run()
    for t in range(count):
        run.add_packet_to_input_stream("in", t, t)
    run.close_all_input_streams()
    run.wait_until_done(10)
    return run


def _process_counts(profiles: list[dict[str, Any]]) -> dict[str, int]:
    return {p["name"]: sum(p["process_runtime"]["count"]) for p in profiles}


def test_profiles_and_trace_of_a_known_packet_pattern(tmp_path: Path) -> None:
    prefix = tmp_path / "trace_"
    graph = _graph(f'enable_profiler: true trace_enabled: true trace_log_path: "{prefix}"')
    run = _run(graph, 10)
    profiler = profiler_of(graph)
    assert profiler is not None
    # Every packet reaches "a" and "drop"; "drop" forwards the 5 even ones to "b".
    trace = json.loads((tmp_path / "trace_0.json").read_text())
    events = trace["traceEvents"]
    process = [e for e in events if e.get("cat") == "Process"]
    assert Counter(e["name"] for e in process) == {"a": 10, "drop": 10, "b": 5}
    for event in process:
        assert event["ph"] == "X"
        assert event["dur"] >= 0
        assert event["args"]["run_id"] == run.run_id
        assert event["args"]["calculator"].startswith("Prof")
    assert sorted(e["args"]["timestamp"] for e in process if e["name"] == "b") == [0, 2, 4, 6, 8]
    # One track per worker thread, each named.
    named = {e["tid"]: e["args"]["name"] for e in events if e.get("ph") == "M"}
    assert {e["tid"] for e in process} <= set(named)
    assert all(named[e["tid"]].startswith("ovgraph") for e in process)  # pool workers
    assert Counter(e["cat"] for e in events if e.get("ph") == "X") == {
        "Open": 3, "Process": 25, "Close": 3,
    }
    # The profiles of the interval travel with the trace (MediaPipe's GraphProfile), then reset.
    assert _process_counts(trace["calculator_profiles"]) == {"a": 10, "drop": 10, "b": 5}
    assert _process_counts(profiler.calculator_profiles()) == {"a": 0, "drop": 0, "b": 0}


def test_profiles_accumulate_without_a_trace_log() -> None:
    graph = _graph("enable_profiler: true")
    _run(graph, 4)
    _run(graph, 4)
    profiler = profiler_of(graph)
    assert profiler is not None
    profiles = profiler.calculator_profiles()
    assert _process_counts(profiles) == {"a": 8, "drop": 8, "b": 4}
    first = profiles[0]
    assert first["process_runtime"]["interval_size_usec"] == 1_000_000  # MediaPipe's default
    assert first["process_runtime"]["num_intervals"] == 1
    assert first["process_runtime"]["total"] >= 0
    assert "process_input_latency" not in first  # only with enable_stream_latency


def test_histogram_intervals_follow_the_config() -> None:
    body = 'node { name: "slow" calculator: "ProfSleep" input_stream: "IN:in" ' \
           'output_stream: "OUT:out" }'
    graph = _graph(
        "enable_profiler: true histogram_interval_size_usec: 1000 num_histogram_intervals: 3",
        body,
    )
    _run(graph, 3)
    profiler = profiler_of(graph)
    assert profiler is not None
    (profile,) = profiler.calculator_profiles()
    runtime = profile["process_runtime"]
    assert runtime["interval_size_usec"] == 1000
    assert len(runtime["count"]) == 3
    # 2.5 ms sleeps land in the open-ended last interval (≥ 2 ms).
    assert runtime["count"] == [0, 0, 3]
    assert runtime["total"] >= 3 * 2500


def test_calculator_filter_selects_profiles() -> None:
    graph = _graph('enable_profiler: true calculator_filter: "d.*"')
    _run(graph, 2)
    profiler = profiler_of(graph)
    assert profiler is not None
    assert [p["name"] for p in profiler.calculator_profiles()] == ["drop"]


def test_stream_latency(tmp_path: Path) -> None:
    graph = _graph("enable_profiler: true enable_stream_latency: true")
    _run(graph, 6)
    profiler = profiler_of(graph)
    assert profiler is not None
    by_name = {p["name"]: p for p in profiler.calculator_profiles()}
    (stream,) = by_name["b"]["input_stream_profiles"]
    assert stream["name"] == "s2"
    assert stream["back_edge"] is False
    assert sum(stream["latency"]["count"]) == 3
    assert sum(by_name["a"]["input_stream_profiles"][0]["latency"]["count"]) == 6
    assert sum(by_name["b"]["process_output_latency"]["count"]) == 3


def test_trace_log_disabled_writes_nothing(tmp_path: Path) -> None:
    prefix = tmp_path / "trace_"
    graph = _graph(f'trace_enabled: true trace_log_disabled: true trace_log_path: "{prefix}"')
    _run(graph, 2)
    assert list(tmp_path.iterdir()) == []


def test_trace_files_rotate(tmp_path: Path) -> None:
    prefix = tmp_path / "t_"
    graph = _graph(
        f'trace_enabled: true trace_log_path: "{prefix}" trace_log_interval_count: 1 '
        "trace_log_count: 2"
    )
    runs = [_run(graph, 1) for _ in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t_0.json", "t_1.json"]

    def run_ids(name: str) -> set[int]:
        events = json.loads((tmp_path / name).read_text())["traceEvents"]
        return {e["args"]["run_id"] for e in events if e.get("ph") == "X"}

    # One write per run, one write per file, two files round robin: the third run's log
    # replaced the first's.
    assert run_ids("t_0.json") == {runs[2].run_id}
    assert run_ids("t_1.json") == {runs[1].run_id}


def test_no_profiler_config_costs_nothing() -> None:
    graph = ValidatedGraph(parse_graph_config(
        'input_stream: "in"\noutput_stream: "out"\n'
        'node { calculator: "ProfEcho" input_stream: "IN:in" output_stream: "OUT:out" }'
    ))
    assert profiler_of(graph) is None
    run = _run(graph, 1)
    assert all(node.hooks is None for node in run.stat_nodes())
