"""Small shims for older Python versions."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    ExceptionGroup = ExceptionGroup  # noqa: PLW0127  (re-export the builtin)
else:  # pragma: no cover - Python 3.10
    from exceptiongroup import ExceptionGroup

__all__ = ["ExceptionGroup"]
