"""The server process: model repository, REST (and gRPC) frontends, signals, lifecycle.

Shutdown (SIGTERM or SIGINT): the server keeps listening but answers new model requests and
readiness probes with 503, lets requests in flight finish for up to ``--drain_timeout`` seconds,
cancels whatever is left, stops the frontends and exits 0. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

from ovgraph import plugins
from ovgraph.config import ServeConfig
from ovgraph.errors import GraphConfigError
from ovgraph.threads import ElasticThreadPool

__all__ = ["DEFAULT_MODEL_GROUP", "Server", "build_repository", "default_model_dir", "run_server"]

DEFAULT_MODEL_GROUP = "ovgraph.default_model"

logger = logging.getLogger("ovgraph")

_ABORT_GRACE = 2.0
_EXIT_WATCHDOG = 10.0


def default_model_dir() -> Path:
    """The model served without model arguments.

    ``OVGRAPH_DEFAULT_MODEL`` names a folder; otherwise the first ``ovgraph.default_model``
    entry point (``name = "module:function"``, the function returning the folder) provides it.

    Raises:
        GraphConfigError: no default model is installed.
    """
    override = os.environ.get("OVGRAPH_DEFAULT_MODEL")
    if override:
        return Path(override)
    for ep in sorted(metadata.entry_points(group=DEFAULT_MODEL_GROUP), key=lambda e: e.name):
        return Path(ep.load()())
    raise GraphConfigError(
        "No default model is installed; give --model_path or --config_path"
    )


def build_repository(config: ServeConfig) -> Any:
    """Create the model repository the configuration describes (graphs are not loaded yet)."""
    from ovgraph.errors import GraphConfigError
    from ovgraph.serving.repository import (
        GraphEntry,
        ModelRepository,
        graph_file_in,
        parse_config_file,
        task_graph,
    )

    settings = config.node_settings()
    repository = ModelRepository(settings)
    if config.config_path:
        repository.config_path = Path(config.config_path)
        entries = parse_config_file(repository.config_path)
    else:
        model_path = Path(config.model_path) if config.model_path else default_model_dir()
        name = config.model_name or model_path.name
        graph = graph_file_in(model_path)
        if graph is not None and not config.task:
            entries = [GraphEntry(name=name, graph_path=graph, base_path=graph.parent)]
        elif config.task:
            text = task_graph(config.task, model_path.resolve(), settings)
            entries = [GraphEntry(name=name, text=text, base_path=model_path.resolve())]
        else:
            raise GraphConfigError(
                f"{model_path} has no graph.pbtxt; give --task to serve the model folder with "
                "a generated graph"
            )
    for entry in entries:
        repository.add(entry, load=False)
    return repository


def _start_grpc(config: ServeConfig, repository: Any, plane: Any) -> Any:
    try:
        from ovgraph.frontends.grpc.server import start_grpc_frontend
    except ImportError:
        logger.error("The gRPC frontend is not available; serving REST only")
        return None
    return start_grpc_frontend(
        repository, config.grpc_settings(), config.port, config.grpc_bind_address, plane
    )


def _exit_watchdog() -> None:
    """Exit even if a calculator thread never returns (pool threads are joined at exit)."""

    def force() -> None:
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(_EXIT_WATCHDOG, force)
    timer.daemon = True
    timer.start()


def _limit_malloc_arenas(count: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas (``M_ARENA_MAX``) for threads created from now on.

    Every new worker thread otherwise gets an arena of its own that keeps its pages after the
    request, so RSS climbs with the peak thread count instead of the live data.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, count)  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return


class Server:
    """One server on the current thread's IO loop: repository, data plane, frontends.

    ``start()`` binds the ports and begins loading the graphs; ``drain()`` refuses new model
    requests, lets those in flight finish for up to ``drain_timeout`` seconds, cancels the
    rest and stops the loop; ``close()`` stops the frontends. :func:`run_server` drives it from
    signals; tests run it in a thread of their own.
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.rest_port = config.effective_rest_port
        self.repository: Any = None
        self.plane: Any = None
        self._http: Any = None
        self._grpc: Any = None

    def start(self) -> None:
        """Build everything and listen (raises ``OvGraphError`` for a bad configuration)."""
        import tornado.httpserver
        from tornado.ioloop import IOLoop

        from ovgraph.frontends.auth import load_api_key
        from ovgraph.frontends.rest.app import ServerState, make_app, tornado_max_body_size
        from ovgraph.frontends.rest.protection import TORNADO_MAX_HEADER_BYTES
        from ovgraph.serving.dataplane import DataPlane

        config = self.config
        try:
            plugins.apply_serve_flags(config.node_settings())
        except ValueError as exc:
            raise GraphConfigError(str(exc)) from exc
        _select_metrics(config)
        api_key = load_api_key(config.api_key_file or None)
        repository = build_repository(config)
        self.repository = repository
        loop = IOLoop.current()
        self.loop = loop
        # run_in_executor(None, …) work (body joins, graph starts): idle threads exit too
        loop.asyncio_loop.set_default_executor(  # type: ignore[attr-defined]
            ElasticThreadPool(min(32, (os.cpu_count() or 1) + 4), "ovgraph-io")
        )
        plane = DataPlane(
            repository, max_queued=config.max_queued_requests,
            request_timeout=config.request_timeout,
            loop=loop.asyncio_loop,  # type: ignore[attr-defined]
        )
        self.plane = plane
        state = ServerState(plane, api_key=api_key, max_body_bytes=config.max_body_size)
        if api_key is not None:
            logger.info("API key required for model requests")
        if self.rest_port:
            app = make_app(repository, config.http.as_dict(), state)
            self._http = tornado.httpserver.HTTPServer(
                app, max_body_size=tornado_max_body_size(state),
                max_header_size=TORNADO_MAX_HEADER_BYTES,
                idle_connection_timeout=300,
            )
            self._http.listen(self.rest_port, address=config.rest_bind_address)
        self._grpc = _start_grpc(config, repository, plane) if config.port else None
        names = ", ".join(d.name for d in repository.definitions())
        where = (
            f"http://{config.rest_bind_address}:{self.rest_port}" if self.rest_port else "-"
        )
        print(f"ovgraph: serving {names} on {where}", flush=True)

        def load_all() -> None:
            for definition in repository.definitions():
                definition.load()

        threading.Thread(target=load_all, name="ovgraph-load", daemon=True).start()
        repository.start_watching(config.file_system_poll_wait_seconds)

    async def drain(self) -> None:
        """Refuse new work, let work in flight finish (or cancel it), then stop the loop."""
        plane = self.plane
        plane.draining = True
        grpc_calls = self._grpc.servicer.active_calls if self._grpc is not None else 0
        logger.info(
            "Shutting down: draining %d request(s), %d gRPC call(s)", plane.active, grpc_calls
        )
        timeout = max(0.0, float(self.config.drain_timeout))
        deadline = asyncio.get_running_loop().time() + timeout
        drained = await plane.wait_drained(timeout)
        if self._grpc is not None:
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            drained = await asyncio.get_running_loop().run_in_executor(
                None, self._grpc.drain, left
            ) and drained
        if not drained:
            logger.warning("Drain timeout: cancelling %d request(s)", plane.active)
            plane.abort_all()
            if self._grpc is not None:  # calls still open (idle streams) end here
                await asyncio.get_running_loop().run_in_executor(
                    None, self._grpc.stop, _ABORT_GRACE
                )
            await plane.wait_drained(_ABORT_GRACE)
        await asyncio.sleep(0.05)  # let the last answers reach their sockets
        self.loop.stop()

    def close(self) -> None:
        """Stop the frontends and the config watcher (after the loop stopped)."""
        if self._http is not None:
            self._http.stop()
        if self._grpc is not None:
            try:
                self._grpc.stop(_ABORT_GRACE)
            except Exception:
                logger.exception("Stopping the gRPC server failed")
        if self.repository is not None:
            self.repository.stop_watching()


