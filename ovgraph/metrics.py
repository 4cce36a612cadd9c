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

OVMS's metric families (``docs/metrics.md``) are exposed under their own names, next to ovgraph's:
``ovms_requests_success`` / ``ovms_requests_fail`` / ``ovms_requests_accepted`` /
``ovms_requests_rejected`` / ``ovms_responses`` / ``ovms_graph_error`` (counters written without
the ``_total`` suffix, as OVMS writes them), ``ovms_current_graphs`` / ``ovms_current_requests``
(gauges) and ``ovms_graph_processing_time_us`` / ``ovms_request_time_us`` /
``ovms_wait_for_infer_req_time_us`` (histograms, OVMS's microsecond buckets), plus the optional
``ovms_graph_request_latency_us``. The data plane records them (``ovgraph.serving.dataplane``).
The families of single OpenVINO models (``ovms_streams``, ``ovms_inference_time_us``,
``ovms_infer_req_queue_size``, ``ovms_infer_req_active``) have no meaning for graphs and are not
offered.

:func:`select` applies ``--metrics_list`` with OVMS's semantics: without a list every family but
the optional ones is exposed; with one, exactly the listed families; an unknown ``ovms_`` name
is an error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
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
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "REQUESTS",
    "REQUESTS_QUEUED",
    "REQUESTS_REJECTED",
    "REQUESTS_RUNNING",
    "REQUEST_DURATION",
    "PlainCounter",
    "collector",
    "counter",
    "gauge",
    "histogram",
    "plain_counter",
    "render",
    "select",
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


_collectors: dict[str, Any] = {}


def collector(key: str, instance: Collector) -> None:
    """Register a custom collector once under ``key`` (read when ``/metrics`` is rendered)."""
    with _lock:
        if key not in _collectors:
            _collectors[key] = instance
            REGISTRY.register(instance)


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


class PlainCounter:
    """A counter written as OVMS writes its counters: ``name{labels} value``, no ``_total``.

    ``prometheus_client`` always appends ``_total`` to counter samples; dashboards built for
    OVMS query the bare names, so these are rendered by :func:`render` itself.
    """

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.label_names = name, documentation, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def labels(self, **values: str) -> _PlainChild:
        """The child of these label values (created at 0)."""
        key = tuple(str(values[name]) for name in self.label_names)
        with self._lock:
            self._values.setdefault(key, 0.0)
        return _PlainChild(self, key)

    def _inc(self, key: tuple[str, ...], amount: float) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **values: str) -> float:
        """The current value of one child (0 when never touched)."""
        key = tuple(str(values[name]) for name in self.label_names)
        with self._lock:
            return self._values.get(key, 0.0)

    def text(self) -> str:
        """The family in the Prometheus text format."""
        lines = [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items())
        for key, value in items:
            labels = ",".join(
                f'{name}="{_escape(v)}"' for name, v in zip(self.label_names, key, strict=True)
            )
            lines.append(f"{self.name}{{{labels}}} {_number(value)}")
        return "\n".join(lines) + "\n"


class _PlainChild:
    __slots__ = ("key", "parent")

    def __init__(self, parent: PlainCounter, key: tuple[str, ...]) -> None:
        self.parent, self.key = parent, key

    def inc(self, amount: float = 1.0) -> None:
        self.parent._inc(self.key, amount)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else f"{int(value)}.0"


_plain: dict[str, PlainCounter] = {}


def plain_counter(name: str, documentation: str, labels: Sequence[str] = ()) -> PlainCounter:
    """Return the OVMS-style counter ``name`` (no ``_total``), creating it on first use."""
    with _lock:
        metric = _plain.get(name)
        if metric is None:
            metric = _plain[name] = PlainCounter(name, documentation, labels)
        return metric


# ------------------------------------------------------------------ --metrics_list

#: OVMS families that are exposed only when ``--metrics_list`` names them.
OPTIONAL_FAMILIES = frozenset({"ovms_graph_request_latency_us"})
_selected: frozenset[str] | None = None


