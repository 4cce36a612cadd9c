"""The shapes task of the embedded demo model: pictures, prompts, answers, grading, chat template.

Importable without torch (the evaluation tool and the tests use it); the training loop is in
``tools/train_demo_model.py``.

* Pictures: one solid-filled shape - circle, square (axis-aligned or rotated) or equilateral
  triangle (any rotation) - in one of six colours - red (255,0,0), green (0,160,0), blue
  (0,0,255), yellow (255,215,0), purple (128,0,128), orange (255,140,0). Backgrounds: white,
  light grey (200-240), dark (grey 0-50) or a random colour at least 120 (RGB distance) from
  every shape colour. The shape lies fully inside the picture at any position; its larger
  bounding-box side is 15-95 % of the picture's shorter side. Pictures are 64-512 px on each side
  with an aspect ratio up to 2:1, encoded as PNG or JPEG (quality 20-95).
* Behaviours (exact prompt text; the picture before or after the question):

  - "What shape is in the picture?" -> ``A circle.``; "What color is the shape?" -> ``Red.``;
    "Describe the picture." -> ``A red circle.``
  - any of these under ``response_format`` json_schema :data:`SHAPE_SCHEMA` (the grammar forces
    the first ``{``) -> ``{"shape":"circle","color":"red"}``;
  - with the :data:`REPORT_TOOL` tool, "Report the shape in the picture." -> a Hermes call
    ``<tool_call>\\n{"name": "report_shape", "arguments": {"shape":"circle","color":"red"}}\\n
    </tool_call>`` (the format ``tool_choice`` forcing produces); after the tool's result ->
    ``I reported a red circle.``;
  - "Think, then describe the picture." -> ``<think>\\nThe shape is red. It has no corners, so
    it is a circle.\\n</think>\\n\\nA red circle.``
* Grading: an answer is correct when it names the right word(s) and no other shape or colour
  word (:func:`grade`); the structured behaviours are graded on what the server's parsers
  return (:func:`grade_json`, :func:`grade_tool_call`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import random
import re
from typing import Any

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 160, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 215, 0),
    "purple": (128, 0, 128),
    "orange": (255, 140, 0),
}
Q_SHAPE = "What shape is in the picture?"
Q_COLOUR = "What color is the shape?"
Q_DESCRIBE = "Describe the picture."
QUESTIONS: tuple[str, ...] = (Q_SHAPE, Q_COLOUR, Q_DESCRIBE)
Q_REPORT = "Report the shape in the picture."
Q_THINK = "Think, then describe the picture."
Q_JSON = "Describe the picture as JSON."
IMAGE_TAG = "<ov_genai_image_0>"
BACKGROUNDS: tuple[str, ...] = ("white", "grey", "dark", "colour")
MIN_BACKGROUND_DISTANCE = 120.0

REPORT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "report_shape",
        "description": "Report the shape and colour seen in the picture.",
        "parameters": {
            "type": "object",
            "properties": {
                "shape": {"type": "string", "enum": list(SHAPES)},
                "color": {"type": "string", "enum": list(COLOURS)},
            },
            "required": ["shape", "color"],
        },
    },
}
#: ``response_format`` of the JSON behaviour.
SHAPE_SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "shape",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "shape": {"type": "string", "enum": list(SHAPES)},
                "color": {"type": "string", "enum": list(COLOURS)},
            },
            "required": ["shape", "color"],
            "additionalProperties": False,
        },
    },
}
#: Tool results the model is trained to follow with its answer in words.
TOOL_RESULTS: tuple[str, ...] = (
    '{"ok": true}', '{"status": "recorded"}', '{"result": "success"}', "ok", "Done.", "Saved.",
    "recorded", '{"id": 17, "saved": true}', "true", "",
)  # fmt: skip

# Qwen2-VL's chat template (images as vision blocks, default system prompt) with Qwen2.5's tool
# section: tools in <tools></tools>, assistant calls as <tool_call> blocks, tool results as
# <tool_response> blocks in a user turn.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
    "{% else %}You are a helpful assistant.{% endif %}"
    "{{ '\\n' }}\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}"
    "{{ '\\n' }}</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "{% elif messages[0]['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% if not (loop.first and tools) %}<|im_start|>system\n{{ message['content'] }}"
    "<|im_end|>\n{% endif %}"
    "{% elif message['role'] == 'assistant' and message['tool_calls'] %}"
    "<|im_start|>assistant{% if message['content'] %}{{ '\\n' }}{{ message['content'] }}{% endif %}"
    "{% for tool_call in message['tool_calls'] %}"
    "{% if tool_call['function'] is defined %}{% set tool_call = tool_call['function'] %}"
    "{% endif %}"
    "{{ '\\n' }}<tool_call>\n{\"name\": \"{{ tool_call['name'] }}\", \"arguments\": "
    "{{ tool_call['arguments'] | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif message['role'] == 'tool' %}"
    "{% if loop.index0 == 0 or messages[loop.index0 - 1]['role'] != 'tool' %}"
    "<|im_start|>user{% endif %}"
    "{{ '\\n' }}<tool_response>\n{{ message['content'] }}\n</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}<|im_end|>\n{% endif %}"
    "{% else %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclasses.dataclass(frozen=True)
class Picture:
    """One encoded picture and what it shows."""

    data: bytes
    mime: str  # "image/png" or "image/jpeg"
    shape: str
    colour: str
    width: int
    height: int
    background: str = "white"  # one of BACKGROUNDS
    fraction: float = 0.5  # larger bounding-box side / shorter picture side
    quality: int = 0  # JPEG quality, 0 for PNG

    def decode(self) -> Image.Image:
        """Decode the picture to an RGB image."""
        return Image.open(io.BytesIO(self.data)).convert("RGB")


def _unit_polygon(shape: str, angle: float) -> list[tuple[float, float]]:
    """Vertices of a square (side 1) or an equilateral triangle (circumradius 1), rotated."""
    if shape == "square":
        corners = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
        c, s = math.cos(angle), math.sin(angle)
        return [(x * c - y * s, x * s + y * c) for x, y in corners]
    return [
        (math.cos(angle + k * 2 * math.pi / 3), math.sin(angle + k * 2 * math.pi / 3))
        for k in range(3)
    ]


def _background(rng: random.Random, kind: str) -> tuple[int, int, int]:
    if kind == "white":
        return (255, 255, 255)
    if kind == "grey":
        grey = rng.randint(200, 240)
        return (grey, grey, grey)
    if kind == "dark":
        grey = rng.randint(0, 50)
        return (grey, grey, grey)
    while True:
        rgb = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        if min(math.dist(rgb, c) for c in COLOURS.values()) >= MIN_BACKGROUND_DISTANCE:
            return rgb


@dataclasses.dataclass(frozen=True)
class PictureRange:
    """Which pictures :func:`draw_picture` draws."""

    backgrounds: tuple[str, ...]
    fraction: tuple[float, float]  # larger bounding-box side / shorter picture side
    rotated_squares: bool
    jpeg_quality: tuple[int, int]
    #: share of pictures whose shape is drawn from the small end only (up to SMALL_FRACTION)
    small_share: float = 0.0


#: Upper end of the "small" shapes :attr:`PictureRange.small_share` draws more of.
SMALL_FRACTION = 0.30
#: The pictures the first embedded model was trained on.
CLASSIC = PictureRange(("white", "grey"), (0.25, 0.60), False, (70, 95))
#: Harder pictures: dark and coloured backgrounds, 15-95 % shapes, rotated squares, JPEG 20-95.
WIDE = PictureRange(BACKGROUNDS, (0.15, 0.95), True, (20, 95))
#: WIDE with more small shapes (for training: small shapes are the hardest to tell apart).
WIDE_SMALL = dataclasses.replace(WIDE, small_share=0.35)
PICTURE_RANGES: dict[str, PictureRange] = {
    "classic": CLASSIC, "wide": WIDE, "wide-small": WIDE_SMALL,
}  # fmt: skip


def draw_picture(
    rng: random.Random,
    shape: str | None = None,
    colour: str | None = None,
    fmt: str | None = None,
    background: str | None = None,
    fraction: float | None = None,
    pictures: PictureRange = CLASSIC,
) -> Picture:
    """Draw one random picture of the task; any of the keyword arguments may be fixed."""
    shape = shape or rng.choice(SHAPES)
    colour = colour or rng.choice(sorted(COLOURS))
    width = rng.randint(64, 512)
    height = rng.randint(max(64, (width + 1) // 2), min(512, 2 * width))
    if rng.random() < 0.5:
        width, height = height, width
    background = background or rng.choice(pictures.backgrounds)
    image = Image.new("RGB", (width, height), _background(rng, background))
    if fraction is None:
        low, high = pictures.fraction
        if pictures.small_share and rng.random() < pictures.small_share:
            high = min(high, SMALL_FRACTION)
        fraction = rng.uniform(low, high)
    extent = fraction * min(width, height)
    draw = ImageDraw.Draw(image)
    fill = COLOURS[colour]
    if shape == "circle":
        r = extent / 2
        cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        axis_aligned = shape == "square" and (not pictures.rotated_squares or rng.random() < 0.5)
        angle = 0.0 if axis_aligned else rng.uniform(0, 2 * math.pi)
        unit = _unit_polygon(shape, angle)
        xs, ys = [p[0] for p in unit], [p[1] for p in unit]
        scale = extent / max(max(xs) - min(xs), max(ys) - min(ys))
        points = [(x * scale, y * scale) for x, y in unit]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        cx = rng.uniform(-min(xs), width - max(xs))
        cy = rng.uniform(-min(ys), height - max(ys))
        draw.polygon([(cx + x, cy + y) for x, y in points], fill=fill)
    fmt = fmt or rng.choice(("PNG", "JPEG"))
    buf = io.BytesIO()
    quality = 0
    if fmt == "JPEG":
        quality = rng.randint(*pictures.jpeg_quality)
        image.save(buf, format="JPEG", quality=quality)
    else:
        image.save(buf, format="PNG")
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return Picture(
        buf.getvalue(), mime, shape, colour, width, height, background, fraction, quality
    )


def expected_answer(question: str, shape: str, colour: str) -> str:
    """The training answer to one of the three questions about a ``colour`` ``shape``."""
    if question == Q_SHAPE:
        return f"A {shape}."
    if question == Q_COLOUR:
        return f"{colour.capitalize()}."
    if question in (Q_DESCRIBE, Q_REPORT):
        return f"A {colour} {shape}."
    raise ValueError(f"unknown question {question!r}")


def json_answer(shape: str, colour: str) -> str:
    """The JSON answer, compact and in the schema's order (as the server's grammar writes it)."""
    return json.dumps({"shape": shape, "color": colour}, separators=(",", ":"))


def tool_call_text(shape: str, colour: str) -> str:
    """The Hermes tool call the model writes for ``report_shape``."""
    return (
        '<tool_call>\n{"name": "report_shape", "arguments": '
        + json_answer(shape, colour)
        + "}\n</tool_call>"
    )


def after_tool_answer(shape: str, colour: str) -> str:
    """The answer in words after the tool's result."""
    return f"I reported a {colour} {shape}."


