"""The Tornado application: OVMS's REST routes over one data plane."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ovgraph import graph_metrics
from ovgraph.frontends.rest import handlers, kserve_handlers
from ovgraph.frontends.rest.graph_handlers import graph_routes
from ovgraph.frontends.rest.protection import (
    DEFAULT_MAX_BODY_BYTES,
    DISCARD_BYTES,
    ProtectedApplication,
    ServerState,
)
from ovgraph.frontends.rest.routes import KSERVE, Route, RouteTable, contributed_endpoints
from ovgraph.serving.dataplane import DataPlane
from ovgraph.serving.repository import ModelRepository

__all__ = ["MAX_BODY_BYTES", "ServerState", "make_app", "route_table", "tornado_max_body_size"]

MAX_BODY_BYTES = DEFAULT_MAX_BODY_BYTES
_NAME = r"([^/]+)"
_VERSION = r"(?:/versions/([0-9]+))?"
_OPENAI_PREFIX = r"/(?:v3/|v1/|v3/v1/)"


def tornado_max_body_size(state: ServerState) -> int:
    """Tornado's hard body limit: above ours, so that ours answers 413 first."""
    return state.max_body_bytes + DISCARD_BYTES


def route_table() -> RouteTable:
    """Every REST route, once (first match wins)."""
    endpoints = contributed_endpoints()
    graph = handlers.GraphHandler
    routes = [
        Route(r"/v2/health/(live)", handlers.HealthHandler, errors=KSERVE),
        Route(r"/v2/health/(ready)", handlers.HealthHandler, probe=True, errors=KSERVE),
        Route(r"/(health)", handlers.HealthHandler, label="/health"),
        Route(r"/(ping)", handlers.HealthHandler, label="/health"),
        Route(r"/version", handlers.VersionHandler, label="/version"),
        Route(rf"/v2/models/{_NAME}{_VERSION}/ready", handlers.ModelReadyHandler,
              label="/v2/models/ready", probe=True, errors=KSERVE),
        Route(r"/v2/?", kserve_handlers.ServerMetadataHandler, label="/v2", errors=KSERVE),
        Route(rf"/v2/models/{_NAME}{_VERSION}", kserve_handlers.ModelMetadataHandler,
              label="/v2/models", errors=KSERVE),
        Route(rf"/v2/models/{_NAME}{_VERSION}/infer", kserve_handlers.InferHandler,
              label="/v2/models/infer", auth=True, errors=KSERVE),
        Route(r"/v1/config", handlers.ConfigHandler),
        Route(r"/v1/config/reload", handlers.ConfigReloadHandler, auth=True),
        Route(rf"{_OPENAI_PREFIX}models", handlers.ModelsHandler, label="/v3/models"),
        Route(rf"{_OPENAI_PREFIX}models/{_NAME}", handlers.ModelsHandler, label="/v3/models"),
        *(Route(e.pattern, graph, label="graph", auth=True) for e in endpoints),
        Route(r"/v3/(?!.*\.\.)(.+)", graph, label="graph", auth=True),
        Route(r"/metrics", handlers.MetricsHandler, label="/metrics"),
        *graph_routes(),
        Route(r"/.*", handlers.NotFoundHandler, label="other"),
    ]
    return RouteTable(routes, endpoints)


def make_app(
    repository: ModelRepository,
    settings: Mapping[str, Any] | None = None,
    state: ServerState | None = None,
) -> Any:
    """Build the ``tornado.web.Application`` serving ``repository``.

    ``state`` carries the API key, the body limit and the data plane (defaults: no key, default
    limits, a data plane of its own over ``repository``); handlers reach it as
    ``self.application.settings["ovgraph_state"]``. ``settings`` holds the HTTP options
    (``allowed_origins`` …, ``metrics_enable``).
    """
    state = state or ServerState(DataPlane(repository))
    http = dict(settings or {})
    deps = {"repository": repository, "settings": http}
    graph_metrics.watch(repository)
    return ProtectedApplication(
        route_table(), deps, state, handlers.cors_headers(http), compress_response=False
    )
