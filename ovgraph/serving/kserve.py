"""KServe v2 data plane over the model repository, shared by the gRPC and REST frontends.

Frontends decode their wire format into ``InferRequest`` / ``Tensor``, call the functions here
and encode what comes back. Graph semantics follow OVMS' KServe path for MediaPipe graphs:

- each request input goes to the graph input stream of the same **name**; the stream's tag
  prefix selects the payload: ``OVTENSOR`` or none → ``openvino.Tensor`` (numpy when openvino is
  not installed), ``OVMS_PY_TENSOR…`` → ``Tensor``, ``IMAGE`` / ``TENSOR`` → numpy, ``…_PAYLOAD``
  → ``HttpPayload`` (the BYTES element is an OpenAI JSON body; URI from the string parameter
  ``uri``, default ``/v3/chat/completions``); BYTES tensors on tensor streams become ``bytes``
  (one element) or ``list[bytes]``. A ``REQUEST`` stream takes the whole ``InferRequest``
  (tensors named freely) and a ``RESPONSE`` output is the response as is;
- request parameters become input side packets, except ``OVMS_MP_TIMESTAMP``, the packet
  timestamp (default: wall-clock microseconds);
- unary: a new graph run per request, the **first** packet of every output stream answers;
  streaming: one graph per stream, chosen by the first request, every packet answers at once.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ovgraph.errors import (
    DeadlineExceededError,
    InvalidParameterError,
    OvGraphError,
    RequestError,
    ServableNotReadyError,
    ValidationError,
)
from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.graph import CalculatorGraph
from ovgraph.framework.packet import Packet
from ovgraph.serving.graph_definition import GraphDefinition
from ovgraph.serving.kserve_types import (
    _UNSUPPORTED_TAGS,
    DATATYPES,
    InferRequest,
    InferResponse,
    StreamFailure,
    Tensor,
    _openvino,
    _output_tensor,
    decode_bytes_elements,
    encode_bytes_elements,
    tensor_from_raw,
    tensor_from_values,
)
from ovgraph.serving.payload import HttpPayload
from ovgraph.serving.repository import ModelRepository

__all__ = [
    "DATATYPES",
    "SERVER_NAME",
    "TIMESTAMP_PARAM",
    "InferRequest",
    "InferResponse",
    "StreamFailure",
    "Tensor",
    "UnaryInfer",
    "decode_bytes_elements",
    "encode_bytes_elements",
    "infer",
    "model_metadata",
    "model_ready",
    "server_live",
    "server_metadata",
    "server_ready",
    "stream_infer",
    "tensor_from_raw",
    "tensor_from_values",
]

logger = logging.getLogger("ovgraph.graph")

SERVER_NAME = "OpenVINO Model Server"
TIMESTAMP_PARAM = "OVMS_MP_TIMESTAMP"
DEFAULT_PAYLOAD_URI = "/v3/chat/completions"
# Side-packet names the server fills itself (OVMS graph_executor_constants.hpp).
RESERVED_SIDE_PACKETS = frozenset(
    {"py", "llm", "llm_ctx", "pipes", "embeddings_servable", "rerank_servable", "s2t_servable",
     "t2s_servable"}
)

# ---------------------------------------------------------------------------- stream typing


def _stream_payload(tag: str, tensor: Tensor, request: InferRequest) -> Any:
    """Deserialize one request input for a graph input stream with tag ``tag``."""
    name = tensor.name
    if tag.startswith(_UNSUPPORTED_TAGS):
        raise RequestError(f'Input stream "{name}" of type {tag} is not supported')
    if tensor.invalid is not None and not tag.startswith("OVMS_PY_TENSOR"):
        raise tensor.invalid  # plain BYTES contents reach Python nodes only (as in OVMS)
    if tag.endswith("_PAYLOAD"):
        return _http_payload(tensor, request)
    if tag.startswith("OVMS_PY_TENSOR"):
        return tensor
    if tensor.datatype == "BYTES":
        items = list(tensor.data.reshape(-1))
        return items[0] if len(items) == 1 else items
    if tag.startswith("IMAGE"):
        if tensor.data.ndim != 3:
            raise InvalidParameterError(
                f'Input "{name}" is an IMAGE stream: expected an HWC shape, got '
                f"{list(tensor.shape)}", param=name,
            )
        return tensor.data
    if tag.startswith("TENSOR"):
        return tensor.data
    ov = _openvino()
    if ov is None:
        return tensor.data
    return ov.Tensor(np.ascontiguousarray(tensor.data))


def _http_payload(tensor: Tensor, request: InferRequest) -> HttpPayload:
    name = tensor.name
    if tensor.datatype != "BYTES" or tensor.size != 1:
        raise InvalidParameterError(
            f'Input "{name}" takes one BYTES element holding a JSON body', param=name
        )
    body = bytes(tensor.data.reshape(-1)[0])
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise RequestError("Cannot parse JSON body") from exc
    uri = request.parameters.get("uri", DEFAULT_PAYLOAD_URI)
    if not isinstance(uri, str):
        raise InvalidParameterError("Parameter uri must be a string", param="uri")
    return HttpPayload(
        uri=uri, headers={"Content-Type": "application/json"}, body=body, parsed_json=parsed
    )


def _graph_inputs(definition: GraphDefinition) -> dict[str, str]:
    validated = _validated(definition)
    return {entry.name: entry.tag for entry in validated.graph_inputs}


def _validated(definition: GraphDefinition) -> Any:
    validated = definition.validated
    if not definition.available or validated is None:
        reason = f": {definition.error}" if definition.error else ""
        raise ServableNotReadyError(f'Servable "{definition.name}" is not ready{reason}')
    return validated


def _input_packets(
    definition: GraphDefinition, request: InferRequest, *, require_all: bool
) -> list[tuple[str, Any]]:
    streams = _graph_inputs(definition)
    whole = [name for name, tag in streams.items() if tag.startswith("REQUEST")]
    if whole:  # the whole request goes to the REQUEST stream, whatever its tensors are named
        return [(whole[0], request)]
    seen: set[str] = set()
    packets = []
    for tensor in request.inputs:
        tag = streams.get(tensor.name)
        if tag is None:
            raise InvalidParameterError(f"{tensor.name} is unexpected", param=tensor.name)
        if tensor.name in seen:
            raise InvalidParameterError(f"{tensor.name} is given twice", param=tensor.name)
        seen.add(tensor.name)
        packets.append((tensor.name, _stream_payload(tag, tensor, request)))
    if require_all and len(seen) < len(streams):
        raise RequestError("Not all input packets created")
    return packets


def _timestamp(parameters: Mapping[str, Any]) -> int | None:
    if TIMESTAMP_PARAM not in parameters:
        return None
    value = parameters[TIMESTAMP_PARAM]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterError(
            f"Invalid timestamp format in request parameter {TIMESTAMP_PARAM}. Should be int64",
            param=TIMESTAMP_PARAM,
        )
    if not ts_mod.is_range_value(value):
        raise InvalidParameterError(
            f"Timestamp {value} in request parameter {TIMESTAMP_PARAM} is out of range",
            param=TIMESTAMP_PARAM,
        )
    return value


def _side_packets(parameters: Mapping[str, Any]) -> dict[str, Any]:
    side = {}
    for key, value in parameters.items():
        if key == TIMESTAMP_PARAM:
            continue
        if key in RESERVED_SIDE_PACKETS:
            raise InvalidParameterError(f"Parameter name {key} is reserved", param=key)
        if not isinstance(value, (bool, int, str)):
            raise InvalidParameterError(
                f"Parameter {key} has an unsupported type; use string, int64 or bool", param=key
            )
        side[key] = value
    return side


def _start_run(graph: CalculatorGraph, side_packets: dict[str, Any]) -> None:
    """Start a run; a side packet the request should have set is the client's fault."""
    try:
        graph.start_run(side_packets)
    except ValidationError as exc:
        raise RequestError(exc.message) from exc


