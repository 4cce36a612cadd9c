"""Measure how well a served shapes model answers held-out pictures, behaviour by behaviour.

Generates N pictures of the shapes task (``tools/shapes_task.py``; ``--pictures classic``, the
training range, or ``wide``, the harder one) with its own seed (not a training seed) and asks
about each of them (the picture before or after the text at random):

* the three questions - "What shape is in the picture?", "What color is the shape?",
  "Describe the picture." - graded on the answer's words;
* ``json``: "Describe the picture." with ``response_format`` json_schema
  (``shapes_task.SHAPE_SCHEMA``) - the content must parse to ``{"shape": …, "color": …}`` with
  the right values;
* ``tool_auto``: the ``report_shape`` tool, ``tool_choice: "auto"``, "Report the shape in the
  picture." - exactly one ``report_shape`` call with the right arguments (and ``finish_reason``
  ``tool_calls`` over the API);
* ``tool_named``: the same with ``tool_choice`` naming ``report_shape`` (the call is forced by the
  server's grammar; the model picks the values);
* ``after_tool``: the conversation continued with that call and the tool's result - an answer in
  words with the right shape and colour and no call;
* ``reasoning``: "Think, then describe the picture." - a non-empty ``reasoning_content`` naming
  the right shape and colour, and the right description as the content.

Two paths:

* ``--url`` / ``--model``: through a running server with the ``openai`` client
  (``/v3/chat/completions``);
* ``--raw MODEL_DIR``: directly through ``openvino_genai.VLMPipeline`` on the model folder, with
  the prompt built the way the server builds it (the chat template over messages whose content
  holds the image tag; pictures decoded with Pillow to uint8 RGB), the same grammar for
  ``json`` and ``tool_named``, and the output split by the graph's parsers (hermes3, qwen3).

Prints the accuracy per behaviour for each path, the plain questions' accuracy by picture kind
(background, size, rotation, JPEG quality), a few wrong answers and, as the last line, one JSON
object with ``n`` (pictures), ``api`` and ``raw`` (accuracy per behaviour) and
``api_raw_agreement`` (share of identical answers). Example::

    python tools/eval_accuracy.py --url http://127.0.0.1:8000 --model qwen2vl-shapes \\
        --raw graphs/qwen2vl-shapes --n 300
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.shapes_task import (
    IMAGE_TAG,
    PICTURE_RANGES,
    Q_DESCRIBE,
    Q_REPORT,
    Q_THINK,
    QUESTIONS,
    REPORT_TOOL,
    SHAPE_SCHEMA,
    Picture,
    PictureRange,
    draw_picture,
    grade,
    grade_json,
    grade_tool_call,
)

EVAL_SEED = 20260  # training uses seeds 1 (training data) and 2 (held-out curve)
BEHAVIOURS: tuple[str, ...] = (*QUESTIONS, "json", "tool_auto", "tool_named", "after_tool",
                               "reasoning")  # fmt: skip
NAMED_CHOICE = {"type": "function", "function": {"name": "report_shape"}}
TOOL_RESULT = '{"ok": true}'


@dataclasses.dataclass(frozen=True)
class Case:
    """One request: a picture, a behaviour and where the picture goes."""

    picture: Picture
    behaviour: str
    image_first: bool


@dataclasses.dataclass
class Answer:
    """What came back: content, reasoning, tool calls (OpenAI form), finish reason."""

    content: str
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    finish_reason: str = "stop"

    def key(self) -> str:
        """A comparable summary (for API / raw agreement)."""
        calls = [(c["function"]["name"], json.loads(c["function"]["arguments"] or "null"))
                 for c in self.tool_calls]  # fmt: skip
        return json.dumps([self.content, self.reasoning or "", calls], sort_keys=True)


def make_cases(
    n: int,
    seed: int = EVAL_SEED,
    behaviours: Sequence[str] = BEHAVIOURS,
    pictures: PictureRange = PICTURE_RANGES["classic"],
) -> list[Case]:
    """``n`` pictures, each asked every behaviour; the image goes first or last at random."""
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        picture = draw_picture(rng, pictures=pictures)
        for behaviour in BEHAVIOURS:
            image_first = rng.random() < 0.5
            if behaviour in behaviours:
                cases.append(Case(picture, behaviour, image_first))
    return cases


def data_url(picture: Picture) -> str:
    """The picture as a base64 data URL."""
    return f"data:{picture.mime};base64," + base64.b64encode(picture.data).decode()


def chat_content(picture: Picture, question: str, image_first: bool) -> list[dict[str, Any]]:
    """OpenAI message content: one image part and one text part in the given order."""
    image = {"type": "image_url", "image_url": {"url": data_url(picture)}}
    text = {"type": "text", "text": question}
    return [image, text] if image_first else [text, image]


def report_call(picture: Picture, call_id: str = "call_1") -> dict[str, Any]:
    """The assistant's ``report_shape`` call as an OpenAI message entry."""
    arguments = json.dumps({"shape": picture.shape, "color": picture.colour})
    return {"id": call_id, "type": "function",
            "function": {"name": "report_shape", "arguments": arguments}}  # fmt: skip


