"""The server process: model repository, REST (and gRPC) frontends, signals, lifecycle."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

__all__ = ["run_server"]

logger = logging.getLogger("ovgraph")


def run_server(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code."""
    import tornado.httpserver
    from tornado.ioloop import IOLoop

    from ovgraph.cli import build_repository, settings_from_args
    from ovgraph.errors import OvGraphError
    from ovgraph.frontends.rest.app import MAX_BODY_BYTES, make_app

    level = "DEBUG" if args.log_level == "TRACE" else args.log_level
    logging.basicConfig(level=level, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    if not args.rest_port and not args.port:
        args.rest_port = 8000
    try:
        repository = build_repository(args)
    except OvGraphError as exc:
        print(f"ovgraph: {exc}", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    server = None
    if args.rest_port:
        app = make_app(repository, settings)
        server = tornado.httpserver.HTTPServer(app, max_body_size=MAX_BODY_BYTES)
        server.listen(args.rest_port, address=args.rest_bind_address)
    names = ", ".join(d.name for d in repository.definitions())
    where = f"http://{args.rest_bind_address}:{args.rest_port}" if args.rest_port else "-"
    print(f"ovgraph: serving {names} on {where}", flush=True)

    def load_all() -> None:
        for definition in repository.definitions():
            definition.load()

    threading.Thread(target=load_all, name="ovgraph-load", daemon=True).start()
    loop = IOLoop.current()

    def stop(*_: Any) -> None:
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    loop.start()
    if server is not None:
        server.stop()
    return 0
