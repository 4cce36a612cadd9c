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

from ovgraph import metrics
from ovgraph.errors import (
    DeadlineExceededError,
    OvGraphError,
    PayloadTooLargeError,
    RequestError,
    ServableNotFoundError,
    ServableNotReadyError,
)
from ovgraph.frontends.errors import describe, error_body, to_http
from ovgraph.frontends.rest.protection import DISCARD_BYTES, ServerState
from ovgraph.serving.dataplane import HttpGraphRun
from ovgraph.serving.payload import HttpPayload
from ovgraph.serving.repository import ModelRepository

__all__ = [
    "ConfigHandler",
    "ConfigReloadHandler",
    "GraphHandler",
    "HealthHandler",
    "MetricsHandler",
    "ModelReadyHandler",
    "ModelsHandler",
    "NotFoundHandler",
    "cors_headers",
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


def cors_headers(settings: dict[str, Any]) -> dict[str, str]:
    """CORS headers as OVMS sends them (``--allowed_origins`` and friends)."""
    headers = {
        "Access-Control-Allow-Origin": str(settings.get("allowed_origins") or "*"),
        "Access-Control-Allow-Methods": str(settings.get("allowed_methods") or "*"),
        "Access-Control-Allow-Headers": str(settings.get("allowed_headers") or "*"),
    }
    if settings.get("allow_credentials"):
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


class BaseHandler(tornado.web.RequestHandler):
    """Shared plumbing: the repository, JSON answers, errors in the OpenAI shape."""

    def initialize(self, repository: ModelRepository, settings: dict[str, Any]) -> None:
        """Receive dependencies from the route table."""
        self.repository = repository
        self.server_settings = settings
        self.set_default_headers()  # Tornado set them before the settings were known

    @property
    def state(self) -> ServerState:
        """The server-wide state (key, admission, limits, drain flag)."""
        state = self.application.settings.get("ovgraph_state")
        if state is None:
            state = ServerState()
            self.application.settings["ovgraph_state"] = state
        return state

    def set_default_headers(self) -> None:
        """CORS headers as OVMS sends them (configurable)."""
        for name, value in cors_headers(getattr(self, "server_settings", None) or {}).items():
            self.set_header(name, value)

    def options(self, *args: Any) -> None:
        """CORS preflight (never needs the API key)."""
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


@tornado.web.stream_request_body
class GraphHandler(BaseHandler):
    """``POST /v3/...``: route by the JSON ``model`` field and stream the graph's output.

    The body is received in pieces and counted, so an oversized body (with ``Content-Length``
    or chunked) is answered with 413 instead of a dropped connection. A request then waits for
    an admission slot (503 when the queue is full), runs, and is cancelled when the client goes
    away or no output arrives within ``--request_timeout`` seconds (504).
    """

    run: HttpGraphRun | None = None
    payload: HttpPayload | None = None
    _acquiring: asyncio.Future[None] | None = None

    def prepare(self) -> None:
        """Check the declared body size before reading the body."""
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._gone = False
        limit = self.state.max_body_bytes
        connection = self.request.connection
        declared = self.request.headers.get("Content-Length")
        if declared is None:
            if hasattr(connection, "set_max_body_size"):
                connection.set_max_body_size(limit + DISCARD_BYTES)
            return
        if not declared.strip().isdigit():
            self.write_exception(RequestError("Invalid Content-Length header"))
            return
        size = int(declared)
        if size <= limit:
            return
        self._too_large = True
        expects_continue = self.request.headers.get("Expect", "").lower() == "100-continue"
        if size > limit + DISCARD_BYTES or expects_continue:
            # Answer before the body is sent; the connection closes afterwards.
            self.write_exception(self._too_large_error())
        elif hasattr(connection, "set_max_body_size"):
            # Read and drop the body, so the client is listening when the answer comes.
            connection.set_max_body_size(size)

    def data_received(self, chunk: bytes) -> None:
        """Keep body pieces up to the limit; past it, drop them."""
        if self._too_large:
            return
        self._size += len(chunk)
        if self._size > self.state.max_body_bytes:
            self._too_large = True
            self._chunks = []
            return
        self._chunks.append(chunk)

    def _too_large_error(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"Request body exceeds the limit of {self.state.max_body_bytes} bytes"
        )

    async def post(self, *args: Any) -> None:
        """Run the graph named by the request."""
        if self._too_large:
            self.write_exception(self._too_large_error())
            return
        state = self.state
        state.track(self)
        try:
            await self._serve(state)
        finally:
            state.untrack(self)

    async def _serve(self, state: ServerState) -> None:
        try:
            payload, definition, streaming = self._prepare()
        except OvGraphError as exc:
            self.write_exception(exc)
            return
        self.payload = payload
        admission = state.admission
        self._acquiring = asyncio.ensure_future(admission.acquire(definition))
        try:
            await self._acquiring
        except OvGraphError as exc:
            self.write_exception(exc)
            return
        except asyncio.CancelledError:
            return  # the client left while queued
        finally:
            self._acquiring = None
        loop = IOLoop.current()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        released = False

        def run_ended(error: BaseException | None) -> None:
            nonlocal released
            if not released:
                released = True
                admission.release(definition)
            queue.put_nowait((_DONE, error))

        def on_output(item: Any) -> None:
            loop.add_callback(queue.put_nowait, item)

        def on_done(error: BaseException | None) -> None:
            loop.add_callback(run_ended, error)

        if self._gone:
            admission.release(definition)
            return
        try:
            self.run = HttpGraphRun(definition, payload, on_output, on_done)
            # Opening nodes and scheduling onto the graph pool can block under load: keep it
            # off the event loop, which must stay free to notice disconnects.
            await loop.run_in_executor(None, self.run.start)
        except Exception as exc:
            if self.run is not None:
                self.run.cancel()
            if not released:
                released = True
                admission.release(definition)
            self.write_exception(exc)
            return
        if self._gone:
            self._client_gone()
        if streaming:
            await self._stream(queue)
        else:
            await self._unary(queue)

    def _prepare(self) -> tuple[HttpPayload, Any, bool]:
        body = b"".join(self._chunks)
        self._chunks = []
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            if isinstance(exc, RecursionError):
                raise RequestError("JSON body exceeds maximum nesting depth") from None
            raise RequestError("Cannot parse JSON body") from None
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

    async def _next(self, queue: asyncio.Queue[Any]) -> tuple[bool, Any]:
        """The next output ``(False, item)`` or the end ``(True, error)``, within the deadline."""
        timeout = self.state.request_timeout
        try:
            if timeout and timeout > 0:
                item = await asyncio.wait_for(queue.get(), timeout)
            else:
                item = await queue.get()
        except asyncio.TimeoutError:
            if self.run is not None:
                self._cancel_run()
            return True, DeadlineExceededError(
                f"The request produced no output within {timeout:g} seconds"
            )
        if isinstance(item, tuple) and item and item[0] is _DONE:
            return True, item[1]
        return False, item

    async def _unary(self, queue: asyncio.Queue[Any]) -> None:
        outputs: list[Any] = []
        while True:
            done, item = await self._next(queue)
            if done:
                error = item
                break
            outputs.append(item)
        if self._finished or self._gone:
            return
        if error is not None or not outputs:
            self.write_exception(error or RuntimeError("graph produced no output"))
            return
        self.set_header("Content-Type", "application/json")
        self.finish(outputs[0])

    async def _stream(self, queue: asyncio.Queue[Any]) -> None:
        started = False
        while True:
            done, item = await self._next(queue)
            if done:
                error = item
                break
            if self._gone:
                continue
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
        if self._finished or self._gone:
            return
        if error is not None:
            if not started:
                self.write_exception(error)
                return
            info = describe(error)
            self.write(b"data: " + error_body(info) + b"\n\ndata: [DONE]\n\n")
        self.finish()

    def _client_gone(self) -> None:
        self._gone = True
        if self._acquiring is not None and not self._acquiring.done():
            self._acquiring.cancel()
        if self.payload is not None:
            self.payload.mark_disconnected()
        if self.run is not None:
            self._cancel_run()

    def abort(self) -> None:
        """Server shutdown: stop this request's run (the client gets an error answer)."""
        if self.run is not None:
            self._cancel_run()

    def _cancel_run(self) -> None:
        """Cancel the run off the event loop (it takes the graph's lock and schedules work)."""
        run = self.run
        if run is not None:
            IOLoop.current().run_in_executor(None, run.cancel)

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
        ready = kind != "ready" or (
            self.repository.all_available() and not self.state.draining
        )
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


class MetricsHandler(BaseHandler):
    """``GET /metrics``: Prometheus text format (only with ``--metrics_enable``)."""

    def get(self) -> None:
        """Render the server's metrics registry."""
        if not self.server_settings.get("metrics_enable"):
            self.set_status(404)
            self.set_header("Content-Type", "application/json")
            self.finish(
                json.dumps({"error": {"message": "Metrics are disabled; start the server with "
                                      "--metrics_enable", "type": "invalid_request_error",
                                      "param": None, "code": None}})
            )
            return
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.finish(metrics.render())


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
