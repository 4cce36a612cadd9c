"""Request fields that used to be accepted and ignored, through ``ovgraph serve`` and ``openai``.

Each test shows a field's effect (or its refusal) on the default tiny fixture server.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import REPO, TINY_MODEL, ServerProcess

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


def _stream(client: openai.OpenAI, **extra: object) -> list:
    return list(
        client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=8, temperature=0, stream=True,
            **extra,  # type: ignore[arg-type]
        )
    )


def test_stream_opens_with_the_role_chunk(openai_client: openai.OpenAI) -> None:
    chunks = _stream(openai_client)
    first = chunks[0].choices[0]
    assert first.delta.role == "assistant"
    assert first.delta.content is None
    assert first.finish_reason is None
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    assert "".join(c.choices[0].delta.content or "" for c in chunks)


def test_continuous_usage_stats_fill_every_chunk(openai_client: openai.OpenAI) -> None:
    chunks = _stream(
        openai_client, stream_options={"include_usage": True, "continuous_usage_stats": True}
    )
    final = chunks[-1]
    assert final.choices == []
    assert final.usage.completion_tokens == 8
    counts = [c.usage.completion_tokens for c in chunks]
    assert counts == sorted(counts)
    assert counts[0] == 0  # the role chunk
    assert counts[-2] == 8  # the last content chunk
    assert {c.usage.prompt_tokens for c in chunks} == {final.usage.prompt_tokens}
    assert all(c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
               for c in chunks)


def test_include_usage_alone_keeps_usage_null_until_the_end(openai_client: openai.OpenAI) -> None:
    chunks = _stream(openai_client, stream_options={"include_usage": True})
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].usage.completion_tokens == 8


def test_input_audio_is_refused(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(
            model=MODEL, max_tokens=4,
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "What is said?"},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            ]}],
        )
    error = info.value.body
    assert error["message"] == (
        "This servable does not support audio input, but input_audio has been provided"
    )
    assert error["param"] == "messages[0].content"


@pytest.mark.parametrize("key", ["messages", "eos_token"])
def test_reserved_chat_template_kwargs_are_refused(openai_client: openai.OpenAI, key: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=4,
            extra_body={"chat_template_kwargs": {key: []}},
        )
    assert info.value.body["param"] == f"chat_template_kwargs.{key}"
    assert f"chat_template_kwargs cannot contain '{key}'" in info.value.body["message"]


# --- /v3/tokenize and /v1/tokenize ---------------------------------------------------------------


def _genai_ids(text: str, **options: object) -> list[int]:
    import openvino_genai as ov_genai

    encoded = ov_genai.Tokenizer(str(TINY_MODEL)).encode([text], **options)
    return [int(i) for i in encoded.input_ids.data[0]]


@pytest.mark.parametrize("path", ["/v3/tokenize", "/v1/tokenize"])
def test_tokenize_one_text(server: ServerProcess, path: str) -> None:
    status, answer = server.post(path, {"model": MODEL, "text": "hello world"})
    assert status == 200
    assert answer == {"tokens": _genai_ids("hello world")}


@pytest.mark.parametrize("path", ["/tokenize", "/v1/tokenize", "/v3/tokenize"])
def test_vllm_tokenize_and_detokenize(server: ServerProcess, path: str) -> None:
    import openvino_genai as ov_genai

    status, answer = server.post(path, {"model": MODEL, "prompt": "hello world"})
    assert status == 200, answer
    from calculators.llm.servable_key import max_model_length

    ids = _genai_ids("hello world")
    assert answer == {"count": len(ids), "max_model_len": max_model_length(TINY_MODEL),
                      "tokens": ids, "token_strs": None}
    assert answer["max_model_len"]
    # messages: the tokens of the prompt the chat template makes, as the server runs it
    status, chat = server.post(path, {"model": MODEL, "messages": HELLO})
    assert status == 200, chat
    assert chat["tokens"] == _genai_ids(_templated_hello(), add_special_tokens=False)
    status, bare = server.post(path, {"model": MODEL, "messages": HELLO,
                                      "add_generation_prompt": False})
    assert bare["count"] < chat["count"]
    detokenize = path.replace("tokenize", "detokenize")
    status, text = server.post(detokenize, {"model": MODEL, "tokens": chat["tokens"]})
    assert status == 200, text
    tokenizer = ov_genai.Tokenizer(str(TINY_MODEL))
    assert text == {"prompt": tokenizer.decode(chat["tokens"], skip_special_tokens=False)}
    assert text["prompt"] == _templated_hello()


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/tokenize", {"prompt": "x", "return_token_strs": True}, "return_token_strs"),
        ("/tokenize", {"messages": HELLO, "continue_final_message": True},
         "continue_final_message"),
        ("/tokenize", {"prompt": "x", "chat_template": "{{ 1 }}"}, "chat_template"),
        ("/tokenize", {"prompt": 3}, "prompt"),
        ("/tokenize", {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
         "messages"),
        ("/detokenize", {"tokens": [1, -1]}, "tokens"),
        ("/detokenize", {"tokens": "1 2"}, "tokens"),
        ("/detokenize", {"tokens": [10**12]}, "tokens"),
    ],
)
def test_vllm_tokenize_errors(server: ServerProcess, path: str, body: dict, param: str) -> None:
    status, answer = server.post(path, {"model": MODEL, **body})
    assert status == 400, answer
    assert answer["error"]["param"] == param


def test_tokenize_several_texts_unpadded(server: ServerProcess) -> None:
    status, answer = server.post("/v3/tokenize", {"model": MODEL, "text": ["hello world", "a"]})
    assert status == 200
    assert answer == {"tokens": [_genai_ids("hello world"), _genai_ids("a")]}


@pytest.mark.parametrize("side", ["left", "right"])
def test_tokenize_pads_and_truncates(server: ServerProcess, side: str) -> None:
    body = {"model": MODEL, "text": ["hello world", "a"], "max_length": 3,
            "pad_to_max_length": True, "padding_side": side}
    status, answer = server.post("/v3/tokenize", body)
    assert status == 200
    long, short = answer["tokens"]
    assert len(long) == len(short) == 3
    pad = _genai_ids("", pad_to_max_length=True, max_length=1)[0]
    assert (short[0] if side == "right" else short[-1]) == _genai_ids("a")[0]
    assert (short[1:] if side == "right" else short[:-1]) == [pad, pad]
    assert long == _genai_ids("hello world", max_length=3, truncation=True)
    # without pad_to_max_length the padding is left out, max_length still truncates
    status, answer = server.post("/v3/tokenize", {**body, "pad_to_max_length": False})
    assert answer["tokens"] == [long, _genai_ids("a")]


def test_tokenize_add_special_tokens_reaches_the_tokenizer(server: ServerProcess) -> None:
    # Qwen2 tokenizers add no BOS/EOS, so both answers are equal; the flag is still checked.
    for flag in (True, False):
        status, answer = server.post(
            "/v3/tokenize", {"model": MODEL, "text": "hello", "add_special_tokens": flag}
        )
        assert (status, answer) == (200, {"tokens": _genai_ids("hello", add_special_tokens=flag)})


@pytest.mark.parametrize(
    ("extra", "message", "param"),
    [
        # no text
        ({}, "text field is required", "text"),
        # token ids: LLM tokenize takes strings only
        ({"text": [1, 2]}, "Input should be string or array of strings", "text"),
        # mixed array
        ({"text": ["a", 1]}, "text must be homogeneous", "text"),
        # max_length zero
        ({"text": "a", "max_length": 0}, "max_length should be greater than 0", "max_length"),
        # max_length negative
        ({"text": "a", "max_length": -1}, "max_length should be unsigned integer", "max_length"),
        # pad flag not boolean
        ({"text": "a", "pad_to_max_length": 1}, "pad_to_max_length should be boolean",
         "pad_to_max_length"),
        # add_special_tokens not boolean
        ({"text": "a", "add_special_tokens": "no"}, "add_special_tokens should be boolean",
         "add_special_tokens"),
        # padding side unknown
        ({"text": "a", "padding_side": "top"}, "padding_side should be either left or right",
         "padding_side"),
        # a padded answer too large for the server
        ({"text": ["a"] * 2, "max_length": 3_000_000, "pad_to_max_length": True},
         "The padded answer would hold 6000000 tokens, more than the limit of 4194304; "
         "lower max_length or send fewer texts", "max_length"),
    ],
)
def test_tokenize_errors(server: ServerProcess, extra: dict, message: str, param: str) -> None:
    status, answer = server.post("/v3/tokenize", {"model": MODEL, **extra})
    assert status == 400
    assert answer["error"]["message"] == message
    assert answer["error"]["param"] == param


# --- --verbose_response ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def verbose_server() -> Iterator[ServerProcess]:
    proc = ServerProcess(["--verbose_response"]).wait_ready()
    yield proc
    proc.stop()


def _templated_hello() -> str:
    import openvino_genai as ov_genai

    return str(
        ov_genai.Tokenizer(str(TINY_MODEL)).apply_chat_template(HELLO, add_generation_prompt=True)
    )


def test_verbose_response_shows_prompt_and_raw_output(verbose_server: ServerProcess) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 8, "temperature": 0,
            "skip_special_tokens": False}
    status, answer = verbose_server.post("/v3/chat/completions", body)
    assert status == 200
    assert list(answer)[-1] == "__verbose"
    assert answer["__verbose"] == {
        "prompt": _templated_hello(),
        "content": answer["choices"][0]["message"]["content"],
    }


def test_verbose_response_on_the_last_streamed_chunk(verbose_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=verbose_server.url + "/v3", api_key="-", max_retries=0)
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0, stream=True,
    ))
    verbose = [c.model_extra.get("__verbose") for c in chunks]
    assert verbose[:-1] == [None] * (len(chunks) - 1)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert verbose[-1]["prompt"] == _templated_hello()
    assert verbose[-1]["content"]


def test_no_verbose_without_the_flag(server: ServerProcess) -> None:
    status, answer = server.post(
        "/v3/chat/completions", {"model": MODEL, "messages": HELLO, "max_tokens": 2}
    )
    assert status == 200
    assert "__verbose" not in answer


# --- graph options refused at load ----------------------------------------------------------------


def write_graph(folder: Path, option: str) -> Path:
    """The tiny model's graph with ``option`` (``name: value, …``) over its node options."""
    options = {"models_path": f'"{TINY_MODEL}"', "device": '"CPU"', "cache_size": "0"}
    for item in re.split(r",\s*(?=\w+:)", option):
        name, value = item.split(":", 1)
        options[name.strip()] = value.strip()
    body = ",\n".join(f"          {name}: {value}" for name, value in options.items())
    text = re.sub(
        r"(mediapipe\.LLMCalculatorOptions\]: \{\n).*?(\n\s*\}\n\s*\})",
        lambda m: m.group(1) + body + m.group(2),
        (TINY_MODEL / "graph.pbtxt").read_text(),
        count=1,
        flags=re.S,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "graph.pbtxt").write_text(text)
    return folder


