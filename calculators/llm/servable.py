"""openvino-genai pipelines behind one interface, and the only place genai errors are translated.

A ``Servable`` is built once per model folder and options (cached, so the nodes of one graph and
a reloaded graph share it). It owns an engine:

- ``ContinuousBatchingEngine`` (``LM_CB`` / ``VLM_CB``): one loop thread adds requests as they
  arrive, steps the shared ``ContinuousBatchingPipeline`` while anything runs, fans each step's new
  tokens out to the request handles, and sleeps when idle.
- ``SerialEngine`` (``LM`` / ``VLM``): one worker thread runs ``generate`` for one request at a
  time, streaming tokens into the handle.

Handles expose ``read`` (block until new tokens or the end) and ``cancel``; a cancelled request
leaves the batch at the next step.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calculators.llm.metrics import RUNNING_SEQUENCES, WAITING_SEQUENCES
from ovgraph.errors import InvalidParameterError, RequestError, ServableNotReadyError

__all__ = [
    "GenerationJob",
    "Servable",
    "ServableKey",
    "determine_pipeline_type",
    "get_servable",
    "max_model_length",
]

logger = logging.getLogger(__name__)

_VLM_TYPES = ("VLM", "VLM_CB")
_CB_TYPES = ("LM_CB", "VLM_CB")
_MAX_LENGTH_FIELDS = (
    "max_position_embeddings", "n_positions", "seq_len", "seq_length", "n_ctx", "sliding_window",
)  # fmt: skip

# genai messages that describe a bad input rather than a server fault.
_CLIENT_ERRORS = (
    "aspect ratio",
    "Missing image",
    "not representable as pointer",
    "Chat template",
    "exceeds",
)


def is_vlm_folder(models_dir: Path) -> bool:
    """OVMS's rule: a VLM folder has text-embeddings and vision-embeddings models."""
    return (models_dir / "openvino_text_embeddings_model.xml").exists() and (
        models_dir / "openvino_vision_embeddings_model.bin"
    ).exists()


def determine_pipeline_type(models_dir: Path, requested: str, device: str) -> str:
    """Resolve ``AUTO`` (and check explicit types) as OVMS's ``determinePipelineType`` does."""
    vlm = is_vlm_folder(models_dir)
    if requested in ("", "AUTO"):
        if device.upper() == "NPU":
            return "VLM" if vlm else "LM"
        return "VLM_CB" if vlm else "LM_CB"
    if requested in _VLM_TYPES and not vlm:
        raise ValueError(f"pipeline_type {requested} needs a VLM model folder")
    if requested not in _VLM_TYPES and vlm:
        raise ValueError(f"pipeline_type {requested} cannot serve a VLM model folder")
    return requested


