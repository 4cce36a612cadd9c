"""Graph options that shape a genai pipeline: scheduler, cache eviction, sparse attention, drafts.

``LLMCalculatorOptions`` fields become plain JSON in the servable key (so the engine process can
rebuild them) and genai objects in the engine, as OVMS's ``ContinuousBatchingServableInitializer``
builds them. Options a pipeline type cannot honour are load errors that name them.

The decoding method follows from the options (OVMS's ``determineDecodingMethod``): a draft
model means speculative decoding (EAGLE-3 with ``draft_eagle3_mode``), ``plugin_config``
``{"prompt_lookup": true}`` means prompt lookup. ``adjust_for_decoding`` then fills the
per-request defaults OVMS fills (``num_assistant_tokens`` 5, ``max_ngram_size`` 3 for prompt
lookup; greedy for EAGLE-3).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "adjust_for_decoding",
    "build_scheduler_config",
    "decoding_method",
    "draft_options",
    "draft_scheduler_config",
    "pipeline_properties",
    "scheduler_extras",
]

_DRAFT_SCHEDULER_FIELDS = (
    "draft_max_num_batched_tokens", "draft_cache_size", "draft_max_num_seqs",
    "draft_dynamic_split_fuse", "draft_block_size",
)  # fmt: skip
_CB_ONLY = ("cache_eviction_config", "sparse_attention_config", "cache_interval_multiplier")


def _fields(message: Any) -> dict[str, Any]:
    """The fields set in ``message`` (enums by name, sub-messages as dicts)."""
    values: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.message_type is not None:
            values[field.name] = _fields(value)
        elif field.enum_type is not None:
            values[field.name] = field.enum_type.values_by_number[value].name
        else:
            values[field.name] = value
    return values


def scheduler_extras(options: Any, pipeline_type: str) -> str:
    """Cache eviction, sparse attention and cache interval options as JSON ("" when unset)."""
    given = {name: options.HasField(name) for name in _CB_ONLY}
    if not pipeline_type.endswith("_CB"):
        for name, present in given.items():
            if present:
                raise ValueError(
                    f"{name} needs a continuous batching pipeline (LM_CB or VLM_CB), "
                    f"not {pipeline_type}"
                )
        return ""
    extras: dict[str, Any] = {}
    if given["cache_eviction_config"]:
        extras["cache_eviction"] = _fields(options.cache_eviction_config)
    if given["sparse_attention_config"]:
        extras["sparse_attention"] = _fields(options.sparse_attention_config)
    if given["cache_interval_multiplier"]:
        extras["cache_interval_multiplier"] = options.cache_interval_multiplier
    return json.dumps(extras, sort_keys=True) if extras else ""


def draft_options(options: Any, base_path: Path | None, pipeline_type: str) -> tuple[str, str]:
    """``(draft models folder, draft settings JSON)``; empty when there is no draft model."""
    scheduler_given = [n for n in (*_DRAFT_SCHEDULER_FIELDS, "draft_device") if options.HasField(n)]
    if not options.draft_models_path:
        if scheduler_given:
            raise ValueError(
                f"{scheduler_given[0]} is set but draft_models_path is not: draft options need "
                "a draft model"
            )
        return "", ""
    if options.HasField("draft_block_size"):
        raise ValueError(
            "draft_block_size is not supported: openvino-genai 2026.4 chooses the KV-cache "
            "block size itself (SchedulerConfig has no block_size)"
        )
    if pipeline_type.startswith("VLM"):
        raise ValueError(
            f"draft_models_path is not supported with pipeline_type {pipeline_type}: "
            "openvino-genai offers speculative decoding for text-only (LM, LM_CB) pipelines"
        )
    path = Path(options.draft_models_path)
    if not path.is_absolute():
        path = (base_path or Path.cwd()) / path
    if not path.is_dir():
        raise ValueError(f"draft_models_path does not exist: {options.draft_models_path}")
    settings = {
        "device": options.draft_device or (options.device or "CPU"),
        "max_num_batched_tokens": options.draft_max_num_batched_tokens
        if options.HasField("draft_max_num_batched_tokens") else options.max_num_batched_tokens,
        "cache_size": options.draft_cache_size
        if options.HasField("draft_cache_size") else options.cache_size,
        "max_num_seqs": options.draft_max_num_seqs
        if options.HasField("draft_max_num_seqs") else options.max_num_seqs,
        "dynamic_split_fuse": options.draft_dynamic_split_fuse
        if options.HasField("draft_dynamic_split_fuse") else options.dynamic_split_fuse,
        "enable_prefix_caching": options.enable_prefix_caching,
        "eagle3": options.draft_eagle3_mode,
    }
    return str(path.resolve()), json.dumps(settings, sort_keys=True)


def build_scheduler_config(key: Any, max_length: int | None) -> Any:
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
    extras = json.loads(key.scheduler_extras) if key.scheduler_extras else {}
    if "cache_interval_multiplier" in extras:
        scheduler.cache_interval_multiplier = extras["cache_interval_multiplier"]
    if "cache_eviction" in extras:
        scheduler.use_cache_eviction = True
        scheduler.cache_eviction_config = _cache_eviction(ov_genai, extras["cache_eviction"])
    if "sparse_attention" in extras:
        scheduler.use_sparse_attention = True
        scheduler.sparse_attention_config = _sparse_attention(ov_genai, extras["sparse_attention"])
    return scheduler


def _cache_eviction(ov_genai: Any, fields: dict[str, Any]) -> Any:
    crush = ov_genai.KVCrushConfig()
    if "kv_crush_config" in fields:
        given = fields["kv_crush_config"]
        crush = ov_genai.KVCrushConfig(
            budget=given.get("budget", 0),
            anchor_point_mode=getattr(
                ov_genai.KVCrushAnchorPointMode, given.get("anchor_point_mode", "RANDOM")
            ),
            rng_seed=given.get("rng_seed", 0),
        )
    return ov_genai.CacheEvictionConfig(
        start_size=fields["start_size"],
        recent_size=fields["recent_size"],
        max_cache_size=fields["max_cache_size"],
        aggregation_mode=getattr(
            ov_genai.AggregationMode, fields.get("aggregation_mode", "NORM_SUM")
        ),
        apply_rotation=fields.get("apply_rotation", False),
        snapkv_window_size=fields.get("snapkv_window_size", 8),
        kvcrush_config=crush,
    )


def _sparse_attention(ov_genai: Any, fields: dict[str, Any]) -> Any:
    config = ov_genai.SparseAttentionConfig()
    config.mode = getattr(ov_genai.SparseAttentionMode, fields.get("mode", "TRISHAPE"))
    for name, value in fields.items():
        if name != "mode":
            setattr(config, name, value)
    return config


def pipeline_properties(key: Any) -> dict[str, Any]:
    """``plugin_config`` plus the draft model, as the pipeline constructor takes them."""
    import openvino_genai as ov_genai

    properties: dict[str, Any] = json.loads(key.plugin_config) if key.plugin_config else {}
    if key.draft_models_dir:
        settings = json.loads(key.draft_options)
        properties["draft_model"] = ov_genai.draft_model(
            key.draft_models_dir, settings["device"],
            scheduler_config=draft_scheduler_config(settings),
        )
    return properties


def draft_scheduler_config(settings: dict[str, Any]) -> Any:
    """The draft model's ``SchedulerConfig`` from the ``draft_*`` options (``draft_options``)."""
    import openvino_genai as ov_genai

    scheduler = ov_genai.SchedulerConfig()
    for name in ("max_num_batched_tokens", "cache_size", "max_num_seqs",
                 "dynamic_split_fuse", "enable_prefix_caching"):
        setattr(scheduler, name, settings[name])
    return scheduler


