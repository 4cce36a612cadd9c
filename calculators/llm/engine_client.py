"""The server's side of the engine processes: jobs, one child per servable, restart, replacement.

``EngineClient`` keeps one live ``EngineProcess`` per servable and owns its policy:

- **Readiness.** The constructor returns once the child has loaded the pipeline and said
  ``ready``; the graph is AVAILABLE only then.
- **Crash.** When a child dies, the jobs it held end with a 503 naming the exit, a new child is
  started (with back-off while loading fails), jobs submitted meanwhile wait for it, and
  ``health()`` says "restarting" for ``/v1/config``.
- **Replacement.** With an RSS limit, a child above it is replaced without failing anything: a new
  child takes new jobs, the old one is told to shut down, finishes its own jobs and exits.

Each child is spawned from one long-lived thread, so the kernel's parent-death signal (armed in
the child) fires only when the server process itself ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from calculators.llm.engine_protocol import config_to_wire, error_from_wire
from calculators.llm.engines import (
    EngineRequest,
    InProcessEngine,
    SequenceOutput,
    load_pipeline,
    make_engine,
)
from calculators.llm.metrics import RUNNING_SEQUENCES, WAITING_SEQUENCES
from ovgraph.errors import ServableNotReadyError

__all__ = [
    "EngineClient",
    "EngineProcess",
    "GenerationJob",
    "InProcessEngineClient",
    "rss_limit_from_env",
]

logger = logging.getLogger(__name__)

READY_TIMEOUT = 900.0
MONITOR_INTERVAL = 2.0
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ovgraph-engine-spawner")


def rss_limit_from_env() -> int:
    """``OVGRAPH_ENGINE_RSS_LIMIT_MB`` (``--engine_rss_limit_mb``) in bytes; 0 = no limit."""
    try:
        return max(0, int(float(os.environ.get("OVGRAPH_ENGINE_RSS_LIMIT_MB", "0")) * 2**20))
    except ValueError:
        return 0


@dataclass
class GenerationJob:
    """One request's generation as the calculator sees it: tokens arrive, it reads them."""

    prompt: str
    images: list[Any]
    config: Any
    cond: threading.Condition = field(default_factory=threading.Condition)
    new_ids: list[int] = field(default_factory=list)
    new_logprobs: list[float] = field(default_factory=list)
    read_logprobs: list[float] = field(default_factory=list)
    sequences: list[SequenceOutput] | None = None
    finished: bool = False
    cancelled: bool = False
    finish_reason: str | None = None
    completion_tokens: int = 0
    steps: int = 0
    prompt_tokens: int = 0
    error: BaseException | None = None
    wake_on_push: bool = True
    submitted_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    last_token_at: float | None = None
    running: bool = False
    on_cancel: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        WAITING_SEQUENCES.inc()

    # ------------------------------------------------------------ engine side (EngineSink)

    def started(self) -> None:
        """The job entered the pipeline."""
        with self.cond:
            if self.running or self.finished:
                return
            self.running = True
        WAITING_SEQUENCES.dec()
        RUNNING_SEQUENCES.inc()

    def push(self, ids: Sequence[int], logprobs: Sequence[float] | None = None) -> None:
        """Deliver new token ids."""
        with self.cond:
            if ids:
                now = time.monotonic()
                if self.first_token_at is None:
                    self.first_token_at = now
                self.last_token_at = now
                self.steps += 1
            self.new_ids.extend(ids)
            if logprobs is not None:
                self.new_logprobs.extend(logprobs)
            self.completion_tokens += len(ids)
            if self.wake_on_push:
                self.cond.notify_all()

    def set_sequences(self, outputs: list[SequenceOutput]) -> None:
        """Every sequence of a multi-sequence request (usage counts them all)."""
        with self.cond:
            self.sequences = outputs
            self.completion_tokens = sum(len(ids) for ids, *_ in outputs)

    def finish(
        self, reason: str | None, prompt_tokens: int = 0, error: BaseException | None = None
    ) -> None:
        """Mark the end (with a finish reason or an error)."""
        with self.cond:
            if self.finished:
                return
            self.finished = True
            self.finish_reason = reason
            self.error = error
            if prompt_tokens:
                self.prompt_tokens = prompt_tokens
            was_running = self.running
            self.cond.notify_all()
        (RUNNING_SEQUENCES if was_running else WAITING_SEQUENCES).dec()

    # ------------------------------------------------------------ calculator side

    def read(self, timeout: float | None = None) -> tuple[list[int], bool]:
        """Wait for new tokens or the end; return ``(ids, finished)``."""
        with self.cond:
            if not self.new_ids and not self.finished:
                self.cond.wait(timeout)
            ids, self.new_ids = self.new_ids, []
            self.read_logprobs, self.new_logprobs = self.new_logprobs, []
            finished = self.finished and not self.new_ids
            if finished and self.error is not None:
                raise self.error
            return ids, finished

    def wait_all(self) -> list[int]:
        """Wait for the end and return every token id (woken once, not on every step)."""
        with self.cond:
            self.wake_on_push = False
        ids: list[int] = []
        logprobs: list[float] = []
        while True:
            new, finished = self.read()
            ids.extend(new)
            logprobs.extend(self.read_logprobs)
            if finished:
                self.read_logprobs = logprobs
                return ids

    def cancel(self) -> None:
        """Ask the engine to drop this job."""
        with self.cond:
            if self.cancelled or self.finished:
                self.cancelled = True
                return
            self.cancelled = True
            self.cond.notify_all()
        if self.on_cancel is not None:
            self.on_cancel()


