"""The openvino-genai step loops, one unit of work at a time, wherever they run.

An engine owns one pipeline and the requests inside it. ``run_once`` does one unit of work:

- ``ContinuousBatchingEngine`` (``LM_CB`` / ``VLM_CB``): adds the requests that arrived, drops the
  cancelled ones, steps the shared ``ContinuousBatchingPipeline`` once, and hands each request the
  tokens of that step.
- ``SerialEngine`` (``LM`` / ``VLM``): runs ``generate`` for the next request, streaming tokens
  to it, and between tokens lets the driver read cancellations.

Results go to each request's ``EngineSink``: in the engine process a sink writes messages for the
server (``engine_process.py``); in-process (debugging) the server's ``GenerationJob`` is the sink.
Drivers decide when ``run_once`` is called: a thread (``InProcessEngine``) or the engine process's
message loop.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from calculators.llm.errors import translate_error
from ovgraph.errors import InvalidParameterError

__all__ = [
    "ContinuousBatchingEngine",
    "EngineRequest",
    "EngineSink",
    "InProcessEngine",
    "SequenceOutput",
    "SerialEngine",
    "StepEngine",
    "load_pipeline",
    "make_engine",
]

logger = logging.getLogger(__name__)


class EngineSink(Protocol):
    """Where an engine delivers one request's results."""

    def started(self) -> None:
        """The request entered the pipeline."""

    def push(self, ids: Sequence[int], logprobs: Sequence[float] | None = None) -> None:
        """New token ids (and their log-probabilities when asked for)."""

    def set_sequences(self, outputs: list[SequenceOutput]) -> None:
        """Every sequence of a request that asked for several (``n``, ``best_of``), at the end."""

    def finish(
        self, reason: str | None, prompt_tokens: int = 0, error: BaseException | None = None
    ) -> None:
        """The request ended with a finish reason, or with an error."""


# One finished sequence: token ids, their log-probabilities (when asked for), finish reason, score.
SequenceOutput = tuple[list[int], list[float] | None, str | None, float]


def several_sequences(config: Any) -> bool:
    """Whether a request asks for more than one sequence (read at the end, not streamed)."""
    return bool(config.num_return_sequences > 1 or config.num_beams > 1)


@dataclass
class EngineRequest:
    """One request inside an engine."""

    request_id: int
    prompt: str
    images: list[Any]
    config: Any
    sink: EngineSink
    cancelled: bool = False
    pushed: int = 0

    def push(self, ids: Sequence[int], logprobs: Sequence[float] | None = None) -> None:
        """Deliver tokens and count them."""
        self.pushed += len(ids)
        self.sink.push(ids, logprobs)


class StepEngine:
    """Base of the step loops: requests waiting to be added, and the pipeline."""

    def __init__(self, pipeline: Any, is_vlm: bool) -> None:
        self.pipeline = pipeline
        self.is_vlm = is_vlm
        self.incoming: deque[EngineRequest] = deque()
        self.poll: Callable[[], None] = lambda: None

    def add(self, request: EngineRequest) -> None:
        """Queue a request; it enters the pipeline at the next ``run_once``."""
        self.incoming.append(request)

    def busy(self) -> bool:
        """Whether ``run_once`` has anything to do."""
        return bool(self.incoming)

    def run_once(self) -> None:
        """Do one unit of work."""
        raise NotImplementedError

    def abort_all(self, error: BaseException) -> None:
        """End every request with ``error`` (the engine is going away)."""
        while self.incoming:
            self.incoming.popleft().sink.finish(None, 0, error)


