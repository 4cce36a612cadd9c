"""API key: where it comes from and how a request proves it (shared by REST and gRPC).

As in OVMS, the key is the first line of ``--api_key_file`` (surrounding whitespace stripped) or,
without that flag, the ``API_KEY`` environment variable. With a key configured, every request that
runs a model must send ``Authorization: Bearer <key>`` (gRPC: metadata ``authorization``); the
comparison is constant-time. Without a key, any ``Authorization`` header is accepted (benchmark
clients send ``Bearer None``). The key is never logged.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from typing import Any

from ovgraph.errors import GraphConfigError, UnauthorizedError

__all__ = ["UNAUTHORIZED_MESSAGE", "authorized", "load_api_key", "require_api_key"]

UNAUTHORIZED_MESSAGE = "Unauthorized request due to invalid or missing api-key"
_SCHEME = "bearer "


def load_api_key(
    api_key_file: str | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """Return the configured key, or None when the server runs without one.

    Raises:
        GraphConfigError: ``api_key_file`` cannot be read or its first line is empty.
    """
    if api_key_file:
        try:
            with open(api_key_file, encoding="utf-8") as handle:
                key = handle.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise GraphConfigError("The API key file could not be read") from exc
        if not key:
            raise GraphConfigError("The API key file is empty")
        return key
    key = (env if env is not None else os.environ).get("API_KEY", "").strip()
    return key or None


def authorized(key: str | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header value carries ``key`` (always True without a key)."""
    if key is None:
        return True
    if not authorization or authorization[: len(_SCHEME)].lower() != _SCHEME:
        # Still compare, so a wrong scheme costs the same as a wrong key.
        hmac.compare_digest(key.encode(), b"")
        return False
    offered = authorization[len(_SCHEME):].strip()
    return hmac.compare_digest(key.encode(), offered.encode("utf-8", "replace"))


def require_api_key(key: str | None, authorization: Any) -> None:
    """Raise :class:`UnauthorizedError` unless ``authorization`` carries ``key``."""
    if not authorized(key, authorization if isinstance(authorization, str) else None):
        raise UnauthorizedError(UNAUTHORIZED_MESSAGE)
