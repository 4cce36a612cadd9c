"""The Tornado application: OVMS's REST routes over one model repository."""

from __future__ import annotations

from typing import Any

import tornado.web

from ovgraph.frontends.rest import handlers
from ovgraph.serving.repository import ModelRepository

__all__ = ["MAX_BODY_BYTES", "make_app"]

MAX_BODY_BYTES = 64 * 1024 * 1024
_NAME = r"([^/]+)"


def make_app(repository: ModelRepository, settings: dict[str, Any] | None = None) -> Any:
    """Build the ``tornado.web.Application`` serving ``repository``."""
    deps = {"repository": repository, "settings": dict(settings or {})}
    routes = [
        (r"/v2/health/(live|ready)", handlers.HealthHandler, deps),
        (r"/(health)", handlers.HealthHandler, deps),
        (rf"/v2/models/{_NAME}(?:/versions/([0-9]+))?/ready", handlers.ModelReadyHandler, deps),
        (r"/v1/config", handlers.ConfigHandler, deps),
        (r"/v1/config/reload", handlers.ConfigReloadHandler, deps),
        (r"/(?:v3/|v1/|v3/v1/)models", handlers.ModelsHandler, deps),
        (rf"/(?:v3/|v1/|v3/v1/)models/{_NAME}", handlers.ModelsHandler, deps),
        (r"/v1/(chat/completions|completions)", handlers.GraphHandler, deps),
        (r"/v3/(?!.*\.\.)(.+)", handlers.GraphHandler, deps),
        (r"/.*", handlers.NotFoundHandler, deps),
    ]
    return tornado.web.Application(routes, compress_response=False)
