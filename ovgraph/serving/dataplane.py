"""The data plane: run one request on one graph under the serving policy, for every frontend.

Every frontend (OpenAI REST, KServe REST, KServe gRPC unary and streaming) decodes its request,
asks the ``DataPlane`` for an ``Execution`` and frames what comes back; none of them touches a
graph or applies policy itself. One pipeline, in this order, applies to all of them:

1. **drain** — while the server shuts down new executions are refused (503 / UNAVAILABLE);
2. **admission** — a slot of the servable's bounded concurrency, waiting in a bounded FIFO queue
   (:mod:`ovgraph.serving.admission`; a full queue is 503 / RESOURCE_EXHAUSTED);
3. **off-loop start** — opening the nodes and feeding the inputs run on a worker thread, so the
   event loop stays free to notice disconnects;
4. **deadline** — waiting longer than ``request_timeout`` seconds for the next output cancels
   the run (504 / DEADLINE_EXCEEDED);
5. **cancellation** — ``Execution.cancel()`` (the client went away) stops the run from any phase,
   from any thread;
6. **metrics** — running, queued and rejected requests, and OVMS's request and graph families
   (:mod:`ovgraph.metrics`; gRPC calls are counted in ``ovgraph_requests_total`` here, REST
   requests by the REST application).

The policy lives on one asyncio loop: the server's (Tornado's) loop, or, for a frontend used
without one (a gRPC server on its own), a private loop thread started on first use. Threads call
in through :meth:`DataPlane.call`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from ovgraph import metrics, tracing
from ovgraph.errors import (
    DeadlineExceededError,
    GraphCancelledError,
    ServableNotReadyError,
)
from ovgraph.framework.packet import Packet
from ovgraph.serving.admission import (
    DEFAULT_MAX_QUEUED,
    DEFAULT_REQUEST_TIMEOUT,
    AdmissionController,
)
from ovgraph.serving.graph_definition import GraphDefinition
from ovgraph.serving.repository import ModelRepository
from ovgraph.serving.request_metrics import ExecutionStats
from ovgraph.serving.run import GraphRun

__all__ = ["DataPlane", "Execution"]

logger = logging.getLogger("ovgraph.graph")
T = TypeVar("T")

_DONE = object()
_TICK = object()
SHUTTING_DOWN = "Server is shutting down"


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class DataPlane:
    """Runs requests on the repository's graphs under one policy (see the module docstring).

    Args:
        repository: the servables.
        max_queued: most requests waiting for admission over all servables.
        request_timeout: seconds a request may wait for its next output (0: no deadline).
        loop: the asyncio loop the policy runs on (default: the loop of the first async caller,
            or a private loop thread for callers that have none).
    """

    def __init__(
        self,
        repository: ModelRepository | None = None,
        *,
        max_queued: int = DEFAULT_MAX_QUEUED,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.repository = repository if repository is not None else ModelRepository()
        self.admission = AdmissionController(max_queued)
        self.request_timeout = float(request_timeout or 0.0)
        self.draining = False
        self._loop = loop
        self._loop_lock = threading.Lock()
        self._active: set[Execution] = set()
        self._idle: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"DataPlane(draining={self.draining}, active={len(self._active)})"

    # ------------------------------------------------------------------ the loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The policy loop (a private loop thread is started when none was bound)."""
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="ovgraph-dataplane", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    def _bind(self) -> None:
        running = asyncio.get_running_loop()
        with self._loop_lock:
            if self._loop is None:
                self._loop = running
        if self._loop is not running:
            raise RuntimeError("DataPlane used from an event loop other than its own")

    def call(self, awaitable: Awaitable[T], on_cancel: Callable[[Callable[[], Any]], Any]
             | None = None) -> T:
        """Run ``awaitable`` on the policy loop from another thread and return its result.

        Args:
            awaitable: a coroutine of this data plane (``Execution.start`` / ``next`` …).
            on_cancel: receives a function that cancels the call (e.g. gRPC's
                ``context.add_callback``, fired when the client goes away).
        """
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), self.loop)
        if on_cancel is not None:
            on_cancel(future.cancel)
        return future.result()

    # ------------------------------------------------------------------ servables

    def servable(self, name: str) -> GraphDefinition:
        """The servable ``name``, ready for runs.

        Raises:
            ServableNotFoundError: no such servable.
            ServableNotReadyError: it is not AVAILABLE.
        """
        definition = self.repository.get(name)
        if not definition.available:
            reason = f": {definition.error}" if definition.error else ""
            raise ServableNotReadyError(f'Model "{name}" is not ready{reason}')
        return definition

    def execution(
        self,
        definition: GraphDefinition,
        outputs: Iterable[str] | None = None,
        headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        *,
        interface: str | None = None,
        method: str | None = None,
    ) -> Execution:
        """A new execution of ``definition``; use it as ``async with`` (or call ``finish``).

        ``headers`` (HTTP headers or gRPC metadata) may carry a W3C ``traceparent`` that
        becomes the parent of the run's trace (``ovgraph.tracing``). ``interface`` (``REST``,
        ``gRPC``) and ``method`` (``Unary``, ``Stream``, ``ModelInfer``, ``ModelInferStream``)
        label OVMS's metrics; by default they follow from the call: gRPC metadata is a sequence
        of pairs, HTTP headers a mapping; ``outputs`` are given by the OpenAI (``V3``) route.
        """
        return Execution(self, definition, outputs, headers, interface=interface, method=method)

    # ------------------------------------------------------------------ drain

    @property
    def active(self) -> int:
        """Executions not finished yet (queued, running, or being answered)."""
        return len(self._active)

    def _track(self, execution: Execution) -> None:
        self._active.add(execution)

    def _untrack(self, execution: Execution) -> None:
        self._active.discard(execution)
        if not self._active and self._idle is not None:
            self._idle.set()

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until no execution is left; False on timeout."""
        self._bind()
        if not self._active:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            return not self._active
        return True

    def abort_all(self) -> None:
        """Cancel every execution (drain timeout)."""
        for execution in list(self._active):
            execution.cancel()


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


class Execution:
    """One request on one graph under the data plane's policy.

    ``start`` applies drain, admission and the off-loop start; ``next`` yields each output
    ``(stream, packet)`` in order, None at the end, or raises the run's error (or the deadline);
    ``cancel`` works from any thread in any phase; ``finish`` (or leaving ``async with``) ends
    the execution and releases what it holds.
    """

    def __init__(
        self,
        plane: DataPlane,
        definition: GraphDefinition,
        outputs: Iterable[str] | None,
        headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        *,
        interface: str | None = None,
        method: str | None = None,
    ) -> None:
        self.plane = plane
        self.definition = definition
        self.outputs = None if outputs is None else list(outputs)
        self.headers = headers
        self.stats = ExecutionStats(definition.name, headers, outputs is not None, interface,
                                     method)
        self.run: GraphRun | None = None
        self.cancelled = False
        self._queue: asyncio.Queue[Any] | None = None
        self._acquiring: asyncio.Future[None] | None = None
        self._admitted = False
        self._released = False
        self._ended = False
        self._finished = False

    async def __aenter__(self) -> Execution:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.finish()

    # ------------------------------------------------------------------ starting

    async def start(
        self,
        feed: Callable[[GraphRun], None] | None = None,
        side_packets: Mapping[str, Any] | None = None,
    ) -> None:
        """Admit, start the run off the loop, and call ``feed(run)`` there to add inputs.

        Raises:
            ServableNotReadyError: the server is draining, or the servable went away.
            OverloadedError: the admission queue is full.
            GraphCancelledError: cancelled before the run started.
            OvGraphError: the run could not start (e.g. a side packet the graph rejects).
        """
        plane = self.plane
        plane._bind()
        loop = asyncio.get_running_loop()
        if plane.draining:
            metrics.REQUESTS_REJECTED.labels(reason="draining").inc()
            raise ServableNotReadyError(SHUTTING_DOWN)
        plane._track(self)
        self._queue = asyncio.Queue()
        self._acquiring = asyncio.ensure_future(plane.admission.acquire(self.definition))
        waited = time.monotonic()
        try:
            await self._acquiring
        except asyncio.CancelledError:
            if self.cancelled:
                raise GraphCancelledError("The request was cancelled") from None
            raise
        finally:
            self._acquiring = None
        self.stats.waited(time.monotonic() - waited)
        self._admitted = True
        if self.cancelled:
            raise GraphCancelledError("The request was cancelled")
        queue = self._queue

        def on_output(stream: str, packet: Packet) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (stream, packet))

        def on_done(error: BaseException | None) -> None:
            loop.call_soon_threadsafe(self._run_ended, error)

        def begin() -> GraphRun:
            with tracing.incoming(self.headers):
                run = GraphRun(self.definition, on_output, on_done, self.outputs)
            self.run = run
            run.start(side_packets)
            self.stats.graph_started()
            if feed is not None:
                try:
                    feed(run)
                except Exception:
                    self.stats.rejected = True
                    if run.has_error:
                        return run  # the run's own error is reported through next()
                    run.cancel()
                    raise
            return run

        try:
            await loop.run_in_executor(None, begin)
        except BaseException:
            self._release()
            raise
        if self.cancelled:
            self._cancel_run()

    def _run_ended(self, error: BaseException | None) -> None:
        self.stats.graph_ended(error, self.cancelled)
        self._ended = True
        self._release()
        if self._queue is not None:
            self._queue.put_nowait((_DONE, error))

    def _release(self) -> None:
        if self._admitted and not self._released:
            self._released = True
            self.plane.admission.release(self.definition)

    # ------------------------------------------------------------------ outputs

    async def next(self) -> tuple[str, Packet] | None:
        """The next output ``(stream, packet)``, or None when the run ended well.

        Raises:
            DeadlineExceededError: no output within the data plane's ``request_timeout``.
            OvGraphError: the run's error (``GraphCancelledError`` once cancelled).
        """
        queue = self._queue
        if queue is None:
            raise RuntimeError("Execution.next() before start()")
        timeout = self.plane.request_timeout
        while True:
            try:
                if timeout > 0:
                    item = await asyncio.wait_for(queue.get(), timeout)
                else:
                    item = await queue.get()
            except asyncio.TimeoutError:
                self._cancel_run()
                self.stats.error = DeadlineExceededError(
                    f"The request produced no output within {timeout:g} seconds"
                )
                raise self.stats.error from None
            if item is _TICK:
                continue
            if isinstance(item, _Failure):
                self.stats.error = item.error
                raise item.error
            if isinstance(item, tuple) and item[0] is _DONE:
                queue.put_nowait(item)  # every later call sees the end too
                if item[1] is not None:
                    self.stats.error = item[1]
                    raise item[1]
                return None
            if isinstance(item, tuple):  # an output packet (not a note of the frontend's)
                self.stats.response(item[1])
            return item  # type: ignore[no-any-return]

    def touch(self) -> None:
        """Thread-safe: the client just sent more input; the deadline starts afresh."""
        self._post(_TICK)

    def note(self, item: Any) -> None:
        """Thread-safe: ``next()`` returns ``item`` as is after the outputs already produced."""
        self._post(item)

    def fail(self, error: BaseException) -> None:
        """Thread-safe: end the execution with ``error`` (e.g. a bad follow-up request)."""
        self._post(_Failure(error))
        self.cancel()

    def _post(self, item: Any) -> None:
        queue = self._queue
        if queue is not None:
            self.plane.loop.call_soon_threadsafe(queue.put_nowait, item)

    # ------------------------------------------------------------------ cancel / finish

    def cancel(self) -> None:
        """Stop the execution in whatever phase it is; safe from any thread, idempotent."""
        loop = self.plane._loop
        if loop is None:  # nothing started yet
            self.cancelled = True
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._cancel_on_loop()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel_on_loop)

    def _cancel_on_loop(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        if self._acquiring is not None and not self._acquiring.done():
            self._acquiring.cancel()
        self._cancel_run()

    def _cancel_run(self) -> None:
        """Cancel the run off the loop (it takes the graph's lock and schedules work)."""
        run = self.run
        if run is not None and not self._ended:
            self.plane.loop.run_in_executor(None, run.cancel)

    def finish(self) -> None:
        """The frontend is done with this execution: stop a run still going, stop tracking."""
        if self._finished:
            return
        self._finished = True
        self.stats.finished(self.cancelled and not self._ended)
        if not self._ended:
            self.cancelled = True
            if self._acquiring is not None and not self._acquiring.done():
                self._acquiring.cancel()
            self._cancel_run()
            if self.run is None:
                self._release()
        self.plane._untrack(self)

