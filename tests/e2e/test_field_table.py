"""Every graph option and every documented request field is honoured or refused: the table.

``OPTIONS`` covers each field of ``LLMCalculatorOptions`` (read from the proto descriptor) and
``REQUEST`` each field OVMS documents for ``/chat/completions`` and ``/completions``
(``docs/model_server_rest_api_chat.md``, ``…_completions.md``, including its "unsupported" lists)
plus every field the request parser reads. A field is

* `Honoured`: the named test shows its effect (it must exist);
* `Refused`: the example is answered with a 400 naming the field, or a graph using the option
  fails to load with the error; both are checked here against a real ``ovgraph serve``;
* `Metadata`: accepted with no effect on the answer by its definition;
* listed in `PENDING_ENGINE` / `PENDING_AGENTIC`: the generation engine and the tools / structured
  output work take these; they empty the lists as they land.

A new option or a new parsed field fails `test_every_option_is_classified` or
`test_every_request_field_is_classified` until it is placed in the table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from calculators.llm import request_structure, request_validation
from calculators.llm.common import LLMCalculatorOptions
from tests.conftest import ServerProcess
from tests.e2e.test_request_fields import HELLO, MODEL, graph_load_error

pytestmark = pytest.mark.e2e

FIELDS = "tests/e2e/test_request_fields.py"
API = "tests/e2e/test_openai_api.py"
UNIT = "tests/calculators/test_llm_calculators.py"
LM = "tests/e2e/test_text_only_model.py"
ECHO = "tests/e2e/test_prompt_logprobs.py"
PIPE = "tests/calculators/test_pipeline_options.py"
AGENTIC = "tests/e2e/test_agentic.py"
PARSERS = "tests/calculators/test_output_parsers.py"


@dataclass(frozen=True)
class Honoured:
    """The test that shows the field's effect (``path::function``)."""

    test: str


@dataclass(frozen=True)
class Refused:
    """A request fragment (or an option line) that is refused, and the error it gets."""

    example: dict | str
    error: str
    note: str = ""


@dataclass(frozen=True)
class Metadata:
    """Accepted, with no effect on the answer by definition."""

    reason: str


OPTIONS: dict[str, Honoured | Refused] = {
    "models_path": Honoured(f"{FIELDS}::test_servable_options_reach_the_pipeline"),
    "max_num_batched_tokens": Honoured(f"{UNIT}::test_scheduler_options_reach_genai"),
    "cache_size": Honoured(f"{UNIT}::test_scheduler_options_reach_genai"),
    "max_num_seqs": Honoured(f"{UNIT}::test_scheduler_options_reach_genai"),
    "dynamic_split_fuse": Honoured(f"{UNIT}::test_scheduler_options_reach_genai"),
    "device": Honoured(f"{FIELDS}::test_servable_options_reach_the_pipeline"),
    "plugin_config": Honoured(f"{FIELDS}::test_servable_options_reach_the_pipeline"),
    "best_of_limit": Honoured(f"{FIELDS}::test_graph_request_limits"),
    "max_tokens_limit": Honoured(f"{FIELDS}::test_graph_request_limits"),
    "enable_prefix_caching": Honoured(f"{UNIT}::test_scheduler_options_reach_genai"),
    "pipeline_type": Honoured(f"{UNIT}::test_scheduler_options_reach_genai"),
    "draft_models_path": Honoured(
        f"{LM}::test_model_drafting_for_itself_changes_nothing_and_is_always_accepted"
    ),
    "draft_device": Honoured(f"{PIPE}::test_draft_options_reach_the_draft_scheduler"),
    "draft_max_num_batched_tokens": Honoured(
        f"{PIPE}::test_draft_options_reach_the_draft_scheduler"
    ),
    "draft_cache_size": Honoured(f"{PIPE}::test_draft_options_reach_the_draft_scheduler"),
    "draft_max_num_seqs": Honoured(f"{PIPE}::test_draft_options_reach_the_draft_scheduler"),
    "draft_dynamic_split_fuse": Honoured(
        f"{PIPE}::test_draft_options_reach_the_draft_scheduler"
    ),
    "draft_eagle3_mode": Honoured(f"{PIPE}::test_eagle3_mode_forces_greedy_drafting"),
    "draft_block_size": Refused(
        f'draft_models_path: "{Path(__file__).parent}" draft_block_size: 16',
        "draft_block_size is not supported",
        note="genai 2026.4's SchedulerConfig has no block size",
    ),
    "cache_eviction_config": Honoured(
        f"{PIPE}::test_cache_eviction_and_sparse_attention_reach_the_scheduler"
    ),
    "sparse_attention_config": Honoured(
        f"{PIPE}::test_cache_eviction_and_sparse_attention_reach_the_scheduler"
    ),
    "cache_interval_multiplier": Honoured(
        f"{PIPE}::test_cache_eviction_and_sparse_attention_reach_the_scheduler"
    ),
    "tool_parser": Honoured(f"{AGENTIC}::test_tool_parser_flag"),
    "reasoning_parser": Honoured(f"{PARSERS}::test_graph_option_wins_and_none_disables"),
    "enable_tool_guided_generation": Honoured(
        f"{PARSERS}::test_auto_tool_choice_is_only_guided_when_enabled"
    ),
    "chat_template_mode": Refused(
        "chat_template_mode: JINJA", "chat_template_mode: JINJA is not supported",
        note="MINJA (genai's renderer, the default) is what is done",
    ),
}

