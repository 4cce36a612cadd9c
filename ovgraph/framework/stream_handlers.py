"""Input stream handlers: when is a node ready, and which packets does it get.

Each handler owns nothing but a readiness rule over the node's input queues; the scheduler calls
``next_input_set`` under the graph lock. Rules follow ``mediapipe/framework/stream_handler/``:

- ``DefaultInputStreamHandler``: packets at the smallest timestamp T are delivered together once
  every empty stream's bound is past T (strict timestamp synchronisation).
- ``ImmediateInputStreamHandler``: any stream with a packet makes the node ready; streams without
  one get an empty packet at their settled timestamp.
- ``SyncSetInputStreamHandler``: listed ``sync_set``s plus one set of the remaining streams, each
  synchronised like the default handler, independently.
- ``FixedSizeInputStreamHandler``: like the default handler, but drops the oldest packets once a
  queue grows past ``trigger_queue_size``, down to ``target_queue_size``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.packet import Packet
from ovgraph.framework.tag_map import TagMap, TagMapError, parse_tag_index

__all__ = [
    "CLOSE",
    "HANDLERS",
    "InputStream",
    "InputStreamHandler",
    "make_handler",
    "sync_sets_from_options",
]

_DONE = ts_mod.DONE
CLOSE: Any = object()


class InputStream:
    """The queue of one node input plus the bound its producer has promised."""

    __slots__ = ("back_edge", "bound", "last_ts", "name", "queue")

    def __init__(self, name: str, back_edge: bool = False) -> None:
        self.name = name
        self.queue: deque[Packet] = deque()
        self.bound = ts_mod.PRE_STREAM
        self.last_ts = ts_mod.UNSTARTED
        self.back_edge = back_edge

    def settled(self) -> int:
        """Return the last timestamp for which this stream's content is final."""
        if self.queue:
            return self.queue[0].timestamp - 1
        return self.bound - 1 if self.bound != ts_mod.PRE_STREAM else ts_mod.UNSTARTED


def _sync_ready(streams: list[InputStream]) -> Any:
    """Default-handler readiness over ``streams``: a timestamp, ``CLOSE`` or None."""
    min_packet = _DONE
    min_empty_bound = _DONE
    all_done = True
    for s in streams:
        if s.queue:
            all_done = False
            t = s.queue[0].timestamp
            if t < min_packet:
                min_packet = t
        else:
            b = s.bound
            if b != _DONE:
                all_done = False
                if b < min_empty_bound:
                    min_empty_bound = b
    if all_done:
        return CLOSE
    if min_packet < min_empty_bound:
        return min_packet
    return None


def _fill_sync(streams: list[InputStream], ts: int) -> list[Packet]:
    out = []
    for s in streams:
        q = s.queue
        out.append(q.popleft() if q and q[0].timestamp == ts else Packet.empty(ts))
    return out


class InputStreamHandler:
    """Base: subclasses implement ``next_input_set``."""

    name = ""

    def __init__(
        self, streams: list[InputStream], tag_map: TagMap, options: Any, process_bounds: bool
    ) -> None:
        self.streams = streams
        self.process_bounds = process_bounds
        self.last_ts = ts_mod.UNSTARTED

    def next_input_set(self) -> Any:
        """Return ``(timestamp, packets)``, ``CLOSE``, or None when not ready."""
        raise NotImplementedError

    def on_push(self, stream: InputStream) -> None:
        """Hook called after a packet was appended to ``stream``."""


class DefaultInputStreamHandler(InputStreamHandler):
    """Timestamp-synchronised delivery over all inputs."""

    name = "DefaultInputStreamHandler"

    def next_input_set(self) -> Any:
        streams = self.streams
        if len(streams) == 1 and not self.process_bounds:
            s = streams[0]
            if s.queue:
                p = s.queue.popleft()
                return p.timestamp, [p]
            return CLOSE if s.bound == _DONE else None
        ready = _sync_ready(streams)
        if ready is None:
            if self.process_bounds:
                return self._bound_only()
            return None
        if ready is CLOSE:
            return CLOSE
        self.last_ts = ready
        return ready, _fill_sync(streams, ready)

    def _bound_only(self) -> Any:
        settled = min(s.settled() for s in self.streams)
        if settled > self.last_ts and settled >= ts_mod.PRE_STREAM:
            self.last_ts = settled
            return settled, [Packet.empty(settled) for _ in self.streams]
        return None