def request_fields(case: Case, content: Any) -> dict[str, Any]:
    """``messages`` and the behaviour's extra fields; ``content`` is the first user content."""
    question = {
        "json": Q_DESCRIBE, "tool_auto": Q_REPORT, "tool_named": Q_REPORT,
        "after_tool": Q_REPORT, "reasoning": Q_THINK,
    }.get(case.behaviour, case.behaviour)  # fmt: skip
    messages: list[dict[str, Any]] = [{"role": "user", "content": content(question)}]
    fields: dict[str, Any] = {}
    if case.behaviour == "json":
        fields["response_format"] = SHAPE_SCHEMA
    if case.behaviour in ("tool_auto", "tool_named", "after_tool"):
        fields["tools"] = [REPORT_TOOL]
        fields["tool_choice"] = NAMED_CHOICE if case.behaviour == "tool_named" else "auto"
    if case.behaviour == "after_tool":
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [report_call(case.picture)]},
            {"role": "tool", "tool_call_id": "call_1", "content": TOOL_RESULT},
        ]
    return {"messages": messages, **fields}


def is_correct(case: Case, answer: Answer) -> bool:
    """Grade one answer for its behaviour."""
    p, b = case.picture, case.behaviour
    if b in QUESTIONS:
        return not answer.tool_calls and grade(b, p.shape, p.colour, answer.content)
    if b == "json":
        return grade_json(p.shape, p.colour, answer.content)
    if b in ("tool_auto", "tool_named"):
        return answer.finish_reason == "tool_calls" and grade_tool_call(
            p.shape, p.colour, answer.tool_calls
        )
    if b == "after_tool":
        return not answer.tool_calls and grade(Q_DESCRIBE, p.shape, p.colour, answer.content)
    if b == "reasoning":
        return (
            bool(answer.reasoning)
            and grade(Q_DESCRIBE, p.shape, p.colour, answer.reasoning or "")
            and grade(Q_DESCRIBE, p.shape, p.colour, answer.content)
            and "<think>" not in answer.content
        )
    raise ValueError(f"unknown behaviour {b!r}")


def ask_api(url: str, model: str, max_tokens: int = 64) -> Callable[[Case], Answer]:
    """Answer function using the ``openai`` client against ``{url}/v3`` (greedy)."""
    import openai

    client = openai.OpenAI(base_url=url.rstrip("/") + "/v3", api_key="unused", timeout=120)

    def ask(case: Case) -> Answer:
        fields = request_fields(
            case, lambda q: chat_content(case.picture, q, case.image_first)
        )
        response = client.chat.completions.create(
            model=model, max_tokens=max_tokens, temperature=0, **fields
        )
        choice = response.choices[0]
        message = choice.message
        calls = [c.model_dump(include={"id", "type", "function"}) for c in message.tool_calls or []]
        return Answer(
            message.content or "", getattr(message, "reasoning_content", None), calls,
            choice.finish_reason,
        )  # fmt: skip

    return ask


def ask_raw(model_dir: str | Path, max_tokens: int = 64) -> Callable[[Case], Answer]:
    """Answer function calling ``openvino_genai.VLMPipeline`` on ``model_dir`` directly."""
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    from calculators.llm.output_parser import OutputParser
    from calculators.llm.reasoning_parsers import get_reasoning_parser
    from calculators.llm.structured_output import structured_output_fields
    from calculators.llm.tool_parsers import get_tool_parser

    pipe = ov_genai.VLMPipeline(str(model_dir), "CPU")
    tokenizer = pipe.get_tokenizer()
    tool_parser, reasoning_parser = get_tool_parser("hermes3"), get_reasoning_parser("qwen3")

    def ask(case: Case) -> Answer:
        def content(question: str) -> str:
            return IMAGE_TAG + question if case.image_first else question + IMAGE_TAG

        fields = request_fields(case, content)
        messages = fields["messages"]
        for message in messages:
            for call in message.get("tool_calls") or []:
                call["function"]["arguments"] = json.loads(call["function"]["arguments"])
            if message["content"] is None:
                message["content"] = ""
        tools = fields.get("tools")
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=tools)
        config = ov_genai.GenerationConfig()
        config.max_new_tokens = max_tokens
        config.do_sample = False
        config.apply_chat_template = False
        structured = structured_output_fields(
            fields.get("response_format"), tools, fields.get("tool_choice", "auto"),
            tool_parser, False,
        )  # fmt: skip
        if structured:
            config.structured_output_config = ov_genai.StructuredOutputConfig(**structured)
        array = np.asarray(case.picture.decode(), dtype=np.uint8)[None]
        text = pipe.generate(prompt, images=[ov.Tensor(array)], generation_config=config).texts[0]
        parsed = OutputParser(tool_parser, reasoning_parser, tools).finish(text)
        calls = [c.to_openai() for c in parsed.tool_calls]
        return Answer(
            parsed.content, parsed.reasoning or None, calls, "tool_calls" if calls else "stop"
        )

    return ask


