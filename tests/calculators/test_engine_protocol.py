"""What crosses the engine-process boundary: generation configs and errors."""

from __future__ import annotations

import openvino_genai as ov_genai
import pytest

from calculators.llm.engine_protocol import (
    CONFIG_FIELDS,
    config_from_wire,
    config_to_wire,
    error_from_wire,
    error_to_wire,
)
from ovgraph.errors import InvalidParameterError, RequestError

# Fields of GenerationConfig that are not plain values: methods, and objects the server never
# sets (adapters, parsers) or sends its own way (structured_output_config).
NOT_PLAIN = {"adapters", "parsers", "stop_criteria", "structured_output_config",
             "branching_factor", "pruning_ratio", "relevance_weight", "tree_depth",
             "return_omni_outputs"}


def test_every_plain_generation_field_crosses() -> None:
    config = ov_genai.GenerationConfig()
    plain = {
        name for name in dir(config)
        if not name.startswith("_") and not callable(getattr(config, name))
    } - NOT_PLAIN
    assert plain == set(CONFIG_FIELDS)


def test_config_round_trip_keeps_every_value() -> None:
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = 17
    config.temperature = 0.3
    config.do_sample = True
    config.top_k = 5
    config.top_p = 0.8
    config.rng_seed = 1234
    config.stop_strings = {"a", "bc"}
    config.stop_token_ids = {7, 9}
    config.eos_token_id = 3
    config.logprobs = 2
    config.num_beams = 1
    config.ignore_eos = True
    config.include_stop_str_in_output = True
    config.repetition_penalty = 1.1
    config.presence_penalty = 0.2
    config.frequency_penalty = 0.1
    config.min_p = 0.05
    config.structured_output_config = ov_genai.StructuredOutputConfig(
        json_schema='{"type":"object"}'
    )
    back = config_from_wire(config_to_wire(config))
    for name in CONFIG_FIELDS:
        assert getattr(back, name) == getattr(config, name), name
    assert back.structured_output_config.json_schema == '{"type":"object"}'


def test_default_config_crosses_as_an_empty_dict() -> None:
    assert config_to_wire(ov_genai.GenerationConfig()) == {}


@pytest.mark.parametrize(
    "error",
    [
        # a client fault with a parameter stays a 400 naming it
        InvalidParameterError("Image aspect ratio must be smaller than 200", param="messages"),
        # a client fault without one
        RequestError("Chat template failed"),
        # a server fault
        RuntimeError("step failed"),
    ],
)
def test_errors_keep_their_kind(error: Exception) -> None:
    back = error_from_wire(error_to_wire(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert getattr(back, "param", None) == getattr(error, "param", None)
