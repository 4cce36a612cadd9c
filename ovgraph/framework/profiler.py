"""MediaPipe's ``profiler_config``: calculator profiles and trace logs (``GraphProfiler``).

One :class:`GraphProfiler` belongs to one ``ValidatedGraph`` (:func:`profiler_of`) and is shared
by its runs, as MediaPipe's belongs to one ``CalculatorGraph``. Nothing is created, and the nodes
pay nothing, unless the graph's ``profiler_config`` sets ``enable_profiler`` or
``trace_enabled``.

- ``enable_profiler``: one ``CalculatorProfile`` per node, MediaPipe's fields and semantics:
  ``open_runtime`` and ``close_runtime`` (µs, the last call), ``process_runtime`` (a
  ``TimeHistogram``: ``total`` µs and ``count`` per interval of ``histogram_interval_size_usec``,
  default 1 s, ``num_histogram_intervals`` intervals, default 1, the last one open-ended). With
  ``enable_stream_latency`` also ``process_input_latency`` / ``process_output_latency`` (from the
  start of the earliest source call that led to the input to the start / end of ``process``) and
  per input stream the ``latency`` from a packet's production to the start of the call that
  consumes it (back edges excluded). ``calculator_filter`` (a regular expression that must match
  the whole node name) limits which profiles are reported.
- ``trace_enabled``: every ``open`` / ``process`` / ``close`` call is an event. Unless
  ``trace_log_disabled``, they are written as **Chrome Trace Event JSON** (what Perfetto and
  ``chrome://tracing`` open; MediaPipe writes a binary ``GraphProfile`` instead): one complete
  event (``"ph": "X"``) per call, named by the node, ``cat`` the phase, ``args`` holding the packet
  ``timestamp``, the ``run_id`` and the calculator; ``tid`` is the worker thread, so each thread
  is one track. Files are ``{trace_log_path}{index}.json`` (default path: the temp folder plus
  ``mediapipe_trace_``), rewritten at each log write; a log write happens when a run ends and
  ``trace_log_interval_usec`` (default 0.5 s) has passed since the last one, or no other run of
  the graph is going on. Every ``trace_log_interval_count`` writes (default 10) move to the next
  file, round robin over ``trace_log_count`` files (default 2). Each write also carries the
  calculator profiles of the interval (reset afterwards, as in MediaPipe) under
  ``"calculator_profiles"``. At most ``trace_log_capacity`` events (default 20000) are kept
  between two writes.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ovgraph.framework import timestamp as ts_mod

__all__ = ["GraphProfiler", "NodeProfile", "profiler_of"]

logger = logging.getLogger("ovgraph.graph")

_DEFAULT_INTERVAL_USEC = 1_000_000
_DEFAULT_LOG_INTERVAL_USEC = 500_000
_DEFAULT_LOG_INTERVAL_COUNT = 10
_DEFAULT_LOG_FILE_COUNT = 2
_DEFAULT_CAPACITY = 20_000
_RECENT_PACKETS = 4000
_DEFAULT_PREFIX = "mediapipe_trace_"


class _TimeHistogram:
    __slots__ = ("count", "interval", "total")

    def __init__(self, interval: int, intervals: int) -> None:
        self.interval = interval
        self.total = 0
        self.count = [0] * intervals

    def add(self, start_us: float, end_us: float) -> None:
        if end_us < start_us:
            return
        elapsed = int(end_us - start_us)
        index = min(elapsed // self.interval, len(self.count) - 1)
        self.total += elapsed
        self.count[index] += 1

    def reset(self) -> None:
        self.total = 0
        self.count = [0] * len(self.count)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "interval_size_usec": self.interval,
            "num_intervals": len(self.count),
            "count": list(self.count),
        }


class _CalculatorProfile:
    def __init__(
        self, name: str, streams: list[tuple[str, bool]], interval: int, intervals: int,
        stream_latency: bool,
    ) -> None:
        self.name = name
        self.open_runtime = 0
        self.close_runtime = 0
        self.process_runtime = _TimeHistogram(interval, intervals)
        self.latency = stream_latency
        self.input_latency = _TimeHistogram(interval, intervals)
        self.output_latency = _TimeHistogram(interval, intervals)
        self.streams = [(n, back, _TimeHistogram(interval, intervals)) for n, back in streams]

    def reset(self) -> None:
        for hist in (self.process_runtime, self.input_latency, self.output_latency):
            hist.reset()
        for _name, _back, hist in self.streams:
            hist.reset()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "open_runtime": self.open_runtime,
            "close_runtime": self.close_runtime,
            "process_runtime": self.process_runtime.to_json(),
        }
        if self.latency:
            out["process_input_latency"] = self.input_latency.to_json()
            out["process_output_latency"] = self.output_latency.to_json()
            out["input_stream_profiles"] = [
                {"name": n, "back_edge": back, "latency": h.to_json()}
                for n, back, h in self.streams
            ]
        return out


class GraphProfiler:
    """Profiles and traces of one graph (see the module docstring).

    Args:
        config: the graph's ``ProfilerConfig`` message.
        nodes: the graph's ``NodeSpec`` list.
    """

    def __init__(self, config: Any, nodes: list[Any]) -> None:
        self.config = config
        self.profiling = bool(config.enable_profiler)
        self.tracing = bool(config.trace_enabled)
        self.stream_latency = self.profiling and bool(config.enable_stream_latency)
        self.trace_log = self.tracing and not config.trace_log_disabled
        interval = config.histogram_interval_size_usec or _DEFAULT_INTERVAL_USEC
        intervals = config.num_histogram_intervals or 1
        self._filter = re.compile(config.calculator_filter) if config.calculator_filter else None
        self._lock = threading.Lock()
        self._profiles = [
            _CalculatorProfile(
                spec.name,
                [(e.name, i in spec.back_edges) for i, e in enumerate(spec.inputs)],
                interval, intervals, self.stream_latency,
            )
            for spec in nodes
        ]
        self._calculators = [spec.calculator for spec in nodes]
        capacity = config.trace_log_capacity or _DEFAULT_CAPACITY
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._file_events: list[dict[str, Any]] = []
        self._threads: dict[int, str] = {}
        self._writes = 0
        self._last_write = time.monotonic()
        self._log_interval = (config.trace_log_interval_usec or _DEFAULT_LOG_INTERVAL_USEC) / 1e6
        self._interval_count = config.trace_log_interval_count or _DEFAULT_LOG_INTERVAL_COUNT
        self._file_count = config.trace_log_count or _DEFAULT_LOG_FILE_COUNT
        self._packets: collections.OrderedDict[tuple[int, str, int], tuple[float, float]] = (
            collections.OrderedDict()
        )
        self._pid = os.getpid()

    @property
    def enabled(self) -> bool:
        """Whether the graph profiles or traces at all."""
        return self.profiling or self.tracing

    def trace_log_prefix(self) -> str:
        """``trace_log_path``, or the default prefix in the temp folder."""
        path = self.config.trace_log_path
        return path or str(Path(tempfile.gettempdir()) / _DEFAULT_PREFIX)

    def node_profile(self, index: int, run_id: int) -> NodeProfile:
        """The hooks of node ``index`` in run ``run_id``."""
        return NodeProfile(self, index, run_id)

    # ----------------------------------------------------------------- recording

    def packet_added(self, run_id: int, stream: str, timestamp: int) -> None:
        """A packet entered graph input ``stream`` (stream latency starts here)."""
        if not self.stream_latency:
            return
        now = time.perf_counter_ns() / 1000
        with self._lock:
            self._remember(run_id, stream, timestamp, now, now)

    def _remember(
        self, run_id: int, stream: str, timestamp: int, produced: float, source: float
    ) -> None:
        packets = self._packets
        packets[(run_id, stream, timestamp)] = (produced, source)
        if len(packets) > _RECENT_PACKETS:
            packets.popitem(last=False)

    def _event(
        self, index: int, run_id: int, phase: str, start_ns: int, end_ns: int, ts: int
    ) -> None:
        thread = threading.current_thread()
        tid = thread.native_id or thread.ident or 0
        if tid not in self._threads:
            self._threads[tid] = thread.name
        args: dict[str, Any] = {"run_id": run_id, "calculator": self._calculators[index]}
        if ts_mod.is_range_value(ts) or ts in (ts_mod.PRE_STREAM, ts_mod.POST_STREAM):
            args["timestamp"] = ts
        self._events.append({
            "name": self._profiles[index].name,
            "cat": phase,
            "ph": "X",
            "ts": start_ns / 1000,
            "dur": (end_ns - start_ns) / 1000,
            "pid": self._pid,
            "tid": tid,
            "args": args,
        })

    def record_open(self, hooks: NodeProfile, start_ns: int, end_ns: int) -> None:
        """An ``open`` call of a node ended."""
        with self._lock:
            if self.profiling:
                self._profiles[hooks.index].open_runtime = (end_ns - start_ns) // 1000
            if self.tracing:
                self._event(hooks.index, hooks.run_id, "Open", start_ns, end_ns,
                            ts_mod.UNSTARTED)

    def record_close(self, hooks: NodeProfile, start_ns: int, end_ns: int) -> None:
        """A ``close`` call of a node ended."""
        with self._lock:
            if self.profiling:
                self._profiles[hooks.index].close_runtime = (end_ns - start_ns) // 1000
            if self.tracing:
                self._event(hooks.index, hooks.run_id, "Close", start_ns, end_ns, ts_mod.DONE)

    def record_process(
        self, hooks: NodeProfile, node: Any, start_ns: int, end_ns: int, ts: int
    ) -> None:
        """A ``process`` call of ``node`` ended (its outputs are still pending)."""
        with self._lock:
            if self.profiling:
                profile = self._profiles[hooks.index]
                start_us, end_us = start_ns / 1000, end_ns / 1000
                profile.process_runtime.add(start_us, end_us)
                if self.stream_latency:
                    source = self._input_latencies(profile, hooks.run_id, node, start_us)
                    profile.input_latency.add(source, start_us)
                    profile.output_latency.add(source, end_us)
                    for out in node.outputs:
                        for packet in out.pending:
                            self._remember(
                                hooks.run_id, out.name, packet.timestamp, end_us, source
                            )
            if self.tracing:
                self._event(hooks.index, hooks.run_id, "Process", start_ns, end_ns, ts)

    def _input_latencies(
        self, profile: _CalculatorProfile, run_id: int, node: Any, start_us: float
    ) -> float:
        source = start_us
        cc = node.cc
        for (name, back, hist), packet in zip(profile.streams, cc.inputs if cc else []):
            if back or packet.is_empty:
                continue
            info = self._packets.get((run_id, name, packet.timestamp))
            if info is None:
                continue
            hist.add(info[0], start_us)
            source = min(source, info[1])
        return source

    # ----------------------------------------------------------------- reading, writing

    def calculator_profiles(self) -> list[dict[str, Any]]:
        """The current profiles of the nodes ``calculator_filter`` selects."""
        with self._lock:
            return self._profiles_json()

    def _profiles_json(self) -> list[dict[str, Any]]:
        if not self.profiling:
            return []
        pattern = self._filter
        return [
            p.to_json() for p in self._profiles if pattern is None or pattern.fullmatch(p.name)
        ]

    def run_ended(self, others_running: bool) -> None:
        """A run ended: write the trace log if it is due."""
        if not self.trace_log:
            return
        if others_running and time.monotonic() - self._last_write < self._log_interval:
            return
        self.write_log()

    def write_log(self) -> Path | None:
        """Write the events since the last write (and the profiles) to the current file."""
        if not self.trace_log:
            return None
        with self._lock:
            self._last_write = time.monotonic()
            index = self._writes
            self._writes += 1
            if index % self._interval_count == 0:
                self._file_events = []
            self._file_events.extend(self._events)
            self._events.clear()
            profiles = self._profiles_json()
            for profile in self._profiles:
                profile.reset()
            events = list(self._file_events)
            threads = dict(self._threads)
            file_index = index // self._interval_count % self._file_count
        path = Path(f"{self.trace_log_prefix()}{file_index}.json")
        names = [
            {"name": "thread_name", "ph": "M", "pid": self._pid, "tid": tid, "args": {"name": n}}
            for tid, n in sorted(threads.items())
        ]
        document = {
            "traceEvents": names + events,
            "displayTimeUnit": "ms",
            "calculator_profiles": profiles,
            "otherData": {"producer": "ovgraph", "format": "Chrome Trace Event JSON"},
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(document))
            tmp.replace(path)
        except OSError as exc:
            logger.error("cannot write to trace_log_path %s: %s", path, exc)
            return None
        return path


class NodeProfile:
    """The profiler hooks of one node in one run (see ``CalculatorNode.hooks``)."""

    __slots__ = ("index", "profiler", "run_id")

    def __init__(self, profiler: GraphProfiler, index: int, run_id: int) -> None:
        self.profiler = profiler
        self.index = index
        self.run_id = run_id

    def open(self, node: Any, start_ns: int, end_ns: int) -> None:
        """``open`` ended."""
        self.profiler.record_open(self, start_ns, end_ns)

    def process(self, node: Any, start_ns: int, end_ns: int, ts: int) -> None:
        """``process`` ended."""
        self.profiler.record_process(self, node, start_ns, end_ns, ts)

    def close(self, node: Any, start_ns: int, end_ns: int) -> None:
        """``close`` ended."""
        self.profiler.record_close(self, start_ns, end_ns)


_attach_lock = threading.Lock()


def profiler_of(graph: Any) -> GraphProfiler | None:
    """The :class:`GraphProfiler` of a ``ValidatedGraph`` (None: it neither profiles nor traces)."""
    if "_ovgraph_profiler" not in graph.__dict__:
        with _attach_lock:
            if "_ovgraph_profiler" not in graph.__dict__:
                config = graph.config.profiler_config
                profiler = None
                if config.enable_profiler or config.trace_enabled:
                    profiler = GraphProfiler(config, graph.nodes)
                graph.__dict__["_ovgraph_profiler"] = profiler
    return graph.__dict__["_ovgraph_profiler"]
