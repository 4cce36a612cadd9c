"""The Ray Serve deployment and its application builder (``serve run ovgraph.ray_serve:build_app``).

Each replica is one :class:`~ovgraph.ray_serve.replica.ReplicaServer`: the REST routes of
``ovgraph serve`` through Ray's HTTP proxy (:mod:`ovgraph.ray_serve.asgi`), and KServe's gRPC
calls through Ray's gRPC proxy (``ServerLive``, ``ServerReady``, ``ModelReady``,
``ServerMetadata``, ``ModelMetadata``, ``ModelInfer`` and ``ModelStreamInfer``, the last on
Ray's bidirectional streams, beta in Ray 2.60; Ray's proxy picks the application by the
metadata key ``application``).

**Who queues.** Ray's router owns waiting: it sends a replica at most ``max_ongoing_requests``
requests and holds the rest in one bounded queue per application (``max_queued_requests``,
503 beyond it), so a request waits for whichever replica frees up first. Inside the replica the
data plane still gates runs on the graph's own concurrency (the same code as ``ovgraph
serve``); keep ``max_ongoing_requests`` at or below the engine's sequence limit and nothing
waits there.

**Health and shutdown.** ``check_health`` fails while a graph is not AVAILABLE or a node
resource reports trouble (an engine process that died), so Ray replaces the replica. On
shutdown Ray stops routing to the replica, waits up to ``graceful_shutdown_timeout_s`` for its
requests, then the replica drains its data plane (``drain_timeout``) before it exits; engine
processes end with it (parent-death signal).

``build_app`` arguments (``key=value`` on the ``serve run`` command line, or ``args:`` in a
Serve config file) are the deployment options below plus any ``ovgraph serve`` flag without its
dashes (``config_path``, ``model_path``, ``model_name``, ``api_key_file``, LLM flags …).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ray import serve

from ovgraph.config import ServeConfig
from ovgraph.ray_serve.config_file import DEPLOYMENT_NAME, GRPC_SERVICER_FUNCTION
from ovgraph.ray_serve.replica import ReplicaServer

__all__ = [
    "DEPLOYMENT_NAME",
    "DEPLOYMENT_OPTIONS",
    "GRPC_SERVICER_FUNCTION",
    "REPLICA_HEADER",
    "OvgraphReplica",
    "build_app",
    "deployment_options",
    "serve_config",
]

#: Names the replica that answered an HTTP request.
REPLICA_HEADER = "x-ovgraph-replica"
DEFAULT_MAX_ONGOING = 16
DEFAULT_NUM_CPUS = 1.0
_AUTOSCALING_KEYS = (
    "min_replicas", "initial_replicas", "max_replicas", "target_ongoing_requests",
    "upscale_delay_s", "downscale_delay_s",
)
#: ``build_app`` arguments that configure the deployment rather than ovgraph.
DEPLOYMENT_OPTIONS = (
    "num_replicas", "max_ongoing_requests", "num_cpus", "health_check_period_s",
    "health_check_timeout_s", "graceful_shutdown_timeout_s", *_AUTOSCALING_KEYS,
)


@serve.deployment(
    name=DEPLOYMENT_NAME,
    max_ongoing_requests=DEFAULT_MAX_ONGOING,
    health_check_period_s=5,
    ray_actor_options={"num_cpus": DEFAULT_NUM_CPUS},
)
@serve.ingress()
class OvgraphReplica:
    """One replica: ovgraph's REST application and KServe gRPC calls over one data plane.

    Args:
        serve_args: ``ovgraph serve`` flags (``["--config_path", "…", …]``).
    """

    async def __init__(self, serve_args: list[str]) -> None:
        config = serve_config(serve_args)
        loop = asyncio.get_running_loop()
        # Loading takes seconds; keep the replica's loop free meanwhile.
        self.server = await asyncio.to_thread(ReplicaServer, config, loop)
        replica = serve.get_replica_context().replica_id.unique_id
        self.server.asgi.extra_headers.append((REPLICA_HEADER.encode(), replica.encode()))
        # As in ``ovgraph serve``: start-up objects out of the cycle collector's reach, so the
        # collection after a big body walks only what came after.
        gc.freeze()

    def __serve_build_asgi_app__(self) -> Any:
        return self.server.asgi

    async def check_health(self) -> None:
        """Raise while this replica cannot serve (Ray then replaces it)."""
        problem = self.server.problem()
        if problem:
            raise RuntimeError(problem)

    # KServe gRPC (Ray's proxy calls the method named after the RPC).

    async def ServerLive(self, request: Any, grpc_context: Any) -> Any:
        """KServe ``ServerLive``."""
        return await self.server.grpc.call("ServerLive", request, grpc_context)

    async def ServerReady(self, request: Any, grpc_context: Any) -> Any:
        """KServe ``ServerReady``."""
        return await self.server.grpc.call("ServerReady", request, grpc_context)

    async def ModelReady(self, request: Any, grpc_context: Any) -> Any:
        """KServe ``ModelReady``."""
        return await self.server.grpc.call("ModelReady", request, grpc_context)

    async def ServerMetadata(self, request: Any, grpc_context: Any) -> Any:
        """KServe ``ServerMetadata``."""
        return await self.server.grpc.call("ServerMetadata", request, grpc_context)

    async def ModelMetadata(self, request: Any, grpc_context: Any) -> Any:
        """KServe ``ModelMetadata``."""
        return await self.server.grpc.call("ModelMetadata", request, grpc_context)

    async def ModelInfer(self, request: Any, grpc_context: Any) -> Any:
        """KServe ``ModelInfer`` through the data plane."""
        return await self.server.grpc.call("ModelInfer", request, grpc_context)

    async def ModelStreamInfer(self, requests: Any, grpc_context: Any) -> AsyncIterator[Any]:
        """KServe ``ModelStreamInfer`` (bidirectional; Ray's ``gRPCInputStream`` is beta)."""
        async for response in self.server.grpc.stream(requests, grpc_context):
            yield response


def _serve_parser() -> argparse.ArgumentParser:
    from ovgraph.cli import build_parser

    parser = build_parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        choices = getattr(action, "choices", None) or {}
        if "serve" in choices:
            return choices["serve"]  # type: ignore[no-any-return]
    raise RuntimeError("ovgraph's parser has no serve command")


def serve_config(serve_args: list[str]) -> ServeConfig:
    """The ``ServeConfig`` that ``ovgraph serve <serve_args>`` would build.

    Raises:
        ValueError: a flag is unknown or its value does not parse.
    """
    parser = _serve_parser()
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages):
            args, unknown = parser.parse_known_args(serve_args)
    except SystemExit:
        problem = messages.getvalue().strip().splitlines()[-1:] or ["cannot parse"]
        raise ValueError(f"Bad ovgraph serve arguments: {problem[0]}") from None
    if unknown:
        raise ValueError(f"Unknown ovgraph serve arguments: {' '.join(unknown)}")
    return ServeConfig.from_args(args)


