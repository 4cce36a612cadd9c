"""``GET /v1/graphs``, ``GET /v1/graphs/{name}`` and the ``/dashboard`` page.

The JSON routes show every served graph as :mod:`ovgraph.graph_view` describes it, with its live
statistics. With an API key configured they need it like model requests do (they show the
graphs' internals); the page itself holds no data and asks for the key when the API answers 401.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tornado.web

from ovgraph import metrics
from ovgraph.errors import ServableNotFoundError, ServableNotReadyError, UnauthorizedError
from ovgraph.frontends.auth import UNAUTHORIZED_MESSAGE, authorized
from ovgraph.frontends.rest.handlers import BaseHandler
from ovgraph.frontends.rest.routes import Route
from ovgraph.graph_view import running_runs, with_stats

__all__ = [
    "DASHBOARD_DIR", "DashboardHandler", "GraphListHandler", "GraphStatsHandler", "graph_routes",
]

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboard"


class _GraphApiHandler(BaseHandler):
    def prepare(self) -> None:
        """Refuse without the API key when the server has one."""
        if self.request.method == "OPTIONS":
            return
        if not authorized(self.state.api_key, self.request.headers.get("Authorization")):
            metrics.REQUESTS_REJECTED.labels(reason="unauthorized").inc()
            self.set_header("WWW-Authenticate", 'Bearer realm="ovgraph"')
            self.write_exception(UnauthorizedError(UNAUTHORIZED_MESSAGE))

    def set_default_headers(self) -> None:
        """No caching: every answer is a live reading."""
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")


class GraphListHandler(_GraphApiHandler):
    """``GET /v1/graphs``: every served graph, its state and run counters."""

    def get(self) -> None:
        """List the graphs."""
        graphs = []
        for definition in self.repository.definitions():
            entry: dict[str, Any] = {"name": definition.name, "state": definition.state}
            validated = definition.validated
            if validated is not None:
                view = with_stats(validated, definition.name)
                entry["runs"] = view["runs"]
                entry["nodes"] = len(view["nodes"])
            if definition.error:
                entry["error"] = definition.error
            graphs.append(entry)
        self.write_json({"graphs": graphs})


class GraphStatsHandler(_GraphApiHandler):
    """``GET /v1/graphs/{name}``: nodes, edges, per-node counters, runs, running requests."""

    def get(self, name: str) -> None:
        """Describe one graph."""
        try:
            definition = self.repository.get(name)
        except ServableNotFoundError as exc:
            self.write_exception(exc)
            return
        validated = definition.validated
        if validated is None:
            reason = f": {definition.error}" if definition.error else ""
            self.write_exception(ServableNotReadyError(f'Graph "{name}" is not loaded{reason}'))
            return
        view = with_stats(validated, definition.name)
        view["state"] = definition.state
        # Runs that started on a graph a config reload has since replaced still run on it.
        for graph in self.repository.retired(name):
            view["running"] += [{**run, "retired": True} for run in running_runs(graph)]
        self.write_json(view)


class DashboardHandler(BaseHandler):
    """``GET /dashboard``: the live graph page (static; it reads the JSON routes)."""

    def get(self) -> None:
        """Serve the page."""
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish((DASHBOARD_DIR / "index.html").read_bytes())


class _AssetHandler(tornado.web.StaticFileHandler):
    """The page's scripts and styles, from the package (no CDN)."""


def graph_routes() -> list[Route]:
    """The route-table entries of this module."""
    return [
        Route(r"/v1/graphs", GraphListHandler, label="/v1/graphs"),
        # Served names may hold a "/" (OpenVINO/…), written as is or encoded.
        Route(r"/v1/graphs/(.+)", GraphStatsHandler, label="/v1/graphs"),
        Route(r"/dashboard/?", DashboardHandler, label="/dashboard"),
        Route(r"/dashboard/assets/(.*)", _AssetHandler, label="/dashboard",
              kwargs={"path": str(DASHBOARD_DIR)}),
    ]
