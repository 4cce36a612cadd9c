"""One replica's server: the repository, data plane and REST application, without a socket.

:class:`ReplicaServer` builds from a :class:`~ovgraph.config.ServeConfig` what ``ovgraph serve``
builds (``ovgraph.server``), minus the listening sockets and the ``config.json`` watcher: Ray
Serve's proxies own the sockets, and configuration changes reach every replica through
``serve deploy`` instead of a watcher per replica. Graphs load before the replica reports
ready, so Ray never routes a request to a replica that is still loading.

The gRPC side (:class:`GrpcCalls`) runs Ray's gRPC proxy calls through ovgraph's own KServe
servicer (:class:`~ovgraph.frontends.grpc.servicer.InferenceServicer`) on a worker thread, with
a context that carries the status code back to Ray.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from ovgraph import plugins
from ovgraph.config import ServeConfig
from ovgraph.errors import GraphConfigError, ServableNotFoundError
from ovgraph.frontends.auth import authorized, load_api_key
from ovgraph.frontends.errors import to_grpc
from ovgraph.frontends.grpc.auth import GUARDED_METHODS
from ovgraph.frontends.rest.app import ServerState, make_app
from ovgraph.ray_serve.asgi import TornadoASGI
from ovgraph.serving.dataplane import DataPlane
from ovgraph.serving.repository import ModelRepository, parse_config_file

__all__ = ["GrpcCalls", "ReplicaServer", "build_replica_repository"]

logger = logging.getLogger("ovgraph.ray")


def build_replica_repository(config: ServeConfig) -> ModelRepository:
    """The repository of one replica, loaded.

    As ``ovgraph serve`` builds it, except that ``model_name`` together with ``config_path``
    picks that one graph of the configuration file (one Serve application per model).

    Raises:
        GraphConfigError: the configuration is unusable, or ``model_name`` is not in it.
    """
    from ovgraph.server import build_repository

    if config.config_path and config.model_name:
        repository = ModelRepository(config.node_settings())
        entries = {e.name: e for e in parse_config_file(Path(config.config_path))}
        entry = entries.get(config.model_name)
        if entry is None:
            raise GraphConfigError(
                f'model_name "{config.model_name}" is not in {config.config_path} '
                f"(it has: {', '.join(sorted(entries)) or 'nothing'})"
            )
        repository.add(entry, load=False)
    else:
        repository = build_repository(config)
    for definition in repository.definitions():
        definition.load()
    return repository


class ReplicaServer:
    """The REST application and data plane of one replica; see the module docstring.

    Args:
        config: the server configuration (ports and the watcher are ignored).
        loop: the replica's event loop, where the data plane's policy runs.

    Raises:
        GraphConfigError: the configuration is unusable or a graph failed to load (unlike
            ``ovgraph serve``, which keeps serving the others: a replica serves all or none).
    """

    def __init__(
        self,
        config: ServeConfig,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        try:
            plugins.apply_serve_flags(config.node_settings())
        except ValueError as exc:
            raise GraphConfigError(str(exc)) from exc
        self.config = config
        self.api_key = load_api_key(config.api_key_file or None)
        self.repository = build_replica_repository(config)
        problem = self.problem()
        if problem:  # Ray reports it and stops retrying, rather than restart it for ever
            raise GraphConfigError(problem)
        self.plane = DataPlane(
            self.repository,
            max_queued=config.max_queued_requests,
            request_timeout=config.request_timeout, loop=loop,
        )
        state = ServerState(self.plane, api_key=self.api_key,
                            max_body_bytes=config.max_body_size)
        self.app = make_app(self.repository, config.http.as_dict(), state)
        self.asgi = TornadoASGI(self.app, on_shutdown=self.drain)
        self.grpc = GrpcCalls(self.plane, self.api_key)

    def problem(self) -> str | None:
        """Why this replica cannot serve (a graph not AVAILABLE, an engine down), or None."""
        for definition in self.repository.definitions():
            if not definition.available:
                return f'Graph "{definition.name}" is {definition.state}: {definition.error}'
            trouble = definition.health()
            if trouble:
                return f'Graph "{definition.name}": {trouble}'
        return None

    async def drain(self) -> None:
        """Refuse new requests, let those in flight finish (``drain_timeout``), cancel the rest."""
        plane = self.plane
        plane.draining = True
        if plane.active:
            logger.info("Draining %d request(s)", plane.active)
        if not await plane.wait_drained(max(0.0, float(self.config.drain_timeout))):
            logger.warning("Drain timeout: cancelling %d request(s)", plane.active)
            plane.abort_all()
            await plane.wait_drained(2.0)


class _Aborted(Exception):
    """A gRPC call ended with a status (set on Ray's context before raising)."""


class _Raised:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _ContextAdapter:
    """The slice of ``grpc.ServicerContext`` ovgraph's servicer uses, over Ray's context."""

    def __init__(self, ray_context: Any) -> None:
        self.ray_context = ray_context
        self.callbacks: list[Callable[[], Any]] = []

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return list(self.ray_context.invocation_metadata() or ())

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        self.callbacks.append(callback)
        return True

    def is_active(self) -> bool:
        """Ray's proxy holds the client's call; a departure runs the callbacks instead."""
        return True

    def abort(self, code: Any, details: str) -> None:
        self.ray_context.set_code(code)
        self.ray_context.set_details(details)
        raise _Aborted(details)


class GrpcCalls:
    """KServe gRPC calls as Ray's gRPC proxy makes them (request in, response out).

    Args:
        plane: the replica's data plane.
        api_key: the key ``ModelInfer`` needs (metadata ``authorization: Bearer <key>``).
    """

    def __init__(self, plane: DataPlane, api_key: str | None) -> None:
        from ovgraph.frontends.grpc.servicer import InferenceServicer

        self.servicer = InferenceServicer(plane)
        self.api_key = api_key

    def _authorize(self, method: str, context: _ContextAdapter) -> None:
        import grpc

        from ovgraph.frontends.auth import UNAUTHORIZED_MESSAGE

        if method not in GUARDED_METHODS:
            return
        header = None
        for name, value in context.invocation_metadata():
            if name.lower() == "authorization":
                header = value
        if not authorized(self.api_key, header):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHORIZED_MESSAGE)

    async def stream(self, requests: AsyncIterator[Any], ray_context: Any) -> AsyncIterator[Any]:
        """``ModelStreamInfer``: the servicer's stream on a worker thread, fed from Ray's.

        Raises:
            Exception: the call failed before its first response (status on ``ray_context``).
        """
        context = _ContextAdapter(ray_context)
        self._authorize("ModelStreamInfer", context)
        loop = asyncio.get_running_loop()
        inbox: queue.Queue[Any] = queue.Queue()
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        end = object()

        def incoming() -> Iterator[Any]:
            while (item := inbox.get()) is not end:
                yield item

        def run() -> None:
            try:
                for response in self.servicer.ModelStreamInfer(incoming(), context):
                    loop.call_soon_threadsafe(outbox.put_nowait, response)
            except BaseException as exc:
                loop.call_soon_threadsafe(outbox.put_nowait, _Raised(exc))
            loop.call_soon_threadsafe(outbox.put_nowait, end)

        async def feed() -> None:
            try:
                async for request in requests:
                    inbox.put(request)
            finally:
                inbox.put(end)

        feeder = asyncio.ensure_future(feed())
        threading.Thread(target=run, name="ovgraph-ray-stream", daemon=True).start()
        try:
            while (item := await outbox.get()) is not end:
                if isinstance(item, _Raised):
                    raise item.error
                yield item
        finally:
            feeder.cancel()
            inbox.put(end)
            for callback in context.callbacks:  # the client left or the stream ended: stop
                callback()

    async def call(self, method: str, request: Any, ray_context: Any) -> Any:
        """Run ``method`` of the servicer; errors leave their gRPC status on ``ray_context``.

        Raises:
            Exception: the call failed (Ray answers with the status set on ``ray_context``).
        """
        context = _ContextAdapter(ray_context)
        self._authorize(method, context)
        handler = getattr(self.servicer, method)
        try:
            # The servicer blocks on the data plane's loop, which is this one: run it aside.
            return await asyncio.to_thread(handler, request, context)
        except asyncio.CancelledError:
            for callback in context.callbacks:
                callback()
            raise
        except _Aborted:
            raise
        except ServableNotFoundError as exc:
            code, message = to_grpc(exc)
            context.abort(code, message)
