"""Per-node and per-graph Prometheus metrics, read from the graphs' statistics at scrape time.

Nothing is counted twice: the collector turns each served graph's ``framework/stats.py`` snapshot
into metric families when ``GET /metrics`` renders :data:`ovgraph.metrics.REGISTRY`, so the
graphs' hot paths pay nothing for it. Labels: ``graph`` (servable name), ``node`` (canonical node
name), ``calculator``, ``status`` — all from the graph files, never from requests.

| Metric | Type | Labels |
|---|---|---|
| ``ovgraph_graph_runs_total`` | counter | ``graph``, ``status`` (finished, failed, cancelled) |
| ``ovgraph_graph_runs_running`` | gauge | ``graph`` |
| ``ovgraph_graph_run_duration_seconds`` | summary (p50, p99) | ``graph`` |
| ``ovgraph_node_calls_total`` | counter | ``graph``, ``node``, ``calculator`` |
| ``ovgraph_node_errors_total`` | counter | ``graph``, ``node``, ``calculator`` |
| ``ovgraph_node_call_seconds`` | summary (p50, p99) | ``graph``, ``node``, ``calculator`` |
| ``ovgraph_node_queued_packets`` | gauge | ``graph``, ``node``, ``calculator`` |
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ovgraph.framework.stats import stats_of
from ovgraph.metrics import REGISTRY

__all__ = ["watch"]

_NODE = ["graph", "node", "calculator"]


class _GraphCollector:
    """Reads the statistics of every available graph of the watched repository."""

    def __init__(self) -> None:
        self._repository: Any = None

    def watch(self, repository: Any) -> None:
        self._repository = weakref.ref(repository)

    def describe(self) -> list[Metric]:
        return []  # families depend on the graphs served: no fixed description

    def collect(self) -> Iterator[Metric]:
        ref = self._repository
        repository = ref() if ref is not None else None
        runs = CounterMetricFamily(
            "ovgraph_graph_runs", "Graph runs ended, by outcome.", labels=["graph", "status"]
        )
        running = GaugeMetricFamily(
            "ovgraph_graph_runs_running", "Graph runs in progress.", labels=["graph"]
        )
        duration = Metric(
            "ovgraph_graph_run_duration_seconds", "Duration of graph runs (p50, p99).", "summary"
        )
        calls = CounterMetricFamily(
            "ovgraph_node_calls", "Calculator process() calls per node.", labels=_NODE
        )
        errors = CounterMetricFamily(
            "ovgraph_node_errors", "Calculator failures (open, process, close) per node.",
            labels=_NODE,
        )
        seconds = Metric(
            "ovgraph_node_call_seconds", "Time in process() per node (p50, p99).", "summary"
        )
        queued = GaugeMetricFamily(
            "ovgraph_node_queued_packets", "Packets waiting in a node's input streams now.",
            labels=_NODE,
        )
        definitions = repository.definitions() if repository is not None else []
        for definition in definitions:
            validated = definition.validated
            if validated is None:
                continue
            snap = stats_of(validated).snapshot()
            graph = definition.name
            run = snap["runs"]
            for status in ("finished", "failed", "cancelled"):
                runs.add_metric([graph, status], run[status])
            running.add_metric([graph], run["running"])
            ended = run["finished"] + run["failed"] + run["cancelled"]
            _summary(duration, {"graph": graph}, run["duration_ms"], 1e-3, ended,
                     run["duration_seconds_sum"])
            for node in snap["nodes"]:
                labels = [graph, node["name"], node["calculator"]]
                calls.add_metric(labels, node["process_calls"])
                errors.add_metric(labels, node["errors"])
                queued.add_metric(labels, node["queued"])
                _summary(seconds, dict(zip(_NODE, labels)), node["process_time_us"], 1e-6,
                         node["process_calls"], node["process_seconds_sum"])
        yield from (runs, running, duration, calls, errors, seconds, queued)


def _summary(
    metric: Metric, labels: dict[str, str], quantiles: dict[str, float | None], scale: float,
    count: int, total: float,
) -> None:
    for key, q in (("p50", "0.5"), ("p99", "0.99")):
        value = quantiles.get(key)
        if value is not None:
            metric.add_sample(metric.name, {**labels, "quantile": q}, value * scale)
    metric.add_sample(metric.name + "_count", labels, count)
    metric.add_sample(metric.name + "_sum", labels, total)


_COLLECTOR = _GraphCollector()
_lock = threading.Lock()
_registered = False


def watch(repository: Any) -> None:
    """Export the graph statistics of ``repository`` (the server's; the last one wins)."""
    global _registered
    with _lock:
        _COLLECTOR.watch(repository)
        if not _registered:
            REGISTRY.register(_COLLECTOR)  # type: ignore[arg-type]
            _registered = True
