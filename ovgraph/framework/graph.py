"""``CalculatorGraph``: one run of a validated graph, with MediaPipe's run API.

The run wires one :class:`~ovgraph.framework.node.CalculatorNode` per node, feeds graph input
streams, moves each node's new packets and bounds downstream, calls output observers, and
records failures. Ready nodes go to its :class:`~ovgraph.framework.scheduler.Scheduler`. One
lock per run guards queues and node states; calculators run outside it, one call at a time per
node.

Ending a run: when every graph input stream is closed, no source is active and nothing is ready,
the nodes still open (e.g. waiting on a back edge) are closed without further ``process`` calls,
as MediaPipe does when its scheduler goes idle.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ovgraph._compat import ExceptionGroup
from ovgraph.errors import (
    CalculatorError,
    GraphCancelledError,
    OvGraphError,
    RequestError,
    ValidationError,
)
from ovgraph.framework import executor
from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.node import (
    CLOSED,
    CLOSED_NOW,
    OPEN,
    STOPPED,
    UNOPENED,
    BothHooks,
    CalculatorNode,
    NodeCallError,
)
from ovgraph.framework.packet import Packet
from ovgraph.framework.profiler import profiler_of
from ovgraph.framework.scheduler import Scheduler
from ovgraph.framework.stats import stats_of
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph

__all__ = ["CalculatorGraph"]

logger = logging.getLogger("ovgraph.graph")
calc_logger = logging.getLogger("ovgraph.calculator")

Observer = Callable[[str, Packet], None]
_Calls = list[tuple[Observer, str, Packet]]
_run_ids = itertools.count(1)
_UNSET = ts_mod.UNSET


class _GraphInput:
    __slots__ = ("closed", "consumers", "last_ts", "name", "observers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.consumers: list[tuple[CalculatorNode, int]] = []
        self.observers: list[tuple[Observer, bool]] = []
        self.last_ts = ts_mod.UNSTARTED
        self.closed = False


class CalculatorGraph:
    """A single run of a graph: observe outputs, start, feed inputs, close, wait.

    Args:
        graph: a ``ValidatedGraph`` (shared, cheap to instantiate again) or graph text.
        resources: per-node resources built once per graph definition, keyed by node name.

    Attributes:
        run_id: a process-wide number naming this run (in statistics and traces).
    """

    def __init__(
        self, graph: ValidatedGraph | str, *, resources: Mapping[str, Any] | None = None
    ) -> None:
        if isinstance(graph, str):
            graph = ValidatedGraph(parse_graph_config(graph))
        self.graph = graph
        self._resources = dict(resources or {})
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        rank = {node_index: r for r, node_index in enumerate(graph.order)}
        total = len(graph.order)
        self._nodes = [
            CalculatorNode(spec, cls, total - rank[spec.index])
            for spec, cls in zip(graph.nodes, graph.classes)
        ]
        self._inputs = {e.name: _GraphInput(e.name) for e in graph.graph_inputs}
        self._stream_observers: dict[str, list[tuple[Observer, bool]]] = {}
        for stream, consumers in graph.consumers.items():
            producer = graph.producers[stream]
            targets = [(self._nodes[n], i) for n, i in consumers]
            if producer[0] < 0:
                self._inputs[stream].consumers = targets
            else:
                self._nodes[producer[0]].downstream[producer[1]] = targets
        limits = {"": graph.num_threads or executor.default_num_threads(), **graph.executors}
        self._scheduler = Scheduler(self, self._lock, limits)
        self._scheduler.cond = self._cond
        self._schedule = self._scheduler.schedule
        self._kick_all = self._scheduler.kick
        self._started = False
        self._done = False
        self._errors: list[OvGraphError] = []
        self._cancelled = False
        self._sources_closed = False
        self._side_packets: dict[str, Any] = {}
        self._output_side_packets: dict[str, Any] = {}
        self._max_queue = graph.max_queue_size
        self._cancel_callbacks: list[Callable[[], None]] = []
        self._done_callbacks: list[Callable[[CalculatorGraph], None]] = []
        self._stats = stats_of(graph)
        self.run_id = next(_run_ids)
        self.stats_started_ns = 0
        self._profiler = profiler_of(graph)
        if self._profiler is not None:
            profiler = self._profiler
            self.add_node_hooks(lambda index, _node: profiler.node_profile(index, self.run_id))

    # ----------------------------------------------------------------- public API

    def observe_output_stream(
        self, name: str, callback: Observer, observe_timestamp_bounds: bool = False
    ) -> None:
        """Call ``callback(stream_name, packet)`` for every packet on stream ``name``."""
        if self._started:
            raise RequestError("observe_output_stream must be called before start_run")
        entry = (callback, observe_timestamp_bounds)
        if name in self._inputs:
            self._inputs[name].observers.append(entry)
        elif name in self.graph.producers or self.graph.graph_outputs.names().count(name):
            self._stream_observers.setdefault(name, []).append(entry)
        else:
            raise RequestError(f'Unknown output stream "{name}".')

    def add_node_hooks(self, make: Callable[[int, CalculatorNode], Any]) -> None:
        """Before ``start_run``: give each node hooks called after its calls.

        ``make(index, node)`` returns an object with ``open(node, start_ns, end_ns)``,
        ``process(node, start_ns, end_ns, timestamp)`` and ``close(node, start_ns, end_ns)``
        (``time.perf_counter_ns`` times), or None; it runs on the calling thread of each call.
        The profiler and request tracing use this.
        """
        if self._started:
            raise RequestError("add_node_hooks must be called before start_run")
        for index, node in enumerate(self._nodes):
            hooks = make(index, node)
            if hooks is not None:
                node.hooks = hooks if node.hooks is None else BothHooks(node.hooks, hooks)

    def start_run(self, side_packets: Mapping[str, Any] | None = None) -> None:
        """Open every node (in dependency order) and start accepting input packets."""
        if self._started:
            raise RequestError("start_run called twice on the same graph run")
        self._side_packets = dict(side_packets or {})
        missing = [n for n in self.graph.required_side_packets if n not in self._side_packets]
        missing = [n for n in missing if not self._optional_side_packet(n)]
        if missing:
            raise ValidationError(
                "ValidateRequiredSidePackets failed to validate: \n"
                + "\n".join(f'; Side packet "{n}" is required but was not provided.'
                            for n in missing)
            )
        self._started = True
        self._stats.run_started(self)
        for index in self.graph.order:
            node = self._nodes[index]
            if self._errors:
                break
            self._open(node)
        with self._lock:
            for node in self._nodes:
                if node.is_source and node.state == OPEN:
                    self._schedule(node)
            if not self._inputs:
                self._sources_closed_if_no_inputs()
            self._kick_all()
            self.check_idle()

    def add_packet_to_input_stream(
        self, name: str, packet: Packet | Any, timestamp: int | None = None
    ) -> None:
        """Add a packet (or a payload plus ``timestamp``) to graph input stream ``name``."""
        if not isinstance(packet, Packet):
            if timestamp is None:
                raise RequestError("A timestamp is required with a bare payload")
            packet = Packet(packet, timestamp)
        elif timestamp is not None:
            packet = packet.at(timestamp)
        stream = self._inputs.get(name)
        if stream is None:
            raise RequestError(f'Graph input stream "{name}" does not exist.')
        ts = packet.timestamp
        with self._lock:
            if not self._started:
                raise RequestError("Graph must be started before adding packets.")
            if self._errors:
                raise self._combined_error()
            if stream.closed:
                raise RequestError(f'Graph input stream "{name}" is already closed.')
            expected = (
                ts_mod.next_allowed_in_stream(stream.last_ts)
                if stream.last_ts != ts_mod.UNSTARTED
                else ts_mod.PRE_STREAM
            )
            if ts < expected or not ts_mod.is_allowed_in_stream(ts):
                raise RequestError(
                    f'Packet timestamp mismatch on a calculator receiving from stream "{name}". '
                    f"Current minimum expected timestamp is {ts_mod.timestamp_str(expected)} "
                    f"but received {ts_mod.timestamp_str(ts)}."
                )
            if self._max_queue > 0:
                self._throttle(stream)
            stream.last_ts = ts
            if self._profiler is not None:
                self._profiler.packet_added(self.run_id, name, ts)
            bound = ts_mod.next_allowed_in_stream(ts)
            for node, in_id in stream.consumers:
                s = node.streams[in_id]
                s.queue.append(packet)
                s.bound = bound
                node.handler.on_push(s)
                self._schedule(node)
            observers = stream.observers
            self._kick_all()
        for callback, _ in observers:
            callback(name, packet)

    def close_input_stream(self, name: str) -> None:
        """Close graph input stream ``name``: no more packets will arrive on it."""
        stream = self._inputs.get(name)
        if stream is None:
            raise RequestError(f'Graph input stream "{name}" does not exist.')
        with self._lock:
            self._close_input(stream)
            self._kick_all()
            self.check_idle()

    def close_all_input_streams(self) -> None:
        """Close every graph input stream."""
        with self._lock:
            for stream in self._inputs.values():
                self._close_input(stream)
            self._kick_all()
            self.check_idle()

    def close_all_packet_sources(self) -> None:
        """Close every graph input stream and stop every source node."""
        with self._lock:
            self._stop_sources()
            self._kick_all()
            self.check_idle()

    def wait_until_idle(self, timeout: float | None = None) -> None:
        """Block until no node is ready or running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._scheduler.in_flight > 0 and not self._done:
                if not self._wait(deadline):
                    raise TimeoutError("wait_until_idle timed out")
            if self._errors:
                raise self._combined_error()

    def wait_until_done(self, timeout: float | None = None) -> None:
        """Block until every node is closed; raise the run's error, if any."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._done:
                if not self._wait(deadline):
                    raise TimeoutError("wait_until_done timed out")
            if self._errors or self._cancelled:
                raise self._combined_error()

    def close(self, timeout: float | None = None) -> None:
        """Close all packet sources and wait until the run is done."""
        self.close_all_packet_sources()
        self.wait_until_done(timeout)

    def cancel(self) -> None:
        """Abort the run: no more ``process`` calls; open nodes are closed.

        Calculators blocked inside ``process`` are woken through their ``on_cancel`` callbacks.
        """
        with self._lock:
            if self._done or self._cancelled:
                return
            self._cancelled = True
            callbacks = list(self._cancel_callbacks)
            self._abort()
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("Cancel callback failed")

    def add_done_callback(self, callback: Callable[[CalculatorGraph], None]) -> None:
        """Call ``callback(graph)`` on a pool thread once the run has ended."""
        with self._lock:
            if not self._done:
                self._done_callbacks.append(callback)
                return
        executor.submit(callback, self)

    @property
    def errors(self) -> list[OvGraphError]:
        """The failures recorded so far."""
        return list(self._errors)

    @property
    def cancelled(self) -> bool:
        """Whether ``cancel`` was called."""
        return self._cancelled

    def has_error(self) -> bool:
        """Whether any node failed."""
        return bool(self._errors)

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        return self._done

    def stat_nodes(self) -> list[CalculatorNode]:
        """The run's nodes, in node order (for statistics: read without the lock)."""
        return self._nodes

    def get_output_side_packet(self, name: str) -> Any:
        """Return an output side packet set by a node (after ``start_run``)."""
        if name not in self._output_side_packets:
            raise RequestError(f'Side packet "{name}" is not available.')
        return self._output_side_packets[name]

    # ----------------------------------------------------------------- scheduler hooks

    def run_node(self, node: CalculatorNode, work: Any) -> _Calls:
        """Outside the lock: call the node; then, under the lock, propagate its outputs."""
        try:
            ended = node.call(work)
        except NodeCallError as failure:
            with self._lock:
                node.state = CLOSED
                self._fail(node, failure.phase, failure.error)
                return self._close_outputs(node)
        with self._lock:
            if ended == STOPPED:
                self._stop_sources()
            if ended >= CLOSED_NOW:
                node.state = CLOSED
                return self._close_outputs(node)
            return self._propagate(node)

    def notify(self, calls: _Calls) -> None:
        """Outside the lock: call output observers (an observer's failure is logged)."""
        for callback, name, packet in calls:
            try:
                callback(name, packet)
            except Exception:
                logger.exception("Output stream observer for %s failed", name)

    def check_idle(self) -> None:
        """Under the lock: end the run once it can make no more progress."""
        if self._scheduler.in_flight > 0 or self._done or not self._started:
            if self._scheduler.in_flight == 0:
                self._cond.notify_all()
            return
        if self._all_inputs_closed():
            still_open = [n for n in self._nodes if n.state == OPEN]
            if still_open:
                for node in still_open:
                    node.force_close = True
                    self._schedule(node)
                self._kick_all()
                return
            if all(n.state != UNOPENED for n in self._nodes) or self._errors:
                self._done = True
                self._stats.run_ended(
                    self, failed=bool(self._errors), cancelled=self._cancelled
                )
                if self._profiler is not None:  # trace log written before waiters wake
                    self._profiler.run_ended(others_running=self._stats.running() > 0)
                for callback in self._done_callbacks:
                    executor.submit(callback, self)
                self._done_callbacks.clear()
        self._cond.notify_all()

    # ----------------------------------------------------------------- internals

    def _optional_side_packet(self, name: str) -> bool:
        for spec, cls in zip(self.graph.nodes, self.graph.classes):
            for port in cls.ports():
                if port.kind != "input_side_packet" or not port.optional:
                    continue
                idx = spec.input_side_packets.id_of(port.tag, 0)
                if idx is not None and spec.input_side_packets.entries[idx].name == name:
                    return True
        return False

    def _wait(self, deadline: float | None) -> bool:
        if deadline is None:
            self._cond.wait()
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._cond.wait(remaining)
        return True

    def _throttle(self, stream: _GraphInput) -> None:
        limit = self._max_queue
        scheduler = self._scheduler
        while (
            any(len(n.streams[i].queue) >= limit for n, i in stream.consumers)
            and scheduler.in_flight > 0
            and not self._errors
            and not self._done
        ):
            scheduler.space_waiters += 1
            try:
                self._cond.wait()
            finally:
                scheduler.space_waiters -= 1

    def _open(self, node: CalculatorNode) -> None:
        try:
            node.open(
                self._side_packets, self._output_side_packets,
                self._resources.get(node.spec.name), self._cancel_callbacks,
            )
        except NodeCallError as failure:
            with self._lock:
                self._fail(node, failure.phase, failure.error)
            return
        with self._lock:
            calls = self._propagate(node)
        self.notify(calls)

    def _close_outputs(self, node: CalculatorNode) -> _Calls:
        for out in node.outputs:
            out.close()
        calls = self._propagate(node)
        self.check_idle()
        return calls

    def _propagate(self, node: CalculatorNode) -> _Calls:
        """Under the lock: move a node's new packets and bounds downstream."""
        calls: _Calls = []
        plain = node.plain_bounds
        for out_id, out in enumerate(node.outputs):
            pending = out.pending
            if plain and out.requested_bound == _UNSET:
                bound = out.next_allowed  # no bound request, no offset: the common case
            else:
                bound = node.output_bound(out)
            if not pending and bound == out.bound:
                continue
            if pending:
                out.pending = []
            out.bound = bound
            for dst, in_id in node.downstream[out_id]:
                s = dst.streams[in_id]
                if pending:
                    s.queue.extend(pending)
                    dst.handler.on_push(s)
                s.bound = bound
                self._schedule(dst)
            observers = self._stream_observers.get(out.name)
            if observers:
                for callback, bounds in observers:
                    calls.extend((callback, out.name, p) for p in pending)
                    if bounds and not pending and bound != ts_mod.DONE:
                        calls.append((callback, out.name, Packet.empty(bound - 1)))
        return calls

    def _close_input(self, stream: _GraphInput) -> None:
        if stream.closed:
            return
        stream.closed = True
        for node, in_id in stream.consumers:
            node.streams[in_id].bound = ts_mod.DONE
            self._schedule(node)

    def _sources_closed_if_no_inputs(self) -> None:
        if not any(n.is_source for n in self._nodes):
            self._sources_closed = True

    def _stop_sources(self) -> None:
        """Under the lock: close the graph inputs and stop the sources (a graceful end)."""
        for stream in self._inputs.values():
            self._close_input(stream)
        self._sources_closed = True
        for node in self._nodes:
            if node.is_source and node.state == OPEN:
                node.force_close = True
                self._schedule(node)

    def _fail(self, node: CalculatorNode, phase: str, exc: Exception) -> None:
        """Under the lock: record a calculator failure and abort the run."""
        error = CalculatorError(node.spec.name, phase, exc)
        error.__cause__ = exc
        if not isinstance(exc, OvGraphError):
            calc_logger.error("%s", error, exc_info=exc)
        self._errors.append(error)
        self._abort()

    def _abort(self) -> None:
        self._scheduler.stopping = True
        for stream in self._inputs.values():
            stream.closed = True
        self._sources_closed = True
        for node in self._nodes:
            if node.state == OPEN:
                node.force_close = True
                self._schedule(node)
        self._kick_all()
        self.check_idle()

    def _all_inputs_closed(self) -> bool:
        return all(s.closed for s in self._inputs.values()) and (
            self._sources_closed or not any(
                n.is_source and n.state == OPEN for n in self._nodes
            )
        )

    def _combined_error(self) -> BaseException:
        if not self._errors:
            return GraphCancelledError("Graph run was cancelled")
        if len(self._errors) == 1:
            return self._errors[0]
        return ExceptionGroup("CalculatorGraph::Run() failed", list(self._errors))
