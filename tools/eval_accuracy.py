"""Measure how well a served shapes model answers the three questions about held-out pictures.

Generates N pictures of the shapes task (``tools/train_demo_model.py``) with its own seed (not a
training seed), asks each of the three questions once - the picture before or after the question,
PNG or JPEG - and grades the answers (right word(s), no other shape or colour word).

* ``--url`` / ``--model``: through the OpenAI chat-completions API of a running server;
* ``--raw MODEL_DIR``: directly through ``openvino_genai.VLMPipeline`` on the model folder, with
  the prompt built the way the server builds it (chat template over the content with the image
  tag in place, pictures decoded with Pillow to uint8 RGB).

Prints per-question accuracy for each path and, as the last line, one JSON object with ``n`` (the
number of pictures), ``accuracy`` (the API's overall accuracy, or the raw one without ``--url``)
and, with ``--raw``, ``raw_accuracy`` and ``api_raw_agreement``. Example::

    python tools/eval_accuracy.py --url http://127.0.0.1:8000 --model qwen2vl-shapes \\
        --raw graphs/qwen2vl-shapes --n 300
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.train_demo_model import (
    IMAGE_TAG,
    QUESTIONS,
    Picture,
    draw_picture,
    grade,
)

EVAL_SEED = 20260  # training uses seeds 1 (training data) and 2 (held-out curve)

Case = tuple[Picture, str, bool]  # picture, question, image first


def make_cases(n: int, seed: int = EVAL_SEED) -> list[Case]:
    """``n`` pictures, each with the three questions; the image goes first or last at random."""
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        picture = draw_picture(rng)
        for question in QUESTIONS:
            cases.append((picture, question, rng.random() < 0.5))
    return cases


def data_url(picture: Picture) -> str:
    """The picture as a base64 data URL."""
    return f"data:{picture.mime};base64," + base64.b64encode(picture.data).decode()


def chat_content(picture: Picture, question: str, image_first: bool) -> list[dict[str, Any]]:
    """OpenAI message content: one image part and one text part in the given order."""
    image = {"type": "image_url", "image_url": {"url": data_url(picture)}}
    text = {"type": "text", "text": question}
    return [image, text] if image_first else [text, image]


def ask_api(url: str, model: str, max_tokens: int = 16) -> Callable[[Case], str]:
    """Answer function posting to ``{url}/v3/chat/completions`` (greedy)."""
    endpoint = url.rstrip("/") + "/v3/chat/completions"

    def ask(case: Case) -> str:
        picture, question, image_first = case
        body = {
            "model": model,
            "messages": [{"role": "user", "content": chat_content(picture, question, image_first)}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        request = urllib.request.Request(
            endpoint, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["choices"][0]["message"]["content"]

    return ask


def ask_raw(model_dir: str | Path, max_tokens: int = 16) -> Callable[[Case], str]:
    """Answer function calling ``openvino_genai.VLMPipeline`` on ``model_dir`` directly."""
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    pipe = ov_genai.VLMPipeline(str(model_dir), "CPU")
    tokenizer = pipe.get_tokenizer()
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = max_tokens
    config.do_sample = False
    config.apply_chat_template = False

    def ask(case: Case) -> str:
        picture, question, image_first = case
        content = IMAGE_TAG + question if image_first else question + IMAGE_TAG
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True
        )
        array = np.asarray(picture.decode(), dtype=np.uint8)[None]
        result = pipe.generate(prompt, images=[ov.Tensor(array)], generation_config=config)
        return result.texts[0]

    return ask


def evaluate(cases: Sequence[Case], ask: Callable[[Case], str]) -> dict[str, Any]:
    """Ask every case; return answers, per-question and overall accuracy."""
    answers, correct = [], {q: 0 for q in QUESTIONS}
    total = {q: 0 for q in QUESTIONS}
    for case in cases:
        picture, question, _ = case
        answer = ask(case)
        answers.append(answer)
        total[question] += 1
        correct[question] += grade(question, picture.shape, picture.colour, answer)
    per_question = {q: correct[q] / total[q] for q in QUESTIONS if total[q]}
    return {
        "answers": answers,
        "per_question": per_question,
        "accuracy": sum(correct.values()) / max(1, sum(total.values())),
    }


def report(label: str, cases: Sequence[Case], result: dict[str, Any], seconds: float) -> None:
    """Print per-question accuracy and a few wrong answers."""
    print(f"{label}: {len(cases)} requests in {seconds:.1f} s")
    for question, accuracy in result["per_question"].items():
        print(f"  {question:32s} {accuracy:.3f}")
    print(f"  {'overall':32s} {result['accuracy']:.3f}")
    wrong = [
        (p, q, a)
        for (p, q, _), a in zip(cases, result["answers"], strict=True)
        if not grade(q, p.shape, p.colour, a)
    ]
    for picture, question, answer in wrong[:10]:
        print(
            f"  wrong: {picture.colour} {picture.shape} {picture.width}x{picture.height} "
            f"{picture.mime} | {question} -> {answer!r}"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", default="qwen2vl-shapes", help="served model name")
    parser.add_argument("--raw", type=Path, metavar="MODEL_DIR", help="also run VLMPipeline")
    parser.add_argument("--n", type=int, default=300, help="number of pictures")
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    if args.url is None and args.raw is None:
        parser.error("give --url, --raw or both")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate and print the summary."""
    args = parse_args(argv)
    cases = make_cases(args.n, args.seed)
    summary: dict[str, Any] = {"n": args.n}
    api = raw = None
    if args.url is not None:
        start = time.perf_counter()
        api = evaluate(cases, ask_api(args.url, args.model, args.max_tokens))
        report("API", cases, api, time.perf_counter() - start)
        summary["accuracy"] = api["accuracy"]
        summary["per_question"] = api["per_question"]
    if args.raw is not None:
        start = time.perf_counter()
        raw = evaluate(cases, ask_raw(args.raw, args.max_tokens))
        report("raw VLMPipeline", cases, raw, time.perf_counter() - start)
        summary.setdefault("accuracy", raw["accuracy"])
        summary["raw_accuracy"] = raw["accuracy"]
        summary["raw_per_question"] = raw["per_question"]
    if api is not None and raw is not None:
        same = sum(a == b for a, b in zip(api["answers"], raw["answers"], strict=True))
        summary["api_raw_agreement"] = same / len(cases)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
