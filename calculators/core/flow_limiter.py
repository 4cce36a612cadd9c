"""FlowLimiterCalculator: limits how many timestamps are in flight in a section of the graph."""

from __future__ import annotations

import bisect
from typing import ClassVar

from ovgraph._proto.mediapipe.calculators.core import flow_limiter_calculator_pb2
from ovgraph.errors import ContractError
from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.calculator import Calculator, CalculatorContext, NodeSpec


class FlowLimiterCalculator(Calculator):
    """Passes data packets while fewer than ``max_in_flight`` timestamps are unfinished.

    Each packet on the ``FINISHED`` back edge marks one timestamp as done. Packets arriving while
    the limit is reached are dropped (synchronised across data streams); the optional ``ALLOW``
    output says when the gate opens or closes. ``MAX_IN_FLIGHT`` (side packet) overrides the
    option.

    node {
      calculator: "FlowLimiterCalculator"
      input_stream: "raw_frames"
      input_stream: "FINISHED:finished"
      input_stream_info: { tag_index: "FINISHED" back_edge: true }
      output_stream: "sampled_frames"
      output_stream: "ALLOW:allowed"
    }
    """

    Options = flow_limiter_calculator_pb2.FlowLimiterCalculatorOptions
    DYNAMIC_PORTS: ClassVar[bool] = True
    INPUT_STREAM_HANDLER: ClassVar[str | None] = "ImmediateInputStreamHandler"

    @classmethod
    def validate_contract(cls, spec: NodeSpec) -> None:
        """Untagged data inputs pair with untagged outputs; FINISHED is required."""
        data = spec.inputs.tags().get("", 0)
        if data < 1:
            raise ContractError("FlowLimiterCalculator: at least one untagged data input needed.")
        if spec.outputs.tags().get("", 0) != data:
            raise ContractError(
                "FlowLimiterCalculator: Output streams must correspond input streams except for "
                "the finish indicator input stream."
            )
        if not spec.inputs.has("FINISHED"):
            raise ContractError("FlowLimiterCalculator: a FINISHED input stream is required.")
        extra_in = set(spec.inputs.tags()) - {"", "FINISHED"}
        extra_out = set(spec.outputs.tags()) - {"", "ALLOW"}
        if extra_in or extra_out:
            raise ContractError(
                f"FlowLimiterCalculator: unexpected tags {sorted(extra_in | extra_out)}."
            )

    def open(self, cc: CalculatorContext) -> None:
        """Read the limit and prepare the counters."""
        spec = cc.spec
        self.max_in_flight = cc.options.max_in_flight or 1
        side = spec.input_side_packets.id_of("MAX_IN_FLIGHT")
        if side is not None:
            self.max_in_flight = int(cc.input_side_packets[side])
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.finished_id = spec.inputs.id_of("FINISHED")
        self.data_in = spec.inputs.ids_of_tag("")
        self.data_out = spec.outputs.ids_of_tag("")
        self.allow_id = spec.outputs.id_of("ALLOW")
        self.in_flight = 0
        self.pending: list[int] = []
        self.last_dropped = ts_mod.UNSET
        self.bounds = [ts_mod.UNSET] * len(self.data_in)
        self.allow_ts = 0

    def process(self, cc: CalculatorContext) -> None:
        """Count finished timestamps, pass or drop data packets, report gate changes."""
        was_allowed = self.in_flight < self.max_in_flight
        lowest_incomplete = ts_mod.DONE
        assert self.finished_id is not None
        if not cc.inputs[self.finished_id].is_empty:
            if self.in_flight <= 0:
                raise ValueError("Received a FINISHED packet, but we had none in flight.")
            self.in_flight -= 1
        for k, (in_id, out_id) in enumerate(zip(self.data_in, self.data_out)):
            packet = cc.inputs[in_id]
            out = cc.outputs[out_id]
            ts = packet.timestamp
            if ts_mod.is_range_value(ts) and self.bounds[k] <= ts:
                self.bounds[k] = ts + 1
                out.set_next_timestamp_bound(ts + 1)
            lowest_incomplete = min(lowest_incomplete, self.bounds[k])
            if packet.is_empty:
                continue
            index = bisect.bisect_left(self.pending, ts)
            if index < len(self.pending) and self.pending[index] == ts:
                out.add(packet.payload, ts)
            elif self.in_flight < self.max_in_flight and ts > self.last_dropped:
                out.add(packet.payload, ts)
                bisect.insort(self.pending, ts)
                self.in_flight += 1
            else:
                self.last_dropped = max(self.last_dropped, ts)
        del self.pending[: bisect.bisect_left(self.pending, lowest_incomplete)]
        allowed = self.in_flight < self.max_in_flight
        if allowed != was_allowed and self.allow_id is not None:
            self.allow_ts += 1
            cc.outputs[self.allow_id].add(allowed, self.allow_ts)
