"""``Tensor``: the tensor type of Python nodes, compatible with OVMS' ``pyovms.Tensor``.

A ``Tensor`` is a name, a shape, a KServe datatype and a buffer::

    from pyovms import Tensor
    import numpy as np

    t = Tensor("scores", np.array([[0.1, 0.9]], dtype=np.float32))
    t.datatype, t.shape, t.size        # "FP32", (1, 2), 8 (bytes)
    np.asarray(t)                      # float32 array of shape (1, 2), no copy

As in OVMS, ``Tensor(name, data, shape=None, datatype=None)`` wraps any object that exposes the
buffer protocol (``bytes``, ``bytearray``, ``memoryview``, numpy arrays, ``array.array``, another
``Tensor``); ``shape`` and ``datatype`` default to the buffer's own shape and to the datatype of its
struct format (table below), and when given they describe the data without reinterpreting the
buffer. A format outside the table gives ``datatype`` = the format string.

==========  ======  ==========  ======
datatype    format  datatype    format
==========  ======  ==========  ======
BOOL        ``?``   INT8        ``b``
UINT8       ``B``   INT16       ``h``
UINT16      ``H``   INT32       ``i``
UINT32      ``I``   INT64       ``q``
UINT64      ``Q``   FP16        ``e``
FP32        ``f``   FP64        ``d``
==========  ======  ==========  ======

Tensors built from a datatype and raw bytes (``Tensor.from_raw``, what the server does for
KServe inputs) expose ``data`` in the datatype's format and shape; other datatypes (``BYTES``
among them) expose a 1-D ``B`` buffer. ``BYTES`` content is KServe's: each element is a 4-byte
little-endian length followed by the element's bytes (``encode_bytes`` / ``decode_bytes``).

Python 3.11 cannot give pure-Python classes the buffer protocol, so numpy interop goes through
``__array__`` (``np.asarray(t)``); ``bytes(t)`` returns the raw content and ``t.data`` is the
buffer itself (``np.frombuffer(t.data, ...)`` works everywhere). From Python 3.12 on,
``memoryview(t)`` works too (``__buffer__``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DATATYPE_TO_FORMAT",
    "FORMAT_TO_DATATYPE",
    "Tensor",
    "as_tensor",
    "decode_bytes",
    "encode_bytes",
    "to_numpy",
]

DATATYPE_TO_FORMAT: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
FORMAT_TO_DATATYPE: dict[str, str] = {fmt: dt for dt, fmt in DATATYPE_TO_FORMAT.items()}
RAW_BINARY_FORMAT = "B"

# Canonical numpy types (np.dtype("q") is longlong, which some libraries do not map to int64).
_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
# Native-size integer formats (numpy reports int64 as "l" on Linux): resolved by item size.
_SIGNED = {"b": 1, "h": 2, "i": 4, "l": 0, "q": 8, "n": 0}
_UNSIGNED = {"B": 1, "H": 2, "I": 4, "L": 0, "Q": 8, "N": 0}
_INT_BY_SIZE = {1: "INT8", 2: "INT16", 4: "INT32", 8: "INT64"}
_UINT_BY_SIZE = {1: "UINT8", 2: "UINT16", 4: "UINT32", 8: "UINT64"}


def _datatype_of(fmt: str, itemsize: int) -> str:
    """Return the KServe datatype of a struct format (the format itself when unknown)."""
    bare = fmt[1:] if fmt[:1] in "@=<" else fmt
    if bare in _SIGNED:
        return _INT_BY_SIZE.get(itemsize, fmt)
    if bare in _UNSIGNED:
        return _UINT_BY_SIZE.get(itemsize, fmt)
    return FORMAT_TO_DATATYPE.get(bare, fmt)


def _contiguous_view(data: Any) -> memoryview:
    """Return a C-contiguous memoryview of ``data`` (copying only non-contiguous buffers)."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"Tensor data must support the buffer protocol, got {type(data).__name__}"
        ) from None
    if not view.c_contiguous:
        view = memoryview(np.ascontiguousarray(np.asarray(view)))
    return view