def graph_load_error(folder: Path, option: str) -> str:
    """Serve the tiny model through a graph with one more option; return the load error."""
    proc = ServerProcess(["--model_path", str(write_graph(folder, option)), "--model_name", "g"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                _, raw = proc.get("/v1/config")
                state = json.loads(raw)["g"]["model_version_status"][0]
                if state["state"] == "AVAILABLE":
                    return ""
                if state["status"]["error_message"] != "OK":
                    return str(state["status"]["error_message"])
            time.sleep(0.2)
        raise TimeoutError(proc.logs())
    finally:
        proc.stop()


def test_chat_template_mode_jinja_is_refused_at_load(tmp_path: Path) -> None:
    error = graph_load_error(tmp_path / "jinja", "chat_template_mode: JINJA")
    assert "chat_template_mode: JINJA is not supported" in error
    assert graph_load_error(tmp_path / "minja", "chat_template_mode: MINJA") == ""


# --- sampling and length fields: each changes the answer -----------------------------------------


def _greedy(server: ServerProcess, **extra: object) -> dict:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 16, "temperature": 0, **extra}
    status, answer = server.post("/v3/chat/completions", body)
    assert status == 200, answer
    return answer


def _text(answer: dict) -> str:
    return str(answer["choices"][0]["message"]["content"])


def test_temperature_samples(server: ServerProcess) -> None:
    greedy = _text(_greedy(server))
    assert _text(_greedy(server)) == greedy
    assert _text(_greedy(server, temperature=2.0, seed=1)) != greedy


@pytest.mark.parametrize(
    "narrow",
    [
        {"top_p": 0.001},  # only the most likely token is left
        {"top_k": 1},  # same
    ],
)
def test_narrow_sampling_is_greedy(server: ServerProcess, narrow: dict) -> None:
    greedy = _text(_greedy(server))
    sampled = _text(_greedy(server, temperature=2.0, seed=1))
    assert sampled != greedy
    assert _text(_greedy(server, temperature=2.0, seed=1, **narrow)) == greedy


def test_min_p_filters_candidates(server: ServerProcess) -> None:
    sampled = _text(_greedy(server, temperature=2.0, seed=1))
    assert _text(_greedy(server, temperature=2.0, seed=1, min_p=0.99)) != sampled


@pytest.mark.parametrize(
    "penalty",
    [
        {"frequency_penalty": 2.0},
        {"presence_penalty": 2.0},
        {"repetition_penalty": 0.5},  # below 1 favours repeats
    ],
)
def test_penalties_change_the_answer(server: ServerProcess, penalty: dict) -> None:
    assert _text(_greedy(server, **penalty)) != _text(_greedy(server))


def test_stop_and_include_stop_str_in_output(server: ServerProcess) -> None:
    greedy = _text(_greedy(server))
    stop = greedy[8:11]
    stopped = _greedy(server, stop=[stop])
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert greedy.startswith(_text(stopped))
    assert stop not in _text(stopped)
    assert len(_text(stopped)) < greedy.index(stop) + len(stop)
    included = _text(_greedy(server, stop=stop, include_stop_str_in_output=True))
    assert greedy.startswith(included)
    assert stop in included
    assert len(included) < len(greedy)


def test_skip_special_tokens(server: ServerProcess) -> None:
    # Seed 1 samples a special token (<|object_ref_start|>) within 64 tokens.
    body = {"temperature": 2.0, "top_k": -1, "seed": 1, "max_tokens": 64}
    kept = _text(_greedy(server, skip_special_tokens=False, **body))
    skipped = _text(_greedy(server, **body))
    assert "<|object_ref_start|>" in kept
    assert "<|" not in skipped
    assert kept.replace("<|object_ref_start|>", "").startswith(skipped[:10])


def test_add_generation_prompt_false(server: ServerProcess) -> None:
    usage = _greedy(server)["usage"]
    without = _greedy(server, chat_template_kwargs={"add_generation_prompt": False})["usage"]
    assert without["prompt_tokens"] == usage["prompt_tokens"] - 5  # "<|im_start|>assistant\n"


def test_ignore_eos_runs_to_max_tokens() -> None:
    # The trained demo model answers in a few tokens and ends with EOS.
    proc = ServerProcess([], default_model=REPO / "graphs" / "qwen2vl-shapes").wait_ready()
    try:
        body = {"model": "qwen2vl-shapes", "max_tokens": 24, "temperature": 0,
                "messages": [{"role": "user", "content": "What shape is in the picture?"}]}
        status, ended = proc.post("/v3/chat/completions", body)
        assert status == 200
        assert ended["choices"][0]["finish_reason"] == "stop"
        assert ended["usage"]["completion_tokens"] < 24
        status, forced = proc.post("/v3/chat/completions", {**body, "ignore_eos": True})
        assert forced["choices"][0]["finish_reason"] == "length"
        assert forced["usage"]["completion_tokens"] == 24
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("option", "error"),
    [
        # a folder that does not exist
        ('models_path: "/nonexistent/model"', "models_path does not exist: /nonexistent/model"),
        # a device OpenVINO does not know
        ('device: "NOPE"', "NOPE"),
        # plugin_config that is not JSON
        ("plugin_config: '{not json'", "plugin_config is not valid JSON"),
    ],
)
def test_servable_options_reach_the_pipeline(tmp_path: Path, option: str, error: str) -> None:
    assert error in graph_load_error(tmp_path, option)


