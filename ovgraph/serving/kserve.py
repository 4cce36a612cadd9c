"""KServe v2 data plane over the model repository, shared by the gRPC and REST frontends.

Frontends decode their wire format into ``InferRequest`` / ``Tensor``, call the functions here
and encode what comes back. Graph semantics follow OVMS' KServe path for MediaPipe graphs:

- each request input goes to the graph input stream of the same **name**; the stream's tag
  prefix selects the payload: ``OVTENSOR`` or none → ``openvino.Tensor`` (numpy when openvino is
  not installed), ``OVMS_PY_TENSOR…`` → ``Tensor``, ``IMAGE`` / ``TENSOR`` → numpy, ``…_PAYLOAD``
  → ``HttpPayload`` (the BYTES element is a JSON body; URI from the string parameter ``uri``,
  default empty: the graph picks its default endpoint); BYTES tensors on tensor streams become
  ``bytes`` (one element) or ``list[bytes]``. A ``REQUEST`` stream takes the whole ``InferRequest``
  (tensors named freely) and a ``RESPONSE`` output is the response as is;
- request parameters become input side packets, except ``OVMS_MP_TIMESTAMP``, the packet
  timestamp (default: wall-clock microseconds);
- unary: a new graph run per request, the **first** packet of every output stream answers;
  streaming: one graph per stream, chosen by the first request, every packet answers at once.

Both run through the :class:`~ovgraph.serving.dataplane.DataPlane` (admission, deadline, drain,
cancellation), as the OpenAI routes do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ovgraph.errors import (
    InvalidParameterError,
    OvGraphError,
    RequestError,
    ServableNotReadyError,
)
from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.packet import Packet
from ovgraph.serving import kserve_stream
from ovgraph.serving.dataplane import DataPlane, Execution
from ovgraph.serving.graph_definition import GraphDefinition
from ovgraph.serving.json_body import JsonParser
from ovgraph.serving.kserve_stream import BadStreamRequest, RequestFailure
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
    "BadStreamRequest",
    "InferRequest",
    "InferResponse",
    "RequestFailure",
    "StreamFailure",
    "Tensor",
    "decode_bytes_elements",
    "encode_bytes_elements",
    "infer",
    "input_packets",
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
DEFAULT_PAYLOAD_URI = ""
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
    parsed = _PAYLOAD_PARSER.parse(body)
    uri = request.parameters.get("uri", DEFAULT_PAYLOAD_URI)
    if not isinstance(uri, str):
        raise InvalidParameterError("Parameter uri must be a string", param="uri")
    return HttpPayload(
        uri=uri, headers={"Content-Type": "application/json"}, body=body, parsed_json=parsed
    )


_PAYLOAD_PARSER = JsonParser()  # big JSON payloads are parsed in a helper process


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


def _now_us() -> int:
    return time.time_ns() // 1000


def _payloads(packets: list[tuple[str, Any]]) -> list[HttpPayload]:
    return [p for _, p in packets if isinstance(p, HttpPayload)]


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


def _response(
    request: InferRequest, tags: Mapping[str, str], first: Mapping[str, Packet]
) -> InferResponse | Any:
    if any(name not in first for name in tags):
        raise OvGraphError("Unknown error during mediapipe execution")
    for name, tag in tags.items():
        if tag.startswith("RESPONSE"):
            return first[name].payload
    outputs = [_output_tensor(name, first[name].payload) for name in tags]
    stamp = first[next(iter(tags))].timestamp
    return InferResponse(
        model_name=request.model_name, outputs=outputs, id=request.id,
        parameters={TIMESTAMP_PARAM: stamp},
    )


def input_packets(definition: GraphDefinition, request: InferRequest) -> list[tuple[str, Any]]:
    """The graph input packets of a unary request (blocking: JSON payloads are parsed here).

    Frontends call it on a worker thread, so a big payload is never parsed on the event loop.

    Raises:
        RequestError: an input the graph cannot take, or a payload that is not valid JSON.
    """
    return _input_packets(definition, request, require_all=True)


async def infer(
    execution: Execution, request: InferRequest, packets: list[tuple[str, Any]] | None = None
) -> InferResponse | Any:
    """One ``ModelInfer``: a new graph run; the first packet of every output stream answers.

    Args:
        execution: from ``DataPlane.execution(definition)``.
        request: the decoded request.
        packets: its input packets when the caller built them already (``input_packets``).

    Returns:
        An ``InferResponse``, or the payload of a ``RESPONSE``-tagged output as is.

    Raises:
        OvGraphError: ``RequestError`` for invalid inputs, the data plane's refusals
            (queue full, deadline, draining), or the run's error.
    """
    definition = execution.definition
    if packets is None:
        packets = input_packets(definition, request)
    stamp = _timestamp(request.parameters)
    stamp = stamp if stamp is not None else _now_us()
    side = _side_packets(request.parameters)

    def feed(run: Any) -> None:
        for name, payload in packets:
            run.add(name, payload, stamp)
        run.close()

    try:
        await execution.start(feed, side)
        assert execution.run is not None
        tags = execution.run.output_tags
        first: dict[str, Packet] = {}
        while (item := await execution.next()) is not None:
            first.setdefault(item[0], item[1])
        return _response(request, tags, first)
    finally:
        for payload in _payloads(packets):
            payload.release()


# ---------------------------------------------------------------------------- streaming


def _stream_packets(definition: GraphDefinition, request: InferRequest) -> list[tuple[str, Any]]:
    return _input_packets(definition, request, require_all=False)


def stream_infer(
    plane: DataPlane,
    requests: Iterator[InferRequest | BadStreamRequest],
    *,
    register_cancel: Callable[[Callable[[], None]], Any] | None = None,
    headers: Any = None,
    idle_timeout: float | None = None,
) -> Iterator[InferResponse | Any | RequestFailure | StreamFailure]:
    """Serve one ``ModelStreamInfer`` stream (see :mod:`ovgraph.serving.kserve_stream`).

    ``requests`` is read on its own thread (it may block, e.g. on a gRPC stream). The first
    request selects the graph, passes admission and may set side packets; every response is
    labelled with the id of the request it answers; ``RequestFailure`` answers one request and
    the stream goes on; a ``StreamFailure`` is the last item. ``headers`` (the call's metadata)
    may carry a trace parent.
    """
    return kserve_stream.stream_infer(
        plane, requests, input_packets=_stream_packets, side_packets=_side_packets,
        timestamp=_timestamp, register_cancel=register_cancel, headers=headers,
        idle_timeout=idle_timeout,
    )
