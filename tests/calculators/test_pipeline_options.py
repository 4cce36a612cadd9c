"""Graph options and server flags that shape the genai pipeline reach the genai objects.

Each test builds the real ``openvino_genai`` object (``SchedulerConfig``, ``GenerationConfig``)
from ``LLMCalculatorOptions`` the way a servable does, and reads the values back.
"""

from __future__ import annotations

import json
from pathlib import Path

import openvino_genai as ov_genai
import pytest

from calculators.llm import chunks
from calculators.llm.common import LLMCalculatorOptions
from calculators.llm.pipeline_options import (
    adjust_for_decoding,
    decoding_method,
    draft_scheduler_config,
)
from calculators.llm.servable import ServableKey, build_scheduler_config
from calculators.llm.serve_flags import assistant_defaults, draft_folder
from tests.conftest import TINY_MODEL


@pytest.fixture(autouse=True)
def text_model(tmp_path: Path) -> Path:
    """A folder that reads as a text-only model (no vision models), and its draft."""
    global TEXT_MODEL
    TEXT_MODEL = tmp_path / "lm"
    TEXT_MODEL.mkdir()
    (TEXT_MODEL / "config.json").write_text('{"max_position_embeddings": 128}')
    return TEXT_MODEL


TEXT_MODEL = Path()


def _options(**fields: object) -> LLMCalculatorOptions:
    return LLMCalculatorOptions(
        models_path=str(TEXT_MODEL), pipeline_type=LLMCalculatorOptions.LM_CB, device="CPU",
        **fields,
    )


def test_draft_options_reach_the_draft_scheduler() -> None:
    options = _options(
        draft_models_path=str(TINY_MODEL), draft_device="CPU", draft_max_num_batched_tokens=77,
        draft_cache_size=1, draft_max_num_seqs=3, draft_dynamic_split_fuse=False,
    )
    key = ServableKey.from_options(options, None)
    assert key.draft_models_dir == str(TINY_MODEL.resolve())
    settings = json.loads(key.draft_options)
    assert settings["device"] == "CPU"
    scheduler = draft_scheduler_config(settings)
    assert scheduler.max_num_batched_tokens == 77
    assert scheduler.cache_size == 1
    assert scheduler.max_num_seqs == 3
    assert not scheduler.dynamic_split_fuse
    # unset draft options take the main model's values
    plain = json.loads(
        ServableKey.from_options(_options(draft_models_path=str(TINY_MODEL), max_num_seqs=9),
                                 None).draft_options
    )
    assert plain["max_num_seqs"] == 9


def test_draft_block_size_is_refused() -> None:
    options = _options(draft_models_path=str(TINY_MODEL), draft_block_size=16)
    with pytest.raises(ValueError, match="draft_block_size is not supported"):
        ServableKey.from_options(options, None)


def test_eagle3_mode_forces_greedy_drafting() -> None:
    key = ServableKey.from_options(
        _options(draft_models_path=str(TINY_MODEL), draft_eagle3_mode=True), None
    )
    assert decoding_method(key) == "eagle3"
    config = ov_genai.GenerationConfig()
    config.do_sample, config.num_beams = True, 1
    adjust_for_decoding(config, "eagle3")
    assert not config.do_sample and config.num_assistant_tokens == 5


def test_assistant_defaults_from_the_command_line() -> None:
    config = ov_genai.GenerationConfig()
    adjust_for_decoding(config, "speculative", assistant_defaults({"num_assistant_tokens": 3}))
    assert config.num_assistant_tokens == 3
    config = ov_genai.GenerationConfig()
    defaults = assistant_defaults({"assistant_confidence_threshold": 0.4})
    adjust_for_decoding(config, "speculative", defaults)
    assert config.num_assistant_tokens == 0
    assert config.assistant_confidence_threshold == pytest.approx(0.4)
    # a request's own value wins
    config = ov_genai.GenerationConfig()
    config.num_assistant_tokens = 2
    adjust_for_decoding(config, "speculative", defaults)
    assert config.num_assistant_tokens == 2
    with pytest.raises(ValueError, match="exclusive"):
        assistant_defaults({"num_assistant_tokens": 3, "assistant_confidence_threshold": 0.4})
    assert draft_folder({"draft_model_path": str(TINY_MODEL)}) == str(TINY_MODEL.resolve())


def test_cache_eviction_and_sparse_attention_reach_the_scheduler() -> None:
    options = _options()
    options.cache_eviction_config.start_size = 32
    options.cache_eviction_config.recent_size = 128
    options.cache_eviction_config.max_cache_size = 672
    options.cache_eviction_config.aggregation_mode = (
        LLMCalculatorOptions.CacheEvictionConfig.SUM
    )
    options.sparse_attention_config.mode = (
        LLMCalculatorOptions.SparseAttentionConfig.XATTENTION
    )
    options.sparse_attention_config.num_last_dense_tokens_in_prefill = 50
    options.cache_interval_multiplier = 4
    scheduler = build_scheduler_config(ServableKey.from_options(options, None), 100)
    assert scheduler.use_cache_eviction
    eviction = scheduler.cache_eviction_config
    sizes = (eviction.get_start_size(), eviction.get_recent_size(), eviction.get_max_cache_size())
    assert sizes == (32, 128, 672)
    assert eviction.aggregation_mode == ov_genai.AggregationMode.SUM
    assert scheduler.use_sparse_attention
    sparse = scheduler.sparse_attention_config
    assert sparse.mode == ov_genai.SparseAttentionMode.XATTENTION
    assert sparse.num_last_dense_tokens_in_prefill == 50
    assert scheduler.cache_interval_multiplier == 4


def test_echoed_logprobs_start_with_null() -> None:
    tokens = [(b"Hel", 1.0), (b"lo", -2.5), (b" w", -1.0)]
    echoed = chunks.completion_logprobs(tokens, echo=True)
    assert echoed["token_logprobs"] == [None, -2.5, -1.0]
    assert echoed["top_logprobs"] == [None, {"lo": -2.5}, {" w": -1.0}]
    assert echoed["text_offset"] == [0, 3, 5]
    assert chunks.completion_logprobs(tokens)["token_logprobs"][0] == 0.0
