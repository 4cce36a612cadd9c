"""CalculatorGraph runs: wiring, side packets, timestamps, errors, cancellation, threading."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from ovgraph._compat import ExceptionGroup
from ovgraph.errors import (
    CalculatorError,
    GraphCancelledError,
    RequestError,
    StopProcessing,
    ValidationError,
)
from ovgraph.framework import registry
from ovgraph.framework.calculator import (
    Calculator,
    CalculatorContext,
    Input,
    Output,
    OutputSidePacket,
    SidePacket,
)
from ovgraph.framework.graph import CalculatorGraph
from ovgraph.framework.packet import Packet
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph
from ovgraph.testing import run_graph

# --------------------------------------------------------------------------- test calculators


class AddConst(Calculator):
    """OUT = IN + the K side packet (0 when absent)."""

    IN = Input("IN", int)
    OUT = Output("OUT", int)
    K = SidePacket("K", int, optional=True)

    def open(self, cc: CalculatorContext) -> None:
        self.k = self.K(cc) or 0

    def process(self, cc: CalculatorContext) -> None:
        self.OUT(cc).send(self.IN(cc).get() + self.k)


class Pair(Calculator):
    """OUT = (A or None, B or None) at every input timestamp (default handler)."""

    A = Input("A")
    B = Input("B")
    OUT = Output("OUT")

    def process(self, cc: CalculatorContext) -> None:
        a, b = self.A(cc), self.B(cc)
        self.OUT(cc).send((None if a.is_empty else a.get(), None if b.is_empty else b.get()))


class DropOdd(Calculator):
    """Forwards even payloads only; TIMESTAMP_OFFSET 0 keeps the output bound moving."""

    IN = Input("IN", int)
    OUT = Output("OUT", int)
    TIMESTAMP_OFFSET: ClassVar[int | None] = 0

    def process(self, cc: CalculatorContext) -> None:
        value = self.IN(cc).get()
        if value % 2 == 0:
            self.OUT(cc).send(value)


class DropOddNoOffset(DropOdd):
    TIMESTAMP_OFFSET: ClassVar[int | None] = None


class Counter(Calculator):
    """A source: emits 0..N-1 (side packet N) at timestamps 0..N-1, then stops."""

    N = SidePacket("N", int)
    OUT = Output("OUT", int)

    def open(self, cc: CalculatorContext) -> None:
        self.n = self.N(cc)
        self.i = 0

    def process(self, cc: CalculatorContext) -> None:
        if self.i >= self.n:
            raise StopProcessing
        self.OUT(cc).add(self.i, self.i)
        self.i += 1


class StopAfter(Calculator):
    """Forwards packets; raises StopProcessing on the packet whose payload is 'stop'."""

    IN = Input("IN")
    OUT = Output("OUT")

    def process(self, cc: CalculatorContext) -> None:
        value = self.IN(cc).get()
        if value == "stop":
            raise StopProcessing
        self.OUT(cc).send(value)


class Failing(Calculator):
    """Raises ValueError in the phase named by the PHASE side packet."""

    IN = Input("IN", optional=True)
    OUT = Output("OUT", optional=True)
    PHASE = SidePacket("PHASE", str)

    def open(self, cc: CalculatorContext) -> None:
        self.phase = self.PHASE(cc)
        if self.phase == "open":
            raise ValueError(f"boom in open of {cc.node_name}")

    def process(self, cc: CalculatorContext) -> None:
        if self.phase == "process":
            raise ValueError(f"boom in process of {cc.node_name}")
        self.OUT(cc).send(self.IN(cc).get())

    def close(self, cc: CalculatorContext) -> None:
        if self.phase == "close":
            raise ValueError(f"boom in close of {cc.node_name}")


class ModelProducer(Calculator):
    """A side-packet producer: MODEL = "model-" + NAME, set in open."""

    NAME = SidePacket("NAME", str)
    MODEL = OutputSidePacket("MODEL", str)

    def open(self, cc: CalculatorContext) -> None:
        self.MODEL.set(cc, f"model-{self.NAME(cc)}")


class ModelUser(Calculator):
    """Tags each input with the MODEL side packet read in open."""

    MODEL = SidePacket("MODEL", str)
    IN = Input("IN")
    OUT = Output("OUT")

    def open(self, cc: CalculatorContext) -> None:
        self.model = self.MODEL(cc)
        if self.model is None:
            raise ValueError("MODEL side packet not available in open")

    def process(self, cc: CalculatorContext) -> None:
        self.OUT(cc).send(f"{self.model}:{self.IN(cc).get()}")


class Blocker(Calculator):
    """Blocks in process until the run is cancelled; records what happened in resources."""

    IN = Input("IN")
    OUT = Output("OUT")

    def open(self, cc: CalculatorContext) -> None:
        self.state: dict[str, Any] = cc.resources
        self.wake = threading.Event()
        cc.on_cancel(self.wake.set)

    def process(self, cc: CalculatorContext) -> None:
        self.state["entered"].set()
        self.state["woken"] = self.wake.wait(timeout=10)

    def close(self, cc: CalculatorContext) -> None:
        self.state["closed"] = True


class Slow(Calculator):
    """Forwards after sleeping; tracks concurrency in resources."""

    IN = Input("IN")
    OUT = Output("OUT")

    def open(self, cc: CalculatorContext) -> None:
        self.state: dict[str, Any] = cc.resources or {}

    def process(self, cc: CalculatorContext) -> None:
        state = self.state
        if "lock" in state:
            with state["lock"]:
                state["active"] += 1
                state["max_active"] = max(state["max_active"], state["active"])
            if "barrier" in state:
                state["barrier"].wait(timeout=5)
        time.sleep(state.get("sleep", 0.001))
        if "lock" in state:
            with state["lock"]:
                state["active"] -= 1
        self.OUT(cc).send(self.IN(cc).get())


TEST_CALCULATORS = (
    AddConst, Pair, DropOdd, DropOddNoOffset, Counter, StopAfter, Failing, ModelProducer,
    ModelUser, Blocker, Slow,
)


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for cls in TEST_CALCULATORS:
            stack.enter_context(registry.override(cls.__name__, cls))
        yield


def _validated(text: str) -> ValidatedGraph:
    return ValidatedGraph(parse_graph_config(text))


# --------------------------------------------------------------------------- wiring


def test_chain_of_three_nodes() -> None:
    graph = """
    input_stream: "in" output_stream: "out" input_side_packet: "k"
    node { calculator: "AddConst" input_stream: "IN:in" output_stream: "OUT:a" }
    node { calculator: "AddConst" input_stream: "IN:a" output_stream: "OUT:b"
           input_side_packet: "K:k" }
    node { calculator: "AddConst" input_stream: "IN:b" output_stream: "OUT:out"
           input_side_packet: "K:k" }
    """
    out = run_graph(graph, [("in", t, t) for t in range(5)], side_packets={"k": 10})
    assert out == {"out": [(t, t + 20) for t in range(5)]}


def test_fan_out_and_fan_in() -> None:
    graph = """
    input_stream: "in" output_stream: "out" output_stream: "copy"
    node { calculator: "AddConst" input_stream: "IN:in" output_stream: "OUT:left"
           input_side_packet: "K:one" }
    node { calculator: "AddConst" input_stream: "IN:in" output_stream: "OUT:right"
           input_side_packet: "K:two" }
    node { calculator: "PassThroughCalculator" input_stream: "in" output_stream: "copy" }
    node { calculator: "Pair" input_stream: "A:left" input_stream: "B:right"
           output_stream: "OUT:out" }
    """
    out = run_graph(graph, [("in", 0, 1), ("in", 5, 2)], side_packets={"one": 1, "two": 2})
    assert out == {"out": [(0, (2, 3)), (5, (3, 4))], "copy": [(0, 1), (5, 2)]}


def test_timestamp_offset_propagates_bounds_to_waiting_node() -> None:
    graph = """
    input_stream: "in" output_stream: "out"
    node { calculator: "DropOdd" input_stream: "IN:in" output_stream: "OUT:even" }
    node { calculator: "Pair" input_stream: "A:in" input_stream: "B:even" output_stream: "OUT:out" }
    """
    out = run_graph(graph, [("in", t, t) for t in range(4)], close=False)
    # Pair fires at odd timestamps too (B empty) without waiting for the next even packet.
    assert out == {"out": [(0, (0, 0)), (1, (1, None)), (2, (2, 2)), (3, (3, None))]}


def test_bound_updates_are_observable_only_with_an_offset() -> None:
    base = """
    input_stream: "in" output_stream: "out"
    node {{ calculator: "{calc}" input_stream: "IN:in" output_stream: "OUT:out" }}
    """
    inputs = [("in", t, t) for t in range(3)]
    with_offset = run_graph(
        base.format(calc="DropOdd"), inputs, observe_timestamp_bounds=True
    )
    assert with_offset == {"out": [(0, 0), (1, None), (2, 2)]}
    without = run_graph(
        base.format(calc="DropOddNoOffset"), inputs, observe_timestamp_bounds=True
    )
    assert without == {"out": [(0, 0), (2, 2)]}


def test_back_edge_with_previous_loopback() -> None:
    graph = """
    input_stream: "in" output_stream: "prev"
    node {
      calculator: "PreviousLoopbackCalculator"
      input_stream: "MAIN:in"
      input_stream: "LOOP:out"
      input_stream_info: { tag_index: "LOOP" back_edge: true }
      output_stream: "PREV_LOOP:prev"
    }
    node { calculator: "PassThroughCalculator" input_stream: "in" input_stream: "prev"
           output_stream: "out" output_stream: "prev_copy" }
    """
    out = run_graph(graph, [("in", 0, 100), ("in", 1, 101), ("in", 2, 102)])
    assert out == {"prev": [(1, 100), (2, 101)]}


def test_client_timestamps_must_increase() -> None:
    graph = CalculatorGraph('input_stream: "in" output_stream: "out" '
                            'node { calculator: "PassThroughCalculator" '
                            'input_stream: "in" output_stream: "out" }')
    graph.start_run()
    graph.add_packet_to_input_stream("in", Packet(1, 5))
    expected = r'Packet timestamp mismatch.*"in"\. Current minimum expected timestamp is 6 but'
    with pytest.raises(RequestError, match=expected + " received 5"):
        graph.add_packet_to_input_stream("in", Packet(2, 5))
    graph.close()


def test_packets_before_start_and_unknown_streams_are_request_errors() -> None:
    graph = CalculatorGraph('input_stream: "in" output_stream: "out" '
                            'node { calculator: "PassThroughCalculator" '
                            'input_stream: "in" output_stream: "out" }')
    with pytest.raises(RequestError, match="must be started"):
        graph.add_packet_to_input_stream("in", Packet(1, 0))
    graph.start_run()
    with pytest.raises(RequestError, match='"nope" does not exist'):
        graph.add_packet_to_input_stream("nope", Packet(1, 0))
    graph.close()


# --------------------------------------------------------------------------- side packets


def test_output_side_packet_feeds_a_later_nodes_open() -> None:
    # ModelUser comes first in the file; the producer must still be opened before it.
    graph = """
    input_stream: "in" output_stream: "out" input_side_packet: "name"
    node { calculator: "ModelUser" input_side_packet: "MODEL:model" input_stream: "IN:in"
           output_stream: "OUT:out" }
    node { name: "producer" calculator: "ModelProducer" input_side_packet: "NAME:name"
           output_side_packet: "MODEL:model" }
    """
    validated = _validated(graph)
    assert validated.nodes[validated.order[0]].name == "producer"
    run = CalculatorGraph(validated)
    seen: list[Any] = []
    run.observe_output_stream("out", lambda _n, p: seen.append((p.timestamp, p.payload)))
    run.start_run({"name": "qwen"})
    run.add_packet_to_input_stream("in", Packet("hi", 0))
    run.close(timeout=10)
    assert seen == [(0, "model-qwen:hi")]
    assert run.get_output_side_packet("model") == "model-qwen"


def test_required_side_packet_missing() -> None:
    # Declared by the graph, so the client must pass it at run start.
    graph = """
    input_stream: "in" output_stream: "out" input_side_packet: "model"
    node { calculator: "ModelUser" input_side_packet: "MODEL:model" input_stream: "IN:in"
           output_stream: "OUT:out" }
    """
    with pytest.raises(ValidationError) as info:
        run_graph(graph, [("in", 0, "x")])
    assert 'Side packet "model" is required but was not provided.' in str(info.value)
    assert str(info.value).startswith("ValidateRequiredSidePackets failed to validate")


def test_optional_side_packet_may_be_missing() -> None:
    graph = """
    input_stream: "in" output_stream: "out"
    node { calculator: "AddConst" input_stream: "IN:in" output_stream: "OUT:out"
           input_side_packet: "K:k" }
    """
    assert run_graph(graph, [("in", 0, 1)]) == {"out": [(0, 1)]}


# --------------------------------------------------------------------------- errors


_FAILING = """
input_stream: "in" output_stream: "out" input_side_packet: "phase"
node {{ name: "{name}" calculator: "Failing" input_stream: "IN:in" output_stream: "OUT:out"
       input_side_packet: "PHASE:phase" }}