def _select_metrics(config: ServeConfig) -> None:
    """Apply ``--metrics_list`` (OVMS: it needs ``--metrics_enable``; unknown names fail)."""
    from ovgraph import metrics

    if config.http.metrics_list and not config.http.metrics_enable:
        raise GraphConfigError(
            "metrics_enable setting is missing, required when metrics_list is provided"
        )
    try:
        metrics.select(config.http.metrics_list or None)
    except ValueError as exc:
        raise GraphConfigError(str(exc)) from exc


def run_server(config: ServeConfig) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code."""
    _limit_malloc_arenas()
    from tornado.ioloop import IOLoop

    from ovgraph.errors import OvGraphError
    from ovgraph.framework import executor

    level = "DEBUG" if config.log_level == "TRACE" else config.log_level
    logging.basicConfig(level=level, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    server = Server(config)
    try:
        server.start()
    except OvGraphError as exc:
        print(f"ovgraph: {exc}", file=sys.stderr)
        return 2
    # The ~40,000 objects of start-up (modules, graphs, servables) live as long as the server:
    # out of the cycle collector's reach, a full collection (run after big bodies, holding the
    # GIL) no longer walks them (7-10 ms -> under 1 ms here). Refcounting still frees them.
    gc.freeze()
    loop = IOLoop.current()

    def on_signal() -> None:
        if server.plane.draining:
            loop.stop()
            return
        server.plane.draining = True
        loop.add_callback(server.drain)

    def handle(*_: Any) -> None:
        loop.add_callback_from_signal(on_signal)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    loop.start()
    server.close()
    _exit_watchdog()
    executor.shutdown(wait=False)
    logger.info("Server stopped")
    return 0
