"""``ovgraph ray-config``: write a Ray Serve config file (YAML) for a model repository.

The file is what ``serve build`` writes, filled in for ovgraph: ``serve run FILE`` (or ``serve
deploy FILE`` on a cluster with the dashboard) serves it, and every field stays editable
(``num_replicas``, ``autoscaling_config``, ``max_ongoing_requests``, ``ray_actor_options``).

Several models: by default the whole repository is **one application** whose replicas each load
every graph (the same URLs as ``ovgraph serve``). ``--per_model`` writes **one application per
graph** instead: each scales, fails and uses memory on its own, Ray's gRPC proxy picks it by the
metadata ``application: <model>``, and its REST routes live under ``/<model>`` (OpenAI base URL
``http://HOST:8000/<model>/v3``). Ray Serve's model multiplexing was not chosen: it loads a
model on a replica at its first request (seconds for an LLM, an engine process each) and routes
by a ``serve_multiplexed_model_id`` header that OpenAI clients do not send.

::

    ovgraph ray-config --config_path models/config.json --per_model --max_replicas 4 -o serve.yaml
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ovgraph.serving.repository import parse_config_file

__all__ = ["DEPLOYMENT_NAME", "build_parser", "main", "serve_config_document"]

DEPLOYMENT_NAME = "ovgraph"  # the deployment name in ovgraph.ray_serve.deployment
IMPORT_PATH = "ovgraph.ray_serve:build_app"
GRPC_SERVICER_FUNCTION = (
    "ovgraph._proto.kserve.grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server"
)


def _route_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def _deployment(options: Mapping[str, Any]) -> dict[str, Any]:
    deployment: dict[str, Any] = {"name": DEPLOYMENT_NAME}
    if options.get("max_replicas"):
        deployment["autoscaling_config"] = {
            "min_replicas": int(options.get("min_replicas") or 1),
            "max_replicas": int(options["max_replicas"]),
            "target_ongoing_requests": float(options.get("target_ongoing_requests") or 2),
            "upscale_delay_s": 30.0,
            "downscale_delay_s": 600.0,
        }
    else:
        deployment["num_replicas"] = int(options.get("num_replicas") or 1)
    deployment["max_ongoing_requests"] = int(options.get("max_ongoing_requests") or 16)
    deployment["max_queued_requests"] = int(options.get("max_queued_requests") or 256)
    deployment["health_check_period_s"] = 5.0
    deployment["graceful_shutdown_timeout_s"] = float(options.get("drain_timeout") or 30)
    deployment["ray_actor_options"] = {"num_cpus": float(options.get("num_cpus") or 1)}
    return deployment


def serve_config_document(
    *,
    config_path: str | None = None,
    model_path: str | None = None,
    model_name: str | None = None,
    per_model: bool = False,
    http_host: str = "0.0.0.0",
    http_port: int = 8000,
    grpc_port: int = 9000,
    extra_args: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The Serve config (``ServeDeploySchema``) as a dict; see the module docstring.

    Args:
        config_path: a ``config.json`` repository.
        model_path: one model folder (with ``model_name``); none of the three: the embedded
            default model.
        model_name: the served name (with ``per_model`` unused).
        per_model: one application per graph of ``config_path``.
        http_host: where Ray's HTTP proxies listen (``0.0.0.0``: every interface).
        http_port: Ray's HTTP port.
        grpc_port: Ray's gRPC port (KServe ``GRPCInferenceService``).
        extra_args: more ``ovgraph serve`` flags for every replica (``api_key_file`` …).
        options: ``num_replicas``, ``min_replicas``/``max_replicas``/``target_ongoing_requests``
            (autoscaling), ``max_ongoing_requests``, ``max_queued_requests``, ``num_cpus``,
            ``drain_timeout``.

    Raises:
        GraphConfigError: ``config_path`` cannot be read.
    """
    base_args: dict[str, Any] = dict(extra_args or {})
    applications = []
    if config_path and per_model:
        path = str(Path(config_path).resolve())
        for entry in parse_config_file(Path(path)):
            applications.append({
                "name": entry.name,
                "route_prefix": f"/{_route_name(entry.name)}",
                "import_path": IMPORT_PATH,
                "args": {**base_args, "config_path": path, "model_name": entry.name},
                "deployments": [_deployment(options)],
            })
    else:
        args = dict(base_args)
        if config_path:
            args["config_path"] = str(Path(config_path).resolve())
            parse_config_file(Path(config_path))  # refuse an unreadable one here
        if model_path:
            args["model_path"] = str(Path(model_path).resolve())
        if model_name:
            args["model_name"] = model_name
        applications.append({
            "name": "ovgraph", "route_prefix": "/", "import_path": IMPORT_PATH,
            "args": args, "deployments": [_deployment(options)],
        })
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": http_host, "port": int(http_port)},
        "grpc_options": {"port": int(grpc_port),
                         "grpc_servicer_functions": [GRPC_SERVICER_FUNCTION]},
        "logging_config": {"encoding": "TEXT", "log_level": "INFO"},
        "applications": applications,
    }


def build_parser() -> argparse.ArgumentParser:
    """The ``ovgraph ray-config`` argument parser."""
    p = argparse.ArgumentParser(prog="ovgraph ray-config", description=__doc__.split("\n")[0])
    p.add_argument("--config_path")
    p.add_argument("--model_path")
    p.add_argument("--model_name")
    p.add_argument("--per_model", action="store_true",
                   help="one Serve application per graph of --config_path")
    p.add_argument("--num_replicas", type=int, default=1)
    p.add_argument("--min_replicas", type=int, default=None)
    p.add_argument("--max_replicas", type=int, default=None, help="turns autoscaling on")
    p.add_argument("--target_ongoing_requests", type=float, default=2.0)
    p.add_argument("--max_ongoing_requests", type=int, default=16)
    p.add_argument("--max_queued_requests", type=int, default=256)
    p.add_argument("--num_cpus", type=float, default=1.0,
                   help="CPUs per replica (match the OpenVINO inference threads)")
    p.add_argument("--drain_timeout", type=float, default=30.0)
    p.add_argument("--api_key_file", default=None, help="must exist on every node")
    p.add_argument("--http_host", default="0.0.0.0")
    p.add_argument("--http_port", type=int, default=8000)
    p.add_argument("--grpc_port", type=int, default=9000)
    p.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    return p


def main(argv: Sequence[str]) -> int:
    """Entry point of ``ovgraph ray-config``."""
    from ovgraph.errors import GraphConfigError

    args = vars(build_parser().parse_args(list(argv)))
    output = args.pop("output")
    api_key_file = args.pop("api_key_file")
    extra = {"api_key_file": str(Path(api_key_file).resolve())} if api_key_file else None
    try:
        document = serve_config_document(extra_args=extra, **args)
    except GraphConfigError as exc:
        print(f"ovgraph ray-config: {exc}", file=sys.stderr)
        return 2
    text = yaml.safe_dump(document, sort_keys=False)
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text)
    return 0
