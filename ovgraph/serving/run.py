"""One run of a served graph, as every frontend uses it.

``GraphRun`` wraps a ``CalculatorGraph`` instance of a ``GraphDefinition``: packets go in
(``add``), every non-empty packet of the observed output streams comes out through
``on_output(stream, packet)`` as it is produced, and ``on_done(error_or_None)`` fires exactly once
when the run ends. Both callbacks run on graph worker threads (or the caller's thread for a
failure while starting). HTTP payloads fed to the run are told when it is cancelled, so a
calculator can stop work nobody will read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ovgraph.errors import RequestError, ValidationError
from ovgraph.framework.graph import CalculatorGraph
from ovgraph.framework.packet import Packet
from ovgraph.serving.graph_definition import GraphDefinition
from ovgraph.serving.payload import HttpPayload

__all__ = ["GraphRun"]

logger = logging.getLogger("ovgraph.graph")


class GraphRun:
    """One graph run; see the module docstring.

    Args:
        definition: the servable (from ``ModelRepository.get``).
        on_output: called with ``(stream, packet)`` for every non-empty output packet.
        on_done: called once with the run's error (None on success).
        outputs: output streams to observe (default: every graph output stream).

    Raises:
        ServableNotReadyError: the definition cannot start runs.
    """

    def __init__(
        self,
        definition: GraphDefinition,
        on_output: Callable[[str, Packet], None],
        on_done: Callable[[BaseException | None], None],
        outputs: Iterable[str] | None = None,
    ) -> None:
        self.definition = definition
        self.graph: CalculatorGraph = definition.new_run()
        self.output_tags: dict[str, str] = {
            entry.name: entry.tag for entry in self.graph.graph.graph_outputs
        }
        self._on_output = on_output
        self._on_done = on_done
        self._payloads: list[HttpPayload] = []
        self._lock = threading.Lock()
        self._cancelled = False
        for name in self.output_tags if outputs is None else outputs:
            self.graph.observe_output_stream(name, self._output)
        self.graph.add_done_callback(self._done)

    def start(self, side_packets: Mapping[str, Any] | None = None) -> None:
        """Start the run (blocking: nodes open here).

        Side packets (even none) come from the client (KServe request parameters): when they do
        not fit the graph, that is the client's fault (``RequestError``). ``None`` means the
        request sets no side packets at all.
        """
        try:
            self.graph.start_run(side_packets)
        except ValidationError as exc:
            self.graph.cancel()
            if side_packets is not None:
                raise RequestError(exc.message) from exc
            raise
        except BaseException:
            self.graph.cancel()
            raise

    def add(self, stream: str, payload: Any, timestamp: int) -> None:
        """Feed one packet to the graph input stream ``stream``."""
        if isinstance(payload, HttpPayload):
            with self._lock:
                self._payloads.append(payload)
                cancelled = self._cancelled
            if cancelled:
                payload.mark_disconnected()
        if self.graph.has_error():
            return  # the run already failed; its error is what the client gets
        self.graph.add_packet_to_input_stream(stream, Packet(payload, timestamp))

    def close(self) -> None:
        """No more input: close the input streams and stop the source nodes."""
        self.graph.close_all_packet_sources()

    def cancel(self) -> None:
        """Stop the run (the client went away, or the deadline passed); idempotent."""
        with self._lock:
            self._cancelled = True
            payloads = list(self._payloads)
        for payload in payloads:
            payload.mark_disconnected()
        self.graph.cancel()

    @property
    def has_error(self) -> bool:
        """Whether the run has already failed."""
        return self.graph.has_error()

    def _output(self, stream: str, packet: Packet) -> None:
        if not packet.is_empty:
            self._on_output(stream, packet)

    def _done(self, graph: CalculatorGraph) -> None:
        error: BaseException | None = None
        try:
            graph.wait_until_done(0)
        except BaseException as exc:
            error = exc
        self._on_done(error)
