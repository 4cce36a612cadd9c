"""``ovgraph`` command line: ``serve`` (OVMS's flag names), graph tools, ``export``.

``ovgraph serve`` with no model arguments serves the embedded default model. ``ovgraph
--rest_port 8000 --model_path …`` (flags first, no sub-command) works too, as ``ovms`` does.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ovgraph import plugins
from ovgraph.config import ServeConfig

__all__ = ["build_parser", "main"]

logger = logging.getLogger("ovgraph")
_D = ServeConfig()


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rest_port", type=int, default=0, help="REST port (0 = REST off)")
    p.add_argument("--rest_bind_address", default=_D.rest_bind_address)
    p.add_argument("--port", type=int, default=0, help="gRPC port (0 = gRPC off)")
    p.add_argument("--grpc_bind_address", default=_D.grpc_bind_address)
    p.add_argument("--rest_workers", type=int, default=None, help="accepted for compatibility")
    p.add_argument("--grpc_workers", type=int, default=1, help="accepted for compatibility")
    p.add_argument("--grpc_max_threads", type=int, default=_D.grpc_max_threads,
                   help="gRPC worker threads; each open stream holds one")
    p.add_argument("--model_name")
    p.add_argument("--model_path")
    p.add_argument("--config_path")
    p.add_argument("--task", choices=plugins.task_names() or None, default=None)
    p.add_argument("--allowed_origins", default=_D.http.allowed_origins)
    p.add_argument("--allowed_methods", default=_D.http.allowed_methods)
    p.add_argument("--allowed_headers", default=_D.http.allowed_headers)
    p.add_argument("--allow_credentials", action="store_true")
    p.add_argument("--api_key_file", default=_D.api_key_file)
    p.add_argument("--log_level", default=_D.log_level,
                   choices=["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--file_system_poll_wait_seconds", type=int,
                   default=_D.file_system_poll_wait_seconds)
    p.add_argument("--metrics_enable", action="store_true")
    p.add_argument("--metrics_list", default="",
                   help="comma-separated metric families to expose (default: all but optional)")
    p.add_argument("--source_model")
    p.add_argument("--model_repository_path", default=os.environ.get("OVMS_MODEL_REPOSITORY_PATH"))
    p.add_argument("--pull", action="store_true")
    p.add_argument("--overwrite_models", action="store_true")
    p.add_argument("--drain_timeout", type=float, default=_D.drain_timeout,
                   help="seconds in-flight requests may finish after SIGTERM")
    p.add_argument("--max_queued_requests", type=int, default=_D.max_queued_requests,
                   help="requests that may wait for a free sequence slot; more get 503")
    p.add_argument("--request_timeout", type=float, default=_D.request_timeout,
                   help="seconds a request may wait for its (next) output; 0 = no deadline")
    p.add_argument("--max_body_size", type=int, default=_D.max_body_size,
                   help="largest accepted request body in bytes (413 above)")
    p.add_argument("--list_models", action="store_true")
    p.add_argument("--add_to_config", action="store_true")
    p.add_argument("--remove_from_config", action="store_true")
    for contributor in plugins.serve_flag_contributors():
        contributor.add_arguments(p)


def build_parser(describe_commands: bool = False) -> argparse.ArgumentParser:
    """The ``ovgraph`` argument parser.

    ``describe_commands`` reads the contributed subcommands' help lines (their modules'
    docstrings): only the top-level ``--help`` shows them, so parsing does not pay for it.
    """
    parser = argparse.ArgumentParser(prog="ovgraph", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    _add_serve_flags(sub.add_parser("serve", help="serve graphs over REST (and gRPC)"))
    validate = sub.add_parser("validate", help="check graph.pbtxt files (OK or PATH:LINE: message)")
    validate.add_argument("paths", nargs="+")
    draw = sub.add_parser("draw", help="validate a graph and print it as DOT, SVG or an HTML page")
    draw.add_argument("path")
    draw.add_argument("--format", choices=["dot", "svg", "html"], default="dot")
    draw.add_argument("--expand", action="store_true", help="draw subgraphs node by node")
    expand = sub.add_parser("expand", help="print a graph with its subgraphs expanded (pbtxt)")
    expand.add_argument("path")
    sub.add_parser("calculators", help="list registered calculators, their ports and packages")
    for name, command in plugins.commands().items():
        sub.add_parser(name, add_help=False, help=command.help if describe_commands else None)
    return parser


def serve(args: argparse.Namespace) -> int:
    """Run the server (``ovgraph.server``) until SIGINT/SIGTERM."""
    from ovgraph.server import run_server

    return run_server(ServeConfig.from_args(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ovgraph`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in (["--help"], ["-h"]):
        build_parser(describe_commands=True).print_help()
        return 0
    if not argv or argv[0].startswith("--"):
        argv = ["serve", *argv]
    command = plugins.commands().get(argv[0])
    if command is not None:
        return command.run(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from ovgraph.model_prep import handle_model_commands

        code = handle_model_commands(args)
        if code is not None:
            return code
        return serve(args)
    from ovgraph import graph_tools

    if args.command == "validate":
        return graph_tools.validate_command(args.paths, sys.stdout)
    if args.command == "draw":
        return graph_tools.draw_command(
            args.path, sys.stdout, sys.stderr, expand=args.expand, fmt=args.format
        )
    if args.command == "expand":
        return graph_tools.expand_command(args.path, sys.stdout, sys.stderr)
    if args.command == "calculators":
        return graph_tools.calculators_command(sys.stdout)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
