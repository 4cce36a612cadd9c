"""What identifies a servable: its model folder, pipeline type, device and engine options.

`ServableKey` is built from a graph's ``LLMCalculatorOptions``; equal keys share one servable
and one engine. The engine process rebuilds the key from its fields (`load_pipeline` in
``engines.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calculators.llm.pipeline_options import draft_options, scheduler_extras

__all__ = [
    "VLM_TYPES", "ServableKey", "determine_pipeline_type", "is_vlm_folder", "max_model_length",
    "model_vocab_size",
]

VLM_TYPES = ("VLM", "VLM_CB")
_MAX_LENGTH_FIELDS = (
    "max_position_embeddings", "n_positions", "seq_len", "seq_length", "n_ctx", "sliding_window",
)  # fmt: skip


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
    if requested in VLM_TYPES and not vlm:
        raise ValueError(f"pipeline_type {requested} needs a VLM model folder")
    if requested not in VLM_TYPES and vlm:
        raise ValueError(f"pipeline_type {requested} cannot serve a VLM model folder")
    return requested


def _config_int(models_dir: Path, names: tuple[str, ...]) -> int | None:
    """The first positive integer among ``names`` in ``config.json``, then ``text_config``."""
    try:
        config = json.loads((models_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for section in (config, config.get("text_config") or {}):
        for name in names:
            value = section.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def max_model_length(models_dir: Path) -> int | None:
    """The context length in ``config.json`` (top level, then ``text_config``), if any."""
    return _config_int(models_dir, _MAX_LENGTH_FIELDS)


def model_vocab_size(models_dir: Path) -> int | None:
    """The vocabulary size in ``config.json`` (top level, then ``text_config``), if any."""
    return _config_int(models_dir, ("vocab_size",))


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
    scheduler_extras: str = ""
    draft_models_dir: str = ""
    draft_options: str = ""

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
        pipeline_type = determine_pipeline_type(models_dir, requested, device)
        draft_dir, draft = draft_options(options, base_path, pipeline_type)
        return cls(
            models_dir=str(models_dir),
            pipeline_type=pipeline_type,
            device=device or "CPU",
            plugin_config=options.plugin_config,
            cache_size=options.cache_size,
            max_num_seqs=options.max_num_seqs,
            max_num_batched_tokens=options.max_num_batched_tokens,
            enable_prefix_caching=options.enable_prefix_caching,
            dynamic_split_fuse=options.dynamic_split_fuse,
            scheduler_extras=scheduler_extras(options, pipeline_type),
            draft_models_dir=draft_dir,
            draft_options=draft,
        )