class SerialEngine(StepEngine):
    """One request at a time through ``VLMPipeline`` / ``LLMPipeline.generate``."""

    def run_once(self) -> None:
        """Generate the next request from start to end."""
        import openvino_genai as ov_genai

        if not self.incoming:
            return
        request = self.incoming.popleft()
        if request.cancelled:
            request.sink.finish("cancelled")
            return
        if several_sequences(request.config):
            error = InvalidParameterError(
                "n and best_of above 1 need a continuous batching pipeline (LM_CB or VLM_CB)",
                param="n",
            )
            request.sink.finish(None, 0, error)
            return
        streamer = _make_streamer(ov_genai, request, self.poll)
        request.sink.started()
        try:
            if self.is_vlm:
                result = self.pipeline.generate(
                    request.prompt, images=request.images, generation_config=request.config,
                    streamer=streamer,
                )
            else:
                # A one-item list: a plain string would return a bare ``str`` (no metrics).
                result = self.pipeline.generate(
                    [request.prompt], generation_config=request.config, streamer=streamer
                )
        except Exception as exc:
            request.sink.finish(None, 0, translate_error(exc))
            return
        prompt_tokens = int(result.perf_metrics.get_num_input_tokens())
        if request.cancelled:
            reason = "cancelled"
        else:
            reason = "length" if request.pushed >= request.config.max_new_tokens else "stop"
        request.sink.finish(reason, prompt_tokens)


def _make_streamer(ov_genai: Any, request: EngineRequest, poll: Callable[[], None]) -> Any:
    """A genai streamer that pushes token ids and stops once the request is cancelled."""

    class _Streamer(ov_genai.StreamerBase):  # type: ignore[misc]
        def write(self, token: Any) -> Any:
            request.push([token] if isinstance(token, int) else list(token))
            poll()
            if request.cancelled:
                return ov_genai.StreamingStatus.CANCEL
            return ov_genai.StreamingStatus.RUNNING

        def end(self) -> None:
            return None

    return _Streamer()


class ContinuousBatchingEngine(StepEngine):
    """The shared ``ContinuousBatchingPipeline``, stepped once per ``run_once``."""

    def __init__(self, pipeline: Any, is_vlm: bool) -> None:
        super().__init__(pipeline, is_vlm)
        self.active: dict[int, tuple[EngineRequest, Any]] = {}

    def busy(self) -> bool:
        """Anything waiting or running."""
        return bool(self.incoming or self.active)

    def _add(self, request: EngineRequest) -> None:
        try:
            if self.is_vlm:
                handle = self.pipeline.add_request(
                    request.request_id, request.prompt, request.images, request.config
                )
            else:
                handle = self.pipeline.add_request(
                    request.request_id, request.prompt, request.config
                )
        except Exception as exc:
            request.sink.finish(None, 0, translate_error(exc))
            return
        self.active[request.request_id] = (request, handle)
        request.sink.started()

    def run_once(self) -> None:
        """Add arrivals, drop cancellations, step, deliver."""
        import openvino_genai as ov_genai

        while self.incoming:
            request = self.incoming.popleft()
            if request.cancelled:
                request.sink.finish("cancelled")
            else:
                self._add(request)
        for request_id, (request, handle) in list(self.active.items()):
            if request.cancelled:
                handle.cancel()
                request.sink.finish("cancelled")
                del self.active[request_id]
        if not self.active:
            return
        try:
            self.pipeline.step()
        except Exception as exc:
            error = translate_error(exc)
            for request, _ in self.active.values():
                request.sink.finish(None, 0, error)
            self.active.clear()
            return
        ended = {
            ov_genai.GenerationStatus.FINISHED: None,
            ov_genai.GenerationStatus.IGNORED: "ignored",
            ov_genai.GenerationStatus.CANCEL: "cancelled",
            ov_genai.GenerationStatus.STOP: "cancelled",
        }
        for request_id, (request, handle) in list(self.active.items()):
            status = handle.get_status()
            reason: str | None = None
            if several_sequences(request.config):
                if status in ended:
                    outputs = _all_sequences(handle, bool(request.config.logprobs))
                    request.sink.set_sequences(outputs)
                    best = outputs[0][2] if outputs else "stop"
                    request.sink.finish(ended[status] or best, _prompt_tokens(handle))
                    del self.active[request_id]
                continue
            if handle.can_read():
                for output in handle.read().values():
                    logprobs = list(output.generated_log_probs) if request.config.logprobs else None
                    request.push(list(output.generated_ids), logprobs)
                    reason = _finish_reason(output.finish_reason)
                    break
            if status in ended:
                request.sink.finish(ended[status] or reason or "stop", _prompt_tokens(handle))
                del self.active[request_id]

    def abort_all(self, error: BaseException) -> None:
        """End waiting and running requests with ``error``."""
        super().abort_all(error)
        for request, handle in self.active.values():
            handle.cancel()
            request.sink.finish(None, 0, error)
        self.active.clear()


