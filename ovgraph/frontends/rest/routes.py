"""The REST route table: each route once, with its handler, auth, metrics label and error shape.

``Route.auth`` marks routes whose non-read-only requests run a model or change the server: they
need the API key and are refused while the server drains. ``Route.probe`` marks readiness probes
(503 while draining). ``Route.label`` is the bounded ``endpoint`` label of the request metrics
(None: the path itself, for fixed paths). ``Route.errors`` picks the error encoder
(``openai`` or ``kserve``).

Paths under ``/v3/`` go to the graph named by the body's ``model`` (OVMS's rule); packages may
add more graph paths and their metrics labels through the entry-point group
``ovgraph.http_endpoints`` (``name = "module:function"``, the function returning
``HttpEndpoint`` records), so a new endpoint of a calculator needs no frontend change.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from ovgraph.frontends.errors import KSERVE, OPENAI

__all__ = [
    "ENDPOINT_GROUP",
    "KSERVE",
    "READ_ONLY",
    "HttpEndpoint",
    "Route",
    "RouteTable",
    "contributed_endpoints",
    "graph_endpoint_label",
]

logger = logging.getLogger("ovgraph")
ENDPOINT_GROUP = "ovgraph.http_endpoints"
READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class HttpEndpoint:
    """A path a package's graphs answer, handed to the graph as is.

    Attributes:
        label: the metrics ``endpoint`` label of requests to it (e.g. ``/v3/completions``).
        pattern: regular expression a full request path matches (e.g. ``/(v3/|v1/)completions``).
    """

    label: str
    pattern: str


@dataclass(frozen=True)
class Route:
    """One REST route."""

    pattern: str
    handler: type
    label: str | None = None
    auth: bool = False
    probe: bool = False
    errors: str = OPENAI
    #: The handler's ``initialize`` arguments, when it is not one of ours (a static file handler).
    kwargs: dict[str, Any] | None = None

    def matches(self, path: str) -> bool:
        """Whether ``path`` is this route's (Tornado matches whole paths)."""
        return re.fullmatch(self.pattern, path) is not None


def contributed_endpoints() -> list[HttpEndpoint]:
    """Every ``HttpEndpoint`` of the ``ovgraph.http_endpoints`` entry points (failures logged)."""
    found: list[HttpEndpoint] = []
    for ep in metadata.entry_points(group=ENDPOINT_GROUP):
        try:
            found.extend(ep.load()())
        except Exception:
            logger.exception("HTTP endpoints of %s could not be loaded", ep.value)
    return found


def graph_endpoint_label(path: str, endpoints: Iterable[HttpEndpoint]) -> str:
    """The metrics label of a graph request: the contributing endpoint's, else ``/v3/other``."""
    for endpoint in endpoints:
        if re.fullmatch(endpoint.pattern, path):
            return endpoint.label
    return "/v3/other"


class RouteTable:
    """The routes in order (first match wins), plus the graph endpoints packages contributed."""

    def __init__(self, routes: list[Route], endpoints: list[HttpEndpoint]) -> None:
        self.routes = routes
        self.endpoints = endpoints

    def route(self, path: str) -> Route | None:
        """The route serving ``path``."""
        for route in self.routes:
            if route.matches(path):
                return route
        return None

    def label(self, path: str) -> str:
        """A bounded metrics label for a request path (``other`` for unknown paths)."""
        route = self.route(path)
        if route is None or route.label == "other":
            return "other"
        if route.label == "graph":
            return graph_endpoint_label(path, self.endpoints)
        return route.label or path

    def tornado_rules(self, deps: dict[str, Any]) -> list[tuple[str, type, dict[str, Any]]]:
        """The ``tornado.web.Application`` rules (each handler told its error shape)."""
        return [
            (r.pattern, r.handler, r.kwargs if r.kwargs is not None
             else {**deps, "errors": r.errors})
            for r in self.routes
        ]