def _now_us() -> int:
    return time.time_ns() // 1000


def _payloads(packets: list[tuple[str, Any]]) -> list[HttpPayload]:
    return [p for _, p in packets if isinstance(p, HttpPayload)]


def _outcome(graph: CalculatorGraph) -> BaseException | None:
    try:
        graph.wait_until_done(0)
    except BaseException as exc:
        return exc
    return None


# ---------------------------------------------------------------------------- health, metadata


def server_live() -> bool:
    """The process answers: always live."""
    return True


def server_ready(repository: ModelRepository) -> bool:
    """Every servable is AVAILABLE."""
    return repository.all_available()


def server_metadata() -> dict[str, Any]:
    """Server name, version and KServe extensions."""
    from importlib import metadata

    try:
        version = metadata.version("ovgraph")
    except metadata.PackageNotFoundError:
        version = "0"
    return {"name": SERVER_NAME, "version": version, "extensions": []}


def model_ready(repository: ModelRepository, name: str, version: str = "") -> bool:
    """Whether the graph ``name`` is AVAILABLE (versions are ignored for graphs)."""
    return repository.get(name).available


def model_metadata(repository: ModelRepository, name: str, version: str = "") -> dict[str, Any]:
    """Input and output names of a graph (graphs declare no shapes or datatypes)."""
    validated = _validated(repository.get(name))

    def tensors(tag_map: Any) -> list[dict[str, Any]]:
        return [{"name": e.name, "datatype": "INVALID", "shape": []} for e in tag_map]

    return {
        "name": name,
        "versions": ["1"],
        "platform": "OpenVINO",
        "inputs": tensors(validated.graph_inputs),
        "outputs": tensors(validated.graph_outputs),
    }


