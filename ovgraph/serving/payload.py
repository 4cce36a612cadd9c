"""HTTP inside a graph: the request payload (OVMS's ``HttpPayload``) and streamed answer chunks.

The REST frontend hands a graph the request as an ``HttpPayload`` (URI, headers, body, parsed
JSON) and frames whatever the graph's output stream carries: a first packet of type
``HttpStreamChunk`` starts a streamed answer (``text/event-stream``, every packet written as it
comes); anything else is the one answer body. The graph, not the frontend, decides which.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HttpPayload", "HttpStreamChunk"]


@dataclass
class HttpPayload:
    """A request as graph input: URI, headers, raw body, parsed JSON, and the client's state.

    ``parsed_json`` is the body already parsed by the frontend (None when not JSON). The
    disconnect callbacks let a calculator stop work nobody will read.
    """

    uri: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    parsed_json: Any = None
    _disconnected: threading.Event = field(default_factory=threading.Event, repr=False)
    _callbacks: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def is_disconnected(self) -> bool:
        """Whether the client has gone away."""
        return self._disconnected.is_set()

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the client disconnects (at once if it already has)."""
        with self._lock:
            if not self._disconnected.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def release(self) -> None:
        """Frontend side: the request is over; drop the body, the parsed JSON and the callbacks.

        A big request's memory then goes back at once, even while a finished run's packets
        (kept in reference cycles until Python's cycle collector passes) still point at it.
        """
        with self._lock:
            self._callbacks = []
        self.body = b""
        self.parsed_json = None

    def mark_disconnected(self) -> None:
        """Frontend side: the client has gone away."""
        with self._lock:
            if self._disconnected.is_set():
                return
            self._disconnected.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


class HttpStreamChunk(bytes):
    """Bytes of a streamed HTTP answer (Server-Sent Events), written to the client at once.

    A calculator sends ``HttpStreamChunk(event_bytes)`` on the graph's output stream to answer
    in streaming mode; plain ``bytes`` or ``str`` make a one-piece answer.
    """

    __slots__ = ()
    content_type = "text/event-stream"