def _flags(args: Mapping[str, Any]) -> list[str]:
    """``ovgraph serve`` flags from ``build_app`` arguments (booleans: present or not)."""
    parser = _serve_parser()
    switches = {
        a.dest for a in parser._actions if a.nargs == 0 and a.option_strings
    }
    flags: list[str] = []
    for key, value in args.items():
        if key in switches:
            if str(value).lower() in ("1", "true", "yes", "on"):
                flags.append(f"--{key}")
            continue
        flags += [f"--{key}", str(value)]
    return flags


def deployment_options(args: Mapping[str, Any]) -> dict[str, Any]:
    """Ray deployment options from the ``DEPLOYMENT_OPTIONS`` among ``args``."""
    options: dict[str, Any] = {}
    autoscaling = {k: float(args[k]) for k in _AUTOSCALING_KEYS if k in args}
    if autoscaling:
        for key in ("min_replicas", "initial_replicas", "max_replicas"):
            if key in autoscaling:
                autoscaling[key] = int(autoscaling[key])
        options["autoscaling_config"] = autoscaling
    elif "num_replicas" in args:
        options["num_replicas"] = int(args["num_replicas"])
    options["max_ongoing_requests"] = int(args.get("max_ongoing_requests", DEFAULT_MAX_ONGOING))
    options["ray_actor_options"] = {"num_cpus": float(args.get("num_cpus", DEFAULT_NUM_CPUS))}
    for key in ("health_check_period_s", "health_check_timeout_s",
                "graceful_shutdown_timeout_s"):
        if key in args:
            options[key] = float(args[key])
    return options


def build_app(args: Mapping[str, Any]) -> Any:
    """The Serve application: ``serve run ovgraph.ray_serve:build_app num_replicas=2 …``.

    Without model arguments it serves the embedded default model; ``config_path=…`` a
    repository, ``model_path=… model_name=…`` one model folder (see the module docstring for
    the other arguments).

    Raises:
        ValueError: an ovgraph flag is unknown or malformed.
    """
    args = {k: v for k, v in dict(args or {}).items() if v is not None}
    options = deployment_options(args)
    flags = _flags({k: v for k, v in args.items() if k not in DEPLOYMENT_OPTIONS})
    config = serve_config(flags)  # fail here, at deploy time, not in every replica
    options["max_queued_requests"] = int(config.max_queued_requests)
    if "graceful_shutdown_timeout_s" not in options:
        options["graceful_shutdown_timeout_s"] = float(config.drain_timeout)
    return OvgraphReplica.options(**options).bind(flags)
