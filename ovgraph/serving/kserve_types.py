"""KServe v2 tensors without a wire format: the neutral types and their codecs.

``Tensor``, ``InferRequest`` and ``InferResponse`` are what the gRPC and REST frontends decode
into and encode from; the codecs check shapes and datatypes and convert between KServe's raw
little-endian contents, BYTES elements (4-byte length prefixes) and numpy / openvino tensors.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ovgraph.errors import InvalidParameterError, OvGraphError

NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
DATATYPES = (*NUMPY_TYPES, "BYTES")
_DATATYPE_OF = {np.dtype(t): name for name, t in NUMPY_TYPES.items()}
_UNSUPPORTED_TAGS = ("TFLITE_TENSOR", "TFTENSOR")


# ---------------------------------------------------------------------------- wire-neutral types


@dataclass
class Tensor:
    """One KServe tensor: name, datatype, shape, data.

    ``data`` is a numpy array of ``shape``; BYTES tensors hold an object array of ``bytes``.
    Graph inputs tagged ``OVMS_PY_TENSOR…`` receive this object; calculators may send one back.

    ``raw`` keeps the raw contents of a BYTES tensor as received. Raw BYTES contents that are
    not KServe's length-prefixed elements (what OVMS's Python quickstart client sends) have no
    ``data``; ``invalid`` says why, and only Python nodes, which get ``raw`` unchanged as in
    OVMS, accept them.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None
    invalid: InvalidParameterError | None = None

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(self.data.size)


@dataclass
class InferRequest:
    """A KServe inference request; ``raw`` keeps the frontend's own message (may be None)."""

    model_name: str
    inputs: list[Tensor] = field(default_factory=list)
    model_version: str = ""
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    raw: Any = None


@dataclass
class InferResponse:
    """A KServe inference response."""

    model_name: str
    outputs: list[Tensor] = field(default_factory=list)
    model_version: str = "1"
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class StreamFailure:
    """Ends a response stream. ``started`` is False when no graph was selected yet."""

    error: BaseException
    started: bool


# ---------------------------------------------------------------------------- tensor codecs


# numpy's own limit (NPY_MAXDIMS); a deeper shape cannot become an array.
MAX_DIMS = 32 if np.__version__.startswith("1.") else 64


def _check_header(name: str, datatype: str, shape: Sequence[int]) -> int:
    """Validate datatype and shape; return the element count."""
    if datatype not in NUMPY_TYPES and datatype != "BYTES":
        raise InvalidParameterError(
            f'Invalid datatype "{datatype}" of input "{name}"; expected one of '
            f"{', '.join(DATATYPES)}", param=name,
        )
    if len(shape) > MAX_DIMS:
        raise InvalidParameterError(
            f'Invalid shape of input "{name}": {len(shape)} dimensions, at most {MAX_DIMS} '
            "are supported", param=name,
        )
    for dim in shape:
        if dim < 0:
            raise InvalidParameterError(
                f'Invalid shape {list(shape)} of input "{name}": negative dimension', param=name
            )
    return math.prod(shape)


