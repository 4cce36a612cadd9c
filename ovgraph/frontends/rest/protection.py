"""Server-wide protections of the REST frontend: API key, drain, body limit, request metrics.

``ServerState`` carries what every handler shares (key, body limit, the data plane, which owns
admission, deadline and drain). ``ProtectedApplication`` checks, before any handler runs, that a
request to a route marked ``auth`` carries the API key and that the server is not draining, and
counts every answered request in :mod:`ovgraph.metrics` under its route's label.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import tornado.httputil
import tornado.web

from ovgraph import metrics
from ovgraph.errors import OvGraphError, ServableNotReadyError, UnauthorizedError
from ovgraph.frontends.auth import UNAUTHORIZED_MESSAGE, authorized
from ovgraph.frontends.errors import OPENAI, http_error, to_http
from ovgraph.frontends.rest.routes import READ_ONLY, RouteTable
from ovgraph.serving.dataplane import SHUTTING_DOWN, DataPlane
from ovgraph.serving.json_body import JsonParser

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DISCARD_BYTES",
    "MAX_HEADER_BYTES",
    "TORNADO_MAX_HEADER_BYTES",
    "ProtectedApplication",
    "ServerState",
]

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DISCARD_BYTES = 16 * 1024 * 1024
# Request line plus headers above MAX_HEADER_BYTES get 431 in the JSON error shape; Tornado
# itself reads up to TORNADO_MAX_HEADER_BYTES (beyond that it closes the connection unanswered).
MAX_HEADER_BYTES = 64 * 1024
TORNADO_MAX_HEADER_BYTES = 1024 * 1024


class ServerState:
    """What the REST handlers of one server share.

    Args:
        plane: the data plane (admission, deadline, drain); a default one when omitted.
        api_key: the key requests must carry (None: no key).
        max_body_bytes: largest accepted request body.

    ``json_parser`` parses big bodies in a helper process (:mod:`ovgraph.serving.json_body`).
    """

    def __init__(
        self,
        plane: DataPlane | None = None,
        *,
        api_key: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.plane = plane if plane is not None else DataPlane()
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.json_parser = JsonParser()
        self.created: dict[str, int] = {}  # /v3/models "created": first time a model is listed

    def __repr__(self) -> str:  # never show the key
        return f"ServerState({self.plane!r})"

    @property
    def draining(self) -> bool:
        """Whether the server is shutting down."""
        return self.plane.draining


class _RefuseHandler(tornado.web.RequestHandler):
    """Answers a request refused before routing (bad key, draining) in its route's shape."""

    def initialize(self, error: OvGraphError, cors: dict[str, str], errors: str) -> None:
        self.error = error
        self.cors = cors
        self.errors = errors

    def prepare(self) -> None:
        for name, value in self.cors.items():
            self.set_header(name, value)
        status, body = to_http(self.error, self.errors)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        if isinstance(self.error, UnauthorizedError):
            self.set_header("WWW-Authenticate", 'Bearer realm="ovgraph"')
        if status == 503:
            self.set_header("Retry-After", "1")
        self.finish(body)


class _StatusHandler(tornado.web.RequestHandler):
    """Answers any method with ``status`` and the JSON error shape (no route applies)."""

    def initialize(self, status: int, message: str) -> None:
        self.status = status
        self.message = message

    def prepare(self) -> None:
        self.set_status(self.status)
        self.set_header("Content-Type", "application/json")
        if self.status == 431:
            self.set_header("Connection", "close")
        self.finish(http_error(self.status, self.message, OPENAI))


def _header_bytes(request: tornado.httputil.HTTPServerRequest) -> int:
    size = len(request.uri or "")
    for name, value in request.headers.get_all():
        size += len(name) + len(value) + 4
    return size


class ProtectedApplication(tornado.web.Application):
    """``tornado.web.Application`` over a ``RouteTable`` that applies auth and drain first."""

    def __init__(
        self, table: RouteTable, deps: dict[str, Any], state: ServerState,
        cors: dict[str, str], **kw: Any,
    ) -> None:
        super().__init__(table.tornado_rules(deps), ovgraph_state=state, **kw)
        self.table = table
        self.state = state
        self.cors = cors

    def find_handler(
        self, request: tornado.httputil.HTTPServerRequest, **kwargs: Any
    ) -> tornado.web._HandlerDelegate:
        """Refuse guarded requests without the key, and model requests while draining."""
        path = request.path or ""
        if not path.startswith("/"):
            split = urllib.parse.urlsplit(request.uri or "")
            if split.scheme in ("http", "https") and split.path.startswith("/"):
                # absolute-form (RFC 9112 §3.2.2): serve it as its origin-form path
                request.path = split.path
                request.uri = split.path + (f"?{split.query}" if split.query else "")
                path = split.path
            else:  # "*" (OPTIONS *) or garbage: no resource here
                return self.get_handler_delegate(
                    request, _StatusHandler, {"status": 404, "message": "Invalid request URL"}
                )
        if _header_bytes(request) > MAX_HEADER_BYTES:
            return self.get_handler_delegate(
                request, _StatusHandler,
                {"status": 431, "message": f"Request headers exceed {MAX_HEADER_BYTES} bytes"},
            )
        route = self.table.route(path)
        if request.method != "OPTIONS" and route is not None:
            refusal: OvGraphError | None = None
            if route.auth and request.method not in READ_ONLY:
                if not authorized(self.state.api_key, request.headers.get("Authorization")):
                    refusal = UnauthorizedError(UNAUTHORIZED_MESSAGE)
                elif self.state.draining:
                    refusal = ServableNotReadyError(SHUTTING_DOWN)
            elif route.probe and self.state.draining:
                refusal = ServableNotReadyError(SHUTTING_DOWN)
            if refusal is not None:
                metrics.REQUESTS_REJECTED.labels(
                    reason="unauthorized" if isinstance(refusal, UnauthorizedError)
                    else "draining"
                ).inc()
                return self.get_handler_delegate(
                    request, _RefuseHandler,
                    {"error": refusal, "cors": self.cors, "errors": route.errors},
                )
        return super().find_handler(request, **kwargs)

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        """Count the request, then log it as Tornado does."""
        endpoint = self.table.label(handler.request.path or "")
        status = str(handler.get_status())
        metrics.REQUESTS.labels(endpoint=endpoint, status=status).inc()
        metrics.REQUEST_DURATION.labels(endpoint=endpoint).observe(handler.request.request_time())
        super().log_request(handler)
