"""A text-only Qwen2 model served as ``LM_CB``, ``LM`` and ``AUTO``, checked against raw genai.

The model is built at test time by ``tools/make_model.py --preset tiny-lm`` in the export
environment (marked ``export``, like ``test_export.py``); nothing is committed. Answers must equal
``openvino_genai.LLMPipeline.generate`` on the same prompt (greedy, 16 new tokens): chat requests
on the chat-templated prompt, ``/completions`` on the raw prompt string.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from calculators.llm.servable import determine_pipeline_type
from tests.conftest import REPO, ServerProcess, png_data_url
from tests.e2e.test_export import export_python  # noqa: F401  (session fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.export]

MODEL = "tiny-lm"
MAX_TOKENS = 16
CHAT = [{"role": "user", "content": "What does a tokenizer do?"}]
PROMPT = "def main():\n    "
TEXT_ONLY = "This servable supports only text input, but image_url has been provided"


@pytest.fixture(scope="module")
def lm_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny-lm`` preset exported to OpenVINO IR into a temporary folder.

    ``OVGRAPH_TINY_LM`` names an already built one instead (quicker local runs, no export
    environment needed).
    """
    built = os.environ.get("OVGRAPH_TINY_LM")
    if built:
        return Path(built).resolve()
    exporter: Path = request.getfixturevalue("export_python")
    out = tmp_path_factory.mktemp("lm") / "qwen2-tiny-lm"
    start = time.monotonic()
    subprocess.run(
        [str(exporter), "tools/make_model.py", "--preset", "tiny-lm", "--out", str(out)],
        cwd=REPO, check=True, timeout=900, capture_output=True,
    )
    print(f"tiny-lm built in {time.monotonic() - start:.1f} s")
    return out


@pytest.fixture(scope="module")
def expected(lm_model: Path) -> dict[str, str]:
    """Greedy answers of a raw ``LLMPipeline``: templated chat prompt and plain prompt."""
    import openvino_genai as ov_genai

    pipeline = ov_genai.LLMPipeline(lm_model, "CPU")
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = MAX_TOKENS
    config.apply_chat_template = False
    templated = pipeline.get_tokenizer().apply_chat_template(CHAT, add_generation_prompt=True)
    answers = {
        "chat": str(pipeline.generate(templated, config)),
        "completion": str(pipeline.generate(PROMPT, config)),
    }
    assert answers["chat"] and answers["completion"]
    assert answers["chat"] != answers["completion"]
    return answers


@contextlib.contextmanager
def serve(model_dir: Path, pipeline_type: str | None) -> Iterator[ServerProcess]:
    args = ["--model_path", str(model_dir), "--model_name", MODEL, "--task", "text_generation"]
    if pipeline_type is not None:
        args += ["--pipeline_type", pipeline_type]
    server = ServerProcess(args)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["LM_CB", "LM"])
def lm_server(request: pytest.FixtureRequest, lm_model: Path) -> Iterator[ServerProcess]:
    with serve(lm_model, request.param) as server:
        yield server


