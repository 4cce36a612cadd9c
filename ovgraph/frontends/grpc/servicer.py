"""``GRPCInferenceService``: decode the message, call the data plane, encode.

``ModelInfer`` and ``ModelStreamInfer`` run through the same :class:`DataPlane` as the REST
routes (admission → ``RESOURCE_EXHAUSTED``, deadline → ``DEADLINE_EXCEEDED``, drain →
``UNAVAILABLE``, cancellation when the client goes away or its deadline passes).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

import grpc

from ovgraph._proto.kserve import grpc_predict_v2_pb2 as pb
from ovgraph._proto.kserve import grpc_predict_v2_pb2_grpc as pb_grpc
from ovgraph.errors import DeadlineExceededError, GraphCancelledError, ServableNotReadyError
from ovgraph.frontends.errors import to_grpc
from ovgraph.frontends.grpc import v2_types
from ovgraph.serving import kserve
from ovgraph.serving.dataplane import SHUTTING_DOWN, DataPlane

__all__ = ["DEFAULT_MAX_STREAMS", "InferenceServicer"]

logger = logging.getLogger("ovgraph")

DEFAULT_MAX_STREAMS = 24


def _abort(context: Any, exc: BaseException) -> NoReturn:
    code, message = to_grpc(exc)
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _parsed(request: Any, context: Any) -> None:
    """Refuse a message protobuf could not parse (``INVALID_ARGUMENT``)."""
    if isinstance(request, v2_types.Undecodable):
        _abort(context, request.error)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 (plus ``ModelStreamInfer``) over one data plane.

    Args:
        plane: the data plane (its repository holds the servables).
    """

    def __init__(self, plane: DataPlane, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self.plane = plane
        self.repository = plane.repository
        self.max_streams = max(1, max_streams)
        self._streams = threading.BoundedSemaphore(self.max_streams)
        self._idle = threading.Condition()
        self._calls = 0

    def ServerLive(self, request: Any, context: Any) -> Any:
        """Whether the server is live."""
        return pb.ServerLiveResponse(live=kserve.server_live())

    def ServerReady(self, request: Any, context: Any) -> Any:
        """Whether every servable is AVAILABLE (and the server is not shutting down)."""
        ready = kserve.server_ready(self.repository) and not self.plane.draining
        return pb.ServerReadyResponse(ready=ready)

    def ModelReady(self, request: Any, context: Any) -> Any:
        """Whether one servable is AVAILABLE (NOT_FOUND if unknown)."""
        _parsed(request, context)
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
        _parsed(request, context)
        try:
            meta = kserve.model_metadata(self.repository, request.name, request.version)
        except Exception as exc:
            _abort(context, exc)
        return v2_types.metadata_to_grpc(meta)

    def ModelInfer(self, request: Any, context: Any) -> Any:
        """One request through a new graph run."""
        _parsed(request, context)
        self._refuse_if_draining(context)
        with self._tracked():
            return self._infer_call(request, context)

    def _infer_call(self, request: Any, context: Any) -> Any:
        plane = self.plane
        try:
            definition = plane.servable(request.model_name)
            decoded = v2_types.request_from_grpc(request)
            packets = kserve.input_packets(definition, decoded)  # on this worker thread
            metadata = tuple(context.invocation_metadata() or ())
            response = plane.call(
                _infer(plane, definition, decoded, packets, metadata), context.add_callback
            )
            return v2_types.response_to_grpc(response)
        except concurrent.futures.CancelledError:
            if not context.is_active():
                logger.info("ModelInfer cancelled by the client")
                return pb.ModelInferResponse()  # never sent: the call is over
            _abort(context, GraphCancelledError("The client cancelled the call"))
        except Exception as exc:
            if not context.is_active():
                logger.info("ModelInfer ended after the client went away: %s", exc)
                return pb.ModelInferResponse()
            _abort(context, exc)

    def ModelStreamInfer(
        self, request_iterator: Iterator[Any], context: Any
    ) -> Iterator[Any]:
        """One graph per stream; every output packet becomes a response at once.

        Answers carry their own request's id; an error answers its request and the stream
        goes on (:mod:`ovgraph.serving.kserve_stream`). Streams hold a worker thread each, so
        at most ``max_streams`` are open at once (the other workers stay free for unary calls
        and health); one more is refused with ``RESOURCE_EXHAUSTED``.
        """
        self._refuse_if_draining(context)
        if not self._streams.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Too many open streams (at most {self.max_streams}); retry later",
            )
        try:
            with self._tracked():
                yield from self._stream(request_iterator, context)
        finally:
            self._streams.release()

    def _stream(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        items = kserve.stream_infer(
            self.plane, _decoded(request_iterator), register_cancel=context.add_callback,
            headers=tuple(context.invocation_metadata() or ()),
        )
        for item in items:
            if isinstance(item, kserve.StreamFailure):
                if not context.is_active():
                    return
                if not item.started or isinstance(item.error, DeadlineExceededError):
                    _abort(context, item.error)
                yield pb.ModelStreamInferResponse(error_message=to_grpc(item.error)[1])
                return
            if isinstance(item, kserve.RequestFailure):
                yield pb.ModelStreamInferResponse(
                    error_message=to_grpc(item.error)[1],
                    infer_response=pb.ModelInferResponse(
                        model_name=item.model_name, model_version="1", id=item.id
                    ),
                )
                continue
            try:
                encoded = v2_types.response_to_grpc(item)
            except Exception as exc:
                yield pb.ModelStreamInferResponse(
                    error_message=to_grpc(exc)[1],
                    infer_response=pb.ModelInferResponse(id=getattr(item, "id", "")),
                )
                continue
            yield pb.ModelStreamInferResponse(infer_response=encoded)

    # ------------------------------------------------------------------ drain

    def _refuse_if_draining(self, context: Any) -> None:
        if self.plane.draining:
            _abort(context, ServableNotReadyError(SHUTTING_DOWN))

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        with self._idle:
            self._calls += 1
        try:
            yield
        finally:
            with self._idle:
                self._calls -= 1
                if not self._calls:
                    self._idle.notify_all()

    @property
    def active_calls(self) -> int:
        """Inference calls (unary and streams) in progress."""
        return self._calls

    def wait_idle(self, timeout: float) -> bool:
        """Block until no inference call is in progress; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._calls, max(0.0, timeout))


def _decoded(messages: Iterator[Any]) -> Iterator[kserve.InferRequest | kserve.BadStreamRequest]:
    """Decode each stream message; one that cannot be decoded is answered with its own error."""
    for message in messages:
        if isinstance(message, v2_types.Undecodable):
            yield kserve.BadStreamRequest(message.error)
            continue
        try:
            yield v2_types.request_from_grpc(message)
        except Exception as exc:
            yield kserve.BadStreamRequest(exc, message.id, message.model_name)


async def _infer(
    plane: DataPlane, definition: Any, request: kserve.InferRequest, packets: Any, metadata: Any
) -> Any:
    async with plane.execution(definition, headers=metadata) as execution:
        return await kserve.infer(execution, request, packets)
