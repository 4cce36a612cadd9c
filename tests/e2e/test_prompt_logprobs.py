"""``/v3/completions`` with ``echo`` and ``logprobs``: the prompt's tokens and their logprobs.

lm-evaluation-harness scores multiple-choice and perplexity tasks (``--model local-completions``,
the accuracy guide OVMS points to) with ``echo: true, logprobs: 1, max_tokens: 1`` and reads
``token_logprobs[ctxlen:-1]``; these tests run lm-eval itself on a small local task (no hub)
against a real ``ovgraph serve`` of the text-only ``tiny-lm`` model, and check its
loglikelihoods against the prompt logprobs of a raw genai ``ContinuousBatchingPipeline``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.e2e.test_export import export_python  # noqa: F401  (session fixture)
from tests.e2e.test_text_only_model import MODEL, lm_model  # noqa: F401  (module fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.export]

# Context + choices (lm-eval joins them with its " " target delimiter), so the string it sends
# re-tokenizes into exactly its context tokens followed by its continuation tokens.
DOCS = [
    {"question": "The capital of France is", "choices": ["Paris", "Rome", "Berlin"], "answer": 0},
    {"question": "def main():\n    return", "choices": ["0", "None", "main"], "answer": 1},
    {"question": "One, two, three,", "choices": ["four", "five", "seven"], "answer": 0},
]


@contextlib.contextmanager
def serve(model_dir: Path, *extra: str) -> Iterator[ServerProcess]:
    server = ServerProcess([
        "--model_path", str(model_dir), "--model_name", MODEL, "--task", "text_generation",
        "--pipeline_type", "LM_CB", *extra,
    ])
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def eval_server(lm_model: Path) -> Iterator[ServerProcess]:  # noqa: F811
    # Prompt logprobs are computed only for tokens the pipeline runs (see the refusal test).
    with serve(lm_model, "--enable_prefix_caching", "false") as server:
        yield server


_PIPELINES: dict[Path, object] = {}


def _reference(lm_model: Path, prompt: str) -> tuple[list[int], list[float]]:  # noqa: F811
    """Prompt ids and logprobs straight from genai (``echo``, prefix caching off)."""
    import openvino_genai as ov_genai

    pipeline = _PIPELINES.get(lm_model)
    if pipeline is None:
        scheduler = ov_genai.SchedulerConfig()
        scheduler.cache_size = 1
        scheduler.enable_prefix_caching = False
        pipeline = ov_genai.ContinuousBatchingPipeline(str(lm_model), scheduler, "CPU", {})
        _PIPELINES[lm_model] = pipeline
    config = ov_genai.GenerationConfig()
    config.max_new_tokens, config.echo, config.logprobs = 1, True, 1
    config.apply_chat_template = False
    ids = pipeline.get_tokenizer().encode(prompt).input_ids.data.tolist()[0]
    handle = pipeline.add_request(len(_PIPELINES) + len(prompt), prompt, config)
    while handle.get_status() == ov_genai.GenerationStatus.RUNNING:
        pipeline.step()
    [output] = handle.read_all()
    return ids, list(output.generated_log_probs)[: len(ids)]


def test_echo_returns_the_prompt_and_its_logprobs(
    eval_server: ServerProcess, lm_model: Path  # noqa: F811
) -> None:
    prompt = "The capital of France is Paris"
    ids, reference = _reference(lm_model, prompt)
    body = {"model": MODEL, "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 1,
            "temperature": 0}
    status, answer = eval_server.post("/v3/completions", body)
    assert status == 200, answer
    choice = answer["choices"][0]
    logprobs = choice["logprobs"]
    assert choice["text"].startswith(prompt) and len(choice["text"]) > len(prompt)
    assert len(logprobs["tokens"]) == len(ids) + 1  # the prompt, then the generated token
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    for got, want in zip(logprobs["token_logprobs"][1 : len(ids)], reference[1:], strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    for token, top, value in zip(
        logprobs["tokens"][1:], logprobs["top_logprobs"][1:], logprobs["token_logprobs"][1:],
        strict=True,
    ):
        assert top == {token: value}
    offsets = logprobs["text_offset"]
    assert offsets[0] == 0
    assert offsets == [len("".join(logprobs["tokens"][:i])) for i in range(len(offsets))]
    assert answer["usage"] == {
        "prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1
    }

    # max_tokens 0: the prompt alone, twice (the second run must not lose any of it).
    for _ in range(2):
        status, echoed = eval_server.post("/v3/completions", {**body, "max_tokens": 0})
        assert status == 200, echoed
        assert echoed["choices"][0]["text"] == prompt
        assert echoed["choices"][0]["logprobs"]["token_logprobs"][1:] == pytest.approx(
            reference[1:], abs=1e-4
        )
        assert echoed["usage"]["completion_tokens"] == 0


def test_echo_streams_the_prompt_first(eval_server: ServerProcess) -> None:
    from tests.e2e.test_text_only_model import stream

    prompt = "One, two, three,"
    events = stream(eval_server, "/v3/completions",
                    {"model": MODEL, "prompt": prompt, "echo": True, "max_tokens": 4,
                     "temperature": 0})
    text = "".join(c["text"] for e in events for c in e["choices"])
    assert text.startswith(prompt) and len(text) > len(prompt)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        # genai reports the chosen token's logprob only: no alternatives to list
        ({"logprobs": 2}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
    ],
)
def test_more_than_one_logprob_per_token_is_refused(
    eval_server: ServerProcess, extra: dict, param: str
) -> None:
    body = {"model": MODEL, "prompt": "Hello", "echo": True, "max_tokens": 1, **extra}
    status, answer = eval_server.post("/v3/completions", body)
    assert status == 400, answer
    assert answer["error"]["param"] == param


def test_echo_is_refused_by_the_serial_pipeline(lm_model: Path) -> None:  # noqa: F811
    # genai's stateful LLMPipeline asserts "Echo is not supported in the stateful pipeline"
    server = ServerProcess(["--model_path", str(lm_model), "--model_name", MODEL,
                            "--task", "text_generation", "--pipeline_type", "LM"])
    try:
        server.wait_ready()
        status, answer = server.post(
            "/v3/completions", {"model": MODEL, "prompt": "Hello", "echo": True, "max_tokens": 1}
        )
        assert status == 400, answer
        assert answer["error"]["param"] == "echo"
        assert "LM_CB" in answer["error"]["message"]
    finally:
        server.stop()


def test_echo_logprobs_with_prefix_caching_is_refused(lm_model: Path) -> None:  # noqa: F811
    # genai restores a cached prefix without computing its logprobs: refused, not wrong.
    with serve(lm_model) as server:
        body = {"model": MODEL, "prompt": "Hello world", "echo": True, "logprobs": 1,
                "max_tokens": 1}
        status, answer = server.post("/v3/completions", body)
        assert status == 400, answer
        assert "enable_prefix_caching" in answer["error"]["message"]
        status, answer = server.post("/v3/completions", {**body, "logprobs": None})
        assert status == 200, answer
        assert answer["choices"][0]["text"].startswith("Hello world")


def _write_task(folder: Path) -> str:
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    (folder / "ovgraph_tiny_mc.yaml").write_text(
        "task: ovgraph_tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    return "ovgraph_tiny_mc"


def test_lm_eval_multiple_choice_over_completions(
    eval_server: ServerProcess, lm_model: Path, tmp_path: Path  # noqa: F811
) -> None:
    if importlib.util.find_spec("lm_eval") is None or importlib.util.find_spec(
        "transformers"
    ) is None:
        pytest.skip("lm-eval (and transformers for its tokenizer) not installed: "
                    "pip install lm-eval transformers")
    task = _write_task(tmp_path)
    out = tmp_path / "out"
    args = ",".join([
        f"model={MODEL}", f"base_url={eval_server.url}/v3/completions", "num_concurrent=1",
        "max_retries=1", "tokenized_requests=False", f"tokenizer={lm_model}",
    ])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--tasks", task,
         "--include_path", str(tmp_path), "--model_args", args, "--output_path", str(out),
         "--log_samples"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    [results_file] = list(out.rglob("results_*.json"))
    acc = json.loads(results_file.read_text())["results"][task]["acc,none"]
    assert 0.0 <= acc <= 1.0
    [samples_file] = list(out.rglob(f"samples_{task}_*.jsonl"))
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == len(DOCS)
    # Each choice's loglikelihood is the sum of its continuation tokens' prompt logprobs.
    for sample in samples:
        assert len(sample["resps"]) == 3
        for index, response in enumerate(sample["resps"]):
            args_i = sample["arguments"][f"gen_args_{index}"]
            context, continuation = args_i["arg_0"], args_i["arg_1"]
            loglikelihood = float(response[0][0])
            _, reference = _reference(lm_model, context + continuation)
            context_ids, _ = _reference(lm_model, context)
            want = sum(reference[len(context_ids):])
            assert math.isfinite(loglikelihood) and loglikelihood < 0
            assert loglikelihood == pytest.approx(want, abs=1e-3), (context, continuation)
