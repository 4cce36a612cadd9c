"""The trained shapes model: right colours through the server, chance with a broken image path.

``graphs/qwen2vl-shapes`` is a small Qwen2-VL trained by ``tools/train_demo_model.py`` to name the
shape and colour of a synthetic picture. These tests check that the served image path keeps what
the model was trained on: a real ``ovgraph serve`` answers colour questions correctly for PNG and
JPEG pictures placed before or after the question, and the same graph run in-process with an
image decoder that swaps the channels (RGB -> BGR) confuses red and blue.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from calculators.llm.image_decode_calculator import ImageDecodeCalculator
from calculators.llm.images import load_image
from ovgraph.framework import registry
from ovgraph.framework.calculator import CalculatorContext
from ovgraph.serving.graph_definition import GraphDefinition
from ovgraph.serving.payload import HttpPayload
from ovgraph.testing import serve_http
from tests.conftest import REPO, ServerProcess
from tools.eval_accuracy import chat_content
from tools.train_demo_model import COLOURS, Q_COLOUR, Q_DESCRIBE, Picture, draw_picture, grade

MODEL = "qwen2vl-shapes"
MODEL_DIR = REPO / "graphs" / MODEL
TEST_SEED = 777

pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "openvino_language_model.xml").exists(), reason="shapes model not built"
)


def _body(picture: Picture, question: str, image_first: bool) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": chat_content(picture, question, image_first)}],
        "max_tokens": 12,
        "temperature": 0,
    }


def _pictures(colours: list[str], seed: int = TEST_SEED) -> list[tuple[Picture, bool]]:
    """One picture per entry of ``colours``, formats and image positions alternating."""
    rng = random.Random(seed)
    cases = []
    for i, colour in enumerate(colours):
        fmt = "PNG" if i % 2 == 0 else "JPEG"
        cases.append((draw_picture(rng, colour=colour, fmt=fmt), (i // 2) % 2 == 0))
    return cases


@pytest.fixture(scope="module")
def shapes_server() -> Iterator[ServerProcess]:
    """``ovgraph serve`` with no model arguments: the embedded default is the shapes model."""
    proc = ServerProcess([], env={"OVGRAPH_DEFAULT_MODEL": ""}).wait_ready()
    yield proc
    proc.stop()


def test_embedded_default_is_the_shapes_model(shapes_server: ServerProcess) -> None:
    status, raw = shapes_server.get("/v3/models")
    assert status == 200
    assert [m["id"] for m in json.loads(raw)["data"]] == [MODEL]
    assert f"serving {MODEL}" in shapes_server.logs()


def test_server_names_colours(shapes_server: ServerProcess) -> None:
    cases = _pictures(sorted(COLOURS) * 2)
    assert {p.mime for p, _ in cases} == {"image/png", "image/jpeg"}
    assert {first for _, first in cases} == {True, False}
    wrong = []
    for picture, image_first in cases:
        status, body = shapes_server.post(
            "/v3/chat/completions", _body(picture, Q_COLOUR, image_first)
        )
        assert status == 200, body
        answer = body["choices"][0]["message"]["content"]
        if not grade(Q_COLOUR, picture.shape, picture.colour, answer):
            wrong.append((picture.colour, picture.mime, image_first, answer))
    assert wrong == []


def test_server_describes_pictures(shapes_server: ServerProcess) -> None:
    wrong = []
    for picture, image_first in _pictures(["red", "blue", "green", "orange"], seed=TEST_SEED + 1):
        status, body = shapes_server.post(
            "/v3/chat/completions", _body(picture, Q_DESCRIBE, image_first)
        )
        assert status == 200, body
        answer = body["choices"][0]["message"]["content"]
        if not grade(Q_DESCRIBE, picture.shape, picture.colour, answer):
            wrong.append((picture.colour, picture.shape, answer))
    assert wrong == []


class ChannelSwapDecodeCalculator(ImageDecodeCalculator):
    """A broken image path: decodes like the real calculator, then swaps RGB to BGR."""

    images_swapped = 0

    def process(self, cc: CalculatorContext) -> None:
        """Decode each image and reverse its channel order."""
        import openvino as ov

        context = self.IN(cc).get()
        for url in context.request.image_urls:
            array = load_image(url, cc.resources.image_policy)
            context.images.append(ov.Tensor(np.ascontiguousarray(array[..., ::-1])))
            context.image_sizes.append((array.shape[1], array.shape[2]))
            type(self).images_swapped += 1
        self.OUT(cc).send(context)


def _run_in_process(definition: GraphDefinition, body: dict[str, Any]) -> str:
    """One request through an in-process run of the graph; returns the answer text."""
    payload = HttpPayload(
        uri="/v3/chat/completions",
        body=json.dumps(body).encode(),
        parsed_json=body,
        headers={"Content-Type": "application/json"},
    )
    response = serve_http(definition, payload, timeout=60)
    assert isinstance(response, bytes)
    return json.loads(response)["choices"][0]["message"]["content"]


def _colour_answers(swap: bool) -> list[tuple[str, str]]:
    """(true colour, answer) for 8 red and 8 blue pictures through the in-process graph."""
    text = (MODEL_DIR / "graph.pbtxt").read_text()
    definition = GraphDefinition(
        f"{MODEL}-{'swap' if swap else 'plain'}", text=text, base_path=MODEL_DIR
    )
    if swap:
        with registry.override("ImageDecodeCalculator", ChannelSwapDecodeCalculator):
            definition.load()
    else:
        definition.load()
    assert definition.available, definition.error
    answers = []
    for picture, image_first in _pictures(["red", "blue"] * 8, seed=TEST_SEED + 2):
        answer = _run_in_process(definition, _body(picture, Q_COLOUR, image_first))
        answers.append((picture.colour, answer))
    return answers


def _accuracy(answers: list[tuple[str, str]]) -> float:
    return sum(grade(Q_COLOUR, "", colour, a) for colour, a in answers) / len(answers)


def test_in_process_graph_matches_server_path() -> None:
    assert _accuracy(_colour_answers(swap=False)) >= 0.9


def test_swapped_channels_confuse_red_and_blue() -> None:
    before = ChannelSwapDecodeCalculator.images_swapped
    answers = _colour_answers(swap=True)
    assert ChannelSwapDecodeCalculator.images_swapped - before == len(answers)
    assert _accuracy(answers) <= 0.25
    swapped = {"red": "blue", "blue": "red"}
    confused = sum(grade(Q_COLOUR, "", swapped[colour], a) for colour, a in answers)
    assert confused >= len(answers) // 2, answers