def test_graph_request_limits(tmp_path: Path) -> None:
    folder = write_graph(tmp_path, "best_of_limit: 2, max_tokens_limit: 5")
    proc = ServerProcess(["--model_path", str(folder), "--model_name", "g"]).wait_ready()
    try:
        status, answer = proc.post("/v3/chat/completions", {"model": "g", "messages": HELLO})
        assert status == 200
        assert answer["usage"]["completion_tokens"] == 5  # max_tokens_limit is the default
        for extra, message in (
            ({"max_tokens": 5}, "max_tokens exceeds limit provided in graph config: 5"),
            ({"best_of": 2}, "best_of exceeds limit provided in graph config: 2"),
        ):
            status, answer = proc.post(
                "/v3/chat/completions", {"model": "g", "messages": HELLO, **extra}
            )
            assert (status, answer["error"]["message"]) == (400, message)
    finally:
        proc.stop()


# --- logprobs ------------------------------------------------------------------------------------


def test_chat_logprobs_in_openai_shape(openai_client: openai.OpenAI) -> None:
    response = openai_client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0, logprobs=True,
    )
    choice = response.choices[0]
    assert choice.logprobs is not None
    content = choice.logprobs.content
    assert len(content) == response.usage.completion_tokens == 8
    assert "".join(t.token for t in content) == choice.message.content
    for token in content:
        assert bytes(token.bytes).decode("utf-8", "replace") == token.token
        assert -30.0 < token.logprob < 0.0
        assert token.top_logprobs == []
    # their sum is the sequence score raw genai gives the same greedy generation
    assert sum(t.logprob for t in content) == pytest.approx(_raw_greedy_score(8), abs=1e-3)
    # without the flag there are none
    plain = openai_client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=2, temperature=0
    )
    assert plain.choices[0].logprobs is None


