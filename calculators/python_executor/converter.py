"""PyTensorOvTensorConverterCalculator: ``OVTENSOR`` ↔ ``OVMS_PY_TENSOR`` (OVMS Python nodes)."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np

from calculators.python_executor.tensor import DATATYPE_TO_FORMAT, Tensor, as_tensor, to_numpy
from ovgraph.errors import ContractError, RequestError
from ovgraph.framework.calculator import Calculator, CalculatorContext, NodeSpec
from ovgraph.framework.textformat import option_type

PyTensorOvTensorConverterCalculatorOptions = option_type(
    "mediapipe.PyTensorOvTensorConverterCalculatorOptions"
)

__all__ = ["PyTensorOvTensorConverterCalculator"]

OV_TENSOR = "OVTENSOR"
PY_TENSOR = "OVMS_PY_TENSOR"


@functools.cache
def _openvino() -> Any:
    try:
        import openvino
    except ImportError:  # numpy arrays stand in for openvino.Tensor then
        return None
    return openvino


class PyTensorOvTensorConverterCalculator(Calculator):
    """Converts between ``openvino.Tensor`` and Python-node ``Tensor``, copying the data.

    One input and one output: ``OVTENSOR`` → ``OVMS_PY_TENSOR`` names the produced tensor after
    the option ``tag_to_output_tensor_names["OVMS_PY_TENSOR"]`` (required in that direction);
    ``OVMS_PY_TENSOR`` → ``OVTENSOR`` needs a numeric datatype and a buffer whose size matches
    the shape. Without openvino installed, numpy arrays are produced instead of
    ``openvino.Tensor``.

    node {
      calculator: "PyTensorOvTensorConverterCalculator"
      input_stream: "OVTENSOR:logits"
      output_stream: "OVMS_PY_TENSOR:logits_py"
      node_options: {
        [type.googleapis.com/mediapipe.PyTensorOvTensorConverterCalculatorOptions]: {
          tag_to_output_tensor_names { key: "OVMS_PY_TENSOR" value: "logits_py" }
        }
      }
    }
    """

    Options: ClassVar[Any] = PyTensorOvTensorConverterCalculatorOptions
    DYNAMIC_PORTS: ClassVar[bool] = True

    @classmethod
    def validate_contract(cls, spec: NodeSpec) -> None:
        """One stream each side: OVTENSOR → OVMS_PY_TENSOR (with a name) or the reverse."""
        prefix = "PyTensorOvTensorConverterCalculator:"
        if len(spec.inputs) != 1 or len(spec.outputs) != 1:
            raise ContractError(f"{prefix} exactly one input and one output stream are required.")
        pair = (spec.inputs.entries[0].tag, spec.outputs.entries[0].tag)
        if pair not in ((OV_TENSOR, PY_TENSOR), (PY_TENSOR, OV_TENSOR)):
            raise ContractError(
                f"{prefix} streams must be {OV_TENSOR} → {PY_TENSOR} or {PY_TENSOR} → "
                f"{OV_TENSOR}, got {pair[0] or '<untagged>'} → {pair[1] or '<untagged>'}."
            )
        if pair[0] == OV_TENSOR and PY_TENSOR not in spec.options.tag_to_output_tensor_names:
            raise ContractError(
                f'{prefix} option tag_to_output_tensor_names must map "{PY_TENSOR}" to the '
                "output tensor name."
            )
        if len(spec.input_side_packets) or len(spec.output_side_packets):
            raise ContractError(f"{prefix} side packets are not supported.")

    def open(self, cc: CalculatorContext) -> None:
        """Read the direction and the output tensor name."""
        self.to_python = cc.spec.inputs.entries[0].tag == OV_TENSOR
        self.output_name = cc.options.tag_to_output_tensor_names.get(PY_TENSOR, "")

    def process(self, cc: CalculatorContext) -> None:
        """Convert the input packet."""
        packet = cc.inputs[0]
        if packet.is_empty:
            return
        if self.to_python:
            cc.outputs[0].send(self._to_py_tensor(packet.payload))
        else:
            cc.outputs[0].send(self._to_ov_tensor(packet.payload, cc.spec.inputs.names()[0]))

    def _to_py_tensor(self, payload: Any) -> Tensor:
        ov = _openvino()
        if ov is not None and isinstance(payload, ov.Tensor):
            type_name = str(payload.element_type.get_type_name())
            if type_name == "string":
                return Tensor.from_bytes_list(
                    self.output_name, list(payload.bytes_data), tuple(payload.shape)
                )
            array = np.array(payload.data, copy=True)
        else:
            array = np.array(payload, copy=True)
        tensor = Tensor(self.output_name, np.ascontiguousarray(array))
        if tensor.datatype not in DATATYPE_TO_FORMAT:
            raise RequestError(f"Undefined precision in input tensor: {array.dtype}")
        return tensor

    def _to_ov_tensor(self, payload: Any, stream: str) -> Any:
        try:
            tensor = as_tensor(payload, stream)
        except TypeError as exc:
            raise RequestError(f"Input is not a python tensor: {exc}") from None
        if tensor.datatype not in DATATYPE_TO_FORMAT:
            raise RequestError(f"Undefined precision in input python tensor: {tensor.datatype}")
        for dim in tensor.shape:
            if dim < 0:
                raise RequestError(f"dimension negative during conversion: {dim}")
        expected = int(np.prod(tensor.shape, dtype=np.int64)) * np.dtype(
            DATATYPE_TO_FORMAT[tensor.datatype]
        ).itemsize
        if tensor.size != expected:
            raise RequestError(
                f"python buffer size: {tensor.size}; OV tensor size: {expected}; mismatch"
            )
        array = np.array(to_numpy(tensor), copy=True)
        ov = _openvino()
        return ov.Tensor(array) if ov is not None else array