def stream(server: ServerProcess, path: str, body: dict) -> list[dict]:
    """POST with ``stream: true``; return the parsed events (``[DONE]`` must end the stream)."""
    data = json.dumps({**body, "stream": True}).encode()
    request = urllib.request.Request(
        server.url + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        raw = response.read().decode()
    events = [line[len("data: "):] for line in raw.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]", raw
    return [json.loads(event) for event in events[:-1]]


def chat_body(**extra: object) -> dict:
    return {"model": MODEL, "max_tokens": MAX_TOKENS, "temperature": 0, "messages": CHAT, **extra}


def completion_body(**extra: object) -> dict:
    return {"model": MODEL, "max_tokens": MAX_TOKENS, "temperature": 0, "prompt": PROMPT, **extra}


def test_chat_matches_raw_generate(lm_server: ServerProcess, expected: dict[str, str]) -> None:
    status, body = lm_server.post("/v3/chat/completions", chat_body())
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["message"]["content"] == expected["chat"]
    assert body["usage"]["completion_tokens"] == MAX_TOKENS
    assert body["usage"]["prompt_tokens"] > 0

    events = stream(lm_server, "/v3/chat/completions", chat_body())
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    assert text == expected["chat"]
    assert events[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]


def test_completions_match_raw_generate(
    lm_server: ServerProcess, expected: dict[str, str]
) -> None:
    status, body = lm_server.post("/v3/completions", completion_body())
    assert status == 200, body
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == expected["completion"]
    assert body["usage"]["completion_tokens"] == MAX_TOKENS

    events = stream(lm_server, "/v3/completions", completion_body(
        stream_options={"include_usage": True}))
    *content, usage = events
    assert {e["object"] for e in events} == {"text_completion"}
    assert all("delta" not in c for e in content for c in e["choices"])
    assert "".join(e["choices"][0]["text"] for e in content) == expected["completion"]
    assert content[-1]["choices"][0]["finish_reason"] == "length"
    assert all(e["choices"][0]["finish_reason"] is None for e in content[:-1])
    assert all(e["usage"] is None for e in content)
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == MAX_TOKENS


def test_guided_choice_and_json_on_completions(lm_server: ServerProcess) -> None:
    choices = ["return 0", "pass", "print('hi')"]
    for seed in range(3):
        status, body = lm_server.post("/v3/completions", completion_body(
            guided_choice=choices, temperature=1.5, seed=seed))
        assert status == 200, body
        assert body["choices"][0]["text"] in choices
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    status, body = lm_server.post("/v3/completions", completion_body(
        guided_json=schema, max_tokens=40))
    assert status == 200, body
    assert isinstance(json.loads(body["choices"][0]["text"])["n"], int)


def test_image_input_is_rejected(lm_server: ServerProcess) -> None:
    image = png_data_url(np.zeros((28, 28, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": image}},
    ]}]
    status, body = lm_server.post("/v3/chat/completions", chat_body(messages=messages))
    assert status == 400
    assert body["error"]["message"] == TEXT_ONLY


def test_auto_resolves_to_continuous_batching(lm_model: Path, expected: dict[str, str]) -> None:
    assert determine_pipeline_type(lm_model, "AUTO", "CPU") == "LM_CB"
    with serve(lm_model, None) as server:
        status, raw = server.get("/v1/config")
        assert status == 200
        states = json.loads(raw)[MODEL]["model_version_status"]
        assert [s["state"] for s in states] == ["AVAILABLE"]
        status, body = server.post("/v3/chat/completions", chat_body())
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == expected["chat"]


# ------------------------------------------------------------------------- speculative decoding

# 1 + 6k tokens: the prefill step yields one token, each later step 1 + 5 drafts.
SPEC_TOKENS = 31


def _graph_with(
    lm_model: Path, folder: Path, pipeline_type: str, plugin_config: str = "", **options: str
) -> Path:
    """A graph folder serving ``lm_model`` with extra ``LLMCalculatorOptions`` fields."""
    from calculators.llm.graph_template import text_generation_graph

    settings = {"pipeline_type": pipeline_type, "plugin_config": plugin_config}
    text = text_generation_graph(lm_model, settings)
    fields = "".join(f" {name}: {value}" for name, value in options.items())
    text = text.replace(f'models_path: "{lm_model}"', f'models_path: "{lm_model}"{fields}', 1)
    folder.mkdir(parents=True)
    (folder / "graph.pbtxt").write_text(text)
    return folder


def _spec_samples(server: ServerProcess) -> dict[str, float]:
    from tests.e2e._reliability import metric_samples

    samples = metric_samples(server.url)
    label = f'{{model="{MODEL}"}}'
    return {
        "draft": samples.get(f"ovgraph_llm_spec_decode_draft_tokens_total{label}", 0.0),
        "accepted": samples.get(f"ovgraph_llm_spec_decode_accepted_tokens_total{label}", 0.0),
    }


@pytest.mark.parametrize("pipeline_type", ["LM_CB", "LM"])
def test_model_drafting_for_itself_changes_nothing_and_is_always_accepted(
    lm_model: Path, tmp_path: Path, pipeline_type: str
) -> None:
    body = {**chat_body(), "max_tokens": SPEC_TOKENS}
    with serve(lm_model, pipeline_type) as plain:
        status, reference = plain.post("/v3/chat/completions", body)
        assert status == 200, reference
    folder = _graph_with(
        lm_model, tmp_path / "spec", pipeline_type, draft_models_path=f'"{lm_model}"'
    )
    server = ServerProcess(["--model_path", str(folder), "--model_name", MODEL,
                            "--metrics_enable"])
    try:
        server.wait_ready()
        status, answer = server.post("/v3/chat/completions", body)
        assert status == 200, answer
        assert answer["choices"][0]["message"]["content"] == (
            reference["choices"][0]["message"]["content"]
        )
        events = stream(server, "/v3/chat/completions", body)
        text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
        assert text == reference["choices"][0]["message"]["content"]
        counts = _spec_samples(server)
        assert counts["draft"] > 0
        assert counts["accepted"] / counts["draft"] >= 0.9, counts
    finally:
        server.stop()


@pytest.mark.parametrize(
    # OVMS's flag, the alias, and a fixed number of drafts per step
    ("flags", "per_step"),
    [
        (["--draft_source_model"], 5),
        (["--draft_model_path"], 5),
        (["--draft_source_model", "--num_assistant_tokens", "3"], 3),
    ],
)
def test_draft_model_flags_enable_speculative_decoding(
    lm_model: Path, flags: list[str], per_step: int
) -> None:
    body = {**completion_body(), "max_tokens": SPEC_TOKENS}
    with serve(lm_model, "LM_CB") as plain:
        status, reference = plain.post("/v3/completions", body)
        assert status == 200, reference
    flag_args = [flags[0], str(lm_model), *flags[1:]]
    server = ServerProcess(["--model_path", str(lm_model), "--model_name", MODEL,
                            "--task", "text_generation", "--pipeline_type", "LM_CB",
                            "--metrics_enable", *flag_args])
    try:
        server.wait_ready()
        status, answer = server.post("/v3/completions", body)
        assert status == 200, answer
        assert answer["choices"][0]["text"] == reference["choices"][0]["text"]
        counts = _spec_samples(server)
        # The model drafts for itself: every draft is accepted (the last step may be cut
        # short by max_tokens, so a few proposed drafts are never checked).
        assert counts["draft"] > 0 and counts["draft"] % per_step == 0, counts
        assert counts["accepted"] / counts["draft"] >= 0.9, counts
        print(f"draft acceptance ({per_step} per step): {counts}")
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # a Hugging Face name is not downloaded by serve
        (["--draft_source_model", "OpenVINO/not-here"], "no such folder"),
        (["--draft_source_model", "{model}", "--num_assistant_tokens", "2",
          "--assistant_confidence_threshold", "0.5"], "are exclusive"),
    ],
)
def test_bad_draft_flags_stop_the_server(lm_model: Path, flags: list[str], message: str) -> None:
    args = [flag.format(model=lm_model) for flag in flags]
    server = ServerProcess(["--model_path", str(lm_model), "--model_name", MODEL,
                            "--task", "text_generation", *args])
    try:
        with pytest.raises(RuntimeError, match=message):
            server.wait_ready(60)
    finally:
        server.stop()


