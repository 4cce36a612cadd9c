"""HTTP requests through the data plane (OVMS's ``/v3`` path), protocol-neutral.

The frontend hands the graph the request as an ``HttpPayload`` (URI, headers, body, parsed JSON)
on the graph's input stream at timestamp 0; the graph decides what the URI means and answers on
its first output stream. What comes back is framed by its type: the first output packet an
``HttpStreamChunk`` → ``HttpStream`` (an async iterator of chunks), anything else → one
``HttpBody`` once the run has ended well. Nothing here reads the request body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ovgraph.errors import OvGraphError
from ovgraph.serving.dataplane import Execution
from ovgraph.serving.graph_definition import GraphDefinition
from ovgraph.serving.payload import HttpPayload, HttpStreamChunk
from ovgraph.serving.run import GraphRun

__all__ = ["HttpBody", "HttpStream", "http_outputs", "serve_http"]


@dataclass(frozen=True)
class HttpBody:
    """A one-piece answer."""

    body: bytes
    content_type: str = "application/json"


class HttpStream:
    """A streamed answer: iterate it for the chunks (errors after the first one raise)."""

    content_type = HttpStreamChunk.content_type

    def __init__(self, first: bytes, execution: Execution) -> None:
        self._first: bytes | None = first
        self._execution = execution

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while True:
            item = await self._execution.next()
            if item is None:
                return
            yield _as_bytes(item[1].payload)


def http_outputs(definition: GraphDefinition) -> list[str]:
    """The output stream an HTTP answer comes from (the graph's first)."""
    return definition.output_streams[:1]


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8", "replace")
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    raise OvGraphError(
        f"The graph answered with {type(payload).__name__}; an HTTP answer must be bytes or str"
    )


async def serve_http(execution: Execution, payload: HttpPayload) -> HttpBody | HttpStream:
    """Run ``payload`` on the execution's graph and return the answer (see the module docstring).

    Raises:
        OvGraphError: admission, deadline or the run's error (before any output for a stream).
    """
    stream = execution.definition.input_stream

    def feed(run: GraphRun) -> None:
        run.add(stream, payload, 0)
        run.close()

    await execution.start(feed)
    first = await execution.next()
    if first is None:
        raise OvGraphError("The graph produced no output")
    value = first[1].payload
    if isinstance(value, HttpStreamChunk):
        return HttpStream(bytes(value), execution)
    while await execution.next() is not None:
        pass  # later packets of a one-piece answer are dropped; their errors still count
    return HttpBody(_as_bytes(value))
