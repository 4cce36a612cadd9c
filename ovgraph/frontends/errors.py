"""The one place where errors become HTTP and gRPC answers.

``describe`` classifies any exception of the one error tree (``ovgraph.errors``) once; one
encoder per protocol shapes it:

- ``openai_error_body``: OpenAI routes, ``{"error": {"message", "type", "param", "code"}}``;
- ``kserve_error_body``: KServe REST (``/v2/...``), ``{"error": "<message>"}``;
- ``to_grpc``: a ``grpc.StatusCode`` and its message.

Nothing else picks status codes. Client errors keep their message; server faults are logged in
full and answered with a clean message that names no file, address or traceback. Messages are
made safe for any wire: text that cannot be encoded as UTF-8 (lone surrogates, e.g. from a
lone-surrogate JSON escape in a tensor name) is replaced, never a reason for a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ovgraph._compat import ExceptionGroup
from ovgraph.errors import CalculatorError, OvGraphError, RequestError

__all__ = [
    "KSERVE",
    "OPENAI",
    "ErrorInfo",
    "describe",
    "error_body",
    "http_error",
    "kserve_error_body",
    "openai_error_body",
    "safe_text",
    "to_grpc",
    "to_http",
]

logger = logging.getLogger("ovgraph.access")
MAX_MESSAGE = 1024
OPENAI = "openai"
KSERVE = "kserve"


class ErrorInfo:
    """What a client is told about a failure."""

    __slots__ = ("code", "error_type", "grpc_code", "http_status", "message", "param")

    def __init__(
        self, http_status: int, grpc_code: str, message: str, error_type: str,
        param: str | None = None, code: str | None = None,
    ) -> None:
        self.http_status = http_status
        self.grpc_code = grpc_code
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code


def _first(exc: BaseException) -> BaseException:
    while isinstance(exc, ExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> ErrorInfo:
    """Classify an exception for a client (logging server faults as a side effect)."""
    exc = _first(exc)
    if isinstance(exc, CalculatorError):
        cause = exc.cause
        if isinstance(cause, OvGraphError):
            return ErrorInfo(
                cause.http_status, cause.grpc_code, _bounded(cause.message), cause.error_type,
                getattr(cause, "param", None), cause.code,
            )
        logger.error("Request failed: %s", exc, exc_info=cause)
        return ErrorInfo(
            500, "INTERNAL", f'Internal error in graph node "{exc.node}"', "server_error"
        )
    if isinstance(exc, OvGraphError):
        if exc.http_status >= 500 and not isinstance(exc, RequestError):
            logger.warning("Request failed: %s", exc)
        return ErrorInfo(
            exc.http_status, exc.grpc_code, _bounded(exc.message), exc.error_type,
            getattr(exc, "param", None), exc.code,
        )
    logger.error("Unexpected server error", exc_info=exc)
    return ErrorInfo(500, "INTERNAL", "Internal server error", "server_error")


def safe_text(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry (lone surrogates) replaced by ``?``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _bounded(message: str) -> str:
    message = safe_text(message)
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def openai_error_body(info: ErrorInfo) -> bytes:
    """The OpenAI error object: ``{"error": {"message", "type", "param", "code"}}``."""
    body: dict[str, Any] = {
        "error": {
            "message": safe_text(info.message),
            "type": info.error_type,
            "param": None if info.param is None else safe_text(info.param),
            "code": info.code,
        }
    }
    return json.dumps(body, ensure_ascii=False).encode()


error_body = openai_error_body  # the default shape of ovgraph's REST routes


def kserve_error_body(info: ErrorInfo) -> bytes:
    """KServe's REST error: ``{"error": "<message>"}``."""
    return json.dumps({"error": safe_text(info.message)}, ensure_ascii=False).encode()


_ENCODERS = {OPENAI: openai_error_body, KSERVE: kserve_error_body}


def to_http(exc: BaseException, shape: str = OPENAI) -> tuple[int, bytes]:
    """Return ``(status, JSON body)`` for an exception, in the error shape ``shape``."""
    info = describe(exc)
    return info.http_status, _ENCODERS[shape](info)


def http_error(status: int, message: str, shape: str = OPENAI) -> bytes:
    """The body of an error the HTTP layer raises itself (404, 405, …) in shape ``shape``."""
    info = ErrorInfo(
        status, "UNKNOWN", message,
        "invalid_request_error" if status < 500 else "server_error",
    )
    return _ENCODERS[shape](info)


def to_grpc(exc: BaseException) -> tuple[Any, str]:
    """Return ``(grpc.StatusCode, message)`` for an exception."""
    import grpc

    info = describe(exc)
    return (
        getattr(grpc.StatusCode, info.grpc_code, grpc.StatusCode.INTERNAL),
        safe_text(info.message),
    )
