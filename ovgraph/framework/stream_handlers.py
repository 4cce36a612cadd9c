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
_MIN = ts_mod.MIN
_MAX = ts_mod.MAX
_POST_STREAM = ts_mod.POST_STREAM
_ONE_OVER_POST_STREAM = ts_mod.ONE_OVER_POST_STREAM
_UNSTARTED = ts_mod.UNSTARTED
_UNSET = ts_mod.UNSET
CLOSE: Any = object()


def previous_allowed_in_stream(ts: int) -> int:
    """MediaPipe's ``Timestamp::PreviousAllowedInStream``: the last settled timestamp."""
    if ts <= _MIN or ts == _POST_STREAM:
        return _UNSTARTED
    if ts > _MAX:
        return _MAX
    return ts - 1


class InputStream:
    """The queue of one node input plus the bound its producer has promised."""

    __slots__ = ("back_edge", "bound", "name", "queue")

    def __init__(self, name: str, back_edge: bool = False) -> None:
        self.name = name
        self.queue: deque[Packet] = deque()
        self.bound = ts_mod.PRE_STREAM
        self.back_edge = back_edge

    def min_timestamp_or_bound(self) -> int:
        """Return the head packet's timestamp, or the bound when the queue is empty."""
        return self.queue[0].timestamp if self.queue else self.bound

    def settled(self) -> int:
        """Return the last timestamp for which this stream's content is final."""
        return previous_allowed_in_stream(self.queue[0].timestamp if self.queue else self.bound)

    def pop_at(self, ts: int) -> Packet:
        """Return the packet at ``ts`` (dropping older ones) or an empty bound packet."""
        if self.bound <= ts:
            self.bound = ts_mod.next_allowed_in_stream(ts)
        q = self.queue
        found = None
        while q and q[0].timestamp <= ts:
            found = q.popleft()
        if found is not None and found.timestamp == ts:
            return found
        return Packet.empty(self.settled())


class _SyncSet:
    """Streams synchronised together (MediaPipe ``InputStreamHandler::SyncSet``)."""

    __slots__ = ("ids", "last_processed", "process_bounds", "streams")

    def __init__(self, ids: list[int], streams: list[InputStream], process_bounds: bool) -> None:
        self.ids = ids
        self.streams = [streams[i] for i in ids]
        self.process_bounds = process_bounds
        self.last_processed = _UNSET

    def readiness(self) -> Any:
        """Return the input timestamp to process, ``CLOSE``, or None when not ready."""
        min_bound = _DONE
        min_packet = _DONE
        for s in self.streams:
            if s.queue:
                t = s.queue[0].timestamp
                if t < min_packet:
                    min_packet = t
            elif s.bound < min_bound:
                min_bound = s.bound
        if min_packet >= _ONE_OVER_POST_STREAM and min_bound >= _ONE_OVER_POST_STREAM:
            self.last_processed = _MAX
            return CLOSE
        if not self.process_bounds:
            if min_bound > min_packet:
                self.last_processed = min_packet
                return min_packet
            return None
        if min_packet == _POST_STREAM and min_bound > min_packet:
            settled = min_packet
        else:
            settled = previous_allowed_in_stream(min_bound)
        ts = min(min_packet, settled)
        if ts > max(self.last_processed, _UNSTARTED):
            self.last_processed = ts
            return ts
        return None

    def fill(self, ts: int, out: list[Packet]) -> None:
        """Pop the packets at ``ts`` into ``out`` (indexed by stream id)."""
        for i, s in zip(self.ids, self.streams):
            out[i] = s.pop_at(ts)

    def fill_bounds(self, out: list[Packet]) -> None:
        """Put an empty packet at each stream's settled timestamp into ``out``."""
        for i, s in zip(self.ids, self.streams):
            out[i] = Packet.empty(s.settled())


