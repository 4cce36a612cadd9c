"""``CalculatorNode``: one node of one graph run (MediaPipe's ``CalculatorNode``).

A node owns its calculator instance, its input streams and their handler (readiness), its output
streams and where they lead. The graph run calls it in three steps:

- :meth:`CalculatorNode.open` once, in dependency order;
- :meth:`CalculatorNode.next_work` under the run's lock: what the node should do now (an input
  set, a source call, ``CLOSE``) or None;
- :meth:`CalculatorNode.call` outside the lock: the ``process`` or ``close`` call itself, which
  returns how it ended or raises :class:`NodeCallError` naming the phase that failed.

Afterwards :meth:`CalculatorNode.output_bound` tells the graph the bound an output stream now has
(bound requests, then the ``TIMESTAMP_OFFSET`` rule). A node is called by one thread at a time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ovgraph.errors import StopProcessing
from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.calculator import (
    Calculator,
    CalculatorContext,
    NodeSpec,
    OutputStream,
    bind_ports,
    output_types,
)
from ovgraph.framework.packet import EMPTY, Packet
from ovgraph.framework.stats import bucket_of, new_histogram
from ovgraph.framework.stream_handlers import CLOSE, InputStream, make_handler

__all__ = [
    "CALLED",
    "CLOSE",
    "CLOSED",
    "OPEN",
    "SOURCE",
    "STOPPED",
    "UNOPENED",
    "BothHooks",
    "CalculatorNode",
    "NodeCallError",
]

UNOPENED, OPEN, CLOSED = 0, 1, 2
SOURCE = "source"
# How a call ended: processed and still open; closed; closed by ``StopProcessing`` raised from a
# non-source ``process`` (the graph then stops its sources, as MediaPipe does).
CALLED, CLOSED_NOW, STOPPED = 0, 1, 2
_UNSET = ts_mod.UNSET
_clock = time.perf_counter_ns
_TIMED_FIRST = 16  # calls of a run always timed
_TIMED_MASK = 7  # then one in eight


class NodeCallError(Exception):
    """A calculator raised during ``phase`` (``Open``, ``Process`` or ``Close``)."""

    def __init__(self, phase: str, error: Exception) -> None:
        super().__init__(phase)
        self.phase = phase
        self.error = error


class CalculatorNode:
    """Run-time state of one node: calculator, input streams and handler, output streams.

    Args:
        spec: the validated node.
        cls: its calculator class.
        priority: scheduling priority (nodes nearer the graph outputs run first).
    """

    __slots__ = (
        "calc",
        "calls",
        "cc",
        "cls",
        "downstream",
        "errors",
        "executor",
        "force_close",
        "handler",
        "hist",
        "hooks",
        "is_source",
        "last_input_ts",
        "outputs",
        "plain_bounds",
        "priority",
        "queued",
        "running",
        "spec",
        "state",
        "streams",
        "time_ns",
    )

    def __init__(self, spec: NodeSpec, cls: type[Calculator], priority: int) -> None:
        self.spec = spec
        self.cls = cls
        self.priority = priority
        self.executor = spec.executor
        self.streams = [
            InputStream(e.name, i in spec.back_edges) for i, e in enumerate(spec.inputs)
        ]
        self.handler = make_handler(
            spec.input_stream_handler, self.streams, spec.inputs, spec.handler_options,
            cls.PROCESS_TIMESTAMP_BOUNDS,
        )
        types = output_types(cls, spec)
        self.outputs = [
            OutputStream(e.name, spec.name, types[i]) for i, e in enumerate(spec.outputs)
        ]
        self.downstream: list[list[tuple[CalculatorNode, int]]] = [[] for _ in spec.outputs]
        self.is_source = not spec.inputs and bool(spec.outputs)
        self.state = UNOPENED
        self.queued = False
        self.running = False
        self.force_close = False
        self.last_input_ts = ts_mod.UNSTARTED
        self.calc: Calculator | None = None
        self.cc: CalculatorContext | None = None
        # Statistics of this run (framework/stats.py folds them into the graph's totals): calls,
        # errors, and the durations of the timed calls (time_ns, hist).
        self.plain_bounds = True  # no TIMESTAMP_OFFSET: bounds move only on request
        self.calls = 0
        self.errors = 0
        self.time_ns = 0
        self.hist = new_histogram()
        self.hooks: Any = None  # call hooks: profiler, request tracing (add_node_hooks)

    @property
    def name(self) -> str:
        """The node's canonical name."""
        return self.spec.name

    def queued_packets(self) -> int:
        """Packets waiting in the node's input streams (read without the lock: approximate)."""
        return sum(len(s.queue) for s in self.streams)

    # ----------------------------------------------------------------- open

    def open(
        self,
        side_packets: Mapping[str, Any],
        output_side_packets: dict[str, Any],
        resources: Any,
        cancel_callbacks: list[Any],
    ) -> None:
        """Create the calculator and call its ``open``; output side packets it sets are stored.

        Raises:
            NodeCallError: ``open`` (or the calculator's constructor) raised; the node is closed.
        """
        spec = self.spec
        side_values = [
            output_side_packets[e.name] if e.name in output_side_packets
            else side_packets.get(e.name)
            for e in spec.input_side_packets
        ]
        cc = CalculatorContext(spec, bind_ports(self.cls, spec), self.outputs, side_values)
        cc.resources = resources
        cc.graph_side_packets = side_packets  # type: ignore[assignment]
        cc.cancel_callbacks = cancel_callbacks
        self.cc = cc
        start = _clock()
        try:
            self.calc = self.cls()
            cc.offset = self.cls.TIMESTAMP_OFFSET
            for out in self.outputs:
                out.current_ts = ts_mod.UNSTARTED
            self.calc.open(cc)
        except Exception as exc:
            self.errors += 1
            self.state = CLOSED
            raise NodeCallError("Open", exc) from exc
        finally:
            if self.hooks is not None:
                self.hooks.open(self, start, _clock())
        self.state = OPEN
        for i, entry in enumerate(spec.output_side_packets):
            value = cc.output_side_packets[i]
            if value is not EMPTY:
                output_side_packets[entry.name] = value
        cc.input_timestamp = ts_mod.PRE_STREAM
        self.plain_bounds = cc.offset is None

    # ----------------------------------------------------------------- process / close

    def next_work(self, stopping: bool) -> Any:
        """Under the lock: the node's next job (input set, ``SOURCE``, ``CLOSE``) or None.

        ``stopping`` is true when the run is cancelled or has failed: open nodes only close.
        """
        if self.state != OPEN:
            return None
        if self.force_close or stopping:
            return CLOSE
        if self.is_source:
            return SOURCE
        if not self.streams:
            return None
        return self.handler.next_input_set()

    def call(self, work: Any) -> int:
        """Outside the lock: run ``work``; return ``CALLED``, ``CLOSED_NOW`` or ``STOPPED``.

        Counts the ``process`` call (and, sampled, its duration) in the node's statistics.

        Raises:
            NodeCallError: the calculator raised; its pending outputs are dropped.
        """
        cc = self.cc
        calc = self.calc
        assert cc is not None and calc is not None
        if work is CLOSE:
            cc.inputs = [Packet.empty(ts_mod.DONE) for _ in self.streams]
            cc.input_timestamp = ts_mod.DONE
            for out in self.outputs:
                out.current_ts = ts_mod.DONE
            self._close(calc, cc)
            return CLOSED_NOW
        if work is SOURCE:
            cc.inputs = []
            ts = ts_mod.UNSET
        else:
            ts, packets = work
            cc.inputs = packets
            cc.input_timestamp = ts
            self.last_input_ts = ts
            for out in self.outputs:
                out.current_ts = ts
        # Statistics: every call is counted; its duration is measured for the first calls of
        # the run, then for one call in eight (a clock read costs as much as a short call), and
        # always when hooks (profiler, tracing) want it.
        calls = self.calls + 1
        self.calls = calls
        timed = calls <= _TIMED_FIRST or not calls & _TIMED_MASK or self.hooks is not None
        start = _clock() if timed else 0
        stopped = False
        try:
            calc.process(cc)
        except StopProcessing:
            stopped = True
        except Exception as exc:
            self.errors += 1
            if timed:
                self._timed(start, ts)
            for out in self.outputs:
                out.pending.clear()
            raise NodeCallError("Process", exc) from exc
        if timed:
            self._timed(start, ts)
        if not stopped:
            return CALLED
        self._close(calc, cc)
        return CLOSED_NOW if work is SOURCE else STOPPED

    def _timed(self, start: int, ts: int) -> None:
        end = _clock()
        elapsed = end - start
        self.time_ns += elapsed
        us = elapsed // 1000
        self.hist[us if us < 8 else bucket_of(us)] += 1
        if self.hooks is not None:
            self.hooks.process(self, start, end, ts)

    def _close(self, calc: Calculator, cc: CalculatorContext) -> None:
        start = _clock()
        try:
            calc.close(cc)
        except Exception as exc:
            self.errors += 1
            for out in self.outputs:
                out.pending.clear()
            raise NodeCallError("Close", exc) from exc
        finally:
            if self.hooks is not None:
                self.hooks.close(self, start, _clock())

    def output_bound(self, out: OutputStream) -> int:
        """Under the lock: settle ``out``'s bound after a call (requests, then the offset)."""
        bound = out.commit_bound() if out.requested_bound != _UNSET else out.next_allowed
        cc = self.cc
        if cc is None or cc.offset is None or out.closed:
            return bound
        last = self.last_input_ts
        if ts_mod.is_range_value(last) and bound < last + cc.offset + 1:
            bound = last + cc.offset + 1
            out.next_allowed = bound
        return bound


class BothHooks:
    """Two sets of call hooks on one node (e.g. the profiler and request tracing)."""

    __slots__ = ("first", "second")

    def __init__(self, first: Any, second: Any) -> None:
        self.first = first
        self.second = second

    def open(self, node: CalculatorNode, start_ns: int, end_ns: int) -> None:
        """``open`` ended."""
        self.first.open(node, start_ns, end_ns)
        self.second.open(node, start_ns, end_ns)

    def process(self, node: CalculatorNode, start_ns: int, end_ns: int, ts: int) -> None:
        """``process`` ended (outputs still pending)."""
        self.first.process(node, start_ns, end_ns, ts)
        self.second.process(node, start_ns, end_ns, ts)

    def close(self, node: CalculatorNode, start_ns: int, end_ns: int) -> None:
        """``close`` ended."""
        self.first.close(node, start_ns, end_ns)
        self.second.close(node, start_ns, end_ns)