# ---------------------------------------------------------------------------- unary inference


class UnaryInfer:
    """One ``ModelInfer``: a new graph run; the first packet of every output answers.

    ``start`` never raises: the outcome reaches ``on_done(response, error)`` exactly once, on a
    graph worker thread (or the caller's, for failures before the run starts).
    """

    def __init__(
        self,
        definition: GraphDefinition,
        request: InferRequest,
        on_done: Callable[[InferResponse | Any | None, BaseException | None], None],
    ) -> None:
        self.definition = definition
        self.request = request
        self._on_done = on_done
        self._reported = False
        self._lock = threading.Lock()
        self._first: dict[str, Packet] = {}
        self._payloads: list[HttpPayload] = []
        self.graph: CalculatorGraph | None = None

    def start(self) -> None:
        """Validate, start the run, feed the inputs and close them."""
        request = self.request
        try:
            packets = _input_packets(self.definition, request, require_all=True)
            self._payloads = _payloads(packets)
            ts = _timestamp(request.parameters)
            side = _side_packets(request.parameters)
            graph = self.definition.new_run()
            self._outputs = {e.name: e.tag for e in graph.graph.graph_outputs}
            for name in self._outputs:
                graph.observe_output_stream(name, self._observe)
            _start_run(graph, side)
        except Exception as exc:
            self._report(None, exc)
            return
        self.graph = graph
        graph.add_done_callback(self._done)
        stamp = ts if ts is not None else _now_us()
        try:
            for name, payload in packets:
                graph.add_packet_to_input_stream(name, Packet(payload, stamp))
            graph.close_all_packet_sources()
        except Exception as exc:
            if not graph.has_error():
                self._report(None, exc)
            graph.cancel()

    def cancel(self) -> None:
        """The client went away: stop the run."""
        for payload in self._payloads:
            payload.mark_disconnected()
        if self.graph is not None:
            self.graph.cancel()

    def _observe(self, stream: str, packet: Packet) -> None:
        if packet.is_empty:
            return
        with self._lock:
            self._first.setdefault(stream, packet)

    def _done(self, graph: CalculatorGraph) -> None:
        error = _outcome(graph)
        if error is not None:
            self._report(None, error)
            return
        try:
            self._report(self._response(), None)
        except Exception as exc:
            self._report(None, exc)

    def _response(self) -> InferResponse | Any:
        request = self.request
        missing = [n for n in self._outputs if n not in self._first]
        if missing:
            raise OvGraphError("Unknown error during mediapipe execution")
        for name, tag in self._outputs.items():
            if tag.startswith("RESPONSE"):
                return self._first[name].payload
        outputs = [_output_tensor(n, self._first[n].payload) for n in self._outputs]
        stamp = self._first[next(iter(self._outputs))].timestamp
        return InferResponse(
            model_name=request.model_name, outputs=outputs, id=request.id,
            parameters={TIMESTAMP_PARAM: stamp},
        )

    def _report(self, response: Any, error: BaseException | None) -> None:
        with self._lock:
            if self._reported:
                return
            self._reported = True
        self._on_done(response, error)


def infer(
    definition: GraphDefinition,
    request: InferRequest,
    *,
    register_cancel: Callable[[Callable[[], None]], Any] | None = None,
    timeout: float | None = None,
) -> InferResponse | Any:
    """Run ``request`` through a new run of ``definition`` and return the response (blocking).

    Args:
        definition: the graph (from ``ModelRepository.get``).
        request: the decoded request.
        register_cancel: called with a function that aborts the run (e.g. gRPC's
            ``context.add_callback``), for clients that go away.
        timeout: seconds to wait for the run (None: no limit); a run still going then is
            cancelled.

    Returns:
        An ``InferResponse``, or the payload of a ``RESPONSE``-tagged output as is.

    Raises:
        OvGraphError: ``RequestError`` for invalid inputs, ``ServableNotReadyError``,
            ``DeadlineExceededError`` when the run outlived ``timeout``, or the run's error.
    """
    done = threading.Event()
    outcome: list[Any] = [None, None]

    def on_done(response: Any, error: BaseException | None) -> None:
        outcome[0], outcome[1] = response, error
        done.set()

    run = UnaryInfer(definition, request, on_done)
    if register_cancel is not None:
        register_cancel(run.cancel)
    run.start()
    if not done.wait(timeout):
        run.cancel()
        done.wait()
        if outcome[1] is not None:
            raise DeadlineExceededError(
                f"The request produced no output within {timeout:g} seconds"
            )
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


