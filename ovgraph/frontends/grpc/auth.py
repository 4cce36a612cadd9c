"""gRPC API-key check: a server interceptor built from the key of ``ovgraph.frontends.auth``.

Use it when creating the server::

    from ovgraph.frontends.auth import load_api_key
    from ovgraph.frontends.grpc.auth import make_auth_interceptor

    key = load_api_key(settings.get("api_key_file"))
    server = grpc.server(executor, interceptors=[make_auth_interceptor(key)])

Methods that run a model (``ModelInfer``, ``ModelStreamInfer``) need metadata
``authorization: Bearer <key>``; health and metadata methods do not (as the REST frontend).
Without a key the interceptor passes everything through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import grpc

from ovgraph.frontends.auth import UNAUTHORIZED_MESSAGE, authorized

__all__ = ["GUARDED_METHODS", "make_auth_interceptor"]

GUARDED_METHODS = frozenset({"ModelInfer", "ModelStreamInfer"})


def _method_name(full_method: str) -> str:
    return full_method.rsplit("/", 1)[-1]


def make_auth_interceptor(
    key: str | None, guarded: Iterable[str] = GUARDED_METHODS
) -> grpc.ServerInterceptor:
    """Return an interceptor that refuses guarded calls without the key (``UNAUTHENTICATED``)."""
    guarded_names = frozenset(guarded)

    def deny_unary(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHORIZED_MESSAGE)

    def deny_stream(_requests: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHORIZED_MESSAGE)

    class _AuthInterceptor(grpc.ServerInterceptor):
        def intercept_service(
            self,
            continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
            handler_call_details: grpc.HandlerCallDetails,
        ) -> grpc.RpcMethodHandler | None:
            if key is None or _method_name(handler_call_details.method) not in guarded_names:
                return continuation(handler_call_details)
            header = None
            for name, value in handler_call_details.invocation_metadata or ():
                if name.lower() == "authorization":
                    header = value if isinstance(value, str) else value.decode("latin-1")
                    break
            if authorized(key, header):
                return continuation(handler_call_details)
            handler = continuation(handler_call_details)
            if handler is not None and handler.request_streaming:
                if handler.response_streaming:
                    return grpc.stream_stream_rpc_method_handler(
                        deny_stream, handler.request_deserializer, handler.response_serializer
                    )
                return grpc.stream_unary_rpc_method_handler(
                    deny_stream, handler.request_deserializer, handler.response_serializer
                )
            if handler is not None and handler.response_streaming:
                return grpc.unary_stream_rpc_method_handler(
                    deny_unary, handler.request_deserializer, handler.response_serializer
                )
            return grpc.unary_unary_rpc_method_handler(
                deny_unary,
                handler.request_deserializer if handler is not None else None,
                handler.response_serializer if handler is not None else None,
            )

    return _AuthInterceptor()
