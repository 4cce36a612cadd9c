"""Request fields that used to be accepted and ignored, through ``ovgraph serve`` and ``openai``.

Each test shows a field's effect (or its refusal) on the default tiny fixture server.
"""

from __future__ import annotations

import openai
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.e2e

MODEL = "qwen2vl-tiny"
HELLO = [{"role": "user", "content": "Hello"}]


def _sample(client: openai.OpenAI, **extra: object) -> str:
    """Twelve tokens at temperature 2.0 (ignore_eos keeps the length fixed)."""
    response = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=12, temperature=2.0,
        extra_body={"ignore_eos": True, **extra.pop("extra_body", {})},  # type: ignore[dict-item]
        **extra,  # type: ignore[arg-type]
    )
    return response.choices[0].message.content or ""


def test_unseeded_sampling_draws_a_seed_per_request(openai_client: openai.OpenAI) -> None:
    answers = {_sample(openai_client) for _ in range(3)}
    assert len(answers) == 3


def test_explicit_seed_is_reproducible(openai_client: openai.OpenAI) -> None:
    first, second = _sample(openai_client, seed=7), _sample(openai_client, seed=7)
    assert first == second
    assert _sample(openai_client, seed=8) != first


def test_top_k_minus_one_means_no_limit(openai_client: openai.OpenAI) -> None:
    # -1 samples from the whole vocabulary: the same draw as a limit above the vocabulary size,
    # and not the draw of the default limit (40) for at least one seed.
    def draw(top_k: int, seed: int) -> str:
        return _sample(openai_client, seed=seed, extra_body={"top_k": top_k})

    seeds = (1, 2, 3)
    unlimited = [draw(-1, seed) for seed in seeds]
    assert unlimited == [draw(10**6, seed) for seed in seeds]
    assert unlimited != [draw(40, seed) for seed in seeds]


def test_top_k_zero_is_refused(server: ServerProcess) -> None:
    status, answer = server.post(
        "/v3/chat/completions", {"model": MODEL, "messages": HELLO, "top_k": 0}
    )
    assert status == 400
    assert answer["error"]["message"] == "top_k must be -1 (all tokens) or a positive integer"
    assert answer["error"]["param"] == "top_k"
