"""ASGI in front of the Tornado application: Ray Serve's HTTP proxy reaches the REST routes.

Ray Serve hands a replica each HTTP request as an ASGI call (``scope``, ``receive``, ``send``).
:class:`TornadoASGI` plays the connection Tornado's own HTTP server would: the request line,
headers and body pieces go to the application's message delegate, and what the handler writes
(``write_headers`` / ``write`` / ``finish``) goes back out as ASGI messages, in order, one per
flush, so a streamed answer reaches the client chunk by chunk. Every route, check and error
shape is therefore the Tornado application's own (:mod:`ovgraph.frontends.rest`): the route
table, API key, drain refusal, body limit, JSON validation, CORS and metrics labels run
unchanged, and the data plane below them applies admission, deadline and cancellation.

When the client goes away (an ``http.disconnect`` message, or Ray cancelling the call), the
handler's close callback fires as it does for a closed socket: ``on_connection_close`` cancels
the run. ASGI ``lifespan`` startup and shutdown call the hooks given to the constructor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import tornado.httputil
import tornado.iostream
import tornado.web

__all__ = ["TornadoASGI"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Framing is the ASGI server's job: these headers describe Tornado's own connection (and the
# ASGI server sends its own Date and Server).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "date", "server"})
_END = object()


class _Connection(tornado.httputil.HTTPConnection):
    """What the handler writes, as a FIFO of ASGI messages (each write's future: sent)."""

    def __init__(self, remote_ip: str | None, extra: list[tuple[bytes, bytes]]) -> None:
        self.extra = extra
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False
        self.finished = False
        self._close_callback: Callable[[], None] | None = None
        self.context = _Context(remote_ip)

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        """Tornado's ``RequestHandler`` registers ``on_connection_close`` here."""
        self._close_callback = callback

    def write_headers(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future[None]:
        """Queue ``http.response.start`` (and the first chunk)."""
        assert isinstance(start_line, tornado.httputil.ResponseStartLine)
        raw = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.get_all()
            if name.lower() not in _HOP_BY_HOP
        ] + self.extra
        self._queue({"type": "http.response.start", "status": start_line.code, "headers": raw})
        return self.write(chunk or b"")

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        """Queue a body piece; the future resolves once it is sent."""
        return self._queue({"type": "http.response.body", "body": bytes(chunk),
                            "more_body": True})

    def finish(self) -> None:
        """The answer is complete."""
        self.finished = True
        self._queue({"type": "http.response.body", "body": b"", "more_body": False})
        self.outbox.put_nowait(_END)

    def _queue(self, message: dict[str, Any]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_exception(tornado.iostream.StreamClosedError())
            future.exception()  # retrieved: a handler need not await every write
            return future
        self.outbox.put_nowait((message, future))
        return future

    def close(self) -> None:
        """The client went away: fail pending writes and tell the handler (once)."""
        if self.closed:
            return
        self.closed = True
        while not self.outbox.empty():
            item = self.outbox.get_nowait()
            if item is not _END and not item[1].done():
                item[1].set_exception(tornado.iostream.StreamClosedError())
                item[1].exception()
        self.outbox.put_nowait(_END)
        callback, self._close_callback = self._close_callback, None
        if callback is not None and not self.finished:
            callback()


class _Context:
    """``request.remote_ip`` and ``request.protocol`` for the handler."""

    def __init__(self, remote_ip: str | None) -> None:
        self.remote_ip = remote_ip
        self.protocol = "http"


class TornadoASGI:
    """An ASGI application over a ``tornado.web.Application`` (see the module docstring).

    Args:
        app: the Tornado application (``ovgraph.frontends.rest.app.make_app``).
        on_startup: awaited on ASGI ``lifespan.startup``.
        on_shutdown: awaited on ASGI ``lifespan.shutdown`` (drain).
        extra_headers: added to every answer (e.g. which replica answered).
    """

    def __init__(
        self,
        app: tornado.web.Application,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.extra_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in (extra_headers or {}).items()
        ]
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI call (``http`` or ``lifespan``)."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(f"Unsupported ASGI scope type {scope['type']!r}")
        client = scope.get("client")
        connection = _Connection(client[0] if client else None, self.extra_headers)
        try:
            await self._serve(scope, receive, send, connection)
        finally:
            connection.close()  # cancelled by Ray (client gone) or done: stop any run left

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, connection: _Connection
    ) -> None:
        path = scope.get("raw_path") or scope["path"].encode("utf-8")
        root = (scope.get("root_path") or "").encode("utf-8")
        if root and path.startswith(root):  # mounted under a route prefix: route below it
            path = path[len(root):] or b"/"
        query = scope.get("query_string") or b""
        target = path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
        start = tornado.httputil.RequestStartLine(scope["method"], target, "HTTP/1.1")
        headers = tornado.httputil.HTTPHeaders()
        for name, value in scope.get("headers") or ():
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
        if "Host" not in headers:  # HTTP/1.1 requires it; ASGI may leave it to ``server``
            server = scope.get("server") or ("localhost", None)
            headers.add("Host", str(server[0]) + (f":{server[1]}" if server[1] else ""))
        delegate = self.app.start_request(None, connection)
        await _maybe(delegate.headers_received(start, headers))
        while not connection.finished:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body") or b""
            if body:
                await _maybe(delegate.data_received(body))
            if not message.get("more_body"):
                break
        if not connection.finished:
            delegate.finish()
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await self._pump(connection, send, watcher)
        finally:
            watcher.cancel()

    @staticmethod
    async def _pump(connection: _Connection, send: Send, watcher: asyncio.Future[None]) -> None:
        while True:
            getter = asyncio.ensure_future(connection.outbox.get())
            await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                return  # the client disconnected
            item = getter.result()
            if item is _END:
                return
            message, future = item
            try:
                await send(message)
            except Exception:
                if not future.done():
                    future.set_exception(tornado.iostream.StreamClosedError())
                    future.exception()
                return
            if not future.done():
                future.set_result(None)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            kind = message["type"]
            hook = self.on_startup if kind == "lifespan.startup" else self.on_shutdown
            try:
                if hook is not None:
                    await hook()
            except Exception as exc:
                await send({"type": f"{kind}.failed", "message": str(exc)})
                return
            await send({"type": f"{kind}.complete"})
            if kind == "lifespan.shutdown":
                return


async def _maybe(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


async def _wait_disconnect(receive: Receive) -> None:
    with contextlib.suppress(Exception):
        while (await receive())["type"] != "http.disconnect":
            pass
