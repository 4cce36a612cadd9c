"""PreviousLoopbackCalculator: pairs each MAIN packet with the LOOP packet of the previous one."""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.calculator import Calculator, CalculatorContext, Input, Output
from ovgraph.framework.packet import Packet


class PreviousLoopbackCalculator(Calculator):
    """Emits, at each MAIN timestamp, the LOOP packet that followed the previous MAIN packet.

    LOOP is normally a back edge fed from downstream, so a graph can use its own previous output.

    node {
      calculator: "PreviousLoopbackCalculator"
      input_stream: "MAIN:frames"
      input_stream: "LOOP:detections"
      input_stream_info: { tag_index: "LOOP" back_edge: true }
      output_stream: "PREV_LOOP:prev_detections"
    }
    """

    MAIN = Input("MAIN")
    LOOP = Input("LOOP")
    PREV_LOOP = Output("PREV_LOOP")

    INPUT_STREAM_HANDLER: ClassVar[str | None] = "ImmediateInputStreamHandler"
    PROCESS_TIMESTAMP_BOUNDS: ClassVar[bool] = True

    def open(self, cc: CalculatorContext) -> None:
        """Reset the pairing state."""
        self.main_specs: deque[tuple[int, int]] = deque()
        self.loop_packets: deque[Packet] = deque()
        self.prev_main_ts = ts_mod.UNSTARTED
        self.prev_non_empty_main_ts = ts_mod.UNSTARTED
        # Unset, not Unstarted: the very first (empty) LOOP packet must be recorded, so that the
        # first MAIN packet advances PREV_LOOP's bound and downstream nodes do not wait for it.
        self.prev_loop_ts = ts_mod.UNSET

    def process(self, cc: CalculatorContext) -> None:
        """Record the new MAIN/LOOP state and emit every pair that is now decided."""
        main = self.MAIN(cc)
        if self.prev_main_ts < main.timestamp:
            if main.is_empty:
                loop_ts = ts_mod.UNSET
            else:
                loop_ts = self.prev_non_empty_main_ts
                self.prev_non_empty_main_ts = main.timestamp
            self.main_specs.append((main.timestamp, loop_ts))
            self.prev_main_ts = main.timestamp
        loop = self.LOOP(cc)
        if self.prev_loop_ts < loop.timestamp:
            self.loop_packets.append(loop)
            self.prev_loop_ts = loop.timestamp
        out = self.PREV_LOOP(cc)
        while self.main_specs and self.loop_packets:
            main_ts, loop_ts = self.main_specs[0]
            candidate = self.loop_packets[0]
            if loop_ts < candidate.timestamp:
                out.set_next_timestamp_bound(main_ts + 1)
                self.main_specs.popleft()
            elif loop_ts > candidate.timestamp:
                self.loop_packets.popleft()
            else:
                if candidate.is_empty:
                    out.set_next_timestamp_bound(main_ts + 1)
                else:
                    out.add(candidate.payload, main_ts)
                self.loop_packets.popleft()
                self.main_specs.popleft()
            if main_ts == ts_mod.MAX:
                out.close()

