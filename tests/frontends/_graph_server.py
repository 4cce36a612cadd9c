"""An in-process REST server over a repository, with settings and server state (API key)."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from typing import Any

from ovgraph.serving.dataplane import DataPlane
from ovgraph.serving.repository import ModelRepository
from tests.conftest import free_port


class AppServer:
    """``make_app(repository, settings, state)`` on a loopback port, in a thread."""

    def __init__(
        self, repository: ModelRepository, settings: dict[str, Any] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = (repository, settings or {}, api_key)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(30)

    def _run(self) -> None:
        import tornado.httpserver
        from tornado.ioloop import IOLoop

        from ovgraph.frontends.rest.app import ServerState, make_app

        repository, settings, api_key = self._args
        asyncio.set_event_loop(asyncio.new_event_loop())
        self.loop = IOLoop.current()
        app = make_app(repository, settings, ServerState(DataPlane(repository), api_key=api_key))
        server = tornado.httpserver.HTTPServer(app)
        server.listen(self.port, address="127.0.0.1")
        self._ready.set()
        self.loop.start()
        server.stop()

    def stop(self) -> None:
        """Stop the loop and join the thread."""
        self.loop.add_callback(self.loop.stop)
        self._thread.join(10)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send a request; return ``(status, lower-cased headers, raw body)``."""
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        """Send a request; return ``(status, parsed JSON body)``."""
        status, _headers, raw = self.request(method, path, body, **kw)
        return status, json.loads(raw) if raw else None