def _spec_delta(server: ServerProcess, body: dict) -> tuple[dict, dict[str, float]]:
    """Answer ``body``; return the answer and the speculative counters it added."""
    before = _spec_samples(server)
    status, answer = server.post("/v3/completions", body)
    assert status == 200, answer
    after = _spec_samples(server)
    return answer, {k: after[k] - before[k] for k in after}


def test_assisted_fields_per_request(lm_model: Path) -> None:
    body = {**completion_body(), "max_tokens": SPEC_TOKENS}
    with serve(lm_model, "LM_CB") as plain:
        status, reference = plain.post("/v3/completions", body)
        assert status == 200, reference
        # no draft model and no prompt lookup: nothing would use them
        for field in ("num_assistant_tokens", "assistant_confidence_threshold", "max_ngram_size"):
            status, answer = plain.post("/v3/completions", {**body, field: 2})
            assert status == 400 and answer["error"]["param"] == field, answer
    text = reference["choices"][0]["text"]
    server = ServerProcess(["--model_path", str(lm_model), "--model_name", MODEL,
                            "--task", "text_generation", "--pipeline_type", "LM_CB",
                            "--metrics_enable", "--draft_source_model", str(lm_model)])
    try:
        server.wait_ready()
        answer, default = _spec_delta(server, body)
        assert answer["choices"][0]["text"] == text
        assert default["draft"] % 5 == 0 and default["accepted"] > 0
        # num_assistant_tokens: that many drafts per step
        answer, two = _spec_delta(server, {**body, "num_assistant_tokens": 2})
        assert answer["choices"][0]["text"] == text
        assert two["draft"] % 2 == 0 and two["draft"] != default["draft"], (two, default)
        # a confidence threshold replaces the fixed drafts: the draft model, whose confidence
        # is tiny, stops early, so fewer drafts are accepted than with 5 a step
        answer, threshold = _spec_delta(server, {**body, "assistant_confidence_threshold": 0.5})
        assert answer["choices"][0]["text"] == text
        assert threshold["draft"] == 0 and 0 < threshold["accepted"] < default["accepted"]
        status, answer = server.post(
            "/v3/completions",
            {**body, "num_assistant_tokens": 2, "assistant_confidence_threshold": 0.5},
        )
        assert status == 400 and "mutually exclusive" in answer["error"]["message"]
        status, answer = server.post("/v3/completions", {**body, "max_ngram_size": 2})
        assert status == 400 and answer["error"]["param"] == "max_ngram_size"
    finally:
        server.stop()