def decoding_method(key: Any) -> str:
    """``standard``, ``speculative``, ``eagle3`` or ``prompt_lookup`` (OVMS's rule)."""
    method = "standard"
    if key.draft_models_dir:
        method = "eagle3" if json.loads(key.draft_options).get("eagle3") else "speculative"
    properties = json.loads(key.plugin_config) if key.plugin_config else {}
    if properties.get("prompt_lookup") is True:
        method = "prompt_lookup"
    return method


def adjust_for_decoding(
    config: Any, method: str, defaults: Mapping[str, Any] | None = None
) -> None:
    """Per-request defaults of a decoding method, as OVMS's config builder sets them.

    ``defaults`` (``--num_assistant_tokens`` or ``--assistant_confidence_threshold``) replace
    OVMS's 5 draft tokens for speculative requests that set neither.
    """
    if method in ("speculative", "eagle3"):
        if not config.num_assistant_tokens and not config.assistant_confidence_threshold:
            config.num_assistant_tokens = 5
            for name, value in (defaults or {}).items():
                config.num_assistant_tokens = 0
                setattr(config, name, value)
        if method == "eagle3":
            config.do_sample = False
            config.num_beams = 1
    elif method == "prompt_lookup":
        if not config.num_assistant_tokens:
            config.num_assistant_tokens = 5
        if not config.max_ngram_size:
            config.max_ngram_size = 3
