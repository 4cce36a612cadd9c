"""The one exception tree of ovgraph.

Every error that can reach a client or a graph author is one of these classes. Frontends turn
them into HTTP and gRPC answers in one place (``ovgraph/frontends/errors.py``); nothing else maps
status codes.

```
OvGraphError
├── GraphConfigError            pbtxt / options invalid (load failure)   500 / INTERNAL
│   ├── CalculatorNotFoundError unknown calculator or subgraph name
│   ├── ContractError           ports, tags or options do not fit the calculator
│   └── ValidationError         wiring: streams, side packets, cycles, handlers
├── CalculatorError             .node, .phase, __cause__ = original      500 / INTERNAL
├── GraphCancelledError                                                   499 / CANCELLED
├── DeadlineExceededError       no output before the run's deadline      504 / DEADLINE_EXCEEDED
├── RequestError                the client's fault                       400 / INVALID_ARGUMENT
│   ├── InvalidParameterError   .param names the offending field
│   └── PayloadTooLargeError                                             413 / INVALID_ARGUMENT
├── UnauthorizedError           missing or wrong API key                 401 / UNAUTHENTICATED
├── ServableNotFoundError                                                 404 / NOT_FOUND
└── ServableNotReadyError                                                 503 / UNAVAILABLE
    └── OverloadedError         queue full                         503 / RESOURCE_EXHAUSTED
StopProcessing(Exception)       control flow only: a source calculator is done
```

Several failed nodes of one run are reported together as an ``ExceptionGroup`` of
``CalculatorError`` (MediaPipe combines the statuses of all failed nodes).
"""

from __future__ import annotations

__all__ = [
    "CalculatorError",
    "CalculatorNotFoundError",
    "ContractError",
    "DeadlineExceededError",
    "GraphCancelledError",
    "GraphConfigError",
    "InvalidParameterError",
    "OvGraphError",
    "OverloadedError",
    "PayloadTooLargeError",
    "RequestError",
    "ServableNotFoundError",
    "ServableNotReadyError",
    "StopProcessing",
    "UnauthorizedError",
    "ValidationError",
]


class OvGraphError(Exception):
    """Base of every ovgraph error.

    Attributes:
        http_status: HTTP status code a frontend answers with.
        grpc_code: name of the ``grpc.StatusCode`` member a frontend answers with.
        error_type: OpenAI error ``type`` field.
        code: OpenAI error ``code`` field (None unless a specific code applies).
    """

    http_status = 500
    grpc_code = "INTERNAL"
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class GraphConfigError(OvGraphError):
    """A graph config failed to parse or validate; carries the source location when known."""

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        path: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.node = node
        self.path = path
        self.line = line

    def location(self) -> str:
        """Return ``PATH:LINE`` (or what of it is known) for command-line reports."""
        if self.path is None:
            return f"<graph>:{self.line or 0}"
        return f"{self.path}:{self.line or 0}"


class CalculatorNotFoundError(GraphConfigError):
    """A node names a calculator or subgraph that is not registered."""


class ContractError(GraphConfigError):
    """A node's streams, side packets or options do not fit its calculator's contract."""


class ValidationError(GraphConfigError):
    """The graph's wiring is invalid (streams, side packets, cycles, handlers, executors)."""


class CalculatorError(OvGraphError):
    """A calculator raised during ``open``, ``process`` or ``close``.

    The message carries MediaPipe's prefix, e.g.
    ``Calculator::Process() for node "llm" failed: <original message>``.
    """

    def __init__(self, node: str, phase: str, cause: BaseException) -> None:
        detail = cause.message if isinstance(cause, OvGraphError) else str(cause)
        super().__init__(f'Calculator::{phase}() for node "{node}" failed: {detail}')
        self.node = node
        self.phase = phase
        self.cause = cause
        if isinstance(cause, OvGraphError):
            # A client error raised inside a calculator stays a client error.
            self.http_status = cause.http_status
            self.grpc_code = cause.grpc_code
            self.error_type = cause.error_type
            self.code = cause.code
            self.param = getattr(cause, "param", None)
        else:
            self.param = None


class GraphCancelledError(OvGraphError):
    """The run was cancelled (client disconnected or server shutting down)."""

    http_status = 499
    grpc_code = "CANCELLED"


class DeadlineExceededError(OvGraphError):
    """A run produced no output before its deadline."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class RequestError(OvGraphError):
    """The client sent something invalid."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    error_type = "invalid_request_error"


class InvalidParameterError(RequestError):
    """One request field is invalid; ``param`` names it."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


class PayloadTooLargeError(RequestError):
    """The request body exceeds the configured limit."""

    http_status = 413
    code = "content_too_large"


class UnauthorizedError(OvGraphError):
    """Missing or invalid API key."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    error_type = "authentication_error"
    code = "invalid_api_key"


class ServableNotFoundError(OvGraphError):
    """No model or graph of the requested name."""

    http_status = 404
    grpc_code = "NOT_FOUND"
    error_type = "invalid_request_error"
    code = "model_not_found"


class ServableNotReadyError(OvGraphError):
    """The servable exists but is loading, failed to load, or the server is draining."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    error_type = "service_unavailable"


class OverloadedError(ServableNotReadyError):
    """The request queue is full."""

    grpc_code = "RESOURCE_EXHAUSTED"
    code = "overloaded"


class StopProcessing(Exception):
    """Raised by a source calculator's ``process`` when it has nothing more to produce."""
