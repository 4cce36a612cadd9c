"""Always-on graph statistics: per-node calls, errors, time and queue; per-graph runs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from ovgraph.errors import CalculatorError, GraphCancelledError
from ovgraph.framework import registry
from ovgraph.framework.calculator import Calculator, CalculatorContext, Input, Output
from ovgraph.framework.graph import CalculatorGraph
from ovgraph.framework.stats import bucket_of, new_histogram, quantile, stats_of
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph


class StatsEcho(Calculator):
    IN = Input("IN")
    OUT = Output("OUT")

    def process(self, cc: CalculatorContext) -> None:
        value = self.IN(cc).get()
        if value == "raise":
            raise ValueError("bad packet")
        self.OUT(cc).send(value)


class StatsGate(Calculator):
    """Blocks in process until the test opens the gate."""

    IN = Input("IN")
    OUT = Output("OUT")
    gate = threading.Event()
    entered = threading.Event()

    def process(self, cc: CalculatorContext) -> None:
        StatsGate.entered.set()
        StatsGate.gate.wait(10)
        self.OUT(cc).send(self.IN(cc).get())


@pytest.fixture(autouse=True)
def _calculators() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for cls in (StatsEcho, StatsGate):
            stack.enter_context(registry.override(cls.__name__, cls))
        yield


CHAIN = """
input_stream: "in"
output_stream: "out"
node { name: "first" calculator: "StatsEcho" input_stream: "IN:in" output_stream: "OUT:mid" }
node { name: "second" calculator: "StatsEcho" input_stream: "IN:mid" output_stream: "OUT:out" }
"""


def _run(graph: ValidatedGraph, payloads: list[object]) -> CalculatorGraph:
    run = CalculatorGraph(graph)
    run.start_run()
    for t, value in enumerate(payloads):
        run.add_packet_to_input_stream("in", value, t)
    run.close_all_input_streams()
    return run


def test_runs_and_calls_are_counted_per_node() -> None:
    graph = ValidatedGraph(parse_graph_config(CHAIN))
    for _ in range(3):
        _run(graph, ["a", "b"]).wait_until_done(5)
    snap = stats_of(graph).snapshot()
    assert snap["runs"]["started"] == 3
    assert snap["runs"]["finished"] == 3
    assert snap["runs"]["running"] == snap["runs"]["failed"] == 0
    assert [n["name"] for n in snap["nodes"]] == ["first", "second"]
    assert [n["process_calls"] for n in snap["nodes"]] == [6, 6]
    assert [n["errors"] for n in snap["nodes"]] == [0, 0]
    for node in snap["nodes"]:
        assert node["calculator"] == "StatsEcho"
        assert node["process_time_us"]["p50"] is not None
        assert node["process_time_us"]["p50"] <= node["process_time_us"]["p99"]
    assert snap["runs"]["duration_ms"]["p50"] is not None


def test_a_raising_calculator_shows_in_errors_and_failed_runs() -> None:
    graph = ValidatedGraph(parse_graph_config(CHAIN))
    _run(graph, ["ok"]).wait_until_done(5)
    run = _run(graph, ["raise"])
    with pytest.raises(CalculatorError):
        run.wait_until_done(5)
    snap = stats_of(graph).snapshot()
    assert [n["errors"] for n in snap["nodes"]] == [1, 0]
    assert [n["process_calls"] for n in snap["nodes"]] == [2, 1]
    assert snap["runs"]["finished"] == 1
    assert snap["runs"]["failed"] == 1


def test_running_runs_and_queued_packets_are_live() -> None:
    config = CHAIN.replace('name: "second" calculator: "StatsEcho"',
                           'name: "second" calculator: "StatsGate"')
    graph = ValidatedGraph(parse_graph_config(config))
    StatsGate.gate.clear()
    StatsGate.entered.clear()
    run = CalculatorGraph(graph)
    run.start_run()
    for t in range(4):
        run.add_packet_to_input_stream("in", t, t)
    assert StatsGate.entered.wait(5)
    snap = stats_of(graph).snapshot()
    assert snap["runs"]["running"] == 1
    second = snap["nodes"][1]
    assert second["running"] == 1
    assert second["queued"] >= 1  # packets waiting behind the blocked call
    assert stats_of(graph).live_runs() == [run]
    run.cancel()
    StatsGate.gate.set()
    with pytest.raises(GraphCancelledError):
        run.wait_until_done(5)
    snap = stats_of(graph).snapshot()
    assert snap["runs"]["running"] == 0
    assert snap["runs"]["cancelled"] == 1
    assert snap["nodes"][1]["queued"] == 0


def test_statistics_belong_to_one_validated_graph() -> None:
    first = ValidatedGraph(parse_graph_config(CHAIN))
    second = ValidatedGraph(parse_graph_config(CHAIN))
    _run(first, ["a"]).wait_until_done(5)
    assert stats_of(first).snapshot()["runs"]["finished"] == 1
    assert stats_of(second).snapshot()["runs"]["finished"] == 0


@pytest.mark.parametrize(
    ("us", "low", "high"),
    [
        (0, 0, 1),  # exact below 8 µs
        (7, 7, 8),
        (8, 8, 10),  # four buckets per octave above
        (100, 96, 112),
        (1_000_000, 917_504, 1_048_576),
    ],
)
def test_histogram_buckets_hold_the_value(us: int, low: int, high: int) -> None:
    hist = new_histogram()
    hist[bucket_of(us)] += 1
    value = quantile(hist, 0.5)
    assert value is not None
    assert low <= value <= high


def test_quantiles_of_a_spread() -> None:
    hist = new_histogram()
    for us in [10] * 98 + [5000] * 2:
        hist[bucket_of(us)] += 1
    p50, p99 = quantile(hist, 0.5), quantile(hist, 0.99)
    assert p50 is not None and 8 <= p50 <= 12
    assert p99 is not None and 4096 <= p99 <= 5120
    assert quantile(new_histogram(), 0.5) is None


def test_long_runs_time_a_sample_of_their_calls() -> None:
    graph = ValidatedGraph(parse_graph_config(CHAIN))
    run = _run(graph, list(range(100)))
    run.wait_until_done(5)
    first = run.stat_nodes()[0]
    assert first.calls == 100
    # The first 16 calls, then every eighth: 24, 32, ..., 96.
    assert sum(first.hist) == 16 + len(range(24, 101, 8))
    snap = stats_of(graph).snapshot()
    node = snap["nodes"][0]
    assert node["process_calls"] == 100
    assert node["process_time_us"]["p50"] is not None
    assert node["process_seconds_sum"] > 0
