"""The LLM serve flags (OVMS's names), contributed to ``ovgraph serve`` through an entry point.

Registered in the ``ovgraph.serve_flags`` group: ``add_arguments(parser)`` declares the flags,
``apply(settings)`` runs once at server start with the node settings (every flag's value) and
sets what the LLM engines read from the environment. The values reach the calculators as the
settings of ``create_node_resources`` and the ``text_generation`` task's graph template.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["ENGINE_RSS_LIMIT_ENV", "add_arguments", "apply"]

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
    p.add_argument("--engine_rss_limit_mb", type=int, default=0,
                   help="RSS in MiB above which an LLM engine process is replaced (0 = off; "
                        f"sets {ENGINE_RSS_LIMIT_ENV})")


def apply(settings: Mapping[str, Any]) -> None:
    """Hand the engine settings on through the environment the engine processes read."""
    limit = settings.get("engine_rss_limit_mb")
    if limit:
        if int(limit) < 0:
            raise ValueError("--engine_rss_limit_mb must be 0 (off) or a positive number")
        os.environ[ENGINE_RSS_LIMIT_ENV] = str(int(limit))
