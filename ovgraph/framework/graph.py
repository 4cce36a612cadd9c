"""``CalculatorGraph``: one run of a validated graph, with MediaPipe's run API.

Scheduling: a node that becomes ready is pushed on its executor's ready heap (nodes nearer the
outputs first). Workers from the shared pool (``executor.py``) drain the heap; the worker that made
a node ready usually runs it next, so a packet crosses a chain without changing threads. One lock
per run guards queues and node states; calculators run outside it, one call at a time per node.

Ending a run: when every graph input stream is closed, no source is active and nothing is ready,
the nodes still open (e.g. waiting on a back edge) are closed without further ``process`` calls,
as MediaPipe does when its scheduler goes idle.
"""

from __future__ import annotations

import heapq
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
    StopProcessing,
    ValidationError,
)
from ovgraph.framework import executor
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
from ovgraph.framework.stream_handlers import CLOSE, InputStream, make_handler
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph

__all__ = ["CalculatorGraph"]

logger = logging.getLogger("ovgraph.graph")
calc_logger = logging.getLogger("ovgraph.calculator")

_UNOPENED, _OPEN, _CLOSED = 0, 1, 2
_UNSET = ts_mod.UNSET
Observer = Callable[[str, Packet], None]


class _Node:
    """Run-time state of one node."""

    __slots__ = (
        "calc",
        "cc",
        "cls",
        "downstream",
        "executor",
        "force_close",
        "handler",
        "is_source",
        "last_input_ts",
        "outputs",
        "priority",
        "queued",
        "running",
        "spec",
        "state",
        "streams",
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
        self.downstream: list[list[tuple[_Node, int]]] = [[] for _ in spec.outputs]
        self.is_source = not spec.inputs and bool(spec.outputs)
        self.state = _UNOPENED
        self.queued = False
        self.running = False
        self.force_close = False
        self.last_input_ts = ts_mod.UNSTARTED
        self.calc: Calculator | None = None
        self.cc: CalculatorContext | None = None


class _GraphInput:
    __slots__ = ("closed", "consumers", "last_ts", "name", "observers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.consumers: list[tuple[_Node, int]] = []
        self.observers: list[tuple[Observer, bool]] = []
        self.last_ts = ts_mod.UNSTARTED
        self.closed = False


class CalculatorGraph:
    """A single run of a graph: observe outputs, start, feed inputs, close, wait.

    Args:
        graph: a ``ValidatedGraph`` (shared, cheap to instantiate again) or graph text.
        resources: per-node resources built once per graph definition, keyed by node name.
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
            _Node(spec, cls, total - rank[spec.index])
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
        self._ready: dict[str, list[tuple[int, int, _Node]]] = {"": []}
        self._limits = {"": graph.num_threads or executor.default_num_threads()}
        for name, threads in graph.executors.items():
            self._ready[name] = []
            self._limits[name] = threads
        self._active = dict.fromkeys(self._ready, 0)
        self._seq = itertools.count()
        self._in_flight = 0
        self._started = False
        self._done = False
        self._errors: list[OvGraphError] = []
        self._cancelled = False
        self._sources_closed = False
        self._side_packets: dict[str, Any] = {}
        self._output_side_packets: dict[str, Any] = {}
        self._max_queue = graph.max_queue_size
        self._throttled = 0
        self._cancel_callbacks: list[Callable[[], None]] = []
        self._done_callbacks: list[Callable[[CalculatorGraph], None]] = []

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
        for index in self.graph.order:
            node = self._nodes[index]
            if self._errors:
                break
            self._open(node)
        with self._lock:
            for node in self._nodes:
                if node.is_source and node.state == _OPEN:
                    self._schedule(node)
            if not self._inputs:
                self._sources_closed_if_no_inputs()
            self._kick_all()
            self._check_idle()

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
            self._check_idle()

    def close_all_input_streams(self) -> None:
        """Close every graph input stream."""
        with self._lock:
            for stream in self._inputs.values():
                self._close_input(stream)
            self._kick_all()
            self._check_idle()

    def close_all_packet_sources(self) -> None:
        """Close every graph input stream and stop every source node."""
        with self._lock:
            self._stop_sources()
            self._kick_all()
            self._check_idle()

    def wait_until_idle(self, timeout: float | None = None) -> None:
        """Block until no node is ready or running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._in_flight > 0 and not self._done:
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

    def get_output_side_packet(self, name: str) -> Any:
        """Return an output side packet set by a node (after ``start_run``)."""
        if name not in self._output_side_packets:
            raise RequestError(f'Side packet "{name}" is not available.')
        return self._output_side_packets[name]

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
        while (
            any(len(n.streams[i].queue) >= limit for n, i in stream.consumers)
            and self._in_flight > 0
            and not self._errors
            and not self._done
        ):
            self._throttled += 1
            try:
                self._cond.wait()
            finally:
                self._throttled -= 1

    def _open(self, node: _Node) -> None:
        spec = node.spec
        side_values = []
        for entry in spec.input_side_packets:
            if entry.name in self._output_side_packets:
                side_values.append(self._output_side_packets[entry.name])
            else:
                side_values.append(self._side_packets.get(entry.name))
        port_ids = bind_ports(node.cls, spec)
        cc = CalculatorContext(spec, port_ids, node.outputs, side_values)
        cc.resources = self._resources.get(spec.name)
        cc.graph_side_packets = self._side_packets
        cc.cancel_callbacks = self._cancel_callbacks
        node.cc = cc
        try:
            node.calc = node.cls()
            offset = node.cls.TIMESTAMP_OFFSET
            cc.offset = offset
            for out in node.outputs:
                out.current_ts = ts_mod.UNSTARTED
            node.calc.open(cc)
        except Exception as exc:
            node.state = _CLOSED
            with self._lock:
                self._fail(node, "Open", exc)
            return
        node.state = _OPEN
        for i, entry in enumerate(spec.output_side_packets):
            value = cc.output_side_packets[i]
            if value is not EMPTY:
                self._output_side_packets[entry.name] = value
        cc.input_timestamp = ts_mod.PRE_STREAM
        with self._lock:
            calls = self._propagate(node)
        self._notify(calls)

    def _schedule(self, node: _Node) -> None:
        if node.queued or node.running or node.state != _OPEN:
            return
        node.queued = True
        self._in_flight += 1
        prio = node.priority if not node.is_source else -1
        heapq.heappush(self._ready[node.executor], (-prio, next(self._seq), node))

    def _kick_all(self) -> None:
        for name, heap in self._ready.items():
            if heap and self._active[name] < self._limits[name]:
                self._active[name] += 1
                executor.submit(self._worker, name)

    def _worker(self, executor_name: str) -> None:
        lock = self._lock
        heap = self._ready[executor_name]
        lock.acquire()
        try:
            while heap:
                _, _, node = heapq.heappop(heap)
                node.queued = False
                work = self._next_work(node)
                if work is None:
                    self._in_flight -= 1
                    continue
                node.running = True
                lock.release()
                try:
                    calls = self._run(node, work)
                finally:
                    lock.acquire()
                if calls:
                    lock.release()
                    try:
                        self._notify(calls)
                    finally:
                        lock.acquire()
                node.running = False
                self._in_flight -= 1
                if node.state == _OPEN:
                    self._schedule(node)
                if self._throttled:
                    self._cond.notify_all()
                self._kick_all()
        finally:
            self._active[executor_name] -= 1
            self._check_idle()
            lock.release()

    def _next_work(self, node: _Node) -> Any:
        """Under the lock: what the node should do now, or None."""
        if node.state != _OPEN:
            return None
        if node.force_close or self._cancelled or self._errors:
            return CLOSE
        if node.is_source:
            return "source"
        if not node.streams:
            return None
        return node.handler.next_input_set()

    def _run(self, node: _Node, work: Any) -> list[tuple[Observer, str, Packet]]:
        """Outside the lock: call the calculator; then propagate under the lock."""
        cc = node.cc
        calc = node.calc
        assert cc is not None and calc is not None
        phase = "Process"
        closing = work is CLOSE
        try:
            if closing:
                phase = "Close"
                cc.inputs = [Packet.empty(ts_mod.DONE) for _ in node.streams]
                cc.input_timestamp = ts_mod.DONE
                for out in node.outputs:
                    out.current_ts = ts_mod.DONE
                calc.close(cc)
            elif work == "source":
                cc.inputs = []
                try:
                    calc.process(cc)
                except StopProcessing:
                    closing = True
                    phase = "Close"
                    calc.close(cc)
            else:
                ts, packets = work
                cc.inputs = packets
                cc.input_timestamp = ts
                node.last_input_ts = ts
                for out in node.outputs:
                    out.current_ts = ts
                try:
                    calc.process(cc)
                except StopProcessing:
                    closing = True
                    phase = "Close"
                    calc.close(cc)
                    with self._lock:
                        self._stop_sources()
        except Exception as exc:
            with self._lock:
                for out in node.outputs:
                    out.pending.clear()
                node.state = _CLOSED
                self._fail(node, phase, exc)
                return self._close_outputs(node)
        with self._lock:
            if closing:
                node.state = _CLOSED
                return self._close_outputs(node)
            return self._propagate(node)

    def _close_outputs(self, node: _Node) -> list[tuple[Observer, str, Packet]]:
        for out in node.outputs:
            out.close()
        calls = self._propagate(node)
        self._check_idle()
        return calls

    def _propagate(self, node: _Node) -> list[tuple[Observer, str, Packet]]:
        """Under the lock: move a node's new packets and bounds downstream."""
        calls: list[tuple[Observer, str, Packet]] = []
        offset = node.cc.offset if node.cc is not None else None
        for out_id, out in enumerate(node.outputs):
            pending = out.pending
            bound = out.commit_bound() if out.requested_bound != _UNSET else out.next_allowed
            if (
                offset is not None
                and ts_mod.is_range_value(node.last_input_ts)
                and bound < node.last_input_ts + offset + 1
                and not out.closed
            ):
                bound = node.last_input_ts + offset + 1
                out.next_allowed = bound
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

    def _notify(self, calls: list[tuple[Observer, str, Packet]]) -> None:
        for callback, name, packet in calls:
            try:
                callback(name, packet)
            except Exception:
                logger.exception("Output stream observer for %s failed", name)

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
            if node.is_source and node.state == _OPEN:
                node.force_close = True
                self._schedule(node)

    def _fail(self, node: _Node, phase: str, exc: Exception) -> None:
        """Under the lock: record a calculator failure and abort the run."""
        error = CalculatorError(node.spec.name, phase, exc)
        error.__cause__ = exc
        if not isinstance(exc, OvGraphError):
            calc_logger.error("%s", error, exc_info=exc)
        self._errors.append(error)
        self._abort()

    def _abort(self) -> None:
        for stream in self._inputs.values():
            stream.closed = True
        self._sources_closed = True
        for node in self._nodes:
            if node.state == _OPEN:
                node.force_close = True
                self._schedule(node)
        self._kick_all()
        self._check_idle()

    def _all_inputs_closed(self) -> bool:
        return all(s.closed for s in self._inputs.values()) and (
            self._sources_closed or not any(
                n.is_source and n.state == _OPEN for n in self._nodes
            )
        )

    def _check_idle(self) -> None:
        """Under the lock: end the run once it can make no more progress."""
        if self._in_flight > 0 or self._done or not self._started:
            if self._in_flight == 0:
                self._cond.notify_all()
            return
        if self._all_inputs_closed():
            still_open = [n for n in self._nodes if n.state == _OPEN]
            if still_open:
                for node in still_open:
                    node.force_close = True
                    self._schedule(node)
                self._kick_all()
                return
            if all(n.state != _UNOPENED for n in self._nodes) or self._errors:
                self._done = True
                for callback in self._done_callbacks:
                    executor.submit(callback, self)
                self._done_callbacks.clear()
        self._cond.notify_all()

    def _combined_error(self) -> BaseException:
        if not self._errors:
            return GraphCancelledError("Graph run was cancelled")
        if len(self._errors) == 1:
            return self._errors[0]
        return ExceptionGroup("CalculatorGraph::Run() failed", list(self._errors))
