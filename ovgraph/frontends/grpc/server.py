"""The gRPC server: a thread-pool ``grpc.Server`` serving ``GRPCInferenceService``."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from ovgraph._proto.kserve import grpc_predict_v2_pb2_grpc as pb_grpc
from ovgraph.frontends.auth import load_api_key
from ovgraph.frontends.grpc.auth import make_auth_interceptor
from ovgraph.frontends.grpc.servicer import InferenceServicer
from ovgraph.frontends.grpc.tracing import make_tracing_interceptor
from ovgraph.serving.admission import DEFAULT_MAX_QUEUED, DEFAULT_REQUEST_TIMEOUT
from ovgraph.serving.repository import ModelRepository

__all__ = ["DEFAULT_WORKERS", "MAX_MESSAGE_BYTES", "start_grpc_server"]

logger = logging.getLogger("ovgraph")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Each open ModelStreamInfer call holds one worker for its whole life.
DEFAULT_WORKERS = 32


def start_grpc_server(
    repository: ModelRepository, settings: dict[str, Any], port: int, address: str = "0.0.0.0"
) -> grpc.Server:
    """Start serving KServe v2 on ``address:port`` and return the server (the caller stops it).

    Messages larger than 64 MiB are refused by gRPC itself (``RESOURCE_EXHAUSTED``).
    ``settings["grpc_max_threads"]`` sets the worker count (default 32); at most
    ``settings["max_queued_requests"]`` (default 256) more calls wait for a worker, and gRPC
    refuses calls beyond that with ``RESOURCE_EXHAUSTED``. ``ModelInfer`` runs longer than
    ``settings["request_timeout"]`` seconds (default 600, 0 = none) or the client's deadline are
    cancelled (``DEADLINE_EXCEEDED``). With an API key
    (``settings["api_key_file"]`` or env ``API_KEY``, as for REST) ``ModelInfer`` and
    ``ModelStreamInfer`` need metadata ``authorization: Bearer <key>``.

    Raises:
        RuntimeError: the address cannot be bound.
        GraphConfigError: the API key file cannot be read.
    """
    workers = int(settings.get("grpc_max_threads") or DEFAULT_WORKERS)
    queued = settings.get("max_queued_requests")
    queued = DEFAULT_MAX_QUEUED if queued is None else max(0, int(queued))
    timeout = settings.get("request_timeout")
    timeout = DEFAULT_REQUEST_TIMEOUT if timeout is None else float(timeout)
    key = load_api_key(settings.get("api_key_file") or None)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ovgraph-grpc"),
        interceptors=[make_auth_interceptor(key), make_tracing_interceptor()],
        maximum_concurrent_rpcs=workers + queued,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    servicer = InferenceServicer(repository, timeout or None)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    logger.info("gRPC KServe v2 API on %s:%d", host, port)
    return server