class InputStreamHandler:
    """Base: subclasses implement ``next_input_set``."""

    name = ""

    def __init__(
        self, streams: list[InputStream], tag_map: TagMap, options: Any, process_bounds: bool
    ) -> None:
        self.streams = streams
        self.process_bounds = process_bounds

    def next_input_set(self) -> Any:
        """Return ``(timestamp, packets)``, ``CLOSE``, or None when not ready."""
        raise NotImplementedError

    def on_push(self, stream: InputStream) -> None:
        """Hook called after packets were appended to ``stream``."""


class DefaultInputStreamHandler(InputStreamHandler):
    """Timestamp-synchronised delivery over all inputs (one sync set of every stream)."""

    name = "DefaultInputStreamHandler"

    def __init__(
        self, streams: list[InputStream], tag_map: TagMap, options: Any, process_bounds: bool
    ) -> None:
        super().__init__(streams, tag_map, options, process_bounds)
        self.sync_set = _SyncSet(list(range(len(streams))), streams, process_bounds)
        self.single = streams[0] if len(streams) == 1 and not process_bounds else None

    def next_input_set(self) -> Any:
        single = self.single
        if single is not None:
            # Fast path: one stream, packets only. Equivalent to the sync-set rule.
            q = single.queue
            if q:
                p = q.popleft()
                if p.timestamp >= single.bound:
                    single.bound = ts_mod.next_allowed_in_stream(p.timestamp)
                return p.timestamp, [p]
            return CLOSE if single.bound >= _ONE_OVER_POST_STREAM else None
        ready = self.sync_set.readiness()
        if ready is None or ready is CLOSE:
            return ready
        packets: list[Packet] = [_NO_PACKET] * len(self.streams)
        self.sync_set.fill(ready, packets)
        return ready, packets


_NO_PACKET = Packet.empty()


class FixedSizeInputStreamHandler(DefaultInputStreamHandler):
    """Default handler that keeps input queues short by dropping the oldest packets.

    Follows ``fixed_size_input_stream_handler.cc``: once a queue reaches ``trigger_queue_size``
    it is cut to its newest ``target_queue_size`` packets (below the trigger, to its newest
    ``trigger_queue_size - 1``); packets older than the newest kept timestamp are dropped on
    every stream. With ``fixed_min_size`` every queue must reach the trigger before any is cut.
    """

    name = "FixedSizeInputStreamHandler"

    def __init__(
        self, streams: list[InputStream], tag_map: TagMap, options: Any, process_bounds: bool
    ) -> None:
        super().__init__(streams, tag_map, options, process_bounds)
        self.single = None
        self.trigger = 2
        self.target = 1
        self.fixed_min_size = False
        if options is not None:
            self.trigger = options.trigger_queue_size
            self.target = options.target_queue_size
            self.fixed_min_size = options.fixed_min_size
        self.kept = ts_mod.UNSET

    def on_push(self, stream: InputStream) -> None:
        self._erase(keep_one=False)

    def next_input_set(self) -> Any:
        self._erase(keep_one=False)
        ready = self.sync_set.readiness()
        if ready is None or ready is CLOSE:
            return ready
        self._erase(keep_one=True)
        ts = self._min_timestamp_to_process()
        packets: list[Packet] = [_NO_PACKET] * len(self.streams)
        self.sync_set.fill(ts, packets)
        return ts, packets

    def _erase(self, keep_one: bool) -> None:
        streams = self.streams
        if self.fixed_min_size:
            cut = ts_mod.MAX
            for s in streams:
                if len(s.queue) < self.trigger:
                    return
                cut = min(cut, s.queue[-self.target].timestamp if self.target else ts_mod.MAX)
        else:
            kept = self.kept
            for s in streams:
                size = len(s.queue)
                keep = self.target if size >= self.trigger else self.trigger - 1
                if size > keep:
                    newest_dropped = s.queue[size - keep - 1].timestamp
                    kept = max(kept, ts_mod.next_allowed_in_stream(newest_dropped))
            if keep_one:
                kept = min(kept, _previous_in_range(self._min_stream_bound()))
            self.kept = cut = kept
        for s in streams:
            q = s.queue
            while q and q[0].timestamp < cut:
                q.popleft()

    def _min_stream_bound(self) -> int:
        result = _DONE
        for s in self.streams:
            b = ts_mod.next_allowed_in_stream(s.queue[-1].timestamp) if s.queue else s.bound
            result = min(result, b)
        return result

    def _min_timestamp_to_process(self) -> int:
        result = _DONE
        for s in self.streams:
            t = s.queue[0].timestamp if s.queue else _previous_in_range(s.bound)
            result = min(result, t)
        return result


