"""The embedded demo model as an agent: JSON, tool calls, answers after a tool, reasoning.

``ovgraph serve`` without model arguments serves ``graphs/qwen2vl-shapes``, trained by
``tools/train_demo_model.py`` to use the agentic surface (``tools/shapes_task.py``): its graph
names the ``hermes3`` tool parser and the ``qwen3`` reasoning parser. Every test asks the real
server through the ``openai`` client about generated pictures of the training range (PNG and
JPEG, white and grey backgrounds, the picture before or after the text) and checks the answer's
values, not only its form.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import openai
import pydantic
import pytest

from tests.conftest import REPO, ServerProcess
from tools.eval_accuracy import TOOL_RESULT, chat_content, report_call
from tools.shapes_task import (
    CHAT_TEMPLATE,
    Q_DESCRIBE,
    Q_REPORT,
    Q_THINK,
    REPORT_TOOL,
    SHAPE_SCHEMA,
    Picture,
    draw_picture,
    grade,
    grade_tool_call,
)

MODEL = "qwen2vl-shapes"
MODEL_DIR = REPO / "graphs" / MODEL
TEST_SEED = 4242

pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "openvino_language_model.xml").exists(), reason="shapes model not built"
)

#: (shape, colour, background, fraction of the shorter side, format) of the test pictures.
PICTURES = [
    ("circle", "yellow", "grey", 0.5, "PNG"),
    ("square", "green", "white", 0.55, "JPEG"),
    ("triangle", "purple", "white", 0.3, "PNG"),
    ("square", "orange", "grey", 0.35, "JPEG"),
    ("circle", "blue", "white", 0.45, "PNG"),
    ("triangle", "red", "grey", 0.6, "JPEG"),
]


def _pictures() -> list[tuple[Picture, bool]]:
    rng = random.Random(TEST_SEED)
    cases = []
    for i, (shape, colour, background, fraction, fmt) in enumerate(PICTURES):
        picture = draw_picture(
            rng, shape=shape, colour=colour, fmt=fmt, background=background, fraction=fraction
        )
        cases.append((picture, i % 2 == 0))
    return cases


CASES = _pictures()
IDS = [f"{p.colour}-{p.shape}-{p.background}" for p, _ in CASES]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """``ovgraph serve`` with no model arguments: the embedded default model."""
    proc = ServerProcess([], env={"OVGRAPH_DEFAULT_MODEL": ""}).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v3", api_key="unused", max_retries=0)


def _user(picture: Picture, question: str, image_first: bool) -> list[dict[str, Any]]:
    return [{"role": "user", "content": chat_content(picture, question, image_first)}]


def test_served_template_is_the_trained_one() -> None:
    import openvino_genai as ov_genai

    tokenizer = ov_genai.Tokenizer(str(MODEL_DIR))
    assert tokenizer.chat_template == CHAT_TEMPLATE
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": Q_REPORT}], add_generation_prompt=True, tools=[REPORT_TOOL]
    )
    assert "<tools>\n" + json.dumps(REPORT_TOOL) + "\n</tools>" in prompt
    graph = (MODEL_DIR / "graph.pbtxt").read_text()
    assert 'tool_parser: "hermes3"' in graph and 'reasoning_parser: "qwen3"' in graph


@pytest.mark.parametrize(("picture", "image_first"), CASES, ids=IDS)
def test_json_schema_names_shape_and_colour(
    client: openai.OpenAI, picture: Picture, image_first: bool
) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=_user(picture, Q_DESCRIBE, image_first), max_tokens=32,
        temperature=0, response_format=SHAPE_SCHEMA,
    )
    choice = response.choices[0]
    assert json.loads(choice.message.content) == {"shape": picture.shape, "color": picture.colour}
    assert choice.finish_reason == "stop"


class Seen(pydantic.BaseModel):
    shape: Literal["circle", "square", "triangle"]
    color: Literal["red", "green", "blue", "yellow", "purple", "orange"]


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    picture, image_first = CASES[1]
    completion = client.chat.completions.parse(
        model=MODEL, messages=_user(picture, Q_DESCRIBE, image_first), max_tokens=32,
        temperature=0, response_format=Seen,
    )
    assert completion.choices[0].message.parsed == Seen(shape=picture.shape, color=picture.colour)


@pytest.mark.parametrize(("picture", "image_first"), CASES, ids=IDS)
def test_report_shape_tool_call(
    client: openai.OpenAI, picture: Picture, image_first: bool
) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=_user(picture, Q_REPORT, image_first), max_tokens=64,
        temperature=0, tools=[REPORT_TOOL], tool_choice="auto",
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    calls = [c.model_dump() for c in choice.message.tool_calls]
    assert grade_tool_call(picture.shape, picture.colour, calls), calls
    assert not choice.message.content


def test_report_shape_tool_call_streamed(client: openai.OpenAI) -> None:
    picture, image_first = CASES[2]
    stream = client.chat.completions.create(
        model=MODEL, messages=_user(picture, Q_REPORT, image_first), max_tokens=64,
        temperature=0, tools=[REPORT_TOOL], stream=True,
    )
    announced, fragments, finish, content = [], [], None, ""
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or ():
            assert call.index == 0
            if call.id is not None:
                announced.append((call.id, call.function.name))
            if call.function and call.function.arguments:
                fragments.append(call.function.arguments)
        finish = chunk.choices[0].finish_reason or finish
    assert [name for _, name in announced] == ["report_shape"]
    assert json.loads("".join(fragments)) == {"shape": picture.shape, "color": picture.colour}
    assert finish == "tool_calls"
    assert content == ""


def test_named_tool_choice_gets_the_right_values(client: openai.OpenAI) -> None:
    picture, image_first = CASES[3]
    response = client.chat.completions.create(
        model=MODEL, messages=_user(picture, Q_REPORT, image_first), max_tokens=64,
        temperature=0, tools=[REPORT_TOOL],
        tool_choice={"type": "function", "function": {"name": "report_shape"}},
    )
    calls = [c.model_dump() for c in response.choices[0].message.tool_calls or []]
    assert grade_tool_call(picture.shape, picture.colour, calls), calls


@pytest.mark.parametrize(("picture", "image_first"), CASES[:3], ids=IDS[:3])
def test_answers_in_words_after_the_tool_result(
    client: openai.OpenAI, picture: Picture, image_first: bool
) -> None:
    messages = [
        *_user(picture, Q_REPORT, image_first),
        {"role": "assistant", "content": None, "tool_calls": [report_call(picture)]},
        {"role": "tool", "tool_call_id": "call_1", "content": TOOL_RESULT},
    ]
    response = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=32, temperature=0, tools=[REPORT_TOOL],
    )
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls
    assert grade(Q_DESCRIBE, picture.shape, picture.colour, choice.message.content)


@pytest.mark.parametrize(("picture", "image_first"), CASES[3:], ids=IDS[3:])
def test_thinking_goes_to_reasoning_content(
    client: openai.OpenAI, picture: Picture, image_first: bool
) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=_user(picture, Q_THINK, image_first), max_tokens=64,
        temperature=0,
    )
    message = response.choices[0].message
    reasoning = getattr(message, "reasoning_content", None)
    assert reasoning and "<think>" not in reasoning and "</think>" not in reasoning
    assert grade(Q_DESCRIBE, picture.shape, picture.colour, reasoning)
    assert "think>" not in message.content
    assert grade(Q_DESCRIBE, picture.shape, picture.colour, message.content)


def test_thinking_streams_reasoning_before_content(client: openai.OpenAI) -> None:
    picture, image_first = CASES[0]
    order, reasoning, content = [], "", ""
    for chunk in client.chat.completions.create(
        model=MODEL, messages=_user(picture, Q_THINK, image_first), max_tokens=64,
        temperature=0, stream=True,
    ):
        delta = chunk.choices[0].delta
        piece = getattr(delta, "reasoning_content", None)
        if piece:
            reasoning += piece
            order.append("reasoning")
        if delta.content:
            content += delta.content
            order.append("content")
    assert order and order[0] == "reasoning" and "content" in order
    assert "reasoning" not in order[order.index("content") :]
    assert grade(Q_DESCRIBE, picture.shape, picture.colour, reasoning)
    assert grade(Q_DESCRIBE, picture.shape, picture.colour, content)


def test_readme_agent_loop(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### An agent loop, offline") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    picture = draw_picture(random.Random(TEST_SEED), shape="circle", colour="red", fmt="PNG")
    (tmp_path / "shape.png").write_bytes(picture.data)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.group(1).replace("http://localhost:8000", server.url), {})
    assert out.getvalue().splitlines() == [
        "report_shape {'shape': 'circle', 'color': 'red'}", "I reported a red circle."
    ]