# ---------------------------------------------------------------------------- streaming


_END = object()


class _StreamSession:
    """One ``ModelStreamInfer`` call: one graph run fed by every request of the stream."""

    def __init__(self, repository: ModelRepository, out: queue.Queue[Any]) -> None:
        self.repository = repository
        self.out = out
        self.graph: CalculatorGraph | None = None
        self.model_name = ""
        self.current_id = ""
        self.last_ts = ts_mod.UNSTARTED
        self.payloads: list[HttpPayload] = []
        self.output_tags: dict[str, str] = {}
        self.failed = False
        self.client_gone = False
        self._lock = threading.Lock()

    def read(self, requests: Iterator[InferRequest]) -> None:
        try:
            for request in requests:
                if self.failed or self.client_gone:
                    return
                self._submit(request)
        except Exception as exc:
            self.fail(exc)
            return
        if self.graph is None:
            self.out.put(_END)
        elif not self.failed:
            self.graph.close_all_packet_sources()

    def _submit(self, request: InferRequest) -> None:
        first = self.graph is None
        if first:
            definition = self.repository.get(request.model_name)
            packets = _input_packets(definition, request, require_all=False)
            graph = definition.new_run()
            self.model_name = request.model_name
            self.output_tags = {e.name: e.tag for e in graph.graph.graph_outputs}
            for name in self.output_tags:
                graph.observe_output_stream(name, self._observe)
            _start_run(graph, _side_packets(request.parameters))
            self.graph = graph
            self.definition = definition
            graph.add_done_callback(self._done)
        else:
            if request.model_name != self.model_name or request.model_version not in (
                "", "0", "1"
            ):
                raise RequestError(
                    "Every request of a stream must name the model of its first request"
                )
            extra = [k for k in request.parameters if k not in (TIMESTAMP_PARAM, "uri")]
            if extra:
                raise RequestError(
                    "Side packets can only be set in the first request of a stream"
                )
            packets = _input_packets(self.definition, request, require_all=False)
        self.current_id = request.id
        self.payloads.extend(_payloads(packets))
        ts = _timestamp(request.parameters)
        if ts is None:
            ts = max(_now_us(), self.last_ts + 1)
        self.last_ts = ts
        graph = self.graph
        assert graph is not None
        for name, payload in packets:
            graph.add_packet_to_input_stream(name, Packet(payload, ts))

    def _observe(self, stream: str, packet: Packet) -> None:
        if packet.is_empty or self.failed:
            return
        if self.output_tags.get(stream, "").startswith("RESPONSE"):
            self.out.put(packet.payload)
            return
        try:
            tensor = _output_tensor(stream, packet.payload)
        except Exception as exc:
            self.fail(exc)
            return
        self.out.put(
            InferResponse(
                model_name=self.model_name, outputs=[tensor], id=self.current_id,
                parameters={TIMESTAMP_PARAM: packet.timestamp},
            )
        )

    def _done(self, graph: CalculatorGraph) -> None:
        error = _outcome(graph)
        if error is not None and not self.client_gone:
            self.fail(error)
        self.out.put(_END)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.failed:
                return
            self.failed = True
        self.out.put(StreamFailure(error, started=self.graph is not None))
        if self.graph is not None:
            self.graph.cancel()

    def cancel(self) -> None:
        """The client went away (or the frontend stopped reading)."""
        self.client_gone = True
        for payload in self.payloads:
            payload.mark_disconnected()
        if self.graph is not None:
            self.graph.cancel()
        else:
            self.out.put(_END)


def stream_infer(
    repository: ModelRepository,
    requests: Iterator[InferRequest],
    *,
    register_cancel: Callable[[Callable[[], None]], Any] | None = None,
) -> Iterator[InferResponse | Any | StreamFailure]:
    """Serve one request stream; yield a response per output packet as soon as it exists.

    ``requests`` is read on its own thread (it may block, e.g. on a gRPC stream). The first
    request selects the graph and may set side packets. The iteration ends when the client
    closes its side and the run is done, or with a ``StreamFailure`` (the last item).
    """
    out: queue.Queue[Any] = queue.Queue()
    session = _StreamSession(repository, out)
    if register_cancel is not None:
        register_cancel(session.cancel)
    reader = threading.Thread(
        target=session.read, args=(requests,), name="ovgraph-kserve-stream", daemon=True
    )
    reader.start()
    try:
        while True:
            item = out.get()
            if item is _END:
                return
            yield item
            if isinstance(item, StreamFailure):
                return
    finally:
        session.cancel()
