"""``ovgraph`` command line: ``serve`` (OVMS's flag names), ``validate``, ``draw``, ``export``.

``ovgraph serve`` with no model arguments serves the embedded default model. ``ovgraph
--rest_port 8000 --model_path …`` (flags first, no sub-command) works too, as ``ovms`` does.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

DEFAULT_MODEL_NAME = "qwen2vl-shapes"
logger = logging.getLogger("ovgraph")


def default_model_dir() -> Path:
    """The embedded default model (``graphs/<name>``); ``OVGRAPH_DEFAULT_MODEL`` overrides."""
    override = os.environ.get("OVGRAPH_DEFAULT_MODEL")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "graphs" / DEFAULT_MODEL_NAME


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rest_port", type=int, default=0, help="REST port (0 = REST off)")
    p.add_argument("--rest_bind_address", default="0.0.0.0")
    p.add_argument("--port", type=int, default=0, help="gRPC port (0 = gRPC off)")
    p.add_argument("--grpc_bind_address", default="0.0.0.0")
    p.add_argument("--rest_workers", type=int, default=None, help="accepted for compatibility")
    p.add_argument("--grpc_workers", type=int, default=1, help="accepted for compatibility")
    p.add_argument("--grpc_max_threads", type=int, default=None,
                   help="gRPC worker threads (default 32); each open stream holds one")
    p.add_argument("--model_name")
    p.add_argument("--model_path")
    p.add_argument("--config_path")
    p.add_argument("--task", choices=["text_generation"], default=None)
    p.add_argument("--pipeline_type", choices=["LM", "LM_CB", "VLM", "VLM_CB", "AUTO"])
    p.add_argument("--target_device", default="CPU")
    p.add_argument("--cache_size", type=int, default=0)
    p.add_argument("--max_num_seqs", type=int, default=256)
    p.add_argument("--max_num_batched_tokens", type=int, default=None)
    p.add_argument("--enable_prefix_caching", default="true")
    p.add_argument("--dynamic_split_fuse", default="true")
    p.add_argument("--plugin_config", default=None)
    p.add_argument("--allowed_media_domains", default=None)
    p.add_argument("--allowed_local_media_path", default=None)
    p.add_argument("--allowed_origins", default="*")
    p.add_argument("--allowed_methods", default="*")
    p.add_argument("--allowed_headers", default="*")
    p.add_argument("--allow_credentials", action="store_true")
    p.add_argument("--api_key_file", default="")
    p.add_argument("--log_level", default="INFO",
                   choices=["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--file_system_poll_wait_seconds", type=int, default=1)
    p.add_argument("--metrics_enable", action="store_true")
    p.add_argument("--source_model")
    p.add_argument("--model_repository_path", default=os.environ.get("OVMS_MODEL_REPOSITORY_PATH"))
    p.add_argument("--pull", action="store_true")
    p.add_argument("--overwrite_models", action="store_true")
    p.add_argument("--drain_timeout", type=float, default=30.0,
                   help="seconds in-flight requests may finish after SIGTERM")
    p.add_argument("--max_queued_requests", type=int, default=256,
                   help="requests that may wait for a free sequence slot; more get 503")
    p.add_argument("--request_timeout", type=float, default=600.0,
                   help="seconds a request may wait for its (next) output; 0 = no deadline")
    p.add_argument("--max_body_size", type=int, default=64 * 1024 * 1024,
                   help="largest accepted request body in bytes (413 above)")
    p.add_argument("--weight-format", dest="weight_format", default="int8",
                   choices=["fp16", "int8", "int4"])
    p.add_argument("--tool_parser", default=None)
    p.add_argument("--reasoning_parser", default=None)
    p.add_argument("--enable_tool_guided_generation", default=None)
    p.add_argument("--kv_cache_precision", default=None, choices=["u8"])
    p.add_argument("--max_prompt_len", type=int, default=None)
    p.add_argument("--extra_quantization_params", default=None)
    p.add_argument("--list_models", action="store_true")
    p.add_argument("--add_to_config", action="store_true")
    p.add_argument("--remove_from_config", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The ``ovgraph`` argument parser."""
    parser = argparse.ArgumentParser(prog="ovgraph", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    _add_serve_flags(sub.add_parser("serve", help="serve graphs over REST (and gRPC)"))
    validate = sub.add_parser("validate", help="check graph.pbtxt files")
    validate.add_argument("paths", nargs="+")
    draw = sub.add_parser("draw", help="print a graph as Graphviz DOT, SVG or an HTML page")
    draw.add_argument("path")
    draw.add_argument("--format", choices=["dot", "svg", "html"], default="dot")
    sub.add_parser("export", add_help=False,
                   help="convert a model and write its graph (export_model.py text_generation)")
    return parser


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "pipeline_type", "target_device", "cache_size", "max_num_seqs", "max_num_batched_tokens",
        "enable_prefix_caching", "dynamic_split_fuse", "plugin_config", "allowed_media_domains",
        "allowed_local_media_path", "allowed_origins", "allowed_methods", "allowed_headers",
        "allow_credentials", "api_key_file", "metrics_enable", "tool_parser",
        "reasoning_parser", "enable_tool_guided_generation", "kv_cache_precision",
        "max_prompt_len", "grpc_max_threads", "max_queued_requests", "request_timeout",
    )
    settings = {k: getattr(args, k, None) for k in keys}
    if getattr(args, "config_path", None):
        settings["config_path"] = str(Path(args.config_path).resolve())
    return settings


def build_repository(args: argparse.Namespace) -> Any:
    """Create the model repository the flags describe (graphs are not loaded yet)."""
    from ovgraph.errors import GraphConfigError
    from ovgraph.serving.repository import (
        GraphEntry,
        ModelRepository,
        graph_file_in,
        parse_config_file,
        task_graph,
    )

    settings = settings_from_args(args)
    repository = ModelRepository(settings)
    if args.config_path:
        repository.config_path = Path(args.config_path)
        entries = parse_config_file(repository.config_path)
    else:
        model_path = Path(args.model_path) if args.model_path else default_model_dir()
        name = args.model_name or model_path.name
        graph = graph_file_in(model_path)
        if graph is not None and not args.task:
            entries = [GraphEntry(name=name, graph_path=graph, base_path=graph.parent)]
        elif args.task:
            text = task_graph(args.task, model_path.resolve(), settings)
            entries = [GraphEntry(name=name, text=text, base_path=model_path.resolve())]
        else:
            raise GraphConfigError(
                f"{model_path} has no graph.pbtxt; give --task text_generation to serve the "
                "model folder with a generated graph"
            )
    for entry in entries:
        repository.add(entry, load=False)
    return repository


def serve(args: argparse.Namespace) -> int:
    """Run the server (``ovgraph.server``) until SIGINT/SIGTERM."""
    from ovgraph.server import run_server

    return run_server(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ovgraph`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("--"):
        argv = ["serve", *argv]
    if argv[0] == "export":
        from ovgraph.export import main as export_main

        return export_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from ovgraph.model_prep import handle_model_commands

        code = handle_model_commands(args)
        if code is not None:
            return code
        return serve(args)
    if args.command == "validate":
        from ovgraph.graph_tools import validate_paths

        code, lines = validate_paths(args.paths)
        for line in lines:
            print(line)
        return code
    if args.command == "draw":
        from ovgraph.graph_tools import draw_file

        code, text = draw_file(args.path, args.format)
        print(text, file=sys.stdout if code == 0 else sys.stderr)
        return code
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