def select(names: Iterable[str] | str | None) -> None:
    """Expose only the families named (``--metrics_list``); None or empty: the default set.

    Raises:
        ValueError: a name is not a metric family this server can expose (names of calculator
            packages that load later, such as ``ovgraph_llm_*``, are accepted when they start
            with ``ovgraph_``).
    """
    global _selected
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    known = _family_names()
    chosen = [
        n[: -len("_total")] if n.endswith("_total") and n[: -len("_total")] in known else n
        for n in (names or []) if n
    ]
    for name in chosen:
        if name not in known and not name.startswith("ovgraph_"):
            raise ValueError(f"Metrics family name not supported: {name}")
    _selected = frozenset(chosen) if chosen else None


def _family_names() -> set[str]:
    names = set(_metrics) | set(_plain)
    names.update(metric.name for metric in REGISTRY.collect())
    return names


def _enabled(name: str) -> bool:
    if _selected is None:
        return name not in OPTIONAL_FAMILIES
    return name in _selected


class _Selected(Collector):
    """The registry's families that ``--metrics_list`` keeps."""

    def collect(self) -> Iterator[Any]:
        for metric in REGISTRY.collect():
            if _enabled(metric.name):
                yield metric


_SELECTED = _Selected()


def render() -> bytes:
    """The selected families in the Prometheus text format."""
    text = generate_latest(_SELECTED)  # type: ignore[arg-type]
    plain = "".join(c.text() for name, c in sorted(_plain.items()) if _enabled(name))
    return text + plain.encode()


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

# ------------------------------------------------------------------ OVMS's families

#: OVMS's histogram buckets: floor(10 * 1.8^i) microseconds, i = 0 … 32.
OVMS_BUCKETS_US = tuple(float(int(10 * 1.8**i)) for i in range(33))
_OVMS_REQUEST = ["api", "interface", "method", "name"]

OVMS_REQUESTS_SUCCESS = plain_counter(
    "ovms_requests_success", "Number of successful requests to a model or a DAG.", _OVMS_REQUEST
)
OVMS_REQUESTS_FAIL = plain_counter(
    "ovms_requests_fail", "Number of failed requests to a model or a DAG.", _OVMS_REQUEST
)
OVMS_REQUESTS_ACCEPTED = plain_counter(
    "ovms_requests_accepted",
    "Number of accepted requests which ended up inserting packet(s) into a MediaPipe graph.",
    _OVMS_REQUEST,
)
OVMS_REQUESTS_REJECTED = plain_counter(
    "ovms_requests_rejected",
    "Number of rejected which failed at MediaPipe packet creation step.", _OVMS_REQUEST,
)
OVMS_RESPONSES = plain_counter(
    "ovms_responses", "Number of responses generated by the MediaPipe graph.", _OVMS_REQUEST
)
OVMS_GRAPH_ERROR = plain_counter(
    "ovms_graph_error", "Number of errors in MediaPipe graph execution phase.", _OVMS_REQUEST
)
OVMS_CURRENT_GRAPHS = gauge(
    "ovms_current_graphs", "Number of MediaPipe graphs in process.", ["name"]
)
OVMS_CURRENT_REQUESTS = gauge(
    "ovms_current_requests",
    "Number of requests being currently processed by the model server.", ["name"],
)
OVMS_GRAPH_PROCESSING_TIME_US = histogram(
    "ovms_graph_processing_time_us",
    "Time successfully started MediaPipe graphs ran, in microseconds.", ["method", "name"],
    buckets=OVMS_BUCKETS_US,
)
OVMS_REQUEST_TIME_US = histogram(
    "ovms_request_time_us", "Processing time of requests to a model or a DAG.",
    ["interface", "name"], buckets=OVMS_BUCKETS_US,
)
OVMS_WAIT_FOR_INFER_REQ_TIME_US = histogram(
    "ovms_wait_for_infer_req_time_us",
    "Request waiting time in the scheduling queue (admission, --max_queued_requests).", ["name"],
    buckets=OVMS_BUCKETS_US,
)
OVMS_GRAPH_REQUEST_LATENCY_US = histogram(
    "ovms_graph_request_latency_us",
    "Time from receiving a request to each response it produced, in microseconds.",
    ["method", "name"], buckets=OVMS_BUCKETS_US,
)