def test_prompt_lookup_serves_requests(lm_model: Path, tmp_path: Path) -> None:
    folder = _graph_with(
        lm_model, tmp_path / "lookup", "LM_CB",
        plugin_config='{"prompt_lookup": true}',
    )
    body = {**completion_body(), "prompt": "a b c a b c a b c a b", "max_tokens": 12}
    with serve(lm_model, "LM_CB") as plain:
        status, reference = plain.post("/v3/completions", body)
        assert status == 200, reference
    server = ServerProcess(["--model_path", str(folder), "--model_name", MODEL,
                            "--metrics_enable"])
    try:
        server.wait_ready()
        status, answer = server.post("/v3/completions", body)
        assert status == 200, answer
        assert answer["choices"][0]["text"] == reference["choices"][0]["text"]
        # per request: n-gram size and drafts per step (OVMS defaults 3 and 5)
        answer, counts = _spec_delta(
            server, {**body, "max_ngram_size": 2, "num_assistant_tokens": 3}
        )
        assert answer["choices"][0]["text"] == reference["choices"][0]["text"]
        assert counts["draft"] > 0 and counts["draft"] % 3 == 0, counts
        status, answer = server.post(
            "/v3/completions", {**body, "assistant_confidence_threshold": 0.5}
        )
        assert status == 400 and answer["error"]["param"] == "assistant_confidence_threshold"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # a draft folder that does not exist
        ({"draft_models_path": '"/nonexistent/draft"'}, "draft_models_path does not exist"),
        # draft settings without a draft model (OVMS refuses them too)
        ({"draft_max_num_seqs": "4"}, "draft_models_path is not"),
        # scheduler-only options on a pipeline without a scheduler
        ({"cache_eviction_config": "{ start_size: 32 recent_size: 128 max_cache_size: 672 }"},
         "cache_eviction_config needs a continuous batching pipeline"),
    ],
)
def test_options_that_cannot_be_honoured_fail_the_load(
    lm_model: Path, tmp_path: Path, options: dict[str, str], message: str
) -> None:
    folder = _graph_with(lm_model, tmp_path / "bad", "LM", **options)
    server = ServerProcess(["--model_path", str(folder), "--model_name", MODEL])
    try:
        states: list[dict] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                _, raw = server.get("/v1/config")
            except OSError:  # not listening yet
                time.sleep(0.2)
                continue
            states = json.loads(raw)[MODEL]["model_version_status"]
            if states[0]["status"]["error_code"] != "OK":
                break
            time.sleep(0.2)
        assert message in states[0]["status"]["error_message"], states
        assert server.get("/v2/health/ready")[0] == 503
    finally:
        server.stop()
