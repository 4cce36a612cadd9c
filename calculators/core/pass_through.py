"""PassThroughCalculator: forwards every input packet to the output of the same tag and index."""

from __future__ import annotations

from typing import ClassVar

from ovgraph.errors import ContractError
from ovgraph.framework.calculator import Calculator, CalculatorContext, NodeSpec
from ovgraph.framework.packet import EMPTY


class PassThroughCalculator(Calculator):
    """Forwards packets (and side packets) unchanged, matched by tag and index.

    node {
      calculator: "PassThroughCalculator"
      input_stream: "in"
      input_stream: "VIDEO:video_in"
      output_stream: "out"
      output_stream: "VIDEO:video_out"
    }
    """

    DYNAMIC_PORTS: ClassVar[bool] = True
    TIMESTAMP_OFFSET: ClassVar[int | None] = 0

    @classmethod
    def validate_contract(cls, spec: NodeSpec) -> None:
        """Inputs and outputs (and side packets) must pair up by tag and index."""
        if {(e.tag, e.index) for e in spec.inputs} != {(e.tag, e.index) for e in spec.outputs}:
            raise ContractError(
                "PassThroughCalculator: Input and output streams to PassThroughCalculator must "
                "use matching tags and indexes."
            )
        in_side = {(e.tag, e.index) for e in spec.input_side_packets}
        if in_side != {(e.tag, e.index) for e in spec.output_side_packets}:
            raise ContractError(
                "PassThroughCalculator: Input and output side packets to PassThroughCalculator "
                "must use matching tags and indexes."
            )

    def open(self, cc: CalculatorContext) -> None:
        """Forward the side packets."""
        for i, value in enumerate(cc.input_side_packets):
            cc.output_side_packets[i] = value

    def process(self, cc: CalculatorContext) -> None:
        """Forward each non-empty input packet (ids pair up: tags sort the same on both sides)."""
        outputs = cc.outputs
        for i, packet in enumerate(cc.inputs):
            if packet.payload is not EMPTY:
                outputs[i].add(packet.payload, packet.timestamp)
