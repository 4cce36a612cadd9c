"""``ElasticThreadPool``: a bounded thread pool whose idle threads exit.

``concurrent.futures.ThreadPoolExecutor`` starts threads up to ``max_workers`` as work arrives
and keeps every one of them until shutdown, so a server's thread count stays at its busiest
moment forever (each thread also keeps its stack and, with glibc, a malloc arena). This pool
starts a thread only when no thread is idle (up to ``max_workers``, then work waits in the
queue) and lets a thread exit after ``idle_timeout`` seconds without work (default
``OVGRAPH_THREAD_IDLE_SECONDS`` or 30).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["DEFAULT_IDLE_SECONDS", "ElasticThreadPool"]

DEFAULT_IDLE_SECONDS = 30.0
_STOP = object()


def _idle_seconds() -> float:
    try:
        return float(os.environ.get("OVGRAPH_THREAD_IDLE_SECONDS", DEFAULT_IDLE_SECONDS))
    except ValueError:
        return DEFAULT_IDLE_SECONDS


class ElasticThreadPool(ThreadPoolExecutor):
    """A ``concurrent.futures.Executor`` (see the module docstring).

    It is a ``ThreadPoolExecutor`` by type only (so that asyncio accepts it as a loop's default
    executor): every method it uses is its own.

    Args:
        max_workers: most threads at once.
        thread_name_prefix: threads are named ``<prefix>_<n>``.
        idle_timeout: seconds an idle thread waits for work before it exits.
    """

    def __init__(
        self, max_workers: int, thread_name_prefix: str = "pool",
        idle_timeout: float | None = None,
    ) -> None:
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        # ThreadPoolExecutor.__init__ is not called: none of its machinery is used.
        self.max_workers = max_workers
        self.idle_timeout = _idle_seconds() if idle_timeout is None else idle_timeout
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._idle = 0
        self._count = 0
        self._shutdown = False

    def __repr__(self) -> str:
        return f"ElasticThreadPool(threads={len(self._threads)}, max={self.max_workers})"

    @property
    def thread_count(self) -> int:
        """Threads alive now."""
        return len(self._threads)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; a thread starts when none is idle."""
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.put((future, fn, args, kwargs))
            if self._idle > 0:
                self._idle -= 1  # that thread takes this item
            elif len(self._threads) < self.max_workers:
                self._count += 1
                thread = threading.Thread(
                    target=self._work, name=f"{self._prefix}_{self._count}", daemon=True
                )
                self._threads.add(thread)
                thread.start()
        return future

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            try:
                item = self._queue.get(timeout=self.idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody counted on this thread: leave
                        self._idle -= 1
                        self._threads.discard(me)
                        return
                continue  # an item was promised to this thread; it is on its way
            if item is _STOP:
                with self._lock:
                    self._threads.discard(me)
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, fn, args, kwargs
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; threads end after the queued work (or at once when cancelled)."""
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    item[0].cancel()
        for _ in threads:
            self._queue.put(_STOP)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()
