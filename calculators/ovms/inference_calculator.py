"""OpenVINOInferenceCalculator: runs a SESSION's model on the packets of its input streams."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import openvino as ov

from calculators.ovms.session_calculator import ModelSession
from ovgraph.errors import ContractError, InvalidParameterError
from ovgraph.framework.calculator import Calculator, CalculatorContext, NodeSpec, SidePacket
from ovgraph.framework.textformat import option_type

__all__ = ["OpenVINOInferenceCalculator"]

InferenceOptions = option_type("mediapipe.OpenVINOInferenceCalculatorOptions")
_VECTOR_TAG = "OVTENSORS"


def _tensor_name(tag: str, names: Mapping[str, str]) -> str:
    return names.get(tag, tag)


def _to_ov(payload: Any, name: str, port: Any) -> Any:
    """Check a packet against the model input and return it as ``ov.Tensor``."""
    if isinstance(payload, ov.Tensor):
        tensor = payload
    else:
        array = payload if isinstance(payload, np.ndarray) else getattr(payload, "data", payload)
        tensor = ov.Tensor(np.ascontiguousarray(np.asarray(array)))
    expected = port.get_element_type()
    if tensor.element_type != expected:
        raise InvalidParameterError(
            f'Invalid input precision of "{name}" - Expected: {expected.get_type_name()}; '
            f"Actual: {tensor.element_type.get_type_name()}", param=name,
        )
    shape = ov.PartialShape(list(tensor.shape))
    if not port.get_partial_shape().compatible(shape):
        raise InvalidParameterError(
            f'Invalid input shape of "{name}" - Expected: {port.get_partial_shape()}; '
            f"Actual: {list(tensor.shape)}", param=name,
        )
    return tensor


class OpenVINOInferenceCalculator(Calculator):
    """Runs the SESSION's model on each input set and sends the mapped outputs.

    Each input tag names a model input and each output tag a model output
    (``tag_to_input_tensor_names`` / ``tag_to_output_tensor_names``; an unmapped tag is the
    tensor name itself). ``OVTENSORS`` streams carry lists ordered by
    ``input_order_list`` / ``output_order_list``. Outputs are ``openvino.Tensor`` copies.

    node {
      calculator: "OpenVINOInferenceCalculator"
      input_side_packet: "SESSION:add"
      input_stream: "ADD_INPUT1:in1"
      input_stream: "ADD_INPUT2:in2"
      output_stream: "SUM:out"
      node_options: {
        [type.googleapis.com / mediapipe.OpenVINOInferenceCalculatorOptions]: {
          tag_to_input_tensor_names { key: "ADD_INPUT1" value: "input1" }
          tag_to_input_tensor_names { key: "ADD_INPUT2" value: "input2" }
          tag_to_output_tensor_names { key: "SUM" value: "sum" }
        }
      }
    }
    """

    Options: ClassVar[Any] = InferenceOptions
    DYNAMIC_PORTS: ClassVar[bool] = True
    SESSION = SidePacket("SESSION", ModelSession)

    @classmethod
    def validate_contract(cls, spec: NodeSpec) -> None:
        """One SESSION side packet, at least one input and one output stream."""
        if list(spec.input_side_packets.tags()) != ["SESSION"] or len(spec.input_side_packets) != 1:
            raise ContractError(
                "OpenVINOInferenceCalculator: exactly one input side packet, SESSION, is required."
            )
        if not len(spec.inputs) or not len(spec.outputs) or spec.output_side_packets.tags():
            raise ContractError(
                "OpenVINOInferenceCalculator: input and output streams are required and output "
                "side packets are not accepted."
            )

    def open(self, cc: CalculatorContext) -> None:
        """Map the stream tags to model tensors and create this node's infer request."""
        session: ModelSession | None = self.SESSION(cc)
        if session is None:
            raise ValueError("No model in the SESSION side packet")
        options = cc.options
        self.request = session.compiled.create_infer_request()
        self.ports = {n: p for p in session.compiled.inputs for n in p.get_names()}
        known_outputs = set(session.output_names())
        self.inputs: list[list[str]] = []
        for entry in cc.spec.inputs:
            names = (
                list(options.input_order_list) if entry.tag == _VECTOR_TAG
                else [_tensor_name(entry.tag, options.tag_to_input_tensor_names)]
            )
            missing = [n for n in names if n not in self.ports]
            if missing:
                raise ValueError(
                    f'Model "{session.servable_name}" has no input {", ".join(missing)}'
                )
            self.inputs.append(names)
        self.outputs: list[list[str]] = []
        for entry in cc.spec.outputs:
            names = (
                list(options.output_order_list) if entry.tag == _VECTOR_TAG
                else [_tensor_name(entry.tag, options.tag_to_output_tensor_names)]
            )
            missing = [n for n in names if n not in known_outputs]
            if missing:
                raise ValueError(
                    f'Model "{session.servable_name}" has no output {", ".join(missing)}'
                )
            self.outputs.append(names)

    def process(self, cc: CalculatorContext) -> None:
        """Infer once on the present input packets; send every mapped output."""
        feed: dict[str, Any] = {}
        for entry, names, packet in zip(cc.spec.inputs, self.inputs, cc.inputs):
            if packet.is_empty:
                continue
            values = [packet.payload]
            if entry.tag == _VECTOR_TAG:
                values = list(packet.payload)
                if len(values) != len(names):
                    raise InvalidParameterError(
                        f'Stream "{entry.name}" carries {len(values)} tensors, the model takes '
                        f"{len(names)}", param=entry.name,
                    )
            for name, value in zip(names, values):
                feed[name] = _to_ov(value, name, self.ports[name])
        if not feed:
            return
        self.request.infer(feed)
        for entry, names, out in zip(cc.spec.outputs, self.outputs, cc.outputs):
            copies = [ov.Tensor(np.array(self.request.get_tensor(n).data)) for n in names]
            out.send(copies if entry.tag == _VECTOR_TAG else copies[0])
