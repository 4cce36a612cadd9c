"""OVMS's request and graph metrics of one data-plane execution, and gRPC's request count.

``ovgraph.serving.dataplane`` creates one :class:`ExecutionStats` per execution and reports
each phase to it; the metric families are declared in :mod:`ovgraph.metrics`. REST requests are
counted in ``ovgraph_requests_total`` by the REST application (every route, not only graph
runs); gRPC calls are counted here, with ``endpoint="grpc:<method>"`` and the gRPC status code.
"""

from __future__ import annotations

import time
from typing import Any

from ovgraph import metrics
from ovgraph.framework.packet import Packet
from ovgraph.serving.payload import HttpStreamChunk

__all__ = ["ExecutionStats"]


class ExecutionStats:
    """OVMS's request and graph metrics of one execution (and gRPC's ``ovgraph_requests``).

    Counters are written once, when the execution finishes, when every label is known (a V3
    request is a ``Stream`` once it sent a stream chunk); the gauges move as it happens.
    """

    def __init__(
        self, name: str, headers: Any, openai: bool, interface: str | None, method: str | None
    ) -> None:
        """Count the request as current."""
        self.name = name
        grpc = headers is not None and not hasattr(headers, "get")
        self.interface = interface or ("gRPC" if grpc else "REST")
        self.api = "V3" if openai else "KServe"
        self.method = method
        self.created = time.monotonic()
        self.started: float | None = None
        self.graph_running = False
        self.rejected = False
        self.streamed = False
        self.responses = 0
        self.error: BaseException | None = None
        metrics.OVMS_CURRENT_REQUESTS.labels(name=name).inc()

    def waited(self, seconds: float) -> None:
        """Time spent waiting for admission."""
        metrics.OVMS_WAIT_FOR_INFER_REQ_TIME_US.labels(name=self.name).observe(seconds * 1e6)

    def graph_started(self) -> None:
        """The graph run started (its inputs are being fed)."""
        self.started = time.monotonic()
        self.graph_running = True
        metrics.OVMS_CURRENT_GRAPHS.labels(name=self.name).inc()

    def graph_ended(self, error: BaseException | None, cancelled: bool) -> None:
        """The graph run ended (with ``error``, or cancelled)."""
        if not self.graph_running:
            return
        self.graph_running = False
        metrics.OVMS_CURRENT_GRAPHS.labels(name=self.name).dec()
        if error is not None and self.error is None and not cancelled:
            self.error = error
        if self.started is not None:
            metrics.OVMS_GRAPH_PROCESSING_TIME_US.labels(
                method=self._method(), name=self.name
            ).observe((time.monotonic() - self.started) * 1e6)

    def response(self, packet: Packet) -> None:
        """One output packet went to the client."""
        self.responses += 1
        if isinstance(packet.payload, HttpStreamChunk):
            self.streamed = True
        metrics.OVMS_GRAPH_REQUEST_LATENCY_US.labels(
            method=self._method(), name=self.name
        ).observe((time.monotonic() - self.created) * 1e6)

    def _method(self) -> str:
        if self.method:
            return self.method
        if self.api == "V3":
            return "Stream" if self.streamed else "Unary"
        if self.interface == "gRPC" and self.responses > 1:
            return "ModelInferStream"
        return "ModelInfer"

    def finished(self, abandoned: bool) -> None:
        """The frontend is done: count the request (``abandoned``: ended before its run)."""
        if self.graph_running:  # cancelled before the run reported its end
            self.graph_ended(None, True)
        metrics.OVMS_CURRENT_REQUESTS.labels(name=self.name).dec()
        labels = {"api": self.api, "interface": self.interface, "method": self._method(),
                  "name": self.name}
        failed = self.error is not None or abandoned
        (metrics.OVMS_REQUESTS_FAIL if failed else metrics.OVMS_REQUESTS_SUCCESS).labels(
            **labels
        ).inc()
        if self.started is not None:
            (metrics.OVMS_REQUESTS_REJECTED if self.rejected else metrics.OVMS_REQUESTS_ACCEPTED
             ).labels(**labels).inc()
        if self.responses:
            metrics.OVMS_RESPONSES.labels(**labels).inc(self.responses)
        if self.error is not None and self.started is not None and not self.rejected:
            metrics.OVMS_GRAPH_ERROR.labels(**labels).inc()
        elapsed = time.monotonic() - self.created
        metrics.OVMS_REQUEST_TIME_US.labels(interface=self.interface, name=self.name).observe(
            elapsed * 1e6
        )
        if self.interface == "gRPC":
            status = "CANCELLED" if abandoned and self.error is None else (
                getattr(self.error, "grpc_code", "INTERNAL") if self.error is not None else "OK"
            )
            endpoint = f"grpc:{self._method()}"
            metrics.REQUESTS.labels(endpoint=endpoint, status=status).inc()
            metrics.REQUEST_DURATION.labels(endpoint=endpoint).observe(elapsed)