def _all_sequences(handle: Any, logprobs: bool) -> list[SequenceOutput]:
    """Every output of a finished multi-sequence request, best score first."""
    outputs = sorted(handle.read_all(), key=lambda o: -float(o.score))
    return [
        (
            list(o.generated_ids),
            list(o.generated_log_probs) if logprobs else None,
            _finish_reason(o.finish_reason) or "stop",
            float(o.score),
        )
        for o in outputs
    ]


def _finish_reason(value: Any) -> str | None:
    name = getattr(value, "name", str(value)).upper()
    if name.endswith("LENGTH"):
        return "length"
    if name.endswith("STOP"):
        return "stop"
    return None


def _prompt_tokens(handle: Any) -> int:
    try:
        return int(handle.get_perf_metrics().get_num_input_tokens())
    except Exception:  # metrics are optional across genai versions
        return 0


def make_engine(pipeline: Any, pipeline_type: str) -> StepEngine:
    """The step loop for ``pipeline_type``."""
    is_vlm = pipeline_type.startswith("VLM")
    if pipeline_type.endswith("_CB"):
        return ContinuousBatchingEngine(pipeline, is_vlm)
    return SerialEngine(pipeline, is_vlm)


class InProcessEngine:
    """Drives a ``StepEngine`` from a thread of the server process (for debugging).

    The engine process is the normal home of an engine; this driver keeps the same step loop in
    the server's own process, where genai holds the server's GIL while it works.
    """

    def __init__(self, engine: StepEngine) -> None:
        self.engine = engine
        self.cond = threading.Condition()
        self.arrivals: deque[EngineRequest] = deque()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="ovgraph-engine", daemon=True)
        self.thread.start()

    def submit(self, request: EngineRequest) -> None:
        """Queue a request."""
        with self.cond:
            self.arrivals.append(request)
            self.cond.notify_all()

    def cancel(self, request: EngineRequest) -> None:
        """Mark a request cancelled; it leaves at the next step."""
        with self.cond:
            request.cancelled = True
            self.cond.notify_all()

    def stop(self) -> None:
        """Finish what runs, then end the thread."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.arrivals and not self.engine.busy() and not self.stopping:
                    self.cond.wait()
                if self.stopping and not self.arrivals and not self.engine.busy():
                    return
                while self.arrivals:
                    self.engine.add(self.arrivals.popleft())
            self.engine.run_once()


def load_pipeline(key: dict[str, Any]) -> tuple[Any, Any]:
    """Build the pipeline a ``ServableKey`` describes; return it and its default config."""
    import openvino_genai as ov_genai

    from calculators.llm.pipeline_options import build_scheduler_config, pipeline_properties
    from calculators.llm.servable_key import ServableKey, max_model_length

    servable_key = ServableKey(**key)
    properties = pipeline_properties(servable_key)
    models_dir = servable_key.models_dir
    kind = servable_key.pipeline_type
    if kind.endswith("_CB"):
        scheduler = build_scheduler_config(servable_key, max_model_length(Path(models_dir)))
        pipeline = ov_genai.ContinuousBatchingPipeline(
            models_dir, scheduler, servable_key.device, properties
        )
        return pipeline, pipeline.get_config()
    cls = ov_genai.VLMPipeline if kind == "VLM" else ov_genai.LLMPipeline
    pipeline = cls(models_dir, servable_key.device, **properties)
    return pipeline, pipeline.get_generation_config()