#: Fields waiting for a test that shows their effect (empty: every field is placed).
PENDING_ENGINE: dict[str, str] = {}
PENDING_AGENTIC: dict[str, str] = {}

REQUEST: dict[str, Honoured | Refused | Metadata] = {
    "model": Honoured(f"{API}::test_unknown_model_404"),
    "messages": Honoured(f"{API}::test_unary_chat_with_image"),
    "prompt": Honoured(f"{LM}::test_completions_match_raw_generate"),
    "stream": Honoured(f"{API}::test_streamed_chat_matches_unary"),
    "stream_options": Honoured(f"{API}::test_sse_layout_with_usage"),
    "stream_options.include_usage": Honoured(f"{API}::test_sse_layout_with_usage"),
    "stream_options.include_obfuscation": Refused(
        {"stream": True, "stream_options": {"include_obfuscation": True}},
        "stream_options.include_obfuscation is not supported (set it to false)",
    ),
    "stream_options.continuous_usage_stats": Honoured(
        f"{FIELDS}::test_continuous_usage_stats_fill_every_chunk"
    ),
    "max_tokens": Honoured(f"{API}::test_streamed_chat_matches_unary"),
    "max_completion_tokens": Honoured(f"{API}::test_unary_chat_with_image"),
    "ignore_eos": Honoured(f"{FIELDS}::test_ignore_eos_runs_to_max_tokens"),
    "stop": Honoured(f"{FIELDS}::test_stop_and_include_stop_str_in_output"),
    "stop_token_ids": Honoured(f"{FIELDS}::test_stop_token_ids_and_min_tokens"),
    "min_tokens": Honoured(f"{FIELDS}::test_stop_token_ids_and_min_tokens"),
    "include_stop_str_in_output": Honoured(f"{FIELDS}::test_stop_and_include_stop_str_in_output"),
    "chat_template_kwargs": Honoured(f"{FIELDS}::test_add_generation_prompt_false"),
    "skip_special_tokens": Honoured(f"{FIELDS}::test_skip_special_tokens"),
    "temperature": Honoured(f"{FIELDS}::test_temperature_samples"),
    "top_p": Honoured(f"{FIELDS}::test_narrow_sampling_is_greedy"),
    "top_k": Honoured(f"{FIELDS}::test_top_k_minus_one_means_no_limit"),
    "min_p": Honoured(f"{FIELDS}::test_min_p_filters_candidates"),
    "repetition_penalty": Honoured(f"{FIELDS}::test_penalties_change_the_answer"),
    "frequency_penalty": Honoured(f"{FIELDS}::test_penalties_change_the_answer"),
    "presence_penalty": Honoured(f"{FIELDS}::test_penalties_change_the_answer"),
    "seed": Honoured(f"{FIELDS}::test_explicit_seed_is_reproducible"),
    "logprobs": Honoured(f"{FIELDS}::test_chat_logprobs_in_openai_shape"),
    "n": Honoured(f"{FIELDS}::test_n_choices_from_beam_search"),
    "best_of": Honoured(f"{FIELDS}::test_best_of_answers_the_best_beam"),
    "length_penalty": Honoured(f"{FIELDS}::test_length_penalty_reorders_beams"),
    "echo": Honoured(f"{ECHO}::test_echo_returns_the_prompt_and_its_logprobs"),
    "num_assistant_tokens": Honoured(f"{LM}::test_assisted_fields_per_request"),
    "assistant_confidence_threshold": Honoured(f"{LM}::test_assisted_fields_per_request"),
    "max_ngram_size": Honoured(f"{LM}::test_prompt_lookup_serves_requests"),
    "tools": Honoured(f"{AGENTIC}::test_required_tool_choice_returns_a_parsed_call"),
    "tool_choice": Honoured(f"{AGENTIC}::test_named_tool_choice_forces_that_function"),
    "response_format": Honoured(f"{AGENTIC}::test_json_schema_stream_is_valid_json"),
    "parallel_tool_calls": Honoured(
        f"{AGENTIC}::test_parallel_tool_calls_false_ends_after_one_call"
    ),
    "reasoning_effort": Honoured(f"{AGENTIC}::test_reasoning_effort_turns_thinking_on_and_off"),
    # vLLM's guided decoding
    "guided_json": Honoured(f"{AGENTIC}::test_vllm_guided_choice_and_json"),
    "guided_choice": Honoured(f"{AGENTIC}::test_vllm_guided_choice_and_json"),
    "structured_outputs": Honoured(f"{AGENTIC}::test_vllm_guided_choice_and_json"),
    "guided_regex": Refused(
        {"guided_regex": "a+"}, "guided_regex is not supported: use guided_json or guided_choice"
    ),
    "guided_grammar": Refused(
        {"guided_grammar": "root ::= x"},
        "guided_grammar is not supported: use guided_json or guided_choice",
    ),
    "guided_whitespace_pattern": Refused(
        {"guided_whitespace_pattern": " "},
        "guided_whitespace_pattern is not supported (JSON is compact)",
    ),
    "guided_decoding_backend": Metadata("vLLM: which library enforces the grammar"),
    "user": Metadata("OpenAI: an end-user id for abuse monitoring"),
    "safety_identifier": Metadata("OpenAI: an end-user id for abuse monitoring"),
    "metadata": Metadata("OpenAI: the client's labels for stored completions"),
    "prompt_cache_key": Metadata("OpenAI: a routing hint for prompt caching"),
    "service_tier": Metadata("OpenAI: a processing and billing tier"),
    "prediction": Metadata("OpenAI: predicted output may make an answer faster, never different"),
    # OpenAI fields for what the server cannot do
    "modalities": Refused(
        {"modalities": ["text", "audio"]}, 'modalities other than ["text"] are not supported'
    ),
    "audio": Refused(
        {"audio": {"voice": "alloy", "format": "wav"}}, "audio output is not supported"
    ),
    "web_search_options": Refused(
        {"web_search_options": {}}, "web_search_options is not supported"
    ),
    "store": Refused({"store": True}, "store is not supported: answers are not stored"),
    "verbosity": Refused({"verbosity": "low"}, "verbosity is not supported"),
    # documented by OVMS as unsupported
    "logit_bias": Refused({"logit_bias": {"50": 10}}, "logit_bias is not supported"),
    "top_logprobs": Refused(
        {"top_logprobs": 2},
        "top_logprobs is not supported: openvino_genai reports the chosen token's logprob only",
    ),
    "functions": Refused({"functions": [{"name": "f"}]}, "functions is not supported; use tools"),
    "function_call": Refused(
        {"function_call": "auto"}, "function_call is not supported; use tool_choice"
    ),
    "suffix": Refused({"suffix": "end"}, "suffix is not supported"),
    "use_beam_search": Refused(
        {"use_beam_search": True}, "use_beam_search is not supported; set best_of for beam search"
    ),
    "early_stopping": Refused({"early_stopping": True}, "early_stopping is not supported"),
    "prompt_logprobs": Refused({"prompt_logprobs": 1}, "prompt_logprobs is not supported"),
    "detokenize": Refused({"detokenize": False}, "detokenize: false is not supported"),
    "spaces_between_special_tokens": Refused(
        {"spaces_between_special_tokens": False},
        "spaces_between_special_tokens: false is not supported",
    ),
    "logits_processors": Refused(
        {"logits_processors": ["x"]}, "logits_processors is not supported"
    ),
    "truncate_prompt_tokens": Refused(
        {"truncate_prompt_tokens": 10}, "truncate_prompt_tokens is not supported"
    ),
}