def _raw_greedy_score(max_new_tokens: int) -> float:
    import openvino_genai as ov_genai

    scheduler = ov_genai.SchedulerConfig()
    scheduler.cache_size = 1
    pipeline = ov_genai.ContinuousBatchingPipeline(str(TINY_MODEL), scheduler, "CPU")
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.apply_chat_template = False
    config.logprobs = 1
    [result] = pipeline.generate([_templated_hello()], [config])
    return float(result.m_scores[0])


def test_logprobs_refused_by_the_serial_pipelines(tmp_path: Path) -> None:
    folder = write_graph(tmp_path, "pipeline_type: VLM")
    proc = ServerProcess(["--model_path", str(folder), "--model_name", "g"]).wait_ready()
    try:
        body = {"model": "g", "messages": HELLO, "max_tokens": 2, "logprobs": True}
        status, answer = proc.post("/v3/chat/completions", body)
        assert status == 400
        assert answer["error"]["param"] == "logprobs"
        assert "serve the model as LM_CB or VLM_CB" in answer["error"]["message"]
    finally:
        proc.stop()


def test_logprobs_refused_when_streaming(server: ServerProcess) -> None:
    body = {"model": MODEL, "messages": HELLO, "logprobs": True, "stream": True}
    status, answer = server.post("/v3/chat/completions", body)
    assert (status, answer["error"]["message"]) == (
        400, "logprobs are not supported in streaming mode."
    )