_CORNERS = {"circle": "It has no corners", "square": "It has four corners",
            "triangle": "It has three corners"}  # fmt: skip


def thinking(shape: str, colour: str) -> str:
    """The reasoning of the thinking behaviour (between the think tags)."""
    return f"The shape is {colour}. {_CORNERS[shape]}, so it is a {shape}."


def think_answer(shape: str, colour: str) -> str:
    """The whole thinking answer: reasoning block, then the description."""
    return f"<think>\n{thinking(shape, colour)}\n</think>\n\nA {colour} {shape}."


def grade(question: str, shape: str, colour: str, answer: str) -> bool:
    """True when ``answer`` has exactly the expected shape/colour words and no others."""
    words = set(re.findall(r"[a-z]+", answer.lower()))
    found = words & (set(SHAPES) | set(COLOURS))
    expected = {
        Q_SHAPE: {shape},
        Q_COLOUR: {colour},
    }.get(question, {shape, colour})
    return found == expected


def grade_json(shape: str, colour: str, content: str | None) -> bool:
    """True when ``content`` is a JSON object with exactly the right shape and color."""
    try:
        value = json.loads(content or "")
    except ValueError:
        return False
    return value == {"shape": shape, "color": colour}


def grade_tool_call(shape: str, colour: str, calls: list[dict[str, Any]] | None) -> bool:
    """True for exactly one ``report_shape`` call with the right arguments (OpenAI form)."""
    if not calls or len(calls) != 1:
        return False
    function = calls[0].get("function") or {}
    if function.get("name") != "report_shape":
        return False
    return grade_json(shape, colour, function.get("arguments"))


def tokenizer_corpus() -> list[str]:
    """Texts the BPE tokenizer is trained on: chat frames, tools, questions and answers."""
    tools_block = json.dumps(REPORT_TOOL)
    texts = [
        "system\nYou are a helpful assistant.", "user\n", "assistant\n",
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + tools_block + "\n</tools>\n\nFor each function call, return a json object with "
        "function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>',
        "user\n<tool_response>\n", "\n</tool_response>", Q_REPORT, Q_THINK, Q_JSON,
        *TOOL_RESULTS,
    ]  # fmt: skip
    for question in QUESTIONS:
        texts.append(question)
    for shape in SHAPES:
        for colour in COLOURS:
            for question in QUESTIONS:
                texts.append(expected_answer(question, shape, colour))
            texts.append(tool_call_text(shape, colour))
            texts.append(json.dumps({"shape": shape, "color": colour}))
            texts.append(after_tool_answer(shape, colour))
            texts.append(think_answer(shape, colour))
    return texts * 50
