"""Tornado handlers: decode the HTTP request, call the data plane, encode the answer.

Handlers get the repository through route kwargs (``initialize``), never from a global; graph
work runs on the runtime's pool and comes back to the IO loop only via ``add_callback``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import tornado.web
from tornado.ioloop import IOLoop

from ovgraph.errors import (
    OvGraphError,
    RequestError,
    ServableNotFoundError,
    ServableNotReadyError,
)
from ovgraph.frontends.errors import describe, error_body, to_http
from ovgraph.serving.dataplane import HttpGraphRun
from ovgraph.serving.payload import HttpPayload
from ovgraph.serving.repository import ModelRepository

__all__ = [
    "ConfigHandler",
    "ConfigReloadHandler",
    "GraphHandler",
    "HealthHandler",
    "ModelReadyHandler",
    "ModelsHandler",
    "NotFoundHandler",
]

logger = logging.getLogger("ovgraph.access")

MAX_JSON_DEPTH = 100
_DONE = object()


def _json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


class BaseHandler(tornado.web.RequestHandler):
    """Shared plumbing: the repository, JSON answers, errors in the OpenAI shape."""

    def initialize(self, repository: ModelRepository, settings: dict[str, Any]) -> None:
        """Receive dependencies from the route table."""
        self.repository = repository
        self.server_settings = settings

    def set_default_headers(self) -> None:
        """CORS headers as OVMS sends them (configurable)."""
        settings = getattr(self, "server_settings", None) or {}
        self.set_header("Access-Control-Allow-Origin", settings.get("allowed_origins", "*"))
        self.set_header("Access-Control-Allow-Methods", settings.get("allowed_methods", "*"))
        self.set_header("Access-Control-Allow-Headers", settings.get("allowed_headers", "*"))
        if settings.get("allow_credentials"):
            self.set_header("Access-Control-Allow-Credentials", "true")

    def options(self, *args: Any) -> None:
        """CORS preflight."""
        self.set_status(204)
        self.finish()

    def write_json(self, value: Any, status: int = 200) -> None:
        """Answer with a JSON document."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_exception(self, exc: BaseException) -> None:
        """Answer with the OpenAI error object for ``exc``."""
        status, body = to_http(exc)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        if status == 503:
            self.set_header("Retry-After", "1")
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors Tornado raises itself (bad method, body too large…) in the same shape."""
        reason = self._reason or "Error"
        self.set_header("Content-Type", "application/json")
        error_type = "invalid_request_error" if status_code < 500 else "server_error"
        self.finish(
            json.dumps(
                {"error": {"message": reason, "type": error_type, "param": None, "code": None}}
            )
        )


class GraphHandler(BaseHandler):
    """``POST /v3/...``: route by the JSON ``model`` field and stream the graph's output."""

    run: HttpGraphRun | None = None
    payload: HttpPayload | None = None

    async def post(self, *args: Any) -> None:
        """Run the graph named by the request."""
        try:
            payload, definition, streaming = self._prepare()
        except OvGraphError as exc:
            self.write_exception(exc)
            return
        self.payload = payload
        loop = IOLoop.current()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def on_output(item: Any) -> None:
            loop.add_callback(queue.put_nowait, item)

        def on_done(error: BaseException | None) -> None:
            loop.add_callback(queue.put_nowait, (_DONE, error))

        try:
            self.run = HttpGraphRun(definition, payload, on_output, on_done)
            self.run.start()
        except Exception as exc:
            self.write_exception(exc)
            return
        if streaming:
            await self._stream(queue)
        else:
            await self._unary(queue)

    def _prepare(self) -> tuple[HttpPayload, Any, bool]:
        body = self.request.body
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError("Cannot parse JSON body") from exc
        if not isinstance(parsed, dict):
            raise RequestError("JSON body must be an object")
        if not _json_depth_ok(parsed):
            raise RequestError("JSON body exceeds maximum nesting depth")
        model = parsed.get("model")
        if not isinstance(model, str):
            raise RequestError(
                "The file is not valid json - model field is missing in JSON body"
                if model is None else "model is not a string"
            )
        uri = self.request.uri or ""
        if ("completions" in uri or "responses" in uri) and not isinstance(
            parsed.get("stream", False), bool
        ):
            raise RequestError("stream field is not a boolean")
        definition = self.repository.get(model)
        if not definition.available:
            raise ServableNotReadyError(f'Model "{model}" is not ready')
        payload = HttpPayload(
            uri=uri, method=self.request.method or "POST",
            headers=dict(self.request.headers), body=body, parsed_json=parsed,
        )
        return payload, definition, parsed.get("stream") is True

    async def _unary(self, queue: asyncio.Queue[Any]) -> None:
        outputs: list[Any] = []
        while True:
            item = await queue.get()
            if isinstance(item, tuple) and item and item[0] is _DONE:
                error = item[1]
                break
            outputs.append(item)
        if error is not None or not outputs:
            self.write_exception(error or RuntimeError("graph produced no output"))
            return
        self.set_header("Content-Type", "application/json")
        self.finish(outputs[0])

    async def _stream(self, queue: asyncio.Queue[Any]) -> None:
        started = False
        while True:
            item = await queue.get()
            if isinstance(item, tuple) and item and item[0] is _DONE:
                error = item[1]
                break
            if not started:
                self.set_header("Content-Type", "text/event-stream")
                self.set_header("Cache-Control", "no-cache")
                self.set_header("Connection", "keep-alive")
                started = True
            self.write(item)
            try:
                await self.flush()
            except tornado.iostream.StreamClosedError:
                self._client_gone()
                return
        if error is not None:
            if not started:
                self.write_exception(error)
                return
            info = describe(error)
            self.write(b"data: " + error_body(info) + b"\n\ndata: [DONE]\n\n")
        if not self._finished:
            self.finish()

    def _client_gone(self) -> None:
        if self.payload is not None:
            self.payload.mark_disconnected()
        if self.run is not None:
            self.run.cancel()

    def on_connection_close(self) -> None:
        """The client went away: stop its generation."""
        self._client_gone()