class Tensor:
    """A named buffer with a shape and a KServe datatype (``pyovms.Tensor``).

    Args:
        name: tensor name; a Python node's outputs are routed by it.
        data: any object exposing the buffer protocol (kept by reference, not copied).
        shape: the tensor's shape (default: the buffer's shape).
        datatype: KServe datatype (default: derived from the buffer's format).

    Attributes:
        name: the tensor name.
        shape: tuple of dimensions.
        datatype: KServe datatype string (``"FP32"``, ``"BYTES"``, ...).
        data: the buffer, as a ``memoryview``.
        size: size of the buffer in bytes.
    """

    __slots__ = ("data", "datatype", "name", "shape", "size")

    def __init__(
        self,
        name: str,
        data: Any,
        shape: Sequence[int] | None = None,
        datatype: str | None = None,
    ) -> None:
        if isinstance(data, Tensor):
            data = data.data
        view = _contiguous_view(data)
        self.name = str(name)
        self.data: memoryview = view
        self.shape: tuple[int, ...] = (
            tuple(int(d) for d in shape) if shape is not None else tuple(view.shape or ())
        )
        self.datatype: str = (
            str(datatype) if datatype is not None else _datatype_of(view.format, view.itemsize)
        )
        self.size: int = view.nbytes

    @classmethod
    def from_raw(
        cls, name: str, raw: Any, shape: Sequence[int], datatype: str
    ) -> Tensor:
        """Build a tensor from raw little-endian row-major bytes, as the server does.

        Known datatypes get a buffer of their format and ``shape``; others (``BYTES``
        included) a 1-D buffer of bytes.

        Raises:
            ValueError: the byte count does not match ``shape`` for a known datatype.
        """
        shape = tuple(int(d) for d in shape)
        dtype = _NUMPY_DTYPES.get(datatype)
        if dtype is None:
            return cls(name, _contiguous_view(raw).cast("B"), shape, datatype)
        flat = _contiguous_view(raw).cast("B")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if flat.nbytes != count * dtype.itemsize:
            raise ValueError(
                f'Tensor "{name}": shape {list(shape)} of {datatype} needs '
                f"{count * dtype.itemsize} bytes, got {flat.nbytes}"
            )
        array = np.frombuffer(flat, dtype=dtype).reshape(shape)
        return cls(name, array, shape, datatype)

    @classmethod
    def from_bytes_list(
        cls, name: str, items: Iterable[bytes | str], shape: Sequence[int] | None = None
    ) -> Tensor:
        """Build a ``BYTES`` tensor from elements (``str`` is UTF-8 encoded)."""
        elements = [i.encode() if isinstance(i, str) else bytes(i) for i in items]
        return cls(
            name, encode_bytes(elements),
            tuple(shape) if shape is not None else (len(elements),), "BYTES",
        )

    def bytes_list(self) -> list[bytes]:
        """Return the elements of a ``BYTES`` tensor."""
        return decode_bytes(self.data)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """Return the tensor as a numpy array (no copy for numeric datatypes)."""
        array = to_numpy(self)
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        return np.array(array, copy=True) if copy else array

    def __buffer__(self, flags: int) -> memoryview:
        """Expose the buffer (PEP 688, Python 3.12+)."""
        return self.data

    def __bytes__(self) -> bytes:
        """Return the raw content."""
        return self.data.tobytes()

    def __repr__(self) -> str:
        return (
            f"Tensor(name={self.name!r}, shape={self.shape}, datatype={self.datatype!r}, "
            f"size={self.size})"
        )


def encode_bytes(items: Iterable[bytes]) -> bytes:
    """Join elements in KServe's BYTES encoding (4-byte little-endian length, then bytes)."""
    return b"".join(struct.pack("<I", len(item)) + bytes(item) for item in items)