def _raw_greedy_ids(max_new_tokens: int) -> list[int]:
    """The fixture's greedy token ids for HELLO (ignore_eos), from a raw genai pipeline."""
    import openvino_genai as ov_genai

    scheduler = ov_genai.SchedulerConfig()
    scheduler.cache_size = 1
    pipeline = ov_genai.ContinuousBatchingPipeline(str(TINY_MODEL), scheduler, "CPU")
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.ignore_eos, config.apply_chat_template = True, False
    handle = pipeline.add_request(0, _templated_hello(), config)
    while pipeline.has_non_finished_requests():
        pipeline.step()
    return list(handle.read_all()[0].generated_ids)


def test_stop_token_ids_and_min_tokens(server: ServerProcess) -> None:
    ids = _raw_greedy_ids(12)
    stop = ids[3]
    assert stop not in ids[:3]
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 12, "temperature": 0}
    status, answer = server.post("/v3/chat/completions", {**body, "stop_token_ids": [stop]})
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] == 4  # stopped at the fourth token
    assert answer["choices"][0]["finish_reason"] == "stop"
    # min_tokens holds every stop token back until that many tokens are out
    status, answer = server.post(
        "/v3/chat/completions", {**body, "stop_token_ids": [stop], "min_tokens": 8})
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] >= 8


