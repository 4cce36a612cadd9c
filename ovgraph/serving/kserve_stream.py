"""``ModelStreamInfer``: many requests on one stream, each answer labelled with its own request.

One graph per stream, chosen by the first request (which may set side packets), as in OVMS. What
Triton's clients (``tritonclient.grpc`` ``async_stream_infer``) also expect, and this module adds:

- **any number of requests in flight.** Each request's packets enter the graph at one timestamp
  (``OVMS_MP_TIMESTAMP`` or the wall clock, strictly increasing). An output packet belongs to
  the request with the latest input timestamp not after its own, so its response carries that
  request's ``id`` (graphs that answer at the input timestamp are matched exactly);
- **an error answers its own request and the stream goes on.** A request that cannot be decoded
  or fed is answered with an error response carrying its id. When the graph run fails, the
  error answers the oldest request still waiting for output; the requests sent after it are fed
  again to a fresh run of the same graph (same side packets), so they are answered too. Only an
  error before any graph is selected (unknown model, bad first request) ends the call;
- **final responses** for clients that ask (``triton_enable_empty_final_response``): once the
  graph has gone idle after a request, or a later request produced output, an empty response
  with that request's id and ``triton_final_response: true`` follows its answers (answers carry
  ``triton_final_response: false``);
- **HTTP graphs answer one request per run.** A graph fed an ``HttpPayload`` (OVMS's LLM graphs,
  which serve one HTTP request per run and keep that request's state in their calculators) gets
  a run of its own for every request of the stream, started as the request arrives; answers then
  belong to their run, whatever timestamps the graph's loopbacks reach, and several streamed
  chats may be in flight on one stream;
- **no idle streams forever.** A stream that sends nothing and produces nothing for
  ``request_timeout`` seconds ends with ``DEADLINE_EXCEEDED`` (``idle_timeout`` argument).

Requests are read on a thread of their own; outputs reach the caller's thread (a gRPC worker)
through one queue, in order.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ovgraph.errors import DeadlineExceededError, RequestError
from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.packet import Packet
from ovgraph.serving.dataplane import DataPlane, Execution
from ovgraph.serving.graph_definition import GraphDefinition
from ovgraph.serving.kserve_types import (
    InferRequest,
    InferResponse,
    StreamFailure,
    _output_tensor,
)
from ovgraph.serving.payload import HttpPayload

__all__ = [
    "ENABLE_FINAL_PARAM",
    "FINAL_PARAM",
    "BadStreamRequest",
    "RequestFailure",
    "stream_infer",
]

logger = logging.getLogger("ovgraph.graph")

ENABLE_FINAL_PARAM = "triton_enable_empty_final_response"
FINAL_PARAM = "triton_final_response"
_CLIENT_PARAMS = frozenset({ENABLE_FINAL_PARAM})
_END = object()


@dataclass
class BadStreamRequest:
    """A stream message the frontend could not decode (answered as that request's error)."""

    error: BaseException
    id: str = ""
    model_name: str = ""


@dataclass
class RequestFailure:
    """One request of a stream failed; the stream goes on."""

    error: BaseException
    id: str
    model_name: str


@dataclass
class _Pending:
    """A request fed to the stream's graph and not known to be complete yet."""

    id: str
    stamp: int
    packets: list[tuple[str, Any]]
    wants_final: bool
    answered: bool = False
    final_queued: bool = False


@dataclass(eq=False)
class _Run:
    """One execution of the stream's graph and the requests fed to it, in timestamp order."""

    execution: Execution
    pending: list[_Pending] = field(default_factory=list)
    failed: bool = False
    requests: list[_Pending] = field(default_factory=list)  # every request fed to it

    def owner(self, stamp: int) -> _Pending | None:
        stamps = [p.stamp for p in self.pending]
        index = bisect.bisect_right(stamps, stamp) - 1
        return self.pending[max(index, 0)] if self.pending else None


class _Session:
    """One ``ModelStreamInfer`` call (see the module docstring)."""

    def __init__(
        self,
        plane: DataPlane,
        headers: Any,
        idle_timeout: float,
        input_packets: Callable[[GraphDefinition, InferRequest], list[tuple[str, Any]]],
        side_packets: Callable[[dict[str, Any]], dict[str, Any]],
        timestamp: Callable[[dict[str, Any]], int | None],
    ) -> None:
        self.plane = plane
        self.headers = headers
        self.idle_timeout = idle_timeout
        self.input_packets = input_packets
        self.side_packets = side_packets
        self.timestamp = timestamp
        self.events: queue.Queue[Any] = queue.Queue()
        self.lock = threading.Lock()
        self.start_lock = threading.RLock()  # one run is started at a time
        self.definition: GraphDefinition | None = None
        self.side: dict[str, Any] = {}
        self.model_name = ""
        self.run: _Run | None = None  # the latest run
        self.per_request = False  # a run per request (HTTP graphs), see the module docstring
        self.live: list[_Run] = []  # runs whose outputs are still to come
        self.last_ts = ts_mod.UNSTARTED
        self.client_gone = False
        self.reading = True
        self.finalizer: threading.Thread | None = None
        self.activity = threading.Event()

    # ------------------------------------------------------------------ reading requests

    def read(self, requests: Iterator[InferRequest | BadStreamRequest]) -> None:
        """Feed every request of the stream (on the reader thread)."""
        try:
            for request in requests:
                if self.client_gone:
                    return
                self.activity.set()
                try:
                    self._submit(request)
                except Exception as exc:
                    if self.definition is None:
                        self.events.put(StreamFailure(exc, started=False))
                        return
                    self.events.put(RequestFailure(exc, _id(request), self.model_name))
        except Exception as exc:  # the transport failed (client gone, reset…)
            logger.debug("Stream reader stopped: %s", exc)
        finally:
            with self.start_lock:
                with self.lock:
                    self.reading = False
                    run, live = self.run, bool(self.live)
                if self.per_request:
                    if not live:
                        self.events.put(_END)
                elif run is not None and not run.failed and run.execution.run is not None:
                    run.execution.run.close()
                elif run is None or run.failed:
                    self.events.put(_END)

    def _submit(self, request: InferRequest | BadStreamRequest) -> None:
        if isinstance(request, BadStreamRequest):
            raise request.error
        if self.definition is None:
            self._first(request)
            return
        if request.model_name != self.model_name or request.model_version not in ("", "0", "1"):
            raise RequestError("Every request of a stream must name the model of its first request")
        extra = [k for k in request.parameters if k not in _FOLLOW_UP_PARAMS]
        if extra:
            raise RequestError("Side packets can only be set in the first request of a stream")
        packets = self.input_packets(self.definition, _without_client_params(request))
        pending = _Pending(request.id, self._stamp(request), packets, _wants_final(request))
        if self.per_request:
            with self.start_lock:
                self._start([pending], close=True)
            return
        with self.start_lock:
            with self.lock:
                run = self.run
                usable = run is not None and not run.failed
                if usable:
                    assert run is not None and run.execution.run is not None
                    run.pending.append(pending)
                    try:
                        for name, payload in packets:
                            run.execution.run.add(name, payload, pending.stamp)
                    except BaseException:
                        run.pending.remove(pending)  # refused (e.g. a timestamp not after the last)
                        raise
            if usable:
                assert run is not None
                run.execution.touch()
            else:  # the previous run failed: this request starts the next one
                self._start([pending])
        self._watch_final(pending)

    def _first(self, request: InferRequest) -> None:
        definition = self.plane.servable(request.model_name)
        plain = _without_client_params(request)
        packets = self.input_packets(definition, plain)
        side = self.side_packets(plain.parameters)
        pending = _Pending(request.id, self._stamp(request), packets, _wants_final(request))
        self.per_request = any(isinstance(p, HttpPayload) for _, p in packets)
        with self.start_lock:
            self._start([pending], definition, side, close=self.per_request)
        self.definition, self.side, self.model_name = definition, side, request.model_name
        if not self.per_request:
            self._watch_final(pending)

    def _start(
        self,
        pending: list[_Pending],
        definition: GraphDefinition | None = None,
        side: dict[str, Any] | None = None,
        close: bool = False,
    ) -> None:
        """Start a run of the stream's graph fed with ``pending`` (raises if it cannot start).

        Called with ``start_lock`` held; the run's inputs are closed after the feed when
        ``close`` is set or the client has sent everything.
        """
        definition = definition or self.definition
        assert definition is not None
        execution = self.plane.execution(definition, headers=self.headers)
        close = close or not self.reading

        def feed(graph_run: Any) -> None:
            for item in pending:
                for name, payload in item.packets:
                    graph_run.add(name, payload, item.stamp)
            if close:
                graph_run.close()

        try:
            self.plane.call(execution.start(feed, dict(self.side if side is None else side)))
        except BaseException:
            self.plane.loop.call_soon_threadsafe(execution.finish)
            raise
        run = _Run(execution, list(pending), requests=list(pending))
        with self.lock:
            self.run = run
            self.live.append(run)
        if self.client_gone:
            execution.cancel()
        asyncio.run_coroutine_threadsafe(self._pump(run), self.plane.loop)

    def _stamp(self, request: InferRequest) -> int:
        stamp = self.timestamp(request.parameters)
        if stamp is None:
            stamp = max(time.time_ns() // 1000, self.last_ts + 1)
        self.last_ts = stamp
        return stamp

    # ------------------------------------------------------------------ outputs

    async def _pump(self, run: _Run) -> None:
        """Move the run's outputs (and its end) to the caller's queue, in order."""
        try:
            while (item := await run.execution.next()) is not None:
                self.events.put((run, item))
        except Exception as exc:
            self.events.put((run, exc))
            return
        self.events.put((run, None))

    def responses(self) -> Iterator[InferResponse | Any | RequestFailure | StreamFailure]:
        """What the caller sends back, until the stream is over."""
        timeout = self.idle_timeout if self.idle_timeout > 0 else None
        while True:
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                if self.activity.is_set():  # the client sent something meanwhile
                    self.activity.clear()
                    continue
                yield StreamFailure(
                    DeadlineExceededError(
                        f"The stream sent and produced nothing within {self.idle_timeout:g} seconds"
                    ),
                    started=self.run is not None,
                )
                return
            self.activity.clear()
            if event is _END:
                return
            if isinstance(event, (StreamFailure, RequestFailure, InferResponse)):
                yield event
                if isinstance(event, StreamFailure):
                    return
                continue
            run, item = event
            if item is None:  # the run ended well: every request is complete
                yield from self._finals(run, run.pending)
                if self._ended(run):
                    return
                continue
            if isinstance(item, _Finals):
                with self.lock:
                    done = [p for p in item.items if p in run.pending]
                    for p in done:
                        run.pending.remove(p)
                yield from self._finals(run, done)
                continue
            if isinstance(item, BaseException):
                out, over = self._failed(run, item)
                yield from out
                if over:
                    return
                continue
            yield from self._answer(run, *item)

    def _ended(self, run: _Run) -> bool:
        """``run`` has no more outputs; return whether the stream is over."""
        with self.lock:
            if run in self.live:
                self.live.remove(run)
            over = not self.per_request or (not self.reading and not self.live)
        if self.per_request:
            self.plane.loop.call_soon_threadsafe(run.execution.finish)
            for item in run.requests:
                for _, payload in item.packets:
                    if isinstance(payload, HttpPayload):
                        payload.release()
        return over

    def _answer(self, run: _Run, stream: str, packet: Packet) -> Iterator[Any]:
        with self.lock:
            owner = run.owner(packet.timestamp)
            done = [] if owner is None else run.pending[: run.pending.index(owner)]
            del run.pending[: len(done)]
            if owner is not None:
                owner.answered = True
        yield from self._finals(run, done)
        graph_run = run.execution.run
        assert graph_run is not None
        if graph_run.output_tags.get(stream, "").startswith("RESPONSE"):
            yield packet.payload
            return
        parameters: dict[str, Any] = {"OVMS_MP_TIMESTAMP": packet.timestamp}
        if owner is not None and owner.wants_final:
            parameters[FINAL_PARAM] = False
        yield InferResponse(
            model_name=self.model_name,
            outputs=[_output_tensor(stream, packet.payload)],
            id=owner.id if owner is not None else "",
            parameters=parameters,
        )

    def _finals(self, run: _Run, done: list[_Pending]) -> Iterator[InferResponse]:
        for item in done:
            if item.wants_final:
                yield InferResponse(
                    model_name=self.model_name, id=item.id, parameters={FINAL_PARAM: True}
                )

    def _failed(self, run: _Run, error: BaseException) -> tuple[list[Any], bool]:
        """The run failed: answer the request it failed on, feed the later ones to a new run.

        Returns what to send and whether the stream is over.
        """
        with self.start_lock:
            with self.lock:
                run.failed = True
                waiting = [p for p in run.pending if not p.answered]
                victim = waiting[0] if waiting else (run.pending[-1] if run.pending else None)
                later = [p for p in run.pending if victim is not None and p.stamp > victim.stamp]
                done = [p for p in run.pending if p is not victim and p not in later]
                run.pending.clear()
            self.plane.loop.call_soon_threadsafe(run.execution.finish)
            out: list[Any] = list(self._finals(run, done))
            if self.client_gone:
                return out, True
            out.append(RequestFailure(error, victim.id if victim else "", self.model_name))
            if victim is not None and victim.wants_final:
                out.extend(self._finals(run, [victim]))
            over = self._ended(run)
            if self.per_request or not later:
                return out, over and not self.reading
            try:
                self._start(later)
            except Exception as exc:
                out.append(StreamFailure(exc, started=True))
                return out, True
            return out, False

    # ------------------------------------------------------------------ final responses

    def _watch_final(self, pending: _Pending) -> None:
        """Start the idle watcher the first time a request asks for final responses."""
        if not pending.wants_final or self.finalizer is not None:
            return
        self.finalizer = threading.Thread(
            target=self._finalize, name="ovgraph-kserve-final", daemon=True
        )
        self.finalizer.start()

    def _finalize(self) -> None:
        """Mark requests final once the graph went idle after them (on its own thread)."""
        while not self.client_gone:
            with self.lock:
                run = self.run
                todo = (
                    []
                    if run is None
                    else [p for p in run.pending if p.wants_final and not p.final_queued]
                )
            graph_run = None if run is None else run.execution.run
            if run is None or graph_run is None or not todo:
                if not self.reading and (run is None or not run.pending):
                    return
                time.sleep(0.05)
                continue
            try:
                graph_run.graph.wait_until_idle(0.5)
            except TimeoutError:
                continue
            except Exception:
                time.sleep(0.01)
                continue
            if graph_run.graph.done:
                return
            # The outputs produced before idleness are queued; the marker goes behind them.
            with self.lock:
                for p in todo:
                    p.final_queued = True
            run.execution.note(_Finals(run, todo))
            time.sleep(0.01)

    # ------------------------------------------------------------------ cancel

    def cancel(self) -> None:
        """The client went away (or the caller stopped reading)."""
        self.client_gone = True
        for run in self._runs():
            run.execution.cancel()
        self.events.put(_END)

    def close(self) -> None:
        """Release the runs."""
        for run in self._runs():
            self.plane.loop.call_soon_threadsafe(run.execution.finish)

    def _runs(self) -> list[_Run]:
        with self.lock:
            return list(dict.fromkeys([*self.live, *([self.run] if self.run else [])]))


@dataclass
class _Finals:
    run: _Run
    items: list[_Pending]


_FOLLOW_UP_PARAMS = frozenset({"OVMS_MP_TIMESTAMP", "uri", ENABLE_FINAL_PARAM})


def _id(request: InferRequest | BadStreamRequest) -> str:
    return request.id


def _wants_final(request: InferRequest) -> bool:
    return request.parameters.get(ENABLE_FINAL_PARAM) is True


def _without_client_params(request: InferRequest) -> InferRequest:
    if not any(k in request.parameters for k in _CLIENT_PARAMS):
        return request
    parameters = {k: v for k, v in request.parameters.items() if k not in _CLIENT_PARAMS}
    return InferRequest(
        model_name=request.model_name,
        inputs=request.inputs,
        model_version=request.model_version,
        id=request.id,
        parameters=parameters,
        raw=request.raw,
    )


def stream_infer(
    plane: DataPlane,
    requests: Iterator[InferRequest | BadStreamRequest],
    *,
    input_packets: Callable[[GraphDefinition, InferRequest], list[tuple[str, Any]]],
    side_packets: Callable[[dict[str, Any]], dict[str, Any]],
    timestamp: Callable[[dict[str, Any]], int | None],
    register_cancel: Callable[[Callable[[], None]], Any] | None = None,
    headers: Any = None,
    idle_timeout: float | None = None,
) -> Iterator[InferResponse | Any | RequestFailure | StreamFailure]:
    """Serve one request stream (blocking; for thread-pool frontends such as gRPC).

    Yields responses (each labelled with its request's id), ``RequestFailure`` for one failed
    request (the stream goes on), or a final ``StreamFailure`` (the call ends with its error).
    ``idle_timeout`` (default: the data plane's ``request_timeout``) ends a stream that sends
    and produces nothing for that long.
    """
    timeout = plane.request_timeout if idle_timeout is None else idle_timeout
    session = _Session(plane, headers, timeout, input_packets, side_packets, timestamp)
    if register_cancel is not None:
        register_cancel(session.cancel)
    reader = threading.Thread(
        target=session.read, args=(requests,), name="ovgraph-kserve-stream", daemon=True
    )
    reader.start()
    try:
        yield from session.responses()
    finally:
        session.cancel()
        session.close()
