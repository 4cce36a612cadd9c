"""KServe v2 protobuf messages ↔ the wire-neutral types of ``ovgraph.serving.kserve_types``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ovgraph._proto.kserve import grpc_predict_v2_pb2 as pb
from ovgraph.errors import InvalidParameterError, OvGraphError, RequestError
from ovgraph.serving import kserve_types as kserve
from ovgraph.serving.kserve_types import InferRequest, InferResponse, Tensor

__all__ = [
    "Undecodable",
    "metadata_to_grpc",
    "parameters_from_grpc",
    "request_from_grpc",
    "response_to_grpc",
    "tensor_raw_bytes",
    "tolerant_parser",
]

# Typed ``InferTensorContents`` field of each datatype (FP16 travels only as raw bytes).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = sorted(set(CONTENTS_FIELD.values()))


def parameters_from_grpc(parameters: Any) -> dict[str, Any]:
    """``map<string, InferParameter>`` → plain values (None for an unset or unknown choice)."""
    values: dict[str, Any] = {}
    for key, param in parameters.items():
        which = param.WhichOneof("parameter_choice")
        values[key] = getattr(param, which) if which else None
    return values


def _set_parameter(target: Any, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    else:
        target.string_param = str(value)


def _tensor_from_grpc(tensor: Any, raw: bytes | None) -> Tensor:
    name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
    params = parameters_from_grpc(tensor.parameters)
    used = [f for f in _ALL_FIELDS if len(getattr(tensor.contents, f))]
    if raw is not None:
        if used:
            raise InvalidParameterError(
                f'Input "{name}" has both raw_input_contents and typed contents', param=name
            )
        return kserve.tensor_from_raw(name, datatype, shape, raw, params)
    expected = CONTENTS_FIELD.get(datatype)
    if datatype in kserve.DATATYPES and [f for f in used if f != expected]:
        raise InvalidParameterError(
            f'Contents of input "{name}" do not match its datatype {datatype} '
            f"(expected {expected or 'raw_input_contents'})", param=name,
        )
    values = list(getattr(tensor.contents, expected)) if expected else []
    return kserve.tensor_from_values(name, datatype, shape, values, params)


def request_from_grpc(message: Any) -> InferRequest:
    """Decode a ``ModelInferRequest``; shape, datatype and size errors raise ``RequestError``."""
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise RequestError(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs"
        )
    inputs = [
        _tensor_from_grpc(t, raw[i] if raw else None) for i, t in enumerate(message.inputs)
    ]
    return InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        id=message.id,
        parameters=parameters_from_grpc(message.parameters),
        inputs=inputs,
        raw=message,
    )


def tensor_raw_bytes(tensor: Tensor) -> bytes:
    """Row-major little-endian bytes of a tensor (BYTES: length-prefixed elements)."""
    if tensor.datatype == "BYTES":
        if tensor.invalid is not None and tensor.raw is not None:
            return tensor.raw  # a Python node's BYTES buffer, sent as is (as OVMS does)
        return kserve.encode_bytes_elements(bytes(v) for v in tensor.data.reshape(-1))
    dtype = np.dtype(kserve.NUMPY_TYPES[tensor.datatype]).newbyteorder("<")
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()


def response_to_grpc(response: InferResponse | Any) -> Any:
    """Encode a response (every output in ``raw_output_contents``, as OVMS does).

    A ``RESPONSE`` passthrough output may already be a ``ModelInferResponse`` message (of this
    module's pool or of any compatible one); it is returned as is or re-parsed.
    """
    if isinstance(response, pb.ModelInferResponse):
        return response
    if not isinstance(response, InferResponse):
        serialize = getattr(response, "SerializeToString", None)
        if serialize is None:
            raise OvGraphError(
                f"RESPONSE stream carried {type(response).__name__}, not an inference response"
            )
        return pb.ModelInferResponse.FromString(serialize())
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    for key, value in response.parameters.items():
        _set_parameter(message.parameters[key], value)
    for tensor in response.outputs:
        out = message.outputs.add(name=tensor.name, datatype=tensor.datatype)
        out.shape.extend(int(d) for d in tensor.shape)
        for key, value in tensor.parameters.items():
            _set_parameter(out.parameters[key], value)
        message.raw_output_contents.append(tensor_raw_bytes(tensor))
    return message


def metadata_to_grpc(metadata: dict[str, Any]) -> Any:
    """Encode ``kserve.model_metadata`` as a ``ModelMetadataResponse``."""
    message = pb.ModelMetadataResponse(
        name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
    )
    for side in ("inputs", "outputs"):
        for item in metadata[side]:
            getattr(message, side).add(
                name=item["name"], datatype=item["datatype"], shape=item["shape"]
            )
    return message


class Undecodable:
    """A message gRPC received that protobuf cannot parse (e.g. a string that is not UTF-8)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.id = ""
        self.model_name = ""

    @property
    def error(self) -> RequestError:
        """The error answered for it (``INVALID_ARGUMENT``)."""
        return RequestError(
            f"The {self.kind} message cannot be parsed (strings must be valid UTF-8)"
        )


def tolerant_parser(message_class: Any) -> Any:
    """``message_class.FromString`` that returns :class:`Undecodable` instead of raising."""
    from google.protobuf.message import DecodeError

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return Undecodable(message_class.DESCRIPTOR.name)

    return parse
