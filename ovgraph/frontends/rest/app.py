"""The Tornado application: OVMS's REST routes over one model repository."""

from __future__ import annotations

from typing import Any

from ovgraph.frontends.rest import graph_handlers, handlers, kserve_handlers
from ovgraph.frontends.rest.protection import (
    DEFAULT_MAX_BODY_BYTES,
    DISCARD_BYTES,
    ProtectedApplication,
    ServerState,
)
from ovgraph.serving.repository import ModelRepository

__all__ = ["MAX_BODY_BYTES", "ServerState", "make_app", "tornado_max_body_size"]

MAX_BODY_BYTES = DEFAULT_MAX_BODY_BYTES
_NAME = r"([^/]+)"


def tornado_max_body_size(state: ServerState) -> int:
    """Tornado's hard body limit: above ours, so that ours answers 413 first."""
    return state.max_body_bytes + DISCARD_BYTES


def make_app(
    repository: ModelRepository,
    settings: dict[str, Any] | None = None,
    state: ServerState | None = None,
) -> Any:
    """Build the ``tornado.web.Application`` serving ``repository``.

    ``state`` carries the API key, admission control and limits (defaults: no key, default
    limits); handlers reach it as ``self.application.settings["ovgraph_state"]``.
    """
    deps = {"repository": repository, "settings": dict(settings or {})}
    state = state or ServerState()
    routes = [
        (r"/v2/health/(live|ready)", handlers.HealthHandler, deps),
        (r"/(health)", handlers.HealthHandler, deps),
        (rf"/v2/models/{_NAME}(?:/versions/([0-9]+))?/ready", handlers.ModelReadyHandler, deps),
        (r"/v2", kserve_handlers.ServerMetadataHandler, deps),
        (rf"/v2/models/{_NAME}(?:/versions/([0-9]+))?", kserve_handlers.ModelMetadataHandler, deps),
        (rf"/v2/models/{_NAME}(?:/versions/([0-9]+))?/infer", kserve_handlers.InferHandler, deps),
        (r"/v1/config", handlers.ConfigHandler, deps),
        (r"/v1/config/reload", handlers.ConfigReloadHandler, deps),
        (r"/(?:v3/|v1/|v3/v1/)models", handlers.ModelsHandler, deps),
        (rf"/(?:v3/|v1/|v3/v1/)models/{_NAME}", handlers.ModelsHandler, deps),
        (r"/v1/(chat/completions|completions)", handlers.GraphHandler, deps),
        (r"/v3/(?!.*\.\.)(.+)", handlers.GraphHandler, deps),
        (r"/metrics", handlers.MetricsHandler, deps),
        *graph_handlers.routes(deps),
        (r"/.*", handlers.NotFoundHandler, deps),
    ]
    return ProtectedApplication(
        routes, state, handlers.cors_headers(deps["settings"]), compress_response=False
    )
