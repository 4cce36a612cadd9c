"""FlowLimiterCalculator: limits how many timestamps are in flight in a section of the graph."""

from __future__ import annotations

import bisect
from collections import deque
from typing import ClassVar

from ovgraph.errors import ContractError
from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.calculator import Calculator, CalculatorContext, NodeSpec, OutputStream
from ovgraph.framework.packet import Packet
from ovgraph.framework.textformat import option_type


class FlowLimiterCalculator(Calculator):
    """Releases frames while fewer than ``max_in_flight`` are being processed, drops the rest.

    Each packet (or bound) on the ``FINISHED`` back edge marks the frames up to its timestamp
    as done. Frames that cannot be released wait in a queue of ``max_in_queue`` (oldest dropped
    first). The optional ``ALLOW`` output carries, at each frame's timestamp, whether it was
    released (true) or dropped (false). Further untagged inputs are auxiliary: their packets
    pass only at timestamps the first input was allowed at. ``MAX_IN_FLIGHT`` (side packet)
    overrides the option.

    node {
      calculator: "FlowLimiterCalculator"
      input_stream: "raw_frames"
      input_stream: "FINISHED:finished"
      input_stream_info: { tag_index: "FINISHED" back_edge: true }
      output_stream: "sampled_frames"
      output_stream: "ALLOW:allowed"
    }
    """

    Options = option_type("mediapipe.FlowLimiterCalculatorOptions")
    DYNAMIC_PORTS: ClassVar[bool] = True
    INPUT_STREAM_HANDLER: ClassVar[str | None] = "ImmediateInputStreamHandler"
    PROCESS_TIMESTAMP_BOUNDS: ClassVar[bool] = True

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
        extra_side = set(spec.input_side_packets.tags()) - {"MAX_IN_FLIGHT"}
        if extra_in or extra_out or extra_side:
            raise ContractError(
                "FlowLimiterCalculator: unexpected tags "
                f"{sorted(extra_in | extra_out | extra_side)}."
            )

    def open(self, cc: CalculatorContext) -> None:
        """Read the limits and prepare the queues."""
        spec = cc.spec
        options = cc.options
        self.max_in_flight = options.max_in_flight
        self.max_in_queue = options.max_in_queue
        self.timeout = options.in_flight_timeout
        side = spec.input_side_packets.id_of("MAX_IN_FLIGHT")
        if side is not None:
            self.max_in_flight = int(cc.input_side_packets[side])
        finished = spec.inputs.id_of("FINISHED")
        assert finished is not None
        self.finished_id = finished
        self.data_in = spec.inputs.ids_of_tag("")
        self.data_out = spec.outputs.ids_of_tag("")
        self.allow_id = spec.outputs.id_of("ALLOW")
        self.queues: list[deque[Packet]] = [deque() for _ in self.data_in]
        self.in_flight: deque[int] = deque()
        # Ranges of allowed timestamps: sorted starts and whether each range is allowed.
        self.allowed_starts: list[int] = [ts_mod.UNSET]
        self.allowed_values: list[bool] = [True]

    def process(self, cc: CalculatorContext) -> None:
        """Retire finished frames, release what the limit allows, drop the surplus."""
        finished = cc.inputs[self.finished_id]
        if finished.timestamp == cc.input_timestamp:
            while self.in_flight and self.in_flight[0] <= finished.timestamp:
                self.in_flight.popleft()
        for queue, in_id in zip(self.queues, self.data_in):
            packet = cc.inputs[in_id]
            if not packet.is_empty:
                queue.append(packet)
        main = cc.inputs[self.data_in[0]]
        latest = main.timestamp
        if self.timeout > 0 and latest == cc.input_timestamp and latest < ts_mod.MAX:
            while self.in_flight and latest - self.in_flight[0] > self.timeout:
                self.in_flight.popleft()
        queue = self.queues[0]
        out = cc.outputs[self.data_out[0]]
        while len(self.in_flight) < self.max_in_flight and queue:
            packet = queue.popleft()
            out.add(packet.payload, packet.timestamp)
            self._send_allow(cc, True, packet.timestamp)
            self.in_flight.append(packet.timestamp)
        while len(queue) > self.max_in_queue:
            self._send_allow(cc, False, queue.popleft().timestamp)
        if queue:
            _set_bound(out, queue[0].timestamp)
        else:
            bound = _next_allowed(main.timestamp)
            _set_bound(out, bound)
            if self.allow_id is not None:
                _set_bound(cc.outputs[self.allow_id], bound)
        self._process_auxiliary(cc, out.pending_bound())
        lowest = self._input_bound(cc)
        first = bisect.bisect_right(self.allowed_starts, lowest) - 1
        if first > 0:
            del self.allowed_starts[:first]
            del self.allowed_values[:first]

    def _send_allow(self, cc: CalculatorContext, allow: bool, timestamp: int) -> None:
        if self.allow_id is not None:
            cc.outputs[self.allow_id].add(allow, timestamp)
        index = bisect.bisect_left(self.allowed_starts, timestamp)
        if index < len(self.allowed_starts) and self.allowed_starts[index] == timestamp:
            self.allowed_values[index] = allow
        else:
            self.allowed_starts.insert(index, timestamp)
            self.allowed_values.insert(index, allow)

    def _is_allowed(self, timestamp: int) -> bool:
        return self.allowed_values[bisect.bisect_right(self.allowed_starts, timestamp) - 1]

    def _process_auxiliary(self, cc: CalculatorContext, settled: int) -> None:
        for k in range(1, len(self.data_in)):
            queue = self.queues[k]
            out = cc.outputs[self.data_out[k]]
            while queue and queue[0].timestamp < settled:
                packet = queue.popleft()
                if self._is_allowed(packet.timestamp):
                    out.add(packet.payload, packet.timestamp)
            if queue:
                _set_bound(out, queue[0].timestamp)
            else:
                _set_bound(out, _next_allowed(cc.inputs[self.data_in[k]].timestamp))

    def _input_bound(self, cc: CalculatorContext) -> int:
        result = ts_mod.DONE
        for queue, in_id in zip(self.queues, self.data_in):
            bound = queue[0].timestamp if queue else _next_allowed(cc.inputs[in_id].timestamp)
            result = min(result, bound)
        return result


def _next_allowed(timestamp: int) -> int:
    if timestamp < ts_mod.PRE_STREAM:
        return ts_mod.PRE_STREAM
    return ts_mod.next_allowed_in_stream(timestamp)


def _set_bound(stream: OutputStream, bound: int) -> None:
    """Set the stream's next bound, or close it once no timestamp can follow."""
    if bound > ts_mod.MAX:
        if not stream.closed:
            stream.close()
    else:
        stream.set_next_timestamp_bound(bound)
