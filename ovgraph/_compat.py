"""Small shims for older Python versions."""

from __future__ import annotations

import builtins
import sys

if sys.version_info >= (3, 11):
    ExceptionGroup = builtins.ExceptionGroup
else:  # pragma: no cover - Python 3.10
    from exceptiongroup import ExceptionGroup

__all__ = ["ExceptionGroup"]
