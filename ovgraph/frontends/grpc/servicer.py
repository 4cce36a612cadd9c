"""``GRPCInferenceService``: decode the message, call the data plane, encode.

``ModelInfer`` and ``ModelStreamInfer`` run through the same :class:`DataPlane` as the REST
routes (admission → ``RESOURCE_EXHAUSTED``, deadline → ``DEADLINE_EXCEEDED``, drain →
``UNAVAILABLE``, cancellation when the client goes away or its deadline passes).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any, NoReturn

from ovgraph._proto.kserve import grpc_predict_v2_pb2 as pb
from ovgraph._proto.kserve import grpc_predict_v2_pb2_grpc as pb_grpc
from ovgraph.errors import GraphCancelledError
from ovgraph.frontends.errors import to_grpc
from ovgraph.frontends.grpc import v2_types
from ovgraph.serving import kserve
from ovgraph.serving.dataplane import DataPlane

__all__ = ["InferenceServicer"]


def _abort(context: Any, exc: BaseException) -> NoReturn:
    code, message = to_grpc(exc)
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 (plus ``ModelStreamInfer``) over one data plane.

    Args:
        plane: the data plane (its repository holds the servables).
    """

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.repository = plane.repository

    def ServerLive(self, request: Any, context: Any) -> Any:
        """Whether the server is live."""
        return pb.ServerLiveResponse(live=kserve.server_live())

    def ServerReady(self, request: Any, context: Any) -> Any:
        """Whether every servable is AVAILABLE."""
        return pb.ServerReadyResponse(ready=kserve.server_ready(self.repository))

    def ModelReady(self, request: Any, context: Any) -> Any:
        """Whether one servable is AVAILABLE (NOT_FOUND if unknown)."""
        try:
            ready = kserve.model_ready(self.repository, request.name, request.version)
        except Exception as exc:
            _abort(context, exc)
        return pb.ModelReadyResponse(ready=ready)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        """Server name, version and extensions."""
        meta = kserve.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        """Input and output names of a graph."""
        try:
            meta = kserve.model_metadata(self.repository, request.name, request.version)
        except Exception as exc:
            _abort(context, exc)
        return v2_types.metadata_to_grpc(meta)

    def ModelInfer(self, request: Any, context: Any) -> Any:
        """One request through a new graph run."""
        plane = self.plane
        try:
            definition = plane.servable(request.model_name)
            decoded = v2_types.request_from_grpc(request)
            metadata = tuple(context.invocation_metadata() or ())
            response = plane.call(
                _infer(plane, definition, decoded, metadata), context.add_callback
            )
            return v2_types.response_to_grpc(response)
        except concurrent.futures.CancelledError:
            _abort(context, GraphCancelledError("The client cancelled the call"))
        except Exception as exc:
            _abort(context, exc)

    def ModelStreamInfer(
        self, request_iterator: Iterator[Any], context: Any
    ) -> Iterator[Any]:
        """One graph per stream; every output packet becomes a response at once."""
        requests = (v2_types.request_from_grpc(r) for r in request_iterator)
        items = kserve.stream_infer(
            self.plane, requests, register_cancel=context.add_callback,
            headers=tuple(context.invocation_metadata() or ()),
        )
        for item in items:
            if isinstance(item, kserve.StreamFailure):
                if not item.started:
                    _abort(context, item.error)
                yield pb.ModelStreamInferResponse(error_message=to_grpc(item.error)[1])
                return
            try:
                encoded = v2_types.response_to_grpc(item)
            except Exception as exc:
                yield pb.ModelStreamInferResponse(error_message=to_grpc(exc)[1])
                return
            yield pb.ModelStreamInferResponse(infer_response=encoded)


async def _infer(
    plane: DataPlane, definition: Any, request: kserve.InferRequest, metadata: Any
) -> Any:
    async with plane.execution(definition, headers=metadata) as execution:
        return await kserve.infer(execution, request)