# --- n and best_of (beam search) -----------------------------------------------------------------


def _raw_beams(num_beams: int, n: int, max_new_tokens: int) -> tuple[list[str], list[float]]:
    import openvino_genai as ov_genai

    scheduler = ov_genai.SchedulerConfig()
    scheduler.cache_size = 1
    pipeline = ov_genai.ContinuousBatchingPipeline(str(TINY_MODEL), scheduler, "CPU")
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.apply_chat_template = False
    config.num_beams = num_beams
    config.num_return_sequences = n
    [result] = pipeline.generate([_templated_hello()], [config])
    return list(result.m_generation_ids), [float(s) for s in result.m_scores]


def test_n_choices_from_beam_search(openai_client: openai.OpenAI) -> None:
    response = openai_client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=6, n=2, logprobs=True,
        extra_body={"best_of": 3},
    )
    texts, scores = _raw_beams(3, 2, 6)
    assert [c.index for c in response.choices] == [0, 1]
    assert [c.message.content for c in response.choices] == texts
    assert [c.finish_reason for c in response.choices] == ["length", "length"]
    # each choice's logprobs average to genai's beam score (length_penalty 1)
    for choice, score in zip(response.choices, scores, strict=True):
        logprobs = [t.logprob for t in choice.logprobs.content]
        assert sum(logprobs) / len(logprobs) == pytest.approx(score, abs=1e-3)
    assert response.usage.completion_tokens == 12  # both choices count


def test_n_samples_without_best_of(openai_client: openai.OpenAI) -> None:
    response = openai_client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, n=3, temperature=2.0, seed=5,
        extra_body={"ignore_eos": True},
    )
    assert [c.index for c in response.choices] == [0, 1, 2]
    texts = [c.message.content for c in response.choices]
    assert len(set(texts)) == 3, texts  # three draws, not one answer three times
    assert response.usage.completion_tokens == 24
    again = openai_client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, n=3, temperature=2.0, seed=5,
        extra_body={"ignore_eos": True},
    )
    assert [c.message.content for c in again.choices] == texts  # the seed reproduces all three
    # greedy decoding has one answer: n samples need sampling (or best_of for beams)
    with pytest.raises(openai.BadRequestError, match="n above 1 needs sampling"):
        openai_client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=8, n=2, temperature=0)


def test_best_of_answers_the_best_beam(openai_client: openai.OpenAI) -> None:
    response = openai_client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=6, extra_body={"best_of": 3},
    )
    assert [c.message.content for c in response.choices] == _raw_beams(3, 1, 6)[0]


def test_length_penalty_reorders_beams() -> None:
    # Given its tool but no picture, the trained demo model's beams end with EOS at different
    # lengths (an empty answer, a few words, a tool call), so the length penalty changes which
    # four come back and in which order.
    from tools.shapes_task import Q_REPORT, REPORT_TOOL

    proc = ServerProcess([], default_model=REPO / "graphs" / "qwen2vl-shapes").wait_ready()
    report = [{"role": "user", "content": Q_REPORT}]
    try:
        def beams(length_penalty: float) -> list[tuple[str, str]]:
            status, answer = proc.post("/v3/chat/completions", {
                "model": "qwen2vl-shapes", "messages": report, "tools": [REPORT_TOOL],
                "max_tokens": 40, "n": 4, "best_of": 4, "length_penalty": length_penalty,
            })
            assert status == 200
            return [
                (c["message"].get("reasoning_content") or "", c["message"]["content"])
                for c in answer["choices"]
            ]

        short, long = beams(-3.0), beams(3.0)
        assert len(short) == len(long) == 4
        assert short != long
    finally:
        proc.stop()


def test_best_of_refused_by_the_serial_pipelines(tmp_path: Path) -> None:
    folder = write_graph(tmp_path, "pipeline_type: VLM")
    proc = ServerProcess(["--model_path", str(folder), "--model_name", "g"]).wait_ready()
    try:
        body = {"model": "g", "messages": HELLO, "max_tokens": 2, "best_of": 2}
        status, answer = proc.post("/v3/chat/completions", body)
        assert status == 400
        assert "need a continuous batching pipeline (LM_CB or VLM_CB)" in answer["error"]["message"]
    finally:
        proc.stop()
