"""Protocol-neutral data plane: turn a request into a graph run and its outputs into callbacks.

Frontends decode their protocol, call these functions, and encode what comes back; they never
touch graphs directly. Callbacks run on graph worker threads: a frontend hops back to its own
loop (Tornado's ``IOLoop.add_callback``) inside them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ovgraph import tracing
from ovgraph.framework.graph import CalculatorGraph
from ovgraph.framework.packet import Packet
from ovgraph.serving.graph_definition import GraphDefinition

__all__ = ["HttpGraphRun"]

logger = logging.getLogger("ovgraph.graph")


class HttpGraphRun:
    """One HTTP request through a graph.

    The payload goes into the graph's input stream at timestamp 0, every packet of its output
    stream goes to ``on_output`` as it is produced, and ``on_done(error_or_None)`` fires once
    when the run ends.
    """

    def __init__(
        self,
        definition: GraphDefinition,
        payload: Any,
        on_output: Callable[[Any], None],
        on_done: Callable[[BaseException | None], None],
    ) -> None:
        self.definition = definition
        with tracing.incoming(getattr(payload, "headers", None)):
            self.graph: CalculatorGraph = definition.new_run()
        self._on_output = on_output
        self._on_done = on_done
        output = definition.output_streams[0] if definition.output_streams else ""
        if output:
            self.graph.observe_output_stream(output, self._output)
        self.graph.add_done_callback(self._done)
        self.payload = payload

    def start(self) -> None:
        """Start the run and feed the payload."""
        graph = self.graph
        try:
            graph.start_run()
            if not graph.has_error():
                graph.add_packet_to_input_stream(
                    self.definition.input_stream, Packet(self.payload, 0)
                )
            graph.close_all_input_streams()
        except BaseException:
            graph.cancel()
            raise

    def cancel(self) -> None:
        """The client went away: stop the run."""
        self.graph.cancel()

    def _output(self, _stream: str, packet: Packet) -> None:
        if not packet.is_empty:
            self._on_output(packet.payload)

    def _done(self, graph: CalculatorGraph) -> None:
        error: BaseException | None = None
        try:
            graph.wait_until_done(0)
        except BaseException as exc:
            error = exc
        self._on_done(error)