class FixedSizeInputStreamHandler(DefaultInputStreamHandler):
    """Default handler that keeps each queue short by dropping the oldest packets."""

    name = "FixedSizeInputStreamHandler"

    def __init__(
        self, streams: list[InputStream], tag_map: TagMap, options: Any, process_bounds: bool
    ) -> None:
        super().__init__(streams, tag_map, options, process_bounds)
        self.trigger = 2
        self.target = 1
        if options is not None:
            self.trigger = options.trigger_queue_size or self.trigger
            self.target = options.target_queue_size or self.target

    def on_push(self, stream: InputStream) -> None:
        if len(stream.queue) > self.trigger:
            while len(stream.queue) > self.target:
                stream.queue.popleft()


class ImmediateInputStreamHandler(InputStreamHandler):
    """Delivers whatever arrives, with no cross-stream synchronisation."""

    name = "ImmediateInputStreamHandler"

    def next_input_set(self) -> Any:
        best = _DONE
        all_done = True
        for s in self.streams:
            if s.queue:
                all_done = False
                t = s.queue[0].timestamp
            elif s.bound != _DONE:
                all_done = False
                if not self.process_bounds:
                    continue
                t = s.bound - 1 if s.bound != ts_mod.PRE_STREAM else ts_mod.UNSTARTED
                if t <= s.last_ts:
                    continue
            else:
                continue
            if t < best:
                best = t
        if all_done:
            return CLOSE
        if best == _DONE:
            return None
        packets = []
        for s in self.streams:
            q = s.queue
            if q and q[0].timestamp == best:
                packets.append(q.popleft())
                s.last_ts = best
            else:
                settled = s.settled()
                if self.process_bounds and settled == best:
                    s.last_ts = best
                packets.append(Packet.empty(settled))
        return best, packets


class SyncSetInputStreamHandler(InputStreamHandler):
    """Independent synchronisation sets; each call serves exactly one ready set."""

    name = "SyncSetInputStreamHandler"

    def __init__(
        self, streams: list[InputStream], tag_map: TagMap, options: Any, process_bounds: bool
    ) -> None:
        super().__init__(streams, tag_map, options, process_bounds)
        self.sets = [[streams[i] for i in ids] for ids in sync_sets_from_options(tag_map, options)]

    def next_input_set(self) -> Any:
        best = _DONE
        best_set: list[InputStream] | None = None
        all_done = True
        for group in self.sets:
            ready = _sync_ready(group)
            if ready is CLOSE:
                continue
            all_done = False
            if ready is not None and ready < best:
                best, best_set = ready, group
        if all_done:
            return CLOSE
        if best_set is None:
            return None
        chosen = {id(s) for s in best_set}
        packets = []
        for s in self.streams:
            if id(s) in chosen:
                q = s.queue
                packets.append(q.popleft() if q and q[0].timestamp == best else Packet.empty(best))
            else:
                packets.append(Packet.empty(s.settled()))
        return best, packets


def sync_sets_from_options(tag_map: TagMap, options: Any) -> list[list[int]]:
    """Return the stream ids of each sync set: the listed ones, then one of all the rest.

    Raises:
        TagMapError: a ``tag_index`` is malformed, unknown, or listed twice.
    """
    groups: list[list[int]] = []
    used: set[int] = set()
    for sync_set in getattr(options, "sync_set", ()):
        group = []
        for text in sync_set.tag_index:
            tag, index = parse_tag_index(text)
            stream_id = tag_map.id_of(tag, index)
            if stream_id is None:
                raise TagMapError(
                    f'SyncSetInputStreamHandler: sync_set tag_index "{text}" is not an input '
                    "stream of the calculator."
                )
            if stream_id in used:
                raise TagMapError(
                    f'SyncSetInputStreamHandler: input stream "{text}" is in more than one '
                    "sync set."
                )
            used.add(stream_id)
            group.append(stream_id)
        if group:
            groups.append(group)
    rest = [i for i in range(len(tag_map)) if i not in used]
    if rest:
        groups.append(rest)
    return groups


HANDLERS: dict[str, type[InputStreamHandler]] = {
    cls.name: cls
    for cls in (
        DefaultInputStreamHandler,
        ImmediateInputStreamHandler,
        SyncSetInputStreamHandler,
        FixedSizeInputStreamHandler,
    )
}


def make_handler(
    name: str, streams: list[InputStream], tag_map: TagMap, options: Any, process_bounds: bool
) -> InputStreamHandler:
    """Instantiate the handler registered as ``name``."""
    return HANDLERS[name](streams, tag_map, options, process_bounds)
