"""Request traces with OpenTelemetry: a span per request, a child span per node ``process()``.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set,
OpenTelemetry's own convention, and the ``otel`` extra is installed (``pip install
ovgraph[otel]``); ``OTEL_SDK_DISABLED=true`` turns it off again. Spans go to that OTLP collector
over ``http/protobuf`` (default) or ``grpc`` (``OTEL_EXPORTER_OTLP_PROTOCOL``), as
``OTEL_SERVICE_NAME`` (default ``ovgraph``). Off, every function here costs one check.

- Frontends wrap the creation of a run in :func:`incoming` with the request's headers (REST) or
  metadata (gRPC): a W3C ``traceparent`` (and ``tracestate``) there becomes the parent.
- :func:`trace_run` (called by ``GraphDefinition.new_run``) opens the request span ``run
  {graph}`` and hooks the run's nodes: each ``process()`` call becomes a child span named by the
  node, with its calculator, packet timestamp, run id and worker thread as attributes. The
  request span ends with the run (status ERROR with the error's text when it failed).
- A calculator adds attributes to the span of its current call with :func:`annotate` (the
  generation node adds token counts and time to first token this way).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["annotate", "configure", "enabled", "incoming", "trace_run"]

logger = logging.getLogger("ovgraph")

_lock = threading.Lock()
_configured = False
_tracer: Any = None
_PROTOCOLS = ("http/protobuf", "grpc")


def configure(provider: Any | None) -> None:
    """Trace with ``provider`` (an SDK ``TracerProvider``), or not at all (None).

    Servers configure themselves from the environment on first use; tests call this with a
    provider that exports to memory.
    """
    global _configured, _tracer
    with _lock:
        _configured = True
        _tracer = provider.get_tracer("ovgraph") if provider is not None else None


def _from_env() -> Any:
    env = os.environ
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in _PROTOCOLS:
        logger.error("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported (use %s): no traces",
                     protocol, " or ".join(_PROTOCOLS))
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
    except ImportError:
        logger.error("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed "
                     "(pip install 'ovgraph[otel]'): no traces")
        return None
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "ovgraph"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    atexit.register(provider.shutdown)  # flush what is still buffered
    logger.info("Request traces go to %s (%s)", endpoint, protocol)
    return provider


def _get_tracer() -> Any:
    global _configured, _tracer
    if not _configured:
        with _lock:
            if not _configured:
                provider = _from_env()
                _tracer = provider.get_tracer("ovgraph") if provider is not None else None
                _configured = True
    return _tracer


def enabled() -> bool:
    """Whether requests are traced."""
    return _get_tracer() is not None


def _carrier(headers: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    carrier: dict[str, str] = {}
    for name, value in items:
        key = str(name).lower()
        if key in ("traceparent", "tracestate"):
            carrier[key] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return carrier


@contextlib.contextmanager
def incoming(headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> Iterator[None]:
    """Make a request's ``traceparent`` (headers or gRPC metadata) the parent of new runs."""
    if headers is None or _get_tracer() is None:
        yield
        return
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = _carrier(headers)
    if not carrier:
        yield
        return
    token = context.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


def annotate(cc: Any, attributes: Mapping[str, Any]) -> None:
    """Add ``attributes`` to the span of the calculator's current call (when traced)."""
    pending = cc.span_attributes
    if pending is not None:
        pending.update(attributes)


class _RunTrace:
    """The request span of one run and the node hooks that add its children."""

    def __init__(self, tracer: Any, span: Any, run: Any) -> None:
        from opentelemetry import trace

        self.tracer = tracer
        self.span = span
        self.parent = trace.set_span_in_context(span)
        self.run_id = run.run_id
        self.offset = time.time_ns() - time.perf_counter_ns()  # perf counter → epoch

    def open(self, node: Any, start_ns: int, end_ns: int) -> None:
        if node.cc is not None:
            node.cc.span_attributes = {}

    def process(self, node: Any, start_ns: int, end_ns: int, ts: int) -> None:
        thread = threading.current_thread()
        attributes: dict[str, Any] = {
            "ovgraph.node": node.spec.name,
            "ovgraph.calculator": node.spec.calculator,
            "ovgraph.run_id": self.run_id,
            "ovgraph.timestamp": ts,
            "thread.id": thread.native_id or 0,
            "thread.name": thread.name,
        }
        pending = node.cc.span_attributes if node.cc is not None else None
        if pending:
            attributes.update(pending)
            pending.clear()
        span = self.tracer.start_span(
            node.spec.name, context=self.parent, start_time=start_ns + self.offset,
            attributes=attributes,
        )
        span.end(end_time=end_ns + self.offset)

    def close(self, node: Any, start_ns: int, end_ns: int) -> None:
        return None

    def end(self, run: Any) -> None:
        from opentelemetry.trace import Status, StatusCode

        errors = run.errors
        if errors:
            self.span.set_status(Status(StatusCode.ERROR, str(errors[0])))
            self.span.set_attribute("ovgraph.errors", len(errors))
        elif run.cancelled:
            self.span.set_attribute("ovgraph.cancelled", True)
        self.span.end()


def trace_run(run: Any, graph_name: str) -> None:
    """Trace ``run`` (a ``CalculatorGraph`` not started yet) when tracing is on."""
    tracer = _get_tracer()
    if tracer is None:
        return
    from opentelemetry.trace import SpanKind

    span = tracer.start_span(
        f"run {graph_name}", kind=SpanKind.SERVER,
        attributes={"ovgraph.graph": graph_name, "ovgraph.run_id": run.run_id},
    )
    trace = _RunTrace(tracer, span, run)
    run.add_node_hooks(lambda _index, _node: trace)
    run.add_done_callback(trace.end)
