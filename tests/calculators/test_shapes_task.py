"""The demo model's task definition: pictures in the stated ranges, answers, grading, the tool."""

from __future__ import annotations

import hashlib
import json
import math
import random

import numpy as np
import pytest

from tools.shapes_task import (
    COLOURS,
    MIN_BACKGROUND_DISTANCE,
    Q_COLOUR,
    Q_DESCRIBE,
    Q_SHAPE,
    REPORT_TOOL,
    SHAPES,
    SMALL_FRACTION,
    WIDE,
    WIDE_SMALL,
    draw_picture,
    grade,
    grade_json,
    grade_tool_call,
    json_answer,
    think_answer,
    tool_call_text,
)

# The tool exactly as the README's agent loop and the model card give it.
ISSUE_TOOL = (
    '{"type":"function","function":{"name":"report_shape","description":"Report the shape and '
    'colour seen in the picture.","parameters":{"type":"object","properties":{"shape":{"type":'
    '"string","enum":["circle","square","triangle"]},"color":{"type":"string","enum":["red",'
    '"green","blue","yellow","purple","orange"]}},"required":["shape","color"]}}}'
)


def test_report_tool_is_the_documented_one() -> None:
    assert json.loads(ISSUE_TOOL) == REPORT_TOOL


def test_pictures_cover_the_wider_range() -> None:
    rng = random.Random(5)
    pictures = [draw_picture(rng, pictures=WIDE) for _ in range(300)]
    assert {p.background for p in pictures} == {"white", "grey", "dark", "colour"}
    assert {p.shape for p in pictures} == set(SHAPES)
    assert {p.colour for p in pictures} == set(COLOURS)
    fractions = [p.fraction for p in pictures]
    assert min(fractions) < 0.2 and max(fractions) > 0.9
    assert all(0.15 <= f <= 0.95 for f in fractions)
    qualities = [p.quality for p in pictures if p.mime == "image/jpeg"]
    assert min(qualities) < 30 and max(qualities) > 90
    for p in pictures:
        assert 64 <= p.width <= 512 and 64 <= p.height <= 512
        assert max(p.width, p.height) <= 2 * min(p.width, p.height)


WIDE_DIGEST = "11ab49a39bd4d7cd5ad4c67484d4d8653854300f21c518446f3fe1f82eaae0be"


def test_wide_small_draws_more_small_shapes_over_the_same_range() -> None:
    def small_share(pictures: list) -> float:
        return sum(p.fraction < SMALL_FRACTION for p in pictures) / len(pictures)

    wide = [draw_picture(random.Random(k), pictures=WIDE) for k in range(400)]
    more = [draw_picture(random.Random(k), pictures=WIDE_SMALL) for k in range(400)]
    assert small_share(wide) < 0.25 < 0.4 < small_share(more)
    assert all(0.15 <= p.fraction <= 0.95 for p in more)
    assert max(p.fraction for p in more) > 0.9
    # The ranges without the emphasis draw exactly the pictures they drew before it existed
    # (the held-out evaluation set stays the same). Golden digest: the same expression over
    # draw_picture as it was before small_share was added.
    rng = random.Random(20260)
    drawn = [draw_picture(rng, pictures=WIDE) for _ in range(20)]
    described = repr([
        (p.shape, p.colour, p.width, p.height, p.background, round(p.fraction, 6), p.quality)
        for p in drawn
    ])  # fmt: skip
    assert hashlib.sha256(described.encode()).hexdigest() == WIDE_DIGEST


@pytest.mark.parametrize("background", ["dark", "colour", "white", "grey"])
def test_background_is_far_from_every_shape_colour(background: str) -> None:
    rng = random.Random(7)
    for _ in range(20):
        picture = draw_picture(rng, background=background, fmt="PNG", fraction=0.2)
        corner = tuple(int(v) for v in np.asarray(picture.decode())[0, 0])
        assert min(math.dist(corner, c) for c in COLOURS.values()) >= MIN_BACKGROUND_DISTANCE


def test_large_shapes_stay_inside_the_picture() -> None:
    rng = random.Random(9)
    for shape in SHAPES:
        picture = draw_picture(rng, shape=shape, colour="red", fmt="PNG", fraction=0.95)
        array = np.asarray(picture.decode())
        red = (array == COLOURS["red"]).all(-1)
        ys, xs = np.nonzero(red)
        extent = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
        assert extent >= 0.9 * min(picture.width, picture.height)
        # fully inside: no shape pixel on all four borders at once
        borders = [red[0].any(), red[-1].any(), red[:, 0].any(), red[:, -1].any()]
        assert not all(borders)


def test_grading() -> None:
    assert grade(Q_SHAPE, "circle", "red", "A circle.")
    assert not grade(Q_SHAPE, "circle", "red", "A red circle.")
    assert grade(Q_COLOUR, "circle", "red", "Red.")
    assert grade(Q_DESCRIBE, "circle", "red", "I reported a red circle.")
    assert not grade(Q_DESCRIBE, "circle", "red", "A red square.")
    assert grade_json("square", "blue", json_answer("square", "blue"))
    assert not grade_json("square", "blue", '{"shape": "square"}')
    assert not grade_json("square", "blue", "not json")
    call = {"id": "x", "type": "function",
            "function": {"name": "report_shape", "arguments": '{"shape":"square","color":"blue"}'}}
    assert grade_tool_call("square", "blue", [call])
    assert not grade_tool_call("square", "blue", [call, call])
    assert not grade_tool_call("circle", "blue", [call])


def test_answers_are_what_the_parsers_and_grammar_expect() -> None:
    from calculators.llm.reasoning_parsers import get_reasoning_parser
    from calculators.llm.tool_parsers import get_tool_parser

    text = tool_call_text("triangle", "green")
    parsed = get_tool_parser("hermes3").parse(text, final=True, tools=[REPORT_TOOL])
    assert parsed.content == ""
    assert [(c.name, c.value) for c in parsed.calls] == [
        ("report_shape", {"shape": "triangle", "color": "green"})
    ]
    # the forced call's fixed text (the structural tag's begin and end) frames these arguments
    tag = get_tool_parser("hermes3").call_tag("report_shape", {}, {})
    assert text == tag["begin"] + json_answer("triangle", "green") + tag["end"]
    split = get_reasoning_parser("qwen3").split(think_answer("square", "yellow"), final=True)
    assert split.rest == "A yellow square."
    assert grade(Q_DESCRIBE, "square", "yellow", split.reasoning)