def _previous_in_range(bound: int) -> int:
    return bound - 1 if ts_mod.is_range_value(bound) else bound


class ImmediateInputStreamHandler(InputStreamHandler):
    """Delivers whatever arrives, with no cross-stream synchronisation (a sync set per stream).

    With ``PROCESS_TIMESTAMP_BOUNDS`` a stream that becomes done is processed once more at
    ``Timestamp::Max()`` before the node closes, as in MediaPipe.
    """

    name = "ImmediateInputStreamHandler"

    def __init__(
        self, streams: list[InputStream], tag_map: TagMap, options: Any, process_bounds: bool
    ) -> None:
        super().__init__(streams, tag_map, options, process_bounds)
        self.sets = [_SyncSet([i], streams, process_bounds) for i in range(len(streams))]
        self.ready = [_UNSET] * len(streams)

    def next_input_set(self) -> Any:
        ready = self.ready
        input_ts = _DONE
        min_bound = _DONE
        became_done = False
        for i, sync_set in enumerate(self.sets):
            if ready[i] > _UNSET:
                min_bound = min(min_bound, ready[i])
                input_ts = min(input_ts, ready[i])
                continue
            previous = sync_set.last_processed
            result = sync_set.readiness()
            if result is CLOSE:
                if self.process_bounds:
                    if previous < _MAX:
                        min_bound = min(min_bound, _MAX)
                        input_ts = min(input_ts, _MAX)
                        ready[i] = _MAX
                    else:
                        ready[i] = _DONE
                elif previous < _DONE:
                    became_done = True
                    ready[i] = _DONE
                continue
            stream = sync_set.streams[0]
            min_bound = min(min_bound, stream.min_timestamp_or_bound())
            if result is not None:
                ready[i] = result
                input_ts = min(input_ts, result)
        if min_bound == _DONE:
            return CLOSE
        if input_ts < _DONE:
            return input_ts, self._fill(input_ts)
        if became_done:
            return min_bound, self._fill(min_bound)
        return None

    def _fill(self, ts: int) -> list[Packet]:
        packets: list[Packet] = [_NO_PACKET] * len(self.streams)
        for i, sync_set in enumerate(self.sets):
            if self.ready[i] == ts:
                sync_set.fill(ts, packets)
                self.ready[i] = _UNSET
            else:
                sync_set.fill_bounds(packets)
        return packets


class SyncSetInputStreamHandler(InputStreamHandler):
    """Independent synchronisation sets; each call serves the first ready set.

    The listed ``sync_set``s come first, then one set of every remaining stream; streams of the
    other sets get an empty packet at their settled timestamp.
    """

    name = "SyncSetInputStreamHandler"

    def __init__(
        self, streams: list[InputStream], tag_map: TagMap, options: Any, process_bounds: bool
    ) -> None:
        super().__init__(streams, tag_map, options, process_bounds)
        self.sets = [
            _SyncSet(ids, streams, process_bounds)
            for ids in sync_sets_from_options(tag_map, options)
        ]

    def next_input_set(self) -> Any:
        sets = self.sets
        chosen = None
        ts = _DONE
        k = 0
        while k < len(sets):
            result = sets[k].readiness()
            if result is CLOSE:
                del sets[k]
                continue
            if result is not None:
                chosen, ts = sets[k], result
                break
            k += 1
        if chosen is None:
            return CLOSE if not sets else None
        packets = [Packet.empty(s.settled()) for s in self.streams]
        chosen.fill(ts, packets)
        return ts, packets


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
