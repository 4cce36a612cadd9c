"""The gRPC server: a thread-pool ``grpc.Server`` serving ``GRPCInferenceService``.

Threads: ``grpc_max_threads`` workers (default 32) serve every call; idle ones exit after 30 s
(``ovgraph.threads``). An open ``ModelStreamInfer`` holds one worker for its whole life, so
streams may hold at most ``grpc_max_threads - max(4, grpc_max_threads // 4)`` of them (24 of
32); a stream beyond that is refused at once with ``RESOURCE_EXHAUSTED``, and the remaining
workers always serve unary calls and health. A stream that sends and produces nothing for
``request_timeout`` seconds ends with ``DEADLINE_EXCEEDED``. This was chosen over ``grpc.aio``
because graph work already runs on its own pool and the policy on the data plane's loop: a
worker per stream costs a thread, not a core, and the budget split keeps the blocking servicer.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from ovgraph._proto.kserve import grpc_predict_v2_pb2 as pb
from ovgraph.frontends.auth import load_api_key
from ovgraph.frontends.grpc import v2_types
from ovgraph.frontends.grpc.auth import make_auth_interceptor
from ovgraph.frontends.grpc.servicer import InferenceServicer
from ovgraph.serving.admission import DEFAULT_MAX_QUEUED, DEFAULT_REQUEST_TIMEOUT
from ovgraph.serving.dataplane import DataPlane
from ovgraph.serving.repository import ModelRepository
from ovgraph.threads import ElasticThreadPool

__all__ = [
    "DEFAULT_WORKERS",
    "MAX_MESSAGE_BYTES",
    "GrpcFrontend",
    "start_grpc_frontend",
    "start_grpc_server",
    "stream_budget",
]

logger = logging.getLogger("ovgraph")

_SERVICE = "inference.GRPCInferenceService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Each open ModelStreamInfer call holds one worker for its whole life.
DEFAULT_WORKERS = 32


def _add_servicer(servicer: InferenceServicer, server: grpc.Server) -> None:
    """Register every RPC of the service, as the generated code does, with tolerant parsing.

    A message protobuf cannot parse (a string field that is not UTF-8) reaches the servicer as
    ``v2_types.Undecodable`` and is answered ``INVALID_ARGUMENT`` instead of gRPC's ``INTERNAL``
    "Exception deserializing request" (and its logged traceback).
    """
    service = pb.DESCRIPTOR.services_by_name[_SERVICE.rsplit(".", 1)[1]]
    handlers = {}
    for method in service.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        make = (
            grpc.stream_stream_rpc_method_handler if method.client_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=v2_types.tolerant_parser(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
    server.add_registered_method_handlers(_SERVICE, handlers)


def stream_budget(workers: int) -> int:
    """How many of ``workers`` threads open streams may hold (the rest serve unary calls)."""
    return max(1, workers - max(4, workers // 4))


class GrpcFrontend:
    """The running gRPC server and its servicer (for drain)."""

    def __init__(self, server: grpc.Server, servicer: InferenceServicer) -> None:
        self.server = server
        self.servicer = servicer

    def drain(self, timeout: float) -> bool:
        """Block until no inference call is in progress (False on timeout)."""
        return self.servicer.wait_idle(timeout)

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; calls still running get ``grace`` seconds, then are cancelled."""
        self.server.stop(grace).wait(None if grace is None else grace + 1.0)


def start_grpc_server(
    repository: ModelRepository,
    settings: dict[str, Any],
    port: int,
    address: str = "0.0.0.0",
    plane: DataPlane | None = None,
) -> grpc.Server:
    """Start serving KServe v2 on ``address:port``; see :func:`start_grpc_frontend`."""
    return start_grpc_frontend(repository, settings, port, address, plane).server


def start_grpc_frontend(
    repository: ModelRepository,
    settings: dict[str, Any],
    port: int,
    address: str = "0.0.0.0",
    plane: DataPlane | None = None,
) -> GrpcFrontend:
    """Start serving KServe v2 on ``address:port`` and return the server (the caller stops it).

    Messages larger than 64 MiB are refused by gRPC itself (``RESOURCE_EXHAUSTED``).
    Inference runs through ``plane`` (the server's data plane, shared with REST; default: one of
    its own built from ``settings["max_queued_requests"]`` and ``settings["request_timeout"]``).
    ``settings["grpc_max_threads"]`` sets the worker count (default 32; streams may hold
    :func:`stream_budget` of them); at most
    ``max_queued_requests`` (default 256) more calls wait for a worker, and gRPC refuses calls
    beyond that with ``RESOURCE_EXHAUSTED``. With an API key
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
        ElasticThreadPool(max_workers=workers, thread_name_prefix="ovgraph-grpc"),
        interceptors=[make_auth_interceptor(key)],
        maximum_concurrent_rpcs=workers + queued,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    if plane is None:
        plane = DataPlane(repository, max_queued=queued, request_timeout=timeout)
    servicer = InferenceServicer(plane, max_streams=stream_budget(workers))
    _add_servicer(servicer, server)
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    logger.info("gRPC KServe v2 API on %s:%d", host, port)
    return GrpcFrontend(server, servicer)