def max_model_length(models_dir: Path) -> int | None:
    """Read the context length from ``config.json`` (top level, then ``text_config``)."""
    try:
        config = json.loads((models_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for section in (config, config.get("text_config") or {}):
        for name in _MAX_LENGTH_FIELDS:
            value = section.get(name)
            if isinstance(value, int) and value > 0:
                return value
    return None


@dataclass(frozen=True)
class ServableKey:
    """Everything that makes two servables different."""

    models_dir: str
    pipeline_type: str
    device: str
    plugin_config: str
    cache_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    enable_prefix_caching: bool
    dynamic_split_fuse: bool

    @classmethod
    def from_options(cls, options: Any, base_path: Path | None) -> ServableKey:
        """Build the key from ``LLMCalculatorOptions`` (relative paths join the graph folder)."""
        path = Path(options.models_path)
        if not path.is_absolute():
            path = (base_path or Path.cwd()) / path
        models_dir = path.resolve()
        if not models_dir.is_dir():
            raise ValueError(f"models_path does not exist: {options.models_path}")
        device = options.device if options.HasField("device") else "CPU"
        requested = options.DESCRIPTOR.fields_by_name["pipeline_type"].enum_type.values_by_number[
            options.pipeline_type
        ].name if options.HasField("pipeline_type") else "AUTO"
        return cls(
            models_dir=str(models_dir),
            pipeline_type=determine_pipeline_type(models_dir, requested, device),
            device=device or "CPU",
            plugin_config=options.plugin_config,
            cache_size=options.cache_size,
            max_num_seqs=options.max_num_seqs,
            max_num_batched_tokens=options.max_num_batched_tokens,
            enable_prefix_caching=options.enable_prefix_caching,
            dynamic_split_fuse=options.dynamic_split_fuse,
        )


@dataclass
class GenerationJob:
    """One request inside an engine: tokens arrive here, the calculator reads them."""

    prompt: str
    images: list[Any]
    config: Any
    cond: threading.Condition = field(default_factory=threading.Condition)
    new_ids: list[int] = field(default_factory=list)
    finished: bool = False
    cancelled: bool = False
    finish_reason: str | None = None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    error: BaseException | None = None
    wake_on_push: bool = True
    submitted_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    last_token_at: float | None = None

    def push(self, ids: Sequence[int]) -> None:
        """Engine side: deliver new token ids."""
        with self.cond:
            if ids:
                now = time.monotonic()
                if self.first_token_at is None:
                    self.first_token_at = now
                self.last_token_at = now
            self.new_ids.extend(ids)
            self.completion_tokens += len(ids)
            if self.wake_on_push:
                self.cond.notify_all()

    def finish(self, reason: str | None, error: BaseException | None = None) -> None:
        """Engine side: mark the end (with a finish reason or an error)."""
        with self.cond:
            if self.finished:
                return
            self.finished = True
            self.finish_reason = reason
            self.error = error
            self.cond.notify_all()

    def read(self, timeout: float | None = None) -> tuple[list[int], bool]:
        """Calculator side: wait for new tokens or the end; return ``(ids, finished)``."""
        with self.cond:
            if not self.new_ids and not self.finished:
                self.cond.wait(timeout)
            ids, self.new_ids = self.new_ids, []
            finished = self.finished and not self.new_ids
            if finished and self.error is not None:
                raise self.error
            return ids, finished

    def wait_all(self) -> list[int]:
        """Calculator side: wait for the end and return every token id.

        The reader is woken once at the end, not on every step (fewer thread switches).
        """
        with self.cond:
            self.wake_on_push = False
        ids: list[int] = []
        while True:
            new, finished = self.read()
            ids.extend(new)
            if finished:
                return ids

    def cancel(self) -> None:
        """Ask the engine to drop this request."""
        with self.cond:
            self.cancelled = True
            self.cond.notify_all()


def translate_error(exc: BaseException) -> Exception:
    """Map a genai exception to the ovgraph error tree (client fault or server fault)."""
    text = _first_line(str(exc)) or type(exc).__name__
    for marker in _CLIENT_ERRORS:
        if marker.lower() in text.lower():
            if "aspect ratio" in text.lower():
                return InvalidParameterError(
                    "Image aspect ratio must be smaller than 200", param="messages"
                )
            return RequestError(_scrub(text))
    return RuntimeError(_scrub(text))


def _first_line(text: str) -> str:
    """The first line of a genai message that is not a source location."""
    for line in text.strip().splitlines():
        line = line.strip()
        if line and not line.startswith(("Exception from ", "Check '")):
            return line
    return ""


def _scrub(text: str) -> str:
    """Drop source locations (``at /path/file.cpp:123``) from genai messages."""
    for marker in (" at /", " at C:", "Check '"):
        if marker in text:
            text = text.split(marker)[0].strip() or "Generation failed"
    return text[:300]


class _Engine:
    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.cond = threading.Condition()
        self.pending: deque[GenerationJob] = deque()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="ovgraph-engine", daemon=True)
        self.thread.start()

    def submit(self, job: GenerationJob) -> None:
        with self.cond:
            if self.stopping:
                raise ServableNotReadyError("Servable is shutting down")
            self.pending.append(job)
            WAITING_SEQUENCES.inc()
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def _loop(self) -> None:
        raise NotImplementedError


class SerialEngine(_Engine):
    """One request at a time through ``VLMPipeline`` / ``LLMPipeline.generate``."""

    def __init__(self, pipeline: Any, is_vlm: bool) -> None:
        self.is_vlm = is_vlm
        super().__init__(pipeline)

    def _loop(self) -> None:
        import openvino_genai as ov_genai

        while True:
            with self.cond:
                while not self.pending and not self.stopping:
                    self.cond.wait()
                if self.stopping and not self.pending:
                    return
                job = self.pending.popleft()
                WAITING_SEQUENCES.dec()
            if job.cancelled:
                job.finish("cancelled")
                continue

            streamer = _make_streamer(ov_genai, job)
            RUNNING_SEQUENCES.inc()
            try:
                if self.is_vlm:
                    result = self.pipeline.generate(
                        job.prompt, images=job.images, generation_config=job.config,
                        streamer=streamer,
                    )
                else:
                    # A one-item list: a plain string would return a bare ``str`` (no metrics).
                    result = self.pipeline.generate(
                        [job.prompt], generation_config=job.config, streamer=streamer
                    )
                job.prompt_tokens = int(result.perf_metrics.get_num_input_tokens())
                max_new = job.config.max_new_tokens
                reason = "length" if job.completion_tokens >= max_new else "stop"
                job.finish("cancelled" if job.cancelled else reason)
            except Exception as exc:
                job.finish(None, translate_error(exc))
            finally:
                RUNNING_SEQUENCES.dec()


def _make_streamer(ov_genai: Any, job: GenerationJob) -> Any:
    """A genai streamer that pushes token ids into ``job`` and stops when it is cancelled."""

    class _Streamer(ov_genai.StreamerBase):  # type: ignore[misc]
        def write(self, token: Any) -> Any:
            job.push([token] if isinstance(token, int) else list(token))
            if job.cancelled:
                return ov_genai.StreamingStatus.CANCEL
            return ov_genai.StreamingStatus.RUNNING

        def end(self) -> None:
            return None

    return _Streamer()


class ContinuousBatchingEngine(_Engine):
    """The shared ``ContinuousBatchingPipeline`` driven by one loop thread."""

    def __init__(self, pipeline: Any, is_vlm: bool) -> None:
        self.is_vlm = is_vlm
        self.active: dict[int, tuple[GenerationJob, Any]] = {}
        self.next_id = 0
        super().__init__(pipeline)

    def _add(self, job: GenerationJob) -> None:
        import openvino_genai as ov_genai  # noqa: F401  (pipeline objects need the module)

        request_id = self.next_id
        self.next_id += 1
        try:
            if self.is_vlm:
                handle = self.pipeline.add_request(request_id, job.prompt, job.images, job.config)
            else:
                handle = self.pipeline.add_request(request_id, job.prompt, job.config)
        except Exception as exc:
            job.finish(None, translate_error(exc))
            return
        self.active[request_id] = (job, handle)
        RUNNING_SEQUENCES.inc()

    def _drop(self, request_id: int) -> None:
        del self.active[request_id]
        RUNNING_SEQUENCES.dec()

    def _loop(self) -> None:
        import openvino_genai as ov_genai

        finished_states = {
            ov_genai.GenerationStatus.FINISHED: None,
            ov_genai.GenerationStatus.IGNORED: "ignored",
            ov_genai.GenerationStatus.CANCEL: "cancelled",
            ov_genai.GenerationStatus.STOP: "cancelled",
        }
        while True:
            with self.cond:
                while not self.pending and not self.active and not self.stopping:
                    self.cond.wait()
                if self.stopping and not self.active and not self.pending:
                    return
                incoming = list(self.pending)
                self.pending.clear()
                WAITING_SEQUENCES.dec(len(incoming))
            for job in incoming:
                if job.cancelled:
                    job.finish("cancelled")
                else:
                    self._add(job)
            for request_id, (job, handle) in list(self.active.items()):
                if job.cancelled:
                    handle.cancel()
                    job.finish("cancelled")
                    self._drop(request_id)
            if not self.active:
                continue
            try:
                self.pipeline.step()
            except Exception as exc:
                error = translate_error(exc)
                for request_id in list(self.active):
                    self.active[request_id][0].finish(None, error)
                    self._drop(request_id)
                continue
            for request_id, (job, handle) in list(self.active.items()):
                status = handle.get_status()
                reason: str | None = None
                if handle.can_read():
                    outputs = handle.read()
                    for output in outputs.values():
                        job.push(list(output.generated_ids))
                        reason = _finish_reason(output.finish_reason)
                        break
                if status in finished_states or status == ov_genai.GenerationStatus.FINISHED:
                    mapped = finished_states.get(status)
                    if not job.prompt_tokens:
                        job.prompt_tokens = _prompt_tokens(handle)
                    job.finish(mapped or reason or "stop")
                    self._drop(request_id)


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


def build_scheduler_config(key: ServableKey, max_length: int | None) -> Any:
    """The ``SchedulerConfig`` of a ``LM_CB`` / ``VLM_CB`` servable (also used by benchmarks)."""
    import openvino_genai as ov_genai

    scheduler = ov_genai.SchedulerConfig()
    scheduler.cache_size = key.cache_size
    scheduler.max_num_seqs = key.max_num_seqs
    scheduler.max_num_batched_tokens = max(
        key.max_num_batched_tokens, max_length or 0
    ) if not key.dynamic_split_fuse else key.max_num_batched_tokens
    scheduler.enable_prefix_caching = key.enable_prefix_caching
    scheduler.dynamic_split_fuse = key.dynamic_split_fuse
    return scheduler


class Servable:
    """A loaded model: tokenizer, limits, default generation config, engine."""

    def __init__(self, key: ServableKey) -> None:
        import openvino_genai as ov_genai

        self.key = key
        self.models_dir = Path(key.models_dir)
        self.pipeline_type = key.pipeline_type
        self.is_vlm = key.pipeline_type in _VLM_TYPES
        self.max_length = max_model_length(self.models_dir)
        properties: dict[str, Any] = {}
        if key.plugin_config:
            try:
                properties = json.loads(key.plugin_config)
            except ValueError as exc:
                raise ValueError(f"plugin_config is not valid JSON: {exc}") from exc
        try:
            if key.pipeline_type in _CB_TYPES:
                pipeline = ov_genai.ContinuousBatchingPipeline(
                    self.models_dir, build_scheduler_config(key, self.max_length), key.device,
                    properties,
                )
                self.default_config = pipeline.get_config()
            elif self.is_vlm:
                pipeline = ov_genai.VLMPipeline(self.models_dir, key.device, **properties)
                self.default_config = pipeline.get_generation_config()
            else:
                pipeline = ov_genai.LLMPipeline(self.models_dir, key.device, **properties)
                self.default_config = pipeline.get_generation_config()
            self.tokenizer = pipeline.get_tokenizer()
        except Exception as exc:
            raise ValueError(_scrub(_first_line(str(exc)) or "Model loading failed")) from exc
        self.pipeline = pipeline
        self.image_geometry = _image_geometry(self.models_dir)
        self.max_num_seqs = max(1, key.max_num_seqs)
        self.engine: _Engine = (
            ContinuousBatchingEngine(pipeline, self.is_vlm)
            if key.pipeline_type in _CB_TYPES
            else SerialEngine(pipeline, self.is_vlm)
        )

    def submit(self, job: GenerationJob) -> None:
        """Queue a job on the engine."""
        self.engine.submit(job)

    def count_image_tokens(self, height: int, width: int) -> int:
        """Estimate the tokens an image becomes (Qwen2-VL dynamic resolution; 0 if unknown)."""
        if self.image_geometry is None:
            return 0
        unit, min_pixels, max_pixels = self.image_geometry
        h = max(unit, round(height / unit) * unit)
        w = max(unit, round(width / unit) * unit)
        if h * w > max_pixels:
            beta = math.sqrt(height * width / max_pixels)
            h = max(unit, math.floor(height / beta / unit) * unit)
            w = max(unit, math.floor(width / beta / unit) * unit)
        elif h * w < min_pixels:
            beta = math.sqrt(min_pixels / (height * width))
            h = math.ceil(height * beta / unit) * unit
            w = math.ceil(width * beta / unit) * unit
        return (h // unit) * (w // unit)


def _image_geometry(models_dir: Path) -> tuple[int, int, int] | None:
    try:
        pre = json.loads((models_dir / "preprocessor_config.json").read_text())
        config = json.loads((models_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if config.get("model_type") not in ("qwen2_vl", "qwen2_5_vl"):
        return None
    unit = int(pre.get("patch_size", 14)) * int(pre.get("merge_size", 2))
    return unit, int(pre.get("min_pixels", 3136)), int(pre.get("max_pixels", 12845056))


_cache_lock = threading.Lock()
_cache: weakref.WeakValueDictionary[ServableKey, Servable] = weakref.WeakValueDictionary()


def get_servable(key: ServableKey) -> Servable:
    """Return the servable for ``key``, loading it on first use.

    Graphs with the same key share one servable. Once the last graph holding it is unloaded and
    its runs have ended, the engine thread finishes what it has and stops, and the pipeline's
    memory is released; a later graph with that key loads the model again.
    """
    with _cache_lock:
        servable = _cache.get(key)
        if servable is None:
            servable = Servable(key)
            weakref.finalize(servable, servable.engine.stop)
            _cache[key] = servable
        return servable
