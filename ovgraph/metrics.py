"""Prometheus metrics of the server process, on ovgraph's own registry.

The server renders :data:`REGISTRY` at ``GET /metrics`` (with ``--metrics_enable``); it is not
``prometheus_client``'s global registry, so nothing else imported into the process leaks into it.

The generic runtime defines the request metrics below. Calculator packages declare their own
metrics through :func:`counter`, :func:`gauge` and :func:`histogram`, which create a metric on
first use and return the same object afterwards (so importing a module twice is harmless)::

    from ovgraph import metrics

    TOKENS = metrics.counter("ovgraph_llm_generation_tokens", "Generated tokens.", ["model"])
    TOKENS.labels(model="m").inc(12)

Label values must come from a bounded set (servable names, status codes), never from request
text.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "REQUESTS",
    "REQUESTS_QUEUED",
    "REQUESTS_REJECTED",
    "REQUESTS_RUNNING",
    "REQUEST_DURATION",
    "counter",
    "gauge",
    "histogram",
    "render",
]

disable_created_metrics()  # no ``*_created`` series: they double the output for no use here
REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

_lock = threading.Lock()
_metrics: dict[str, Any] = {}


def _get(kind: type, name: str, documentation: str, labels: Sequence[str], **kwargs: Any) -> Any:
    with _lock:
        metric = _metrics.get(name)
        if metric is None:
            metric = kind(name, documentation, list(labels), registry=REGISTRY, **kwargs)
            _metrics[name] = metric
        elif not isinstance(metric, kind):
            raise ValueError(f"metric {name} already exists with another type")
        return metric


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    """Return the counter ``name`` (exposed as ``name_total``), creating it on first use."""
    return _get(Counter, name, documentation, labels)


def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
    """Return the gauge ``name``, creating it on first use."""
    return _get(Gauge, name, documentation, labels)


def histogram(
    name: str,
    documentation: str,
    labels: Sequence[str] = (),
    buckets: Sequence[float] = LATENCY_BUCKETS,
) -> Histogram:
    """Return the histogram ``name``, creating it on first use."""
    return _get(Histogram, name, documentation, labels, buckets=tuple(buckets))


def render() -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(REGISTRY)


REQUESTS = counter(
    "ovgraph_requests", "HTTP requests answered, by endpoint and status code.",
    ["endpoint", "status"],
)
REQUEST_DURATION = histogram(
    "ovgraph_request_duration_seconds", "Time from request start to the last byte answered.",
    ["endpoint"],
)
REQUESTS_RUNNING = gauge("ovgraph_requests_running", "Graph runs in progress.")
REQUESTS_QUEUED = gauge(
    "ovgraph_requests_queued", "Requests waiting for admission (see --max_queued_requests)."
)
REQUESTS_REJECTED = counter(
    "ovgraph_requests_rejected", "Requests refused before running, by reason.", ["reason"]
)
for _reason in ("queue_full", "unauthorized", "draining"):
    REQUESTS_REJECTED.labels(reason=_reason)  # exported as 0 before the first rejection
