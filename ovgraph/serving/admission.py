"""Admission control: bounded concurrency per servable and one bounded waiting queue.

A servable runs at most ``limit`` graph runs at once, where ``limit`` is the smallest
``max_concurrent_runs`` any of its node resources declares (e.g. an engine's sequence limit);
a servable whose resources declare nothing has no concurrency bound. Requests
over the bound wait in FIFO order; when ``max_queued`` requests already wait, the next one is
refused with :class:`~ovgraph.errors.OverloadedError` (503 with ``Retry-After``).

The controller also counts the runs in flight so that shutdown can drain them. All methods run
on the event loop thread of the frontend that owns the controller.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ovgraph import metrics
from ovgraph.errors import OverloadedError

__all__ = [
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_REQUEST_TIMEOUT",
    "AdmissionController",
    "concurrency_limit",
]

DEFAULT_MAX_QUEUED = 256
# Seconds a request may wait for its (next) output before it is cancelled.
DEFAULT_REQUEST_TIMEOUT = 600.0


def concurrency_limit(definition: Any) -> int | None:
    """The smallest ``max_concurrent_runs`` declared by the definition's node resources."""
    limits = []
    for resource in (getattr(definition, "resources", None) or {}).values():
        value = getattr(resource, "max_concurrent_runs", None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
    return min(limits) if limits else None


class _Lane:
    __slots__ = ("running", "waiters")

    def __init__(self) -> None:
        self.running = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


class AdmissionController:
    """Grants run slots per servable; see the module docstring.

    Args:
        max_queued: most requests waiting for a slot, over all servables.
    """

    def __init__(self, max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        self.max_queued = max(0, max_queued)
        self._lanes: dict[str, _Lane] = {}
        self._queued = 0
        self._in_flight = 0
        self._idle: asyncio.Event | None = None

    @property
    def in_flight(self) -> int:
        """Admitted requests not yet released."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return self._queued

    async def acquire(self, definition: Any) -> None:
        """Wait for a slot of ``definition``'s servable.

        Raises:
            OverloadedError: the waiting queue is full.
            asyncio.CancelledError: the waiting request was cancelled (client gone).
        """
        lane = self._lanes.setdefault(definition.name, _Lane())
        limit = concurrency_limit(definition)
        if limit is None or (lane.running < limit and not lane.waiters):
            self._grant(lane)
            return
        if self._queued >= self.max_queued:
            metrics.REQUESTS_REJECTED.labels(reason="queue_full").inc()
            raise OverloadedError("Server is overloaded: the request queue is full; retry later")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.waiters.append(waiter)
        self._queued += 1
        metrics.REQUESTS_QUEUED.inc()
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # The slot was granted just as the wait was abandoned: hand it on.
                self.release(definition)
            elif waiter in lane.waiters:
                lane.waiters.remove(waiter)
                self._queued -= 1
                metrics.REQUESTS_QUEUED.dec()
            raise

    def release(self, definition: Any) -> None:
        """Give a slot back (once per successful ``acquire``)."""
        lane = self._lanes.get(definition.name)
        if lane is None:
            return
        lane.running -= 1
        self._in_flight -= 1
        metrics.REQUESTS_RUNNING.dec()
        limit = concurrency_limit(definition)
        while lane.waiters and (limit is None or lane.running < limit):
            waiter = lane.waiters.popleft()
            self._queued -= 1
            metrics.REQUESTS_QUEUED.dec()
            if waiter.cancelled():
                continue
            self._grant(lane)
            waiter.set_result(None)
        if self._in_flight == 0 and self._idle is not None:
            self._idle.set()

    def _grant(self, lane: _Lane) -> None:
        lane.running += 1
        self._in_flight += 1
        metrics.REQUESTS_RUNNING.inc()
        if self._idle is not None:
            self._idle.clear()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no admitted request is in flight; False on timeout."""
        if self._in_flight == 0:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return self._in_flight == 0
        return True
