"""Calculator and subgraph registry, fed by the ``ovgraph.calculators`` entry-point group.

Names are read from package metadata without importing anything; a class is imported the first
time a graph uses its name. Built-in calculators register through the same group as third-party
plugins. ``OVGRAPH_PLUGINS`` (comma-separated distribution or entry-point names) limits which
entry points load. Tests and scripts use ``register_calculator`` or ``override``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, TypeVar

from ovgraph.errors import CalculatorNotFoundError

__all__ = [
    "ENTRY_POINT_GROUP",
    "import_failure",
    "known_names",
    "lookup",
    "lookup_optional",
    "override",
    "provider",
    "refresh",
    "register_calculator",
    "unregister",
]

ENTRY_POINT_GROUP = "ovgraph.calculators"
logger = logging.getLogger("ovgraph.graph")

_lock = threading.Lock()
_registered: dict[str, Any] = {}
_entry_points: dict[str, metadata.EntryPoint] | None = None
_failed: dict[str, str] = {}

C = TypeVar("C")


def _normalize(name: str) -> str:
    """Normalise a distribution name as PEP 503 does (``My_Plugin`` == ``my-plugin``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _allowed(ep: metadata.EntryPoint) -> bool:
    allow = os.environ.get("OVGRAPH_PLUGINS")
    if not allow:
        return True
    names = {n.strip() for n in allow.split(",") if n.strip()}
    dist = _normalize(ep.dist.name) if ep.dist is not None else ""
    return ep.name in names or dist in {_normalize(n) for n in names} or dist == "ovgraph"


def _load_entry_points() -> dict[str, metadata.EntryPoint]:
    global _entry_points
    if _entry_points is None:
        found: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if _allowed(ep):
                found.setdefault(ep.name, ep)
        _entry_points = found
    return _entry_points


def refresh() -> None:
    """Forget cached entry points (after installing a plugin in the running interpreter)."""
    global _entry_points
    with _lock:
        _entry_points = None
        _failed.clear()


def register_calculator(cls: C | None = None, *, name: str | None = None) -> Any:
    """Register a calculator or subgraph class under ``name`` (default: its class name).

    Usable as ``@register_calculator`` or ``@register_calculator(name="Foo")``.
    """

    def wrap(klass: C) -> C:
        with _lock:
            _registered[name or klass.__name__] = klass  # type: ignore[attr-defined]
        return klass

    return wrap(cls) if cls is not None else wrap


def unregister(name: str) -> None:
    """Remove an in-process registration."""
    with _lock:
        _registered.pop(name, None)


@contextlib.contextmanager
def override(name: str, cls: Any) -> Iterator[None]:
    """Temporarily register ``cls`` under ``name`` (test doubles)."""
    with _lock:
        previous = _registered.get(name)
        _registered[name] = cls
    try:
        yield
    finally:
        with _lock:
            if previous is None:
                _registered.pop(name, None)
            else:
                _registered[name] = previous


def known_names() -> list[str]:
    """Return every registered name, imported or not."""
    with _lock:
        return sorted(set(_registered) | set(_load_entry_points()))


def provider(name: str) -> str | None:
    """Return ``"<distribution> <version>"`` of the package registering ``name``.

    None when ``name`` was registered in-process (``register_calculator``, ``override``) or is
    unknown.
    """
    with _lock:
        if name in _registered and _load_entry_points().get(name) is None:
            return None
        ep = _load_entry_points().get(name)
    if ep is None or ep.dist is None:
        return None
    return f"{ep.dist.name} {ep.dist.version}"


def import_failure(name: str) -> str | None:
    """Why the plugin registering ``name`` failed to import (after a ``lookup``), or None."""
    with _lock:
        return _failed.get(name)


def lookup(name: str) -> Any:
    """Return the class registered as ``name``, importing it if needed.

    Raises:
        CalculatorNotFoundError: nothing is registered under that name, or its import failed.
    """
    with _lock:
        cls = _registered.get(name)
        if cls is not None:
            return cls
        ep = _load_entry_points().get(name)
    if ep is not None:
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not take the server down
            logger.error("Calculator plugin %s (%s) failed to import: %s", name, ep.value, exc)
            with _lock:
                _failed[name] = f"{type(exc).__name__}: {exc}"
        else:
            with _lock:
                _registered.setdefault(name, cls)
            return cls
    reason = f" (its plugin failed to import: {_failed[name]})" if name in _failed else ""
    raise CalculatorNotFoundError(
        f"No registered object with name: {name}; Unable to find Calculator \"{name}\"{reason}"
    )


def lookup_optional(name: str) -> Callable[..., Any] | None:
    """Return the class registered as ``name`` or None."""
    try:
        return lookup(name)  # type: ignore[no-any-return]
    except CalculatorNotFoundError:
        return None