def _spawn(args: list[str], fd: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env["PYTHONSAFEPATH"] = "1"  # never import from the server's working directory
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["OVGRAPH_ENGINE_LOG_LEVEL"] = logging.getLevelName(
        logging.getLogger("ovgraph").getEffectiveLevel()
    )
    return env


class EngineProcess:
    """One engine child: its socket, a writer and a reader thread, and the jobs it holds.

    Args:
        key: the servable key (a dataclass) the child loads.
        on_exit: called from the reader thread once the child is gone, with its exit code.
    """

    def __init__(self, key: Any, on_exit: Callable[[EngineProcess, int | None], None]) -> None:
        self.on_exit = on_exit
        self.jobs: dict[int, GenerationJob] = {}
        self.lock = threading.Lock()
        self.next_id = 0
        self.retiring = False
        self.outgoing: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self.stats_replies: dict[int, queue.SimpleQueue[dict[str, Any]]] = {}
        server_end, child_end = socket.socketpair()
        args = [
            sys.executable, "-m", "calculators.llm.engine_process",
            str(child_end.fileno()), str(os.getpid()), json.dumps(asdict(key)),
        ]
        try:
            self.proc = _SPAWNER.submit(_spawn, args, child_end.fileno(), _child_env()).result()
        finally:
            child_end.close()
        self.pid = self.proc.pid
        self.conn = Connection(server_end.detach())
        self.info = self._handshake()
        self.default_config = self.info["default_config"]
        threading.Thread(target=self._write, name=f"engine-{self.pid}-w", daemon=True).start()
        threading.Thread(target=self._read, name=f"engine-{self.pid}-r", daemon=True).start()

    def _handshake(self) -> dict[str, Any]:
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while not self.conn.poll(0.2):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise EOFError
            message = self.conn.recv()
        except (EOFError, OSError):
            self._reap()
            raise ValueError(
                f"Engine process exited while loading the model (exit code {self.proc.poll()})"
            ) from None
        if message[0] != "ready":
            self._reap()
            raise ValueError(str(message[1]))
        return dict(message[1])

    # ------------------------------------------------------------------ jobs

    def submit(self, job: GenerationJob) -> None:
        """Send ``job`` to the child; its tokens flow back into it."""
        with self.lock:
            request_id = self.next_id
            self.next_id += 1
            self.jobs[request_id] = job
        images = [np.ascontiguousarray(image.data) for image in job.images]
        self.outgoing.put(("submit", request_id, job.prompt, images, config_to_wire(job.config)))
        job.on_cancel = lambda: self.outgoing.put(("cancel", request_id))
        if job.cancelled:  # cancelled before the hook was set
            self.outgoing.put(("cancel", request_id))

    @property
    def load(self) -> int:
        """Jobs the child holds."""
        return len(self.jobs)

    def stats(self, timeout: float = 2.0) -> dict[str, Any]:
        """The child's own figures (cache usage, scheduled requests); ``{}`` when it is busy."""
        token = id(threading.current_thread()) ^ time.monotonic_ns()
        reply: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.stats_replies[token] = reply
        self.outgoing.put(("stats", token))
        try:
            return reply.get(timeout=timeout)
        except queue.Empty:
            return {}
        finally:
            self.stats_replies.pop(token, None)

    def rss_bytes(self) -> int:
        """Resident memory of the child (0 once it is gone)."""
        try:
            with open(f"/proc/{self.pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def retire(self) -> None:
        """Ask the child to finish its jobs and exit."""
        self.retiring = True
        self.outgoing.put(("shutdown",))

    def kill(self) -> None:
        """End the child now."""
        self.proc.kill()

    # ------------------------------------------------------------------ threads

    def _write(self) -> None:
        while True:
            message = self.outgoing.get()
            if message is None:
                return
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                return

    def _read(self) -> None:
        try:
            while True:
                self._dispatch(self.conn.recv())
        except (EOFError, OSError):
            pass
        except Exception:  # never leave jobs hanging on a reader bug
            logger.exception("Engine process %d: unreadable message", self.pid)
            self.proc.kill()
        code = self._reap()
        self.outgoing.put(None)
        if not self.retiring:
            logger.error("Engine process %d ended unexpectedly (exit code %s)", self.pid, code)
        error = ServableNotReadyError(
            f"The model's engine process stopped (exit code {code}); the request was not "
            "completed. Retry it."
        )
        with self.lock:
            jobs, self.jobs = list(self.jobs.values()), {}
        for job in jobs:
            job.finish(None, 0, error)
        self.on_exit(self, code)

    def _reap(self) -> int | None:
        with contextlib.suppress(OSError):
            self.conn.close()
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "tokens":
            for request_id, ids, logprobs in message[1]:
                job = self.jobs.get(request_id)
                if job is not None:
                    job.push(ids, logprobs)
        elif kind == "sequences":
            job = self.jobs.get(message[1])
            if job is not None:
                job.set_sequences(message[2])
        elif kind == "started":
            job = self.jobs.get(message[1])
            if job is not None:
                job.started()
        elif kind == "finish":
            _, request_id, reason, prompt_tokens, error = message
            with self.lock:
                job = self.jobs.pop(request_id, None)
            if job is not None:
                job.finish(reason, prompt_tokens, error_from_wire(error) if error else None)
        elif kind == "stats":
            reply = self.stats_replies.get(message[1])
            if reply is not None:
                reply.put(message[2])


class EngineClient:
    """The engine of one servable, kept alive across crashes and replaced above an RSS limit.

    Args:
        key: the servable key the children load.
        rss_limit: bytes of child RSS above which the child is replaced (0 = never).
    """

    def __init__(self, key: Any, rss_limit: int = 0) -> None:
        self.key = key
        self.rss_limit = rss_limit
        self.lock = threading.Lock()
        self.closed = False
        self.problem: str | None = None
        self.waiting: list[GenerationJob] = []
        self.retired: list[EngineProcess] = []
        self.restarts = 0
        self.replacements = 0
        self.current: EngineProcess | None = EngineProcess(key, self._on_exit)
        self.default_config = self.current.default_config
        if rss_limit:
            threading.Thread(target=self._monitor, name="engine-rss", daemon=True).start()

    def submit(self, job: GenerationJob) -> None:
        """Send ``job`` to the live child (or hold it while a new child starts)."""
        with self.lock:
            if self.closed:
                raise ServableNotReadyError("Servable is shutting down")
            if self.current is None:
                self.waiting.append(job)
                return
            self.current.submit(job)

    def health(self) -> str | None:
        """None while a child serves; otherwise why not (for ``/v1/config``)."""
        return None if self.current is not None else self.problem

    def pids(self) -> list[int]:
        """Process ids of the live and retiring children."""
        with self.lock:
            children = ([self.current] if self.current else []) + self.retired
            return [c.pid for c in children]

    def rss_bytes(self) -> int:
        """Resident memory of every child together."""
        with self.lock:
            children = ([self.current] if self.current else []) + self.retired
        return sum(c.rss_bytes() for c in children)

    def stats(self) -> dict[str, Any]:
        """The live child's figures, plus restarts and replacements."""
        current = self.current
        stats = current.stats() if current is not None else {}
        stats.update(restarts=self.restarts, replacements=self.replacements)
        return stats

    def stop(self) -> None:
        """Let every child finish its jobs and exit; start no new one."""
        with self.lock:
            self.closed = True
            children = ([self.current] if self.current else []) + self.retired
            waiting, self.waiting = self.waiting, []
        for child in children:
            child.retire()
        error = ServableNotReadyError("Servable is shutting down")
        for job in waiting:
            job.finish(None, 0, error)

    # ------------------------------------------------------------------ policy

    def _on_exit(self, child: EngineProcess, code: int | None) -> None:
        with self.lock:
            if child in self.retired:
                self.retired.remove(child)
            if child is not self.current or self.closed:
                return
            self.current = None
            self.problem = f"Engine process ended (exit code {code}); restarting"
        threading.Thread(target=self._restart, name="engine-restart", daemon=True).start()

    def _restart(self) -> None:
        delay = 0.5
        while not self.closed:
            try:
                child = EngineProcess(self.key, self._on_exit)
            except RuntimeError:  # the spawner is shut down: the interpreter is exiting
                return
            except ValueError as exc:
                with self.lock:
                    self.problem = f"Engine process failed to start: {exc}; retrying"
                    waiting, self.waiting = self.waiting, []
                error = ServableNotReadyError(f"The model's engine is not running: {exc}")
                for job in waiting:
                    job.finish(None, 0, error)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            with self.lock:
                if self.closed:
                    child.retire()
                    return
                self.current, self.problem = child, None
                self.restarts += 1
                waiting, self.waiting = self.waiting, []
                for job in waiting:
                    if not job.cancelled:
                        child.submit(job)
                    else:
                        job.finish("cancelled")
            logger.warning("Engine process restarted as %d", child.pid)
            return

    def _monitor(self) -> None:
        while not self.closed:
            time.sleep(MONITOR_INTERVAL)
            current = self.current
            if current is None or current.rss_bytes() <= self.rss_limit:
                continue
            logger.info(
                "Engine process %d uses %.0f MiB (limit %.0f MiB): replacing it",
                current.pid, current.rss_bytes() / 2**20, self.rss_limit / 2**20,
            )
            try:
                child = EngineProcess(self.key, self._on_exit)
            except RuntimeError:  # the spawner is shut down: the interpreter is exiting
                return
            except ValueError as exc:
                logger.error("Replacement engine failed to start: %s", exc)
                continue
            with self.lock:
                if self.closed or self.current is not current:
                    child.retire()
                    continue
                self.current = child
                self.retired.append(current)
                self.replacements += 1
            current.retire()


class InProcessEngineClient:
    """The same step loop on a thread of the server process (``OVGRAPH_ENGINE=inprocess``)."""

    def __init__(self, key: Any) -> None:
        try:
            pipeline, default = load_pipeline(asdict(key))
        except Exception as exc:
            from calculators.llm.errors import first_line, scrub

            raise ValueError(scrub(first_line(str(exc)) or "Model loading failed")) from exc
        self.default_config = config_to_wire(default)
        self.driver = InProcessEngine(make_engine(pipeline, key.pipeline_type))
        self.next_id = 0
        self.lock = threading.Lock()

    def submit(self, job: GenerationJob) -> None:
        """Queue ``job``; the job itself receives the tokens."""
        with self.lock:
            request_id = self.next_id
            self.next_id += 1
        request = EngineRequest(request_id, job.prompt, list(job.images), job.config, job)
        job.on_cancel = lambda: self.driver.cancel(request)
        self.driver.submit(request)
        if job.cancelled:
            self.driver.cancel(request)

    def stats(self) -> dict[str, Any]:
        """The pipeline's figures (cache usage, scheduled requests), as the engine process's."""
        get_metrics = getattr(self.driver.engine.pipeline, "get_metrics", None)
        if get_metrics is None:
            return {}
        metrics = get_metrics()
        return {
            "cache_usage": float(metrics.cache_usage),
            "max_cache_usage": float(metrics.max_cache_usage),
            "avg_cache_usage": float(metrics.avg_cache_usage),
            "scheduled_requests": int(metrics.scheduled_requests),
        }

    def health(self) -> str | None:
        """Always serving."""
        return None

    def stop(self) -> None:
        """End the engine thread once its requests are done."""
        self.driver.stop()