"""


@pytest.mark.parametrize(
    ("phase", "prefix"),
    [
        ("open", "Open"),  # open fails: process and close never run
        ("process", "Process"),  # the first packet fails
        ("close", "Close"),  # the run ends, then close fails
    ],
)
def test_calculator_errors_carry_mediapipe_prefix(phase: str, prefix: str) -> None:
    with pytest.raises(CalculatorError) as info:
        run_graph(_FAILING.format(name="bad_node"), [("in", 0, 1)], side_packets={"phase": phase})
    error = info.value
    assert str(error) == (
        f'Calculator::{prefix}() for node "bad_node" failed: boom in {phase} of bad_node'
    )
    assert error.node == "bad_node"
    assert error.phase == prefix
    assert isinstance(error.__cause__, ValueError)


def test_unnamed_failing_node_uses_canonical_name() -> None:
    with pytest.raises(CalculatorError, match='for node "Failing" failed'):
        run_graph(_FAILING.replace('name: "{name}" ', "").format(), [("in", 0, 1)],
                  side_packets={"phase": "process"})


def test_several_failing_nodes_give_an_exception_group() -> None:
    graph = """
    input_stream: "in" output_stream: "a" output_stream: "b" input_side_packet: "phase"
    node { name: "first" calculator: "Failing" input_stream: "IN:in" output_stream: "OUT:a"
           input_side_packet: "PHASE:phase" }
    node { name: "second" calculator: "Failing" input_stream: "IN:in" output_stream: "OUT:b"
           input_side_packet: "PHASE:phase" }
    """
    with pytest.raises(ExceptionGroup) as info:
        run_graph(graph, [("in", 0, 1)], side_packets={"phase": "close"})
    group = info.value
    assert "CalculatorGraph::Run() failed" in str(group)
    assert all(isinstance(e, CalculatorError) for e in group.exceptions)
    assert sorted(e.node for e in group.exceptions) == ["first", "second"]


def test_failed_run_rejects_further_packets() -> None:
    run = CalculatorGraph(_validated(_FAILING.format(name="n")))
    run.start_run({"phase": "process"})
    run.add_packet_to_input_stream("in", Packet(1, 0))
    with pytest.raises(CalculatorError):
        run.wait_until_done(timeout=10)
    assert run.has_error()
    with pytest.raises(CalculatorError):
        run.add_packet_to_input_stream("in", Packet(2, 1))


# --------------------------------------------------------------------------- stopping


def test_stop_processing_from_a_source_ends_the_run() -> None:
    graph = """
    output_stream: "out" input_side_packet: "n"
    node { calculator: "Counter" input_side_packet: "N:n" output_stream: "OUT:c" }
    node { calculator: "AddConst" input_stream: "IN:c" output_stream: "OUT:out" }
    """
    run = CalculatorGraph(graph)
    seen: list[tuple[int, Any]] = []
    run.observe_output_stream("out", lambda _n, p: seen.append((p.timestamp, p.payload)))
    run.start_run({"n": 4})
    run.wait_until_done(timeout=10)  # no close: the source's StopProcessing ends the run
    assert seen == [(t, t) for t in range(4)]
    assert run.done and not run.has_error()


def test_stop_processing_from_a_non_source_closes_graph_inputs() -> None:
    graph = """
    input_stream: "in" output_stream: "out"
    node { calculator: "StopAfter" input_stream: "IN:in" output_stream: "OUT:out" }
    """
    run = CalculatorGraph(graph)
    seen: list[Any] = []
    run.observe_output_stream("out", lambda _n, p: seen.append(p.payload))
    run.start_run()
    for t, value in enumerate(["a", "b", "stop"]):
        run.add_packet_to_input_stream("in", Packet(value, t))
    run.wait_until_done(timeout=10)  # ends without close_all_packet_sources
    assert seen == ["a", "b"]
    assert not run.has_error()
    with pytest.raises(RequestError, match="already closed"):
        run.add_packet_to_input_stream("in", Packet("late", 10))


# --------------------------------------------------------------------------- cancel / callbacks


_BLOCKER = """
input_stream: "in" output_stream: "out"
node { name: "blocker" calculator: "Blocker" input_stream: "IN:in" output_stream: "OUT:out" }
"""


def test_cancel_wakes_on_cancel_callbacks_and_closes_nodes() -> None:
    state: dict[str, Any] = {"entered": threading.Event()}
    run = CalculatorGraph(_BLOCKER, resources={"blocker": state})
    run.start_run()
    run.add_packet_to_input_stream("in", Packet("x", 0))
    assert state["entered"].wait(timeout=10)
    started = time.monotonic()
    run.cancel()
    with pytest.raises(GraphCancelledError):
        run.wait_until_done(timeout=10)
    assert time.monotonic() - started < 5
    assert state["woken"] is True  # woken by the callback, not by the 10 s timeout
    assert state.get("closed") is True
    assert run.cancelled


def test_add_done_callback_before_and_after_the_end() -> None:
    graph = ('input_stream: "in" output_stream: "out" node { calculator: "PassThroughCalculator" '
             'input_stream: "in" output_stream: "out" }')
    run = CalculatorGraph(graph)
    early = threading.Event()
    seen: list[CalculatorGraph] = []

    def first(g: CalculatorGraph) -> None:
        seen.append(g)
        early.set()

    run.add_done_callback(first)
    run.start_run()
    assert not early.is_set()
    run.close(timeout=10)
    assert early.wait(timeout=10)
    assert seen == [run]
    late = threading.Event()
    run.add_done_callback(lambda g: late.set())
    assert late.wait(timeout=10)


# --------------------------------------------------------------------------- threading


def test_max_queue_size_throttles_without_deadlock() -> None:
    graph = """
    max_queue_size: 2
    input_stream: "in" output_stream: "out"
    node { name: "slow" calculator: "Slow" input_stream: "IN:in" output_stream: "OUT:out" }
    """
    run = CalculatorGraph(graph, resources={"slow": {"sleep": 0.005}})
    seen: list[int] = []
    run.observe_output_stream("out", lambda _n, p: seen.append(p.payload))
    run.start_run()
    started = time.monotonic()
    for t in range(40):
        run.add_packet_to_input_stream("in", Packet(t, t))
    adding = time.monotonic() - started
    run.close(timeout=30)
    assert seen == list(range(40))
    # Without throttling adding 40 packets takes well under a millisecond; with a queue of 2 the
    # client waits for the 5 ms node.
    assert adding > 0.1


def test_max_queue_size_with_a_loopback_node_does_not_deadlock() -> None:
    graph = """
    max_queue_size: 1
    input_stream: "in" output_stream: "prev"
    node {
      calculator: "PreviousLoopbackCalculator"
      input_stream: "MAIN:in"
      input_stream: "LOOP:out"
      input_stream_info: { tag_index: "LOOP" back_edge: true }
      output_stream: "PREV_LOOP:prev"
    }
    node { calculator: "PassThroughCalculator" input_stream: "in" input_stream: "prev"
           output_stream: "out" output_stream: "prev_copy" }
    """
    out = run_graph(graph, [("in", t, t) for t in range(50)], timeout=30)
    assert out == {"prev": [(t, t - 1) for t in range(1, 50)]}


def _parallel_graph(executor_lines: str, node_executor: str) -> str:
    return f"""
    {executor_lines}
    input_stream: "in" output_stream: "a" output_stream: "b"
    node {{ name: "left" calculator: "Slow" input_stream: "IN:in" output_stream: "OUT:a"
            {node_executor} }}
    node {{ name: "right" calculator: "Slow" input_stream: "IN:in" output_stream: "OUT:b"
            {node_executor} }}
    """


def test_num_threads_one_serialises_nodes() -> None:
    state = {"lock": threading.Lock(), "active": 0, "max_active": 0, "sleep": 0.01}
    text = _parallel_graph("num_threads: 1", "")
    out = run_graph(text, [("in", t, t) for t in range(5)],
                    resources={"left": state, "right": state})
    assert out == {"a": [(t, t) for t in range(5)], "b": [(t, t) for t in range(5)]}
    assert state["max_active"] == 1


def test_node_executor_with_two_threads_runs_nodes_concurrently() -> None:
    executor = """
    num_threads: 1
    executor {
      name: "heavy"
      type: "ThreadPoolExecutor"
      options { [mediapipe.ThreadPoolExecutorOptions.ext] { num_threads: 2 } }
    }
    """
    validated = _validated(_parallel_graph(executor, 'executor: "heavy"'))
    assert validated.executors == {"heavy": 2}
    assert validated.num_threads == 1
    # Each call waits at a two-party barrier: it only passes if both nodes run at once.
    state = {"lock": threading.Lock(), "active": 0, "max_active": 0,
             "barrier": threading.Barrier(2)}
    out = run_graph(validated, [("in", t, t) for t in range(3)],
                    resources={"left": state, "right": state}, timeout=20)
    assert out == {"a": [(t, t) for t in range(3)], "b": [(t, t) for t in range(3)]}
    assert state["max_active"] == 2


def test_many_concurrent_runs_of_one_validated_graph() -> None:
    validated = _validated("""
    input_stream: "in" output_stream: "out" input_side_packet: "k"
    node { calculator: "AddConst" input_stream: "IN:in" output_stream: "OUT:a"
           input_side_packet: "K:k" }
    node { calculator: "PassThroughCalculator" input_stream: "a" output_stream: "b" }
    node { calculator: "AddConst" input_stream: "IN:b" output_stream: "OUT:out"
           input_side_packet: "K:k" }
    """)
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            results[k] = run_graph(
                validated, [("in", t, t) for t in range(50)], side_packets={"k": k}, timeout=30
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(results) == 16
    for k, out in results.items():
        assert out == {"out": [(t, t + 2 * k) for t in range(50)]}
