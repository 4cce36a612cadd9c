"""SidePacketToStreamCalculator: emits input side packets as stream packets."""

from __future__ import annotations

from typing import ClassVar

from ovgraph.errors import ContractError, StopProcessing
from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.calculator import Calculator, CalculatorContext, NodeSpec

_AT_TAGS = ("AT_PRESTREAM", "AT_POSTSTREAM", "AT_ZERO", "AT_TICK", "AT_TIMESTAMP", "AT_FIRST_TICK")
_FIXED = {"AT_PRESTREAM": ts_mod.PRE_STREAM, "AT_POSTSTREAM": ts_mod.POST_STREAM, "AT_ZERO": 0}


class SidePacketToStreamCalculator(Calculator):
    """Outputs each untagged input side packet on the output of the same index.

    The output tag chooses when: ``AT_PRESTREAM``, ``AT_POSTSTREAM``, ``AT_ZERO``,
    ``AT_TIMESTAMP`` (side packet ``TIMESTAMP``), or at each ``TICK`` input packet with
    ``AT_TICK`` (only the first with ``AT_FIRST_TICK``).

    node {
      calculator: "SidePacketToStreamCalculator"
      input_side_packet: "model_name"
      output_stream: "AT_PRESTREAM:model_name_stream"
    }
    """

    DYNAMIC_PORTS: ClassVar[bool] = True

    @classmethod
    def validate_contract(cls, spec: NodeSpec) -> None:
        """One AT_* output tag, as many outputs as untagged side packets, TICK with tick tags."""
        tags = [t for t in spec.outputs.tags() if t in _AT_TAGS]
        if len(tags) != 1 or len(spec.outputs.tags()) != 1:
            raise ContractError(
                "SidePacketToStreamCalculator: Exactly one of AT_PRESTREAM, AT_POSTSTREAM, "
                "AT_ZERO, AT_TICK, AT_FIRST_TICK and AT_TIMESTAMP tags is allowed and required "
                "to specify output stream(s)."
            )
        tag = tags[0]
        has_tick = spec.inputs.has("TICK")
        if has_tick != (tag in ("AT_TICK", "AT_FIRST_TICK")) or (
            len(spec.inputs) != int(has_tick)
        ):
            raise ContractError(
                "SidePacketToStreamCalculator: Either both TICK input and tick "
                "(AT_TICK/AT_FIRST_TICK) output should be used or none of them."
            )
        if (tag == "AT_TIMESTAMP") != spec.input_side_packets.has("TIMESTAMP"):
            raise ContractError(
                "SidePacketToStreamCalculator: Either both TIMESTAMP and AT_TIMESTAMP should be "
                "used or none of them."
            )
        untagged = spec.input_side_packets.tags().get("", 0)
        if untagged != spec.outputs.tags()[tag]:
            raise ContractError(
                "SidePacketToStreamCalculator: Same number of input side packets and output "
                "streams is required."
            )

    def open(self, cc: CalculatorContext) -> None:
        """Work out the output tag and the side packets to emit."""
        spec = cc.spec
        self.tag = next(iter(spec.outputs.tags()))
        self.values = [cc.input_side_packets[i] for i in spec.input_side_packets.ids_of_tag("")]
        self.ticking = self.tag in ("AT_TICK", "AT_FIRST_TICK")
        self.first_done = False
        if self.tag == "AT_TIMESTAMP":
            ts_id = spec.input_side_packets.id_of("TIMESTAMP")
            assert ts_id is not None
            self.timestamp = int(cc.input_side_packets[ts_id])
        else:
            self.timestamp = _FIXED.get(self.tag, 0)

    def process(self, cc: CalculatorContext) -> None:
        """On a tick emit the side packets; without ticks there is nothing to do."""
        if not self.ticking:
            raise StopProcessing
        if self.first_done:
            return
        for out, value in zip(cc.outputs, self.values):
            out.add(value, cc.input_timestamp)
        if self.tag == "AT_FIRST_TICK":
            for out in cc.outputs:
                out.close()
            self.first_done = True

    def close(self, cc: CalculatorContext) -> None:
        """Emit the side packets at the fixed timestamp (non-tick tags)."""
        if self.tag in ("AT_TICK", "AT_FIRST_TICK"):
            return
        for out, value in zip(cc.outputs, self.values):
            if not out.closed:
                out.add(value, self.timestamp)