def evaluate(cases: Sequence[Case], ask: Callable[[Case], Answer]) -> dict[str, Any]:
    """Ask every case; return the answers, correctness and accuracy per behaviour."""
    answers = [ask(case) for case in cases]
    correct = [is_correct(c, a) for c, a in zip(cases, answers, strict=True)]
    accuracy = {}
    for behaviour in BEHAVIOURS:
        marks = [ok for c, ok in zip(cases, correct, strict=True) if c.behaviour == behaviour]
        if marks:
            accuracy[behaviour] = sum(marks) / len(marks)
    return {"answers": answers, "correct": correct, "accuracy": accuracy}


def picture_kinds(picture: Picture) -> list[str]:
    """Buckets of a picture for the breakdown."""
    size = "small (<30 %)" if picture.fraction < 0.3 else (
        "large (>80 %)" if picture.fraction > 0.8 else "medium")  # fmt: skip
    kinds = [f"background {picture.background}", f"size {size}"]
    kinds.append("JPEG quality < 50" if 0 < picture.quality < 50 else "PNG or JPEG >= 50")
    return kinds


def report(label: str, cases: Sequence[Case], result: dict[str, Any], seconds: float) -> None:
    """Print accuracy per behaviour, the breakdown of the three questions, wrong answers."""
    print(f"{label}: {len(cases)} requests in {seconds:.1f} s")
    for behaviour, accuracy in result["accuracy"].items():
        print(f"  {behaviour:32s} {accuracy:.3f}")
    buckets: dict[str, list[bool]] = {}
    for case, ok in zip(cases, result["correct"], strict=True):
        if case.behaviour in QUESTIONS:
            for kind in picture_kinds(case.picture):
                buckets.setdefault(kind, []).append(ok)
    for kind in sorted(buckets):
        marks = buckets[kind]
        print(f"  three questions, {kind:24s} {sum(marks) / len(marks):.3f} ({len(marks)})")
    wrong = [
        (c, a) for c, a, ok in zip(cases, result["answers"], result["correct"], strict=True)
        if not ok
    ]  # fmt: skip
    for case, answer in wrong[:12]:
        p = case.picture
        print(
            f"  wrong: {p.colour} {p.shape} {p.width}x{p.height} {p.mime} q{p.quality} "
            f"{p.background} {p.fraction:.2f} | {case.behaviour} -> {answer.key()}"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", default="qwen2vl-shapes", help="served model name")
    parser.add_argument("--raw", type=Path, metavar="MODEL_DIR", help="also run VLMPipeline")
    parser.add_argument("--n", type=int, default=300, help="number of pictures")
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--pictures", choices=sorted(PICTURE_RANGES), default="classic",
        help="held-out pictures: the training range (classic) or the harder one (wide)",
    )  # fmt: skip
    parser.add_argument(
        "--behaviours", default=",".join(BEHAVIOURS),
        help="comma-separated subset of: " + ", ".join(BEHAVIOURS),
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.url is None and args.raw is None:
        parser.error("give --url, --raw or both")
    args.behaviours = [b.strip() for b in args.behaviours.split(",") if b.strip()]
    unknown = set(args.behaviours) - set(BEHAVIOURS)
    if unknown:
        parser.error(f"unknown behaviours: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate and print the summary."""
    args = parse_args(argv)
    cases = make_cases(args.n, args.seed, args.behaviours, PICTURE_RANGES[args.pictures])
    summary: dict[str, Any] = {"n": args.n, "pictures": args.pictures}
    results = {}
    for label, path in (("api", args.url), ("raw", args.raw)):
        if path is None:
            continue
        ask = (
            ask_api(args.url, args.model, args.max_tokens) if label == "api"
            else ask_raw(args.raw, args.max_tokens)
        )  # fmt: skip
        start = time.perf_counter()
        results[label] = evaluate(cases, ask)
        report(label, cases, results[label], time.perf_counter() - start)
        summary[label] = results[label]["accuracy"]
    if len(results) == 2:
        same = sum(
            a.key() == b.key()
            for a, b in zip(results["api"]["answers"], results["raw"]["answers"], strict=True)
        )
        summary["api_raw_agreement"] = same / len(cases)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