def decode_bytes(buffer: Any) -> list[bytes]:
    """Split KServe's BYTES encoding into its elements.

    Raises:
        ValueError: the content is not a sequence of length-prefixed elements.
    """
    view = _contiguous_view(buffer).cast("B")
    items: list[bytes] = []
    pos, end = 0, view.nbytes
    while pos < end:
        if end - pos < 4:
            raise ValueError("BYTES content ends inside a length prefix")
        (length,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if length > end - pos:
            raise ValueError("BYTES element is longer than the remaining content")
        items.append(view[pos : pos + length].tobytes())
        pos += length
    return items


def to_numpy(tensor: Tensor) -> np.ndarray:
    """Return a tensor's content as numpy: typed and shaped by its datatype when known.

    ``BYTES`` tensors become an object array of ``bytes``; unknown datatypes the buffer as is.
    """
    dtype = _NUMPY_DTYPES.get(tensor.datatype)
    if dtype is not None:
        flat = tensor.data.cast("B") if tensor.data.ndim != 1 or tensor.data.format != "B" else (
            tensor.data
        )
        count = int(np.prod(tensor.shape, dtype=np.int64)) if tensor.shape else 1
        if flat.nbytes == count * dtype.itemsize:
            return np.frombuffer(flat, dtype=dtype).reshape(tensor.shape)
    elif tensor.datatype == "BYTES":
        items = decode_bytes(tensor.data)
        array = np.empty(len(items), dtype=object)
        array[:] = items
        count = int(np.prod(tensor.shape, dtype=np.int64)) if tensor.shape else 1
        return array.reshape(tensor.shape) if count == len(items) else array
    return np.asarray(tensor.data)


def as_tensor(payload: Any, name: str) -> Tensor:
    """Turn a stream payload into a ``Tensor`` named ``name`` (a ``Tensor`` passes unchanged).

    Accepts KServe tensors (objects with ``datatype``, ``shape`` and numpy ``data``), numpy
    arrays, ``openvino.Tensor``, ``bytes``-like objects and ``str`` (UTF-8, as ``UINT8``).

    Raises:
        TypeError: the payload is none of these.
    """
    if isinstance(payload, Tensor):
        return payload
    if isinstance(payload, str):
        return Tensor(name, payload.encode())
    if all(hasattr(payload, a) for a in ("datatype", "shape", "data")) and isinstance(
        payload.data, np.ndarray
    ):
        tensor_name = getattr(payload, "name", None) or name
        shape = tuple(int(d) for d in payload.shape)
        raw = getattr(payload, "raw", None)
        if payload.datatype == "BYTES" and isinstance(raw, bytes):
            # Raw contents reach the handler unchanged, length-prefixed or not (as in OVMS).
            return Tensor(tensor_name, raw, shape, "BYTES")
        if payload.datatype == "BYTES":
            flat = [bytes(v) for v in payload.data.reshape(-1).tolist()]
            return Tensor(tensor_name, encode_bytes(flat), shape, "BYTES")
        return Tensor(tensor_name, np.ascontiguousarray(payload.data), shape,
                      str(payload.datatype))
    element_type = getattr(payload, "element_type", None)
    if element_type is not None and hasattr(type(payload), "bytes_data"):  # openvino.Tensor
        if str(element_type.get_type_name()) == "string":
            return Tensor.from_bytes_list(name, list(payload.bytes_data), tuple(payload.shape))
        return Tensor(name, np.ascontiguousarray(payload.data))
    if isinstance(payload, np.ndarray) and payload.dtype.kind in "OSU":
        flat_items = [v.encode() if isinstance(v, str) else bytes(v)
                      for v in payload.reshape(-1).tolist()]
        return Tensor.from_bytes_list(name, flat_items, payload.shape)
    try:
        return Tensor(name, payload)
    except TypeError:
        raise TypeError(f"cannot use a {type(payload).__name__} as a tensor") from None
