"""The LLM serve flags (OVMS's names), contributed to ``ovgraph serve`` through an entry point.

Registered in the ``ovgraph.serve_flags`` group: ``add_arguments(parser)`` declares the flags,
``apply(settings)`` runs once at server start with the node settings (every flag's value) and
sets what the LLM engines read from the environment. The values reach the calculators as the
settings of ``create_node_resources`` and the ``text_generation`` task's graph template: a draft
model (``--draft_source_model``, OVMS's name, or ``--draft_model_path``) becomes the graph's
``draft_models_path``; ``--num_assistant_tokens`` / ``--assistant_confidence_threshold`` are the
per-request defaults of speculative decoding (requests may still set their own).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ENGINE_RSS_LIMIT_ENV", "add_arguments", "apply", "assistant_defaults", "draft_folder",
]

ENGINE_RSS_LIMIT_ENV = "OVGRAPH_ENGINE_RSS_LIMIT_MB"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the text-generation flags."""
    p.add_argument("--pipeline_type", choices=["LM", "LM_CB", "VLM", "VLM_CB", "AUTO"])
    p.add_argument("--target_device", default="CPU")
    p.add_argument("--cache_size", type=int, default=0)
    p.add_argument("--max_num_seqs", type=int, default=256)
    p.add_argument("--max_num_batched_tokens", type=int, default=None)
    p.add_argument("--enable_prefix_caching", default="true")
    p.add_argument("--dynamic_split_fuse", default="true")
    p.add_argument("--plugin_config", default=None)
    p.add_argument("--allowed_media_domains", default=None)
    p.add_argument("--allowed_local_media_path", default=None)
    p.add_argument("--weight-format", dest="weight_format", default="int8",
                   choices=["fp16", "int8", "int4"])
    p.add_argument("--tool_parser", default=None)
    p.add_argument("--reasoning_parser", default=None)
    p.add_argument("--enable_tool_guided_generation", default=None)
    p.add_argument("--kv_cache_precision", default=None, choices=["u8"])
    p.add_argument("--max_prompt_len", type=int, default=None)
    p.add_argument("--extra_quantization_params", default=None)
    p.add_argument("--verbose_response", action="store_true",
                   help="answers carry the templated prompt and raw output (__verbose)")
    p.add_argument("--draft_source_model", default=None,
                   help="local folder of an OpenVINO draft model: enables speculative decoding "
                        "(written into the generated graph as draft_models_path)")
    p.add_argument("--draft_model_path", default=None,
                   help="same as --draft_source_model")
    p.add_argument("--num_assistant_tokens", type=int, default=None,
                   help="draft tokens per step when a request sets neither this nor "
                        "assistant_confidence_threshold (default 5)")
    p.add_argument("--assistant_confidence_threshold", type=float, default=None,
                   help="draft while the draft model's confidence is above this, when a request "
                        "sets neither this nor num_assistant_tokens")
    p.add_argument("--engine_rss_limit_mb", type=int, default=0,
                   help="RSS in MiB above which an LLM engine process is replaced (0 = off; "
                        f"sets {ENGINE_RSS_LIMIT_ENV})")


def draft_folder(settings: Mapping[str, Any]) -> str | None:
    """The draft model folder of ``--draft_source_model`` / ``--draft_model_path``, absolute.

    Raises:
        ValueError: both flags name different folders, or the folder does not exist (a
            Hugging Face name is not downloaded: pull or export the draft model first).
    """
    given = {f"--{name}": settings.get(name) for name in ("draft_source_model", "draft_model_path")}
    values = {flag: value for flag, value in given.items() if value}
    if not values:
        return None
    paths = {str(Path(value).expanduser().resolve()) for value in values.values()}
    if len(paths) > 1:
        raise ValueError("--draft_source_model and --draft_model_path name different folders")
    [path] = paths
    flag = next(iter(values))
    if not Path(path).is_dir():
        raise ValueError(
            f"{flag} {values[flag]}: no such folder (ovgraph serve takes a local OpenVINO draft "
            "model; pull or export it first)"
        )
    return path


def assistant_defaults(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``--num_assistant_tokens`` / ``--assistant_confidence_threshold`` as config fields.

    Raises:
        ValueError: both are set, or a value is out of range.
    """
    tokens = settings.get("num_assistant_tokens")
    threshold = settings.get("assistant_confidence_threshold")
    if tokens is not None and threshold is not None:
        raise ValueError(
            "--num_assistant_tokens and --assistant_confidence_threshold are exclusive"
        )
    if tokens is not None:
        if int(tokens) < 1:
            raise ValueError("--num_assistant_tokens must be a positive number")
        return {"num_assistant_tokens": int(tokens)}
    if threshold is not None:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError("--assistant_confidence_threshold must be between 0 and 1")
        return {"assistant_confidence_threshold": float(threshold)}
    return {}


def apply(settings: Mapping[str, Any]) -> None:
    """Check the draft flags; hand the engine settings on through the environment."""
    draft_folder(settings)
    assistant_defaults(settings)
    limit = settings.get("engine_rss_limit_mb")
    if limit:
        if int(limit) < 0:
            raise ValueError("--engine_rss_limit_mb must be 0 (off) or a positive number")
        os.environ[ENGINE_RSS_LIMIT_ENV] = str(int(limit))