#: Request fields documented by OVMS 2026.3 (chat and completions request tables, nested options
#: and the "unsupported params" lists).
DOCUMENTED_REQUEST_FIELDS = frozenset({
    "model", "stop", "stream", "stream_options", "stream_options.include_usage", "messages",
    "prompt", "max_tokens", "ignore_eos", "include_stop_str_in_output", "logprobs", "echo",
    "tools", "tool_choice", "response_format", "chat_template_kwargs", "skip_special_tokens",
    "n", "best_of", "length_penalty", "temperature", "top_p", "min_p", "top_k",
    "repetition_penalty", "frequency_penalty", "presence_penalty", "seed",
    "num_assistant_tokens", "assistant_confidence_threshold", "max_ngram_size",
    "logit_bias", "top_logprobs", "user", "function_call", "functions", "suffix",
    "use_beam_search", "early_stopping", "stop_token_ids", "min_tokens", "prompt_logprobs",
    "detokenize", "spaces_between_special_tokens", "logits_processors", "truncate_prompt_tokens",
})  # fmt: skip


def _parsed_fields() -> set[str]:
    """Every field the request parser reads, accepts as metadata or refuses."""
    return (
        set(request_validation._CHAT_FIELDS)
        | set(request_validation._COMPLETIONS_FIELDS)
        | set(request_validation.UNSUPPORTED_FIELDS)
        | set(request_validation.METADATA_FIELDS)
        | set(request_structure.GUIDED_FIELDS)
        | set(request_structure.REFUSED_GUIDED_FIELDS)
        | {"stream_options.include_usage", "stream_options.continuous_usage_stats",
           "stream_options.include_obfuscation"}
    )


