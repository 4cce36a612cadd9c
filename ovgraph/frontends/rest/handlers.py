"""Tornado handlers: decode the HTTP request, call the data plane, frame the answer.

Handlers get the repository and their route's error shape through route kwargs
(``initialize``), never from a global; graph work and policy live in the data plane
(:mod:`ovgraph.serving.dataplane`), which hands results back on the IO loop.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import time
from typing import Any

import tornado.iostream
import tornado.web

from ovgraph import metrics
from ovgraph.errors import (
    OvGraphError,
    PayloadTooLargeError,
    RequestError,
    ServableNotFoundError,
)
from ovgraph.frontends.errors import OPENAI, describe, http_error, openai_error_body, to_http
from ovgraph.frontends.rest.protection import DISCARD_BYTES, ServerState
from ovgraph.serving.dataplane import Execution
from ovgraph.serving.http import HttpStream, http_outputs, serve_http
from ovgraph.serving.json_body import parse_json, trim_heap
from ovgraph.serving.payload import HttpPayload
from ovgraph.serving.repository import ModelRepository

__all__ = [
    "BodyHandler",
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
    """Shared plumbing: the repository, JSON answers, errors in the route's shape."""

    errors = OPENAI

    def initialize(
        self, repository: ModelRepository, settings: dict[str, Any], errors: str = OPENAI
    ) -> None:
        """Receive dependencies from the route table."""
        self.repository = repository
        self.server_settings = settings
        self.errors = errors
        self.set_default_headers()  # Tornado set them before the settings were known

    @property
    def state(self) -> ServerState:
        """The server-wide state (key, body limit, data plane)."""
        state: ServerState = self.application.settings["ovgraph_state"]
        return state

    def set_default_headers(self) -> None:
        """CORS headers as OVMS sends them (configurable)."""
        for name, value in cors_headers(getattr(self, "server_settings", None) or {}).items():
            self.set_header(name, value)

    def options(self, *args: Any) -> None:
        """CORS preflight (never needs the API key)."""
        self.set_status(204)
        self.finish()

    @classmethod
    def allowed_methods(cls) -> list[str]:
        """The methods this handler implements (for ``Allow``)."""
        base = tornado.web.RequestHandler
        return [
            m for m in cls.SUPPORTED_METHODS
            if getattr(cls, m.lower(), None) is not getattr(base, m.lower(), None)
        ]

    def write_json(self, value: Any, status: int = 200) -> None:
        """Answer with a JSON document."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_exception(self, exc: BaseException) -> None:
        """Answer with the error object for ``exc`` in this route's shape."""
        status, body = to_http(exc, self.errors)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        if status == 503:
            self.set_header("Retry-After", "1")
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors Tornado raises itself (bad method, body too large…) in the same shape."""
        self.set_header("Content-Type", "application/json")
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        self.finish(http_error(status_code, self._reason or "Error", self.errors))


@tornado.web.stream_request_body
class BodyHandler(BaseHandler):
    """A handler whose request body is received in pieces, counted and bounded.

    An oversized body (with ``Content-Length`` or chunked) is answered with 413 in the route's
    error shape instead of a dropped connection: a declared size far above the limit (or with
    ``Expect: 100-continue``) at once, a body up to ``DISCARD_BYTES`` over it after reading it
    (so the client is listening), a chunked body beyond that as soon as it gets there (then
    the connection closes). :meth:`body_json` parses the body off the IO loop.

    The body grows in one buffer: a big one then lives in one mapping that goes back to the
    system when freed, instead of a thousand 64 KiB heap pieces that fragment the heap and
    raise the process's peak a little more with every big request.
    """

    def prepare(self) -> None:
        """Check the declared body size before reading the body."""
        self._body = bytearray()
        self._size = 0
        self._too_large = False
        self._gone = False
        limit = self.state.max_body_bytes
        connection = self.request.connection
        declared = self.request.headers.get("Content-Length")
        if declared is None:
            if hasattr(connection, "set_max_body_size"):
                connection.set_max_body_size(2**62)  # counted here; see data_received
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
        """Keep body pieces up to the limit; past it, drop them (and answer far past it)."""
        self._size += len(chunk)
        if self._too_large:
            if self._size > self.state.max_body_bytes + DISCARD_BYTES and not self._finished:
                self.write_exception(self._too_large_error())  # the connection closes
            return
        if self._size > self.state.max_body_bytes:
            self._too_large = True
            self._body = bytearray()
            return
        self._body += chunk

    def _too_large_error(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"Request body exceeds the limit of {self.state.max_body_bytes} bytes"
        )

    def on_finish(self) -> None:
        """After a big body, give the freed memory back (off the loop)."""
        if getattr(self, "_size", 0) > self.state.json_parser.threshold:
            asyncio.get_running_loop().run_in_executor(None, trim_heap)

    async def body_json(self) -> tuple[Any, bytes]:
        """The parsed body and its bytes; a big body is joined and parsed off the IO loop.

        Raises:
            RequestError: not JSON, too deep, or invalid text (naming its path).
        """
        received, self._body = self._body, bytearray()
        parser = self.state.json_parser
        if self._size <= parser.threshold:
            body = bytes(received)
            return parse_json(body), body
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, bytes, received)
        del received
        return await loop.run_in_executor(None, parser.parse, body), body


class GraphHandler(BodyHandler):
    """``POST /v3/...``: hand the body and URI to the graph the JSON ``model`` field names.

    The body is bounded and parsed as :class:`BodyHandler` does. The data plane then applies
    the serving policy (admission, deadline, cancellation when the client goes away) and the
    answer is framed by what the graph returns: one body, or a stream of chunks.
    """

    execution: Execution | None = None
    payload: HttpPayload | None = None

    async def post(self, *args: Any) -> None:
        """Run the graph named by the request."""
        try:
            await self._run_graph()
        finally:
            if self.payload is not None:
                self.payload.release()

    async def _run_graph(self) -> None:
        if self._too_large:
            self.write_exception(self._too_large_error())
            return
        plane = self.state.plane
        try:
            payload, model = await self._decode()
            definition = plane.servable(model)
        except OvGraphError as exc:
            self.write_exception(exc)
            return
        self.payload = payload
        async with plane.execution(
            definition, http_outputs(definition), self.request.headers
        ) as execution:
            self.execution = execution
            if self._gone:
                execution.cancel()
            try:
                answer = await serve_http(execution, payload)
            except Exception as exc:
                if not self._gone and not self._finished:
                    self.write_exception(exc)
                return
            if self._gone:
                return
            if isinstance(answer, HttpStream):
                await self._stream(answer)
                return
            self.set_header("Content-Type", answer.content_type)
            self.finish(answer.body)

    async def _decode(self) -> tuple[HttpPayload, str]:
        """The payload for the graph and the model it names (OVMS's ``/v3`` routing rules)."""
        parsed, body = await self.body_json()
        if not isinstance(parsed, dict):
            raise RequestError("JSON body must be an object")
        model = parsed.get("model")
        if not isinstance(model, str):
            raise RequestError(
                "The file is not valid json - model field is missing in JSON body"
                if model is None else "model is not a string"
            )
        payload = HttpPayload(
            uri=self.request.uri or "", method=self.request.method or "POST",
            headers=dict(self.request.headers), body=body, parsed_json=parsed,
        )
        return payload, model

    async def _stream(self, answer: HttpStream) -> None:
        self.set_header("Content-Type", answer.content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Connection", "keep-alive")
        try:
            async for chunk in answer:
                if self._gone:
                    return
                self.write(chunk)
                try:
                    await self.flush()
                except tornado.iostream.StreamClosedError:
                    self._client_gone()
                    return
        except Exception as exc:
            if self._gone or self._finished:
                return
            self.write(b"data: " + openai_error_body(describe(exc)) + b"\n\ndata: [DONE]\n\n")
        if not self._gone and not self._finished:
            self.finish()

    def _client_gone(self) -> None:
        self._gone = True
        if self.payload is not None:
            self.payload.mark_disconnected()
        if self.execution is not None:
            self.execution.cancel()

    def on_connection_close(self) -> None:
        """The client went away: stop its generation."""
        self._client_gone()


class ModelsHandler(BaseHandler):
    """``GET /v3/models`` and ``/v3/models/{name}`` (OpenAI model objects)."""

    def get(self, name: str | None = None) -> None:
        """List the servables, or show one (``created``: when the server first listed it)."""
        now = int(time.time())
        created = self.state.created

        def model(n: str) -> dict[str, Any]:
            stamp = created.setdefault(n, now)
            return {"id": n, "object": "model", "created": stamp, "owned_by": "OVMS"}

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
    """``/v2/health/live``, ``/v2/health/ready``, and vLLM's ``/health`` and ``/ping``."""

    def get(self, kind: str = "live") -> None:
        """200 when live (always) / ready (every servable AVAILABLE), else 503."""
        ready = kind != "ready" or (
            self.repository.all_available() and not self.state.draining
        )
        self.set_status(200 if ready else 503)
        self.finish()

    def post(self, kind: str = "live") -> None:
        """``POST /ping`` (vLLM answers it like ``GET``)."""
        self.get(kind)


class VersionHandler(BaseHandler):
    """vLLM's ``GET /version``: ``{"version": "…"}`` of the installed ovgraph."""

    def get(self) -> None:
        """The package version."""
        try:
            version = importlib.metadata.version("ovgraph")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        self.write_json({"version": version})


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
            self.finish(http_error(
                404, "Metrics are disabled; start the server with --metrics_enable", self.errors
            ))
            return
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.finish(metrics.render())


class NotFoundHandler(BaseHandler):
    """Anything else."""

    def prepare(self) -> None:
        """Answer every method with 404 in the OpenAI error shape."""
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.finish(http_error(404, "Invalid request URL", self.errors))