class ModelsHandler(BaseHandler):
    """``GET /v3/models`` and ``/v3/models/{name}`` (OpenAI model objects)."""

    def get(self, name: str | None = None) -> None:
        """List the servables, or show one."""
        created = int(time.time())

        def model(n: str) -> dict[str, Any]:
            return {"id": n, "object": "model", "created": created, "owned_by": "OVMS"}

        if name:
            try:
                self.repository.get(name)
            except ServableNotFoundError as exc:
                self.write_exception(exc)
                return
            self.write_json(model(name))
            return
        self.write_json(
            {"object": "list", "data": [model(d.name) for d in self.repository.definitions()]}
        )


class ConfigHandler(BaseHandler):
    """``GET /v1/config``: every servable's state."""

    def get(self) -> None:
        """Report the states."""
        self.write_json({d.name: d.status() for d in self.repository.definitions()})


class ConfigReloadHandler(BaseHandler):
    """``POST /v1/config/reload``: re-read config.json."""

    def post(self) -> None:
        """Reload and report the states."""
        try:
            self.repository.reload()
        except OvGraphError as exc:
            self.write_exception(exc)
            return
        self.write_json({d.name: d.status() for d in self.repository.definitions()})


class HealthHandler(BaseHandler):
    """``/v2/health/live``, ``/v2/health/ready`` and ``/health``."""

    def get(self, kind: str = "live") -> None:
        """200 when live (always) / ready (every servable AVAILABLE), else 503."""
        ready = kind != "ready" or self.repository.all_available()
        self.set_status(200 if ready else 503)
        self.finish()


class ModelReadyHandler(BaseHandler):
    """``GET /v2/models/{name}[/versions/{v}]/ready``."""

    def get(self, name: str, version: str | None = None) -> None:
        """200 when the servable is AVAILABLE."""
        try:
            definition = self.repository.get(name)
        except ServableNotFoundError as exc:
            self.write_exception(exc)
            return
        self.set_status(200 if definition.available else 503)
        self.finish()


class NotFoundHandler(BaseHandler):
    """Anything else."""

    def prepare(self) -> None:
        """Answer every method with 404 in the OpenAI error shape."""
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {"error": {"message": "Invalid request URL", "type": "invalid_request_error",
                           "param": None, "code": None}}
            )
        )
