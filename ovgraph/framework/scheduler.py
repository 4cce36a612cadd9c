"""``Scheduler``: the ready queues and worker loop of one graph run (MediaPipe's ``Scheduler``).

A node that becomes ready is pushed on its executor's ready heap, nodes nearer the graph outputs
first (sources last). Up to the executor's thread limit, workers from the shared pool
(``executor.py``) drain the heap: each pops a node, asks the run what it should do, calls it
outside the run's lock and goes on with the next ready node. The worker that made a node ready
usually runs it next, so a packet crosses a chain without changing threads.

Everything here runs under the run's lock except the node calls themselves.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from typing import Any, Protocol

from ovgraph.framework import executor
from ovgraph.framework.node import OPEN, CalculatorNode

__all__ = ["Scheduler"]

Calls = list[tuple[Any, str, Any]]


class SchedulerOwner(Protocol):
    """What the scheduler needs from its graph run."""

    def run_node(self, node: CalculatorNode, work: Any) -> Calls:
        """Outside the lock: do ``work``; return the output observer calls to make."""

    def notify(self, calls: Calls) -> None:
        """Outside the lock: call output observers."""

    def check_idle(self) -> None:
        """Under the lock: end the run if it can make no more progress."""


class Scheduler:
    """Ready heaps per executor, bounded workers, and the count of nodes in flight.

    Args:
        owner: the graph run.
        lock: the run's lock.
        limits: the thread limit of each executor (``""`` is the default one).
    """

    def __init__(
        self, owner: SchedulerOwner, lock: threading.Lock, limits: dict[str, int]
    ) -> None:
        self._owner = owner
        self._lock = lock
        self._ready: dict[str, list[tuple[int, int, CalculatorNode]]] = {n: [] for n in limits}
        self._limits = limits
        self._active = dict.fromkeys(limits, 0)
        self._seq = itertools.count()
        self.in_flight = 0
        """Nodes queued or running."""
        self.space_waiters = 0
        """Threads blocked on a full input queue: woken (``cond``) after every node call."""
        self.cond: threading.Condition | None = None
        self.stopping = False
        """Set when the run is cancelled or failed: open nodes are only closed."""

    def schedule(self, node: CalculatorNode) -> None:
        """Under the lock: queue ``node`` unless it is queued, running or not open."""
        if node.queued or node.running or node.state != OPEN:
            return
        node.queued = True
        self.in_flight += 1
        prio = node.priority if not node.is_source else -1
        heapq.heappush(self._ready[node.executor], (-prio, next(self._seq), node))

    def kick(self) -> None:
        """Under the lock: start a worker for each executor with ready nodes and room."""
        for name, heap in self._ready.items():
            if heap and self._active[name] < self._limits[name]:
                self._active[name] += 1
                executor.submit(self._worker, name)

    def _worker(self, executor_name: str) -> None:
        owner = self._owner
        lock = self._lock
        heap = self._ready[executor_name]
        lock.acquire()
        try:
            while heap:
                _, _, node = heapq.heappop(heap)
                node.queued = False
                work = node.next_work(self.stopping)
                if work is None:
                    self.in_flight -= 1
                    continue
                node.running = True
                lock.release()
                try:
                    calls = owner.run_node(node, work)
                    if calls:
                        owner.notify(calls)
                finally:
                    lock.acquire()
                node.running = False
                self.in_flight -= 1
                if node.state == OPEN:
                    self.schedule(node)
                if self.space_waiters and self.cond is not None:
                    self.cond.notify_all()
                self.kick()
        finally:
            self._active[executor_name] -= 1
            owner.check_idle()
            lock.release()
