"""A text-only Qwen2 model served as ``LM_CB``, ``LM`` and ``AUTO``, checked against raw genai.

The model is built at test time by ``tools/make_model.py --preset tiny-lm`` in the export
environment (marked ``export``, like ``test_export.py``); nothing is committed. Answers must equal
``openvino_genai.LLMPipeline.generate`` on the same prompt (greedy, 16 new tokens): chat requests
on the chat-templated prompt, ``/completions`` on the raw prompt string.
"""

from __future__ import annotations

import contextlib
import json
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
def lm_model(export_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The ``tiny-lm`` preset exported to OpenVINO IR into a temporary folder."""
    out = tmp_path_factory.mktemp("lm") / "qwen2-tiny-lm"
    start = time.monotonic()
    subprocess.run(
        [str(export_python), "tools/make_model.py", "--preset", "tiny-lm", "--out", str(out)],
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