def test_every_option_is_classified() -> None:
    fields = set(LLMCalculatorOptions.DESCRIPTOR.fields_by_name)
    pending = (set(PENDING_ENGINE) | set(PENDING_AGENTIC)) & fields
    assert not set(OPTIONS) & pending
    assert set(OPTIONS) | pending == fields


def test_every_request_field_is_classified() -> None:
    fields = DOCUMENTED_REQUEST_FIELDS | _parsed_fields()
    pending = (set(PENDING_ENGINE) | set(PENDING_AGENTIC)) & fields
    assert not set(REQUEST) & pending
    assert set(REQUEST) | pending == fields
    # the pending lists name nothing that is not a field
    options = set(LLMCalculatorOptions.DESCRIPTOR.fields_by_name)
    assert set(PENDING_ENGINE) | set(PENDING_AGENTIC) <= fields | options


def _honoured() -> list[str]:
    tests = {v.test for v in (*OPTIONS.values(), *REQUEST.values()) if isinstance(v, Honoured)}
    return sorted(tests)


@pytest.mark.parametrize("test", _honoured())
def test_honoured_fields_name_a_test(test: str) -> None:
    path, name = test.split("::")
    assert Path(path).exists(), path
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert callable(getattr(module, name, None)), test


@pytest.mark.parametrize(
    ("field", "verdict"),
    [(k, v) for k, v in REQUEST.items() if isinstance(v, Refused)],
    ids=[k for k, v in REQUEST.items() if isinstance(v, Refused)],
)
def test_refused_request_fields(server: ServerProcess, field: str, verdict: Refused) -> None:
    assert isinstance(verdict.example, dict)
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 2, **verdict.example}
    status, answer = server.post("/v3/chat/completions", body)
    assert status == 400
    assert answer["error"]["message"] == verdict.error
    assert answer["error"]["param"] == field


@pytest.mark.parametrize(
    ("field", "verdict"),
    [(k, v) for k, v in OPTIONS.items() if isinstance(v, Refused)],
    ids=[k for k, v in OPTIONS.items() if isinstance(v, Refused)],
)
def test_refused_options(tmp_path: Path, field: str, verdict: Refused) -> None:
    assert isinstance(verdict.example, str)
    assert verdict.error in graph_load_error(tmp_path, verdict.example)
