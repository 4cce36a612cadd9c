"""The one place where errors become HTTP and gRPC answers.

Every frontend calls ``to_http`` or ``to_grpc``; nothing else picks status codes. Client errors
keep their message; server faults are logged in full and answered with a clean message that
names no file, address or traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ovgraph._compat import ExceptionGroup
from ovgraph.errors import CalculatorError, OvGraphError, RequestError

__all__ = ["ErrorInfo", "describe", "error_body", "to_grpc", "to_http"]

logger = logging.getLogger("ovgraph.access")
MAX_MESSAGE = 1024


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


def _bounded(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def error_body(info: ErrorInfo) -> bytes:
    """The OpenAI error object: ``{"error": {"message", "type", "param", "code"}}``."""
    body: dict[str, Any] = {
        "error": {
            "message": info.message,
            "type": info.error_type,
            "param": info.param,
            "code": info.code,
        }
    }
    return json.dumps(body, ensure_ascii=False).encode()


def to_http(exc: BaseException) -> tuple[int, bytes]:
    """Return ``(status, JSON body)`` for an exception."""
    info = describe(exc)
    return info.http_status, error_body(info)


def to_grpc(exc: BaseException) -> tuple[Any, str]:
    """Return ``(grpc.StatusCode, message)`` for an exception."""
    import grpc

    info = describe(exc)
    return getattr(grpc.StatusCode, info.grpc_code, grpc.StatusCode.INTERNAL), info.message
