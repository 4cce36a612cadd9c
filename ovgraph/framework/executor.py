"""The one thread pool that runs graph work.

Graph runs never own threads: each run schedules its ready nodes onto this shared pool and caps
its own concurrency per executor (MediaPipe's ``num_threads``), so a new run per request costs no
thread start-up, and a calculator that blocks (a generation waiting for tokens) holds one pooled
thread, not a whole graph.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ovgraph.threads import ElasticThreadPool

__all__ = ["default_num_threads", "shutdown", "submit"]

_lock = threading.Lock()
_pool: ElasticThreadPool | None = None  # idle threads exit (ovgraph.threads)


def default_num_threads() -> int:
    """Return the default executor size: the number of usable CPUs."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _get_pool() -> ElasticThreadPool:
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                workers = int(os.environ.get("OVGRAPH_MAX_WORKERS", "512"))
                _pool = ElasticThreadPool(max_workers=workers, thread_name_prefix="ovgraph")
    return _pool


def submit(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run ``fn(*args)`` on the shared pool."""
    return _get_pool().submit(fn, *args)


def shutdown(wait: bool = True) -> None:
    """Stop the pool (server shutdown); a later ``submit`` starts a new one."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=wait, cancel_futures=True)