def decode_bytes_elements(raw: bytes, name: str = "") -> list[bytes]:
    """Split KServe's BYTES encoding (4-byte little-endian length, then the bytes) into elements."""
    items: list[bytes] = []
    view = memoryview(raw)
    pos, end = 0, len(raw)
    while pos < end:
        if end - pos < 4:
            raise InvalidParameterError(
                f'Invalid BYTES content of input "{name}": truncated length prefix', param=name
            )
        (length,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if length > end - pos:
            raise InvalidParameterError(
                f'Invalid BYTES content of input "{name}": element longer than the data',
                param=name,
            )
        items.append(bytes(view[pos : pos + length]))
        pos += length
    return items


def encode_bytes_elements(items: Iterable[bytes]) -> bytes:
    """Join elements in KServe's BYTES encoding."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _bytes_array(items: Sequence[bytes], shape: Sequence[int]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array.reshape(tuple(shape))


def tensor_from_raw(
    name: str, datatype: str, shape: Sequence[int], raw: bytes,
    parameters: Mapping[str, Any] | None = None,
) -> Tensor:
    """Build a tensor from its raw (little-endian, row-major) contents, checking the size."""
    count = _check_header(name, datatype, shape)
    if datatype == "BYTES":
        try:
            items = decode_bytes_elements(raw, name)
            if len(items) != count:
                raise InvalidParameterError(
                    f'Invalid content size of input "{name}": shape {list(shape)} needs {count} '
                    f"BYTES elements, got {len(items)}", param=name,
                )
        except InvalidParameterError as exc:
            return Tensor(name, datatype, tuple(shape), _bytes_array([], (0,)),
                          dict(parameters or {}), raw=bytes(raw), invalid=exc)
        return Tensor(name, datatype, tuple(shape), _bytes_array(items, shape),
                      dict(parameters or {}), raw=bytes(raw))
    else:
        dtype = np.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise InvalidParameterError(
                f'Invalid content size of input "{name}": shape {list(shape)} of {datatype} '
                f"needs {expected} bytes, got {len(raw)}", param=name,
            )
        data = np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))
    return Tensor(name, datatype, tuple(shape), data, dict(parameters or {}))


def tensor_from_values(
    name: str, datatype: str, shape: Sequence[int], values: Sequence[Any],
    parameters: Mapping[str, Any] | None = None,
) -> Tensor:
    """Build a tensor from a flat list of values (typed gRPC contents or REST JSON data)."""
    count = _check_header(name, datatype, shape)
    if len(values) != count:
        raise InvalidParameterError(
            f'Invalid content size of input "{name}": shape {list(shape)} needs {count} '
            f"values, got {len(values)}", param=name,
        )
    if datatype == "BYTES":
        items = []
        for value in values:
            if isinstance(value, str):
                value = value.encode()
            if not isinstance(value, (bytes, bytearray)):
                raise InvalidParameterError(
                    f'Invalid value in BYTES input "{name}": expected strings', param=name
                )
            items.append(bytes(value))
        data = _bytes_array(items, shape)
    else:
        kind = np.dtype(NUMPY_TYPES[datatype]).kind
        for value in values:
            ok = isinstance(value, bool) if kind == "b" else (
                isinstance(value, (int, float)) and (kind == "f" or isinstance(value, int))
            )
            if not ok:
                raise InvalidParameterError(
                    f'Invalid value {value!r} in {datatype} input "{name}"', param=name
                )
        try:
            data = np.asarray(values, dtype=NUMPY_TYPES[datatype]).reshape(tuple(shape))
        except (OverflowError, ValueError) as exc:
            raise InvalidParameterError(
                f'Invalid value in {datatype} input "{name}": {exc}', param=name
            ) from exc
    return Tensor(name, datatype, tuple(shape), data, dict(parameters or {}))


@functools.cache
def _openvino() -> Any:
    try:
        import openvino
    except ImportError:  # the runtime works without openvino: numpy payloads then
        return None
    return openvino


def _output_tensor(name: str, payload: Any) -> Tensor:
    """Encode an output packet's payload as a KServe tensor named after its stream."""
    if isinstance(payload, Tensor):
        return replace(payload, name=name)
    ov = _openvino()
    if ov is not None and isinstance(payload, ov.Tensor):
        if payload.element_type == ov.Type.string:
            return _bytes_tensor(name, list(payload.bytes_data), tuple(payload.shape))
        payload = np.array(payload.data)
    if isinstance(payload, (bytes, bytearray, memoryview, str)):
        return _bytes_tensor(name, [_as_bytes(payload)], (1,))
    if isinstance(payload, (list, tuple)) and payload and all(
        isinstance(p, (bytes, bytearray, memoryview, str)) for p in payload
    ):
        return _bytes_tensor(name, [_as_bytes(p) for p in payload], (len(payload),))
    if all(hasattr(payload, a) for a in ("datatype", "shape", "data")):  # Python-node tensors
        shape = tuple(int(d) for d in payload.shape)
        raw = bytes(memoryview(payload.data).cast("B"))
        return tensor_from_raw(name, str(payload.datatype), shape, raw)
    array = np.asarray(payload)
    if array.dtype.kind in "OSU":
        flat = [_as_bytes(v) for v in array.reshape(-1).tolist()]
        return _bytes_tensor(name, flat, array.shape)
    datatype = _DATATYPE_OF.get(array.dtype.newbyteorder("="))
    if datatype is None:
        raise OvGraphError(f'Output "{name}" has an unsupported element type {array.dtype}')
    return Tensor(name, datatype, tuple(array.shape), array)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise OvGraphError(f"Cannot encode {type(value).__name__} as BYTES")


def _bytes_tensor(name: str, items: list[bytes], shape: tuple[int, ...]) -> Tensor:
    return Tensor(name, "BYTES", shape, _bytes_array(items, shape))
