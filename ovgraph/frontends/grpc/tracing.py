"""gRPC side of request traces: a ``traceparent`` in the call's metadata parents its runs.

The interceptor wraps a call's handler only when tracing is on and the call carries a
``traceparent``; the handler (and, for streams, each step of its response iterator, where the
runs are created) then runs inside :func:`ovgraph.tracing.incoming`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from ovgraph import tracing

__all__ = ["make_tracing_interceptor"]


def _wrap(handler: grpc.RpcMethodHandler, metadata: tuple[Any, ...]) -> grpc.RpcMethodHandler:
    def call(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def traced(request: Any, context: Any) -> Any:
            with tracing.incoming(metadata):
                return behavior(request, context)

        return traced

    def stream(behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def traced(request: Any, context: Any) -> Iterator[Any]:
            responses = behavior(request, context)
            while True:
                with tracing.incoming(metadata):
                    try:
                        item = next(responses)
                    except StopIteration:
                        return
                yield item

        return traced

    kinds = (handler.request_streaming, handler.response_streaming)
    args = (handler.request_deserializer, handler.response_serializer)
    if kinds == (False, False):
        return grpc.unary_unary_rpc_method_handler(call(handler.unary_unary), *args)
    if kinds == (True, False):
        return grpc.stream_unary_rpc_method_handler(call(handler.stream_unary), *args)
    if kinds == (False, True):
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), *args)
    return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), *args)


def make_tracing_interceptor() -> grpc.ServerInterceptor:
    """Return the interceptor that honours ``traceparent`` metadata."""

    class _TracingInterceptor(grpc.ServerInterceptor):
        def intercept_service(
            self,
            continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
            handler_call_details: grpc.HandlerCallDetails,
        ) -> grpc.RpcMethodHandler | None:
            handler = continuation(handler_call_details)
            if handler is None or not tracing.enabled():
                return handler
            metadata = tuple(handler_call_details.invocation_metadata or ())
            if not any(str(name).lower() == "traceparent" for name, _value in metadata):
                return handler
            return _wrap(handler, metadata)

    return _TracingInterceptor()
