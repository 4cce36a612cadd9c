"""A loaded model as the server process sees it: tokenizer, limits, defaults, and its engine.

A ``Servable`` is built once per model folder and options (cached, so the nodes of one graph and
a reloaded graph share it). The pipeline itself lives in an engine process
(``engine_client.py`` / ``engine_process.py``): the server keeps only the tokenizer (chat
template, token counts, detokenizing) and sends each ``GenerationJob`` to the engine. With
``OVGRAPH_ENGINE=inprocess`` the engine runs on a thread of the server instead (debugging only:
genai then holds the server's GIL while it works).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calculators.llm.engine_client import (
    EngineClient,
    GenerationJob,
    InProcessEngineClient,
    rss_limit_from_env,
)
from calculators.llm.engine_protocol import config_from_wire
from calculators.llm.errors import first_line, scrub, translate_error
from calculators.llm.metrics import EngineCollector
from calculators.llm.pipeline_options import (
    adjust_for_decoding,
    build_scheduler_config,
    decoding_method,
)
from calculators.llm.servable_key import (
    VLM_TYPES,
    ServableKey,
    determine_pipeline_type,
    max_model_length,
    model_vocab_size,
)
from ovgraph import metrics

__all__ = [
    "GenerationJob",
    "Servable",
    "ServableKey",
    "build_scheduler_config",
    "determine_pipeline_type",
    "get_servable",
    "max_model_length",
    "translate_error",
]

logger = logging.getLogger(__name__)

class Servable:
    """A loaded model: tokenizer, limits, default generation config, engine."""

    def __init__(self, key: ServableKey) -> None:
        import openvino_genai as ov_genai

        self.key = key
        self.models_dir = Path(key.models_dir)
        self.pipeline_type = key.pipeline_type
        self.is_vlm = key.pipeline_type in VLM_TYPES
        self.max_length = max_model_length(self.models_dir)
        self.vocab_size = model_vocab_size(self.models_dir) or 2**31 - 1
        if key.plugin_config:
            try:
                json.loads(key.plugin_config)
            except ValueError as exc:
                raise ValueError(f"plugin_config is not valid JSON: {exc}") from exc
        self.image_geometry = _image_geometry(self.models_dir)
        self.decoding_method = decoding_method(key)
        self.max_num_seqs = max(1, key.max_num_seqs)
        self.engine: EngineClient | InProcessEngineClient
        if os.environ.get("OVGRAPH_ENGINE", "process") == "inprocess":
            self.engine = InProcessEngineClient(key)
        else:
            self.engine = EngineClient(key, rss_limit_from_env())
        self.default_config = config_from_wire(self.engine.default_config)
        try:
            self.tokenizer = ov_genai.Tokenizer(str(self.models_dir))
        except Exception as exc:
            self.engine.stop()
            raise ValueError(scrub(first_line(str(exc)) or "Tokenizer loading failed")) from exc

    def submit(
        self, job: GenerationJob, assistant_defaults: Mapping[str, Any] | None = None
    ) -> None:
        """Send a job to the engine (after the decoding method's defaults, as OVMS sets them)."""
        adjust_for_decoding(job.config, self.decoding_method, assistant_defaults)
        self.engine.submit(job)

    def health(self) -> str | None:
        """None while the engine serves; otherwise why it does not (e.g. restarting)."""
        return self.engine.health()

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


def live_servables() -> list[Servable]:
    """The servables loaded now (for the engine metrics read at scrape time)."""
    with _cache_lock:
        return list(_cache.values())


metrics.collector("ovgraph_llm_engines", EngineCollector(live_servables))


def get_servable(key: ServableKey) -> Servable:
    """Return the servable for ``key``, loading it on first use.

    Graphs with the same key share one servable. Once the last graph holding it is unloaded and
    its runs have ended, the engine finishes what it has and its process exits, releasing the
    pipeline's memory; a later graph with that key loads the model again.
    """
    with _cache_lock:
        servable = _cache.get(key)
        if servable is None:
            servable = Servable(key)
            weakref.finalize(servable, servable.engine.stop)
            _cache[key] = servable
        return servable
