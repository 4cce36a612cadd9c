"""Server-wide protections of the REST frontend: API key, drain, limits, request metrics.

``ServerState`` carries what every handler shares (key, admission control, limits, the drain
flag, the handlers in flight). ``ProtectedApplication`` checks, before any handler runs, that a
request which runs a model carries the API key and that the server is not draining, and counts
every answered request in :mod:`ovgraph.metrics`.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import tornado.httputil
import tornado.web

from ovgraph import metrics
from ovgraph.errors import OvGraphError, ServableNotReadyError, UnauthorizedError
from ovgraph.frontends.auth import UNAUTHORIZED_MESSAGE, authorized
from ovgraph.frontends.errors import to_http
from ovgraph.serving.admission import (
    DEFAULT_MAX_QUEUED,
    DEFAULT_REQUEST_TIMEOUT,
    AdmissionController,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ProtectedApplication",
    "ServerState",
    "endpoint_label",
]

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DISCARD_BYTES = 16 * 1024 * 1024

# Requests that run a model or change the server (any method but the read-only ones): they need
# the key and are refused while draining. Listings, probes and metadata stay open, as in OVMS.
_READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})
_GUARDED = re.compile(
    r"^/(v3/.+|v1/((chat/)?completions|responses)"
    r"|v2/models/[^/]+(/versions/[0-9]+)?/infer|v1/config/reload)$"
)
_READINESS = re.compile(r"^/v2/(health/ready|models/[^/]+(/versions/[0-9]+)?/ready)$")
_ENDPOINTS = (
    (re.compile(r"^/(v3/|v1/|v3/v1/)chat/completions$"), "/v3/chat/completions"),
    (re.compile(r"^/(v3/|v1/|v3/v1/)completions$"), "/v3/completions"),
    (re.compile(r"^/(v3/|v1/|v3/v1/)responses$"), "/v3/responses"),
    (re.compile(r"^/(v3/|v1/|v3/v1/)models(/[^/]+)?$"), "/v3/models"),
    (re.compile(r"^/v3/.*tokenize$"), "/v3/tokenize"),
    (re.compile(r"^/v3/.+$"), "/v3/other"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[0-9]+)?/infer$"), "/v2/models/infer"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[0-9]+)?/ready$"), "/v2/models/ready"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[0-9]+)?$"), "/v2/models"),
    (re.compile(r"^/v2/health/(live|ready)$"), None),
    (re.compile(r"^/v2/?$"), "/v2"),
    (re.compile(r"^/health$"), "/health"),
    (re.compile(r"^/v1/config(/reload)?$"), None),
    (re.compile(r"^/metrics$"), "/metrics"),
)


def endpoint_label(path: str) -> str:
    """A bounded metrics label for a request path (``other`` for unknown paths)."""
    for pattern, label in _ENDPOINTS:
        if pattern.match(path):
            return label or path
    return "other"


class ServerState:
    """What the REST handlers of one server share.

    Args:
        api_key: the key requests must carry (None: no key).
        max_queued: admission queue length (``--max_queued_requests``).
        max_body_bytes: largest accepted request body.
        request_timeout: seconds a request may wait for its (next) output; 0 disables.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self.api_key = api_key
        self.admission = AdmissionController(max_queued)
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.draining = False
        self.active: set[Any] = set()
        self._idle: asyncio.Event | None = None

    def __repr__(self) -> str:  # never show the key
        return f"ServerState(draining={self.draining}, active={len(self.active)})"

    def track(self, handler: Any) -> None:
        """A handler started work that shutdown must wait for."""
        self.active.add(handler)

    def untrack(self, handler: Any) -> None:
        """That work is over."""
        self.active.discard(handler)
        if not self.active and self._idle is not None:
            self._idle.set()

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until no tracked handler is left; False on timeout."""
        if not self.active:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            return not self.active
        return True


class _RefuseHandler(tornado.web.RequestHandler):
    """Answers a request refused before routing (bad key, draining) with the OpenAI error."""

    def initialize(self, error: OvGraphError, cors: dict[str, str]) -> None:
        self.error = error
        self.cors = cors

    def prepare(self) -> None:
        for name, value in self.cors.items():
            self.set_header(name, value)
        status, body = to_http(self.error)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        if isinstance(self.error, UnauthorizedError):
            self.set_header("WWW-Authenticate", 'Bearer realm="ovgraph"')
        if status == 503:
            self.set_header("Retry-After", "1")
        self.finish(body)


class ProtectedApplication(tornado.web.Application):
    """``tornado.web.Application`` that checks the key and the drain state before routing."""

    def __init__(self, routes: Any, state: ServerState, cors: dict[str, str], **kw: Any) -> None:
        super().__init__(routes, ovgraph_state=state, **kw)
        self.state = state
        self.cors = cors

    def find_handler(
        self, request: tornado.httputil.HTTPServerRequest, **kwargs: Any
    ) -> tornado.web._HandlerDelegate:
        """Refuse guarded requests without the key, and model requests while draining."""
        path = request.path or ""
        if request.method != "OPTIONS":
            refusal: OvGraphError | None = None
            if request.method not in _READ_ONLY and _GUARDED.match(path):
                if not authorized(self.state.api_key, request.headers.get("Authorization")):
                    refusal = UnauthorizedError(UNAUTHORIZED_MESSAGE)
                elif self.state.draining:
                    refusal = ServableNotReadyError("Server is shutting down")
            elif self.state.draining and _READINESS.match(path):
                refusal = ServableNotReadyError("Server is shutting down")
            if refusal is not None:
                metrics.REQUESTS_REJECTED.labels(
                    reason="unauthorized" if isinstance(refusal, UnauthorizedError)
                    else "draining"
                ).inc()
                return self.get_handler_delegate(
                    request, _RefuseHandler, {"error": refusal, "cors": self.cors}
                )
        return super().find_handler(request, **kwargs)

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        """Count the request, then log it as Tornado does."""
        endpoint = endpoint_label(handler.request.path or "")
        status = str(handler.get_status())
        metrics.REQUESTS.labels(endpoint=endpoint, status=status).inc()
        metrics.REQUEST_DURATION.labels(endpoint=endpoint).observe(handler.request.request_time())
        super().log_request(handler)
