"""The engine process: one openvino-genai pipeline and its step loop, and nothing else.

Started by the server (``engine_client.py``) as ``python -m calculators.llm.engine_process FD
PARENT_PID KEY_JSON``, with one end of a Unix socket pair as ``FD``. It loads the pipeline, says
``ready`` (or ``failed``), then alternates between reading every message that has arrived and
one unit of engine work; with nothing to do it blocks on the socket. The server's GIL is never
touched by genai, so its event loop, gRPC and every other stream keep moving while the vision
encoder or a step runs here. See ``engine_protocol.py`` for the messages.

The process ends when the server asks (``shutdown``), when the socket closes, or when the server
dies (``PR_SET_PDEATHSIG``), so an engine never outlives its server.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from calculators.llm.engine_protocol import config_from_wire, config_to_wire, error_to_wire
from calculators.llm.engines import (
    EngineRequest,
    SequenceOutput,
    StepEngine,
    load_pipeline,
    make_engine,
)

logger = logging.getLogger("ovgraph.engine")

_PR_SET_PDEATHSIG = 1


class Outbox:
    """Messages for the server, token deltas gathered into one message per unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.deltas: list[tuple[int, list[int], list[float] | None]] = []

    def send(self, message: tuple[Any, ...]) -> None:
        """Send ``message`` after the deltas gathered so far (order is kept per request)."""
        self.flush()
        self.conn.send(message)

    def flush(self) -> None:
        """Send the gathered deltas."""
        if self.deltas:
            deltas, self.deltas = self.deltas, []
            self.conn.send(("tokens", deltas))


class RemoteSink:
    """An ``EngineSink`` that reports to the server through the outbox."""

    def __init__(
        self, request_id: int, outbox: Outbox, requests: dict[int, EngineRequest]
    ) -> None:
        self.request_id = request_id
        self.outbox = outbox
        self.requests = requests

    def started(self) -> None:
        """Report that the request entered the pipeline."""
        self.outbox.send(("started", self.request_id))

    def push(self, ids: Sequence[int], logprobs: Sequence[float] | None = None) -> None:
        """Gather new tokens for the next flush."""
        if ids:
            self.outbox.deltas.append(
                (self.request_id, list(ids), list(logprobs) if logprobs is not None else None)
            )

    def set_sequences(self, outputs: list[SequenceOutput]) -> None:
        """Report every sequence of a multi-sequence request."""
        self.outbox.send(("sequences", self.request_id, outputs))

    def finish(
        self, reason: str | None, prompt_tokens: int = 0, error: BaseException | None = None
    ) -> None:
        """Report the end."""
        self.requests.pop(self.request_id, None)
        wire = error_to_wire(error) if error is not None else None
        self.outbox.send(("finish", self.request_id, reason, prompt_tokens, wire))


class EngineLoop:
    """Reads server messages between units of engine work."""

    def __init__(self, conn: Connection, engine: StepEngine) -> None:
        self.conn = conn
        self.engine = engine
        self.outbox = Outbox(conn)
        self.requests: dict[int, EngineRequest] = {}
        self.shutting_down = False
        engine.poll = self._poll_during_generate

    def run(self) -> None:
        """Serve until shutdown (after the running requests end) or until the socket closes."""
        while True:
            idle = not self.engine.busy()
            if idle and self.shutting_down:
                return
            self._read(block=idle)
            self.engine.run_once()
            self.outbox.flush()

    def _read(self, block: bool) -> None:
        if block:
            self._handle(self.conn.recv())
        while self.conn.poll(0):
            self._handle(self.conn.recv())

    def _poll_during_generate(self) -> None:
        """Serial engines call this between tokens: flush them and read cancellations."""
        self.outbox.flush()
        self._read(block=False)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "submit":
            _, request_id, prompt, images, wire = message
            request = EngineRequest(
                request_id, prompt, _tensors(images), config_from_wire(wire),
                RemoteSink(request_id, self.outbox, self.requests),
            )
            self.requests[request_id] = request
            self.engine.add(request)
        elif kind == "cancel":
            request = self.requests.get(message[1])
            if request is not None:
                request.cancelled = True
        elif kind == "stats":
            self.outbox.send(("stats", message[1], self._stats()))
        elif kind == "shutdown":
            self.shutting_down = True

    def _stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"requests": len(self.requests)}
        get_metrics = getattr(self.engine.pipeline, "get_metrics", None)
        if get_metrics is not None:
            metrics = get_metrics()
            stats.update(
                cache_usage=float(metrics.cache_usage),
                max_cache_usage=float(metrics.max_cache_usage),
                avg_cache_usage=float(metrics.avg_cache_usage),
                cache_size_bytes=int(getattr(metrics, "cache_size_in_bytes", 0)),
                scheduled_requests=int(metrics.scheduled_requests),
                pipeline_requests=int(metrics.requests),
            )
        return stats


def _tensors(images: list[Any]) -> list[Any]:
    if not images:
        return []
    import openvino as ov

    return [ov.Tensor(image) for image in images]


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed socket still ends the loop
        pass
    if os.getppid() != parent_pid:  # the server died before the signal was armed
        os._exit(0)


def main(argv: Sequence[str]) -> int:
    """Entry point: ``FD PARENT_PID KEY_JSON``."""
    fd, parent_pid, key_json = int(argv[0]), int(argv[1]), argv[2]
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when engines stop
    logging.basicConfig(
        level=os.environ.get("OVGRAPH_ENGINE_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    conn = Connection(fd)
    key = json.loads(key_json)
    try:
        pipeline, default_config = load_pipeline(key)
    except Exception as exc:
        from calculators.llm.errors import first_line, scrub

        conn.send(("failed", scrub(first_line(str(exc)) or type(exc).__name__)))
        return 1
    conn.send(("ready", {"default_config": config_to_wire(default_config), "pid": os.getpid()}))
    loop = EngineLoop(conn, make_engine(pipeline, key["pipeline_type"]))
    try:
        loop.run()
    except (EOFError, OSError):  # the server closed the socket or died
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
