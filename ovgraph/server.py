"""The server process: model repository, REST (and gRPC) frontends, signals, lifecycle.

Shutdown (SIGTERM or SIGINT): the server keeps listening but answers new model requests and
readiness probes with 503, lets requests in flight finish for up to ``--drain_timeout`` seconds,
cancels whatever is left, stops the frontends and exits 0. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from typing import Any

__all__ = ["run_server"]

logger = logging.getLogger("ovgraph")

_ABORT_GRACE = 2.0
_EXIT_WATCHDOG = 10.0


def _start_grpc(
    args: argparse.Namespace, repository: Any, settings: dict[str, Any], plane: Any
) -> Any:
    try:
        from ovgraph.frontends.grpc.server import start_grpc_server
    except ImportError:
        logger.error("The gRPC frontend is not available; serving REST only")
        return None
    return start_grpc_server(repository, settings, args.port, args.grpc_bind_address, plane)


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


def run_server(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code."""
    _limit_malloc_arenas()
    import tornado.httpserver
    from tornado.ioloop import IOLoop

    from ovgraph.cli import build_repository, settings_from_args
    from ovgraph.errors import OvGraphError
    from ovgraph.framework import executor
    from ovgraph.frontends.auth import load_api_key
    from ovgraph.frontends.rest.app import ServerState, make_app, tornado_max_body_size
    from ovgraph.serving.dataplane import DataPlane

    level = "DEBUG" if args.log_level == "TRACE" else args.log_level
    logging.basicConfig(level=level, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    if not args.rest_port and not args.port:
        args.rest_port = 8000
    try:
        api_key = load_api_key(getattr(args, "api_key_file", "") or None)
        repository = build_repository(args)
    except OvGraphError as exc:
        print(f"ovgraph: {exc}", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    loop = IOLoop.current()
    plane = DataPlane(
        repository,
        max_queued=getattr(args, "max_queued_requests", 256),
        request_timeout=getattr(args, "request_timeout", 600.0),
        loop=loop.asyncio_loop,  # type: ignore[attr-defined]
    )
    state = ServerState(
        plane, api_key=api_key,
        max_body_bytes=getattr(args, "max_body_size", 64 * 1024 * 1024),
    )
    if api_key is not None:
        logger.info("API key required for model requests")
    server = None
    if args.rest_port:
        app = make_app(repository, settings, state)
        server = tornado.httpserver.HTTPServer(
            app, max_body_size=tornado_max_body_size(state), max_header_size=64 * 1024,
            idle_connection_timeout=300,
        )
        server.listen(args.rest_port, address=args.rest_bind_address)
    grpc_server = _start_grpc(args, repository, settings, plane) if args.port else None
    names = ", ".join(d.name for d in repository.definitions())
    where = f"http://{args.rest_bind_address}:{args.rest_port}" if args.rest_port else "-"
    print(f"ovgraph: serving {names} on {where}", flush=True)

    def load_all() -> None:
        for definition in repository.definitions():
            definition.load()

    threading.Thread(target=load_all, name="ovgraph-load", daemon=True).start()
    repository.start_watching(args.file_system_poll_wait_seconds)
    drain_timeout = max(0.0, float(getattr(args, "drain_timeout", 30.0)))

    async def drain() -> None:
        logger.info("Shutting down: draining %d request(s)", plane.active)
        if not await plane.wait_drained(drain_timeout):
            logger.warning("Drain timeout: cancelling %d request(s)", plane.active)
            plane.abort_all()
            await plane.wait_drained(_ABORT_GRACE)
        await asyncio.sleep(0.05)  # let the last answers reach their sockets
        loop.stop()

    def on_signal() -> None:
        if plane.draining:
            loop.stop()
            return
        plane.draining = True
        loop.add_callback(drain)

    def handle(*_: Any) -> None:
        loop.add_callback_from_signal(on_signal)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    loop.start()
    if server is not None:
        server.stop()
    if grpc_server is not None:
        try:
            grpc_server.stop(0)
        except Exception:
            logger.exception("Stopping the gRPC server failed")
    _exit_watchdog()
    executor.shutdown(wait=False)
    logger.info("Server stopped")
    return 0
