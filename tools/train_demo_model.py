"""Train a small Qwen2-VL offline to answer questions about synthetic pictures; export it to IR.

The task:

* Pictures: one solid-filled shape - circle, square (axis-aligned) or triangle (equilateral, any
  rotation) - in one of six colours - red (255,0,0), green (0,160,0), blue (0,0,255), yellow
  (255,215,0), purple (128,0,128), orange (255,140,0) - on a white or light-grey (200-240)
  background. The shape lies fully inside the picture at any position; its size (circle diameter,
  square side, diameter of the triangle's circumcircle) is 25-60 % of the shorter side. Pictures
  are 64-512 px on each side with an aspect ratio up to 2:1, encoded as PNG or JPEG (quality
  70-95).
* Questions (exact text) and answers: "What shape is in the picture?" -> "A circle.";
  "What color is the shape?" -> "Red."; "Describe the picture." -> "A red circle.". The picture
  may come before or after the question in the message's content list.
* Grading: an answer is correct when it contains the right word(s) and no other shape or colour
  word (:func:`grade`).

Design (aimed at circle vs square, which plain next-token training on small inputs did not learn):

* Fixed input size: ``min_pixels == max_pixels == 140²`` in ``preprocessor_config.json``, so every
  picture, 64 px or 512 px, reaches the vision tower as about 10x10 patches of 14 px (about 25
  image tokens after the 2x2 merge); the smallest shape still spans about two patches and its
  corners or arcs are visible inside single patches.
* A vision tower with 4 blocks of width 96, each block starting as the identity (zero output
  projections). During training only, two auxiliary linear classifiers (shape and colour): one
  on the mean and the maximum over the single patches before the merger (the block MLPs then
  act as per-patch edge and corner detectors, which learn quickly), one on the mean and the
  maximum of the merged image tokens. Neither is part of the exported model.
* Two stages: first the vision tower and merger alone learn shape and colour through the
  auxiliary classifiers (cheap steps, a direct gradient instead of one through the language
  model) until the merged-token classifier reaches 97 % on held-out pictures; then the whole
  model learns the answers, with the loss on the answer tokens only plus the auxiliary loss.
  AdamW with warm-up and cosine decay in each stage.
* Training inputs are produced exactly as at serving time: ``pixel_values`` by transformers'
  ``Qwen2VLImageProcessor`` configured like the exported ``preprocessor_config.json`` and the
  prompt by the chat template applied to ``"<ov_genai_image_0>" + question`` (or the question
  first; separators "", " " or a newline), the tag replaced by ``<|vision_start|>``,
  ``<|image_pad|>`` x N, ``<|vision_end|>`` as openvino-genai does. Answers end with
  ``<|im_end|>``.

The picture generator and the grading rule are importable without torch (the evaluation tool and
tests use them). Training needs the export environment (torch, transformers 5.0.0, optimum-intel
2.2.0; see ``tools/make_model.py``). Example::

    nice -n 5 python tools/train_demo_model.py --out graphs/qwen2vl-shapes \\
        | tee tools/train_demo_model.log
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import random
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
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
IMAGE_TAG = "<ov_genai_image_0>"
SEPARATORS: tuple[str, ...] = ("", " ", "\n")
TRAIN_SEED = 1
HELD_OUT_SEED = 2


@dataclasses.dataclass(frozen=True)
class Picture:
    """One encoded picture and what it shows."""

    data: bytes
    mime: str  # "image/png" or "image/jpeg"
    shape: str
    colour: str
    width: int
    height: int

    def decode(self) -> Image.Image:
        """Decode the picture to an RGB image."""
        return Image.open(io.BytesIO(self.data)).convert("RGB")


def _shape_polygon(shape: str, size: float, angle: float) -> list[tuple[float, float]]:
    """Vertices (relative to the centre) of a square or an equilateral triangle."""
    if shape == "square":
        h = size / 2
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    r = size / 2
    return [
        (r * math.cos(angle + k * 2 * math.pi / 3), r * math.sin(angle + k * 2 * math.pi / 3))
        for k in range(3)
    ]


def draw_picture(
    rng: random.Random,
    shape: str | None = None,
    colour: str | None = None,
    fmt: str | None = None,
) -> Picture:
    """Draw one random picture of the task; ``shape``, ``colour`` and ``fmt`` may be fixed."""
    shape = shape or rng.choice(SHAPES)
    colour = colour or rng.choice(sorted(COLOURS))
    width = rng.randint(64, 512)
    height = rng.randint(max(64, (width + 1) // 2), min(512, 2 * width))
    if rng.random() < 0.5:
        width, height = height, width
    grey = 255 if rng.random() < 0.5 else rng.randint(200, 240)
    image = Image.new("RGB", (width, height), (grey, grey, grey))
    size = rng.uniform(0.25, 0.60) * min(width, height)
    if shape == "circle":
        points = [(-size / 2, -size / 2), (size / 2, size / 2)]
    else:
        points = _shape_polygon(shape, size, rng.uniform(0, 2 * math.pi))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    cx = rng.uniform(-min(xs), width - 1 - max(xs))
    cy = rng.uniform(-min(ys), height - 1 - max(ys))
    draw = ImageDraw.Draw(image)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], fill=fill)
    else:
        draw.polygon([(cx + x, cy + y) for x, y in points], fill=fill)
    fmt = fmt or rng.choice(("PNG", "JPEG"))
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.save(buf, format="JPEG", quality=rng.randint(70, 95))
    else:
        image.save(buf, format="PNG")
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return Picture(buf.getvalue(), mime, shape, colour, width, height)


def expected_answer(question: str, shape: str, colour: str) -> str:
    """The training answer to ``question`` about a ``colour`` ``shape``."""
    if question == Q_SHAPE:
        return f"A {shape}."
    if question == Q_COLOUR:
        return f"{colour.capitalize()}."
    if question == Q_DESCRIBE:
        return f"A {colour} {shape}."
    raise ValueError(f"unknown question {question!r}")


def grade(question: str, shape: str, colour: str, answer: str) -> bool:
    """True when ``answer`` has exactly the expected shape/colour words and no others."""
    words = set(re.findall(r"[a-z]+", answer.lower()))
    found = words & (set(SHAPES) | set(COLOURS))
    expected = {
        Q_SHAPE: {shape},
        Q_COLOUR: {colour},
        Q_DESCRIBE: {shape, colour},
    }[question]
    return found == expected


def tokenizer_corpus() -> list[str]:
    """Texts the BPE tokenizer is trained on: the chat frame, questions and answers."""
    texts = ["system\nYou are a helpful assistant.", "user\n", "assistant\n"]
    for question in QUESTIONS:
        texts.append(question)
        for shape in SHAPES:
            for colour in COLOURS:
                texts.append(expected_answer(question, shape, colour))
    return texts * 50


# --------------------------------------------------------------------------------------------
# Training (needs torch and transformers; imported lazily)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of one training run."""

    vision_steps: int = 1500
    vision_lr: float = 3e-3
    steps: int = 1200
    batch_size: int = 16
    lr: float = 1.5e-3
    warmup: int = 60
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    aux_weight: float = 1.0
    eval_every: int = 100
    held_out: int = 120
    threads: int = 2
    tie_merger: bool = False
    zero_blocks: bool = True
    stage1_target: float = 0.97
    seed: int = 0


def make_image_processor(min_pixels: int, max_pixels: int) -> Any:
    """transformers' Qwen2-VL image processor configured like ``preprocessor_config.json``."""
    import make_model
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    cfg = make_model.preprocessor_config(min_pixels, max_pixels)
    keys = (
        "do_resize", "do_rescale", "do_normalize", "do_convert_rgb", "rescale_factor",
        "image_mean", "image_std", "min_pixels", "max_pixels", "size", "patch_size",
        "temporal_patch_size", "merge_size", "resample",
    )  # fmt: skip
    return Qwen2VLImageProcessor(**{k: cfg[k] for k in keys})


class Batcher:
    """Turns pictures and questions into model inputs exactly as served."""

    def __init__(self, tokenizer: Any, processor: Any) -> None:
        self.tokenizer = tokenizer
        self.processor = processor
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def prompt_ids(self, content: str, n_image_tokens: int) -> list[int]:
        """Token ids of the chat prompt with the image tag expanded."""
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        vision = "<|vision_start|>" + "<|image_pad|>" * n_image_tokens + "<|vision_end|>"
        return self.tokenizer(text.replace(IMAGE_TAG, vision), add_special_tokens=False)[
            "input_ids"
        ]

    def build(self, items: Sequence[tuple[Picture, str, str]]) -> dict[str, Any]:
        """Batch of (picture, content with the image tag, answer) as padded tensors."""
        import torch

        pixel_values, grids, seqs, labels = [], [], [], []
        shape_ids, colour_ids = [], []
        for picture, content, answer in items:
            out = self.processor(images=[picture.decode()], return_tensors="pt")
            pixel_values.append(out["pixel_values"])
            grid = out["image_grid_thw"]
            grids.append(grid)
            n_tokens = int(grid.prod()) // 4
            prompt = self.prompt_ids(content, n_tokens)
            target = self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [self.im_end]
            seqs.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
            shape_ids.append(SHAPES.index(picture.shape))
            colour_ids.append(sorted(COLOURS).index(picture.colour))
        length = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), length), self.pad, dtype=torch.long)
        attention = torch.zeros((len(seqs), length), dtype=torch.long)
        label_t = torch.full((len(seqs), length), -100, dtype=torch.long)
        for i, (seq, lab) in enumerate(zip(seqs, labels, strict=True)):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            attention[i, : len(seq)] = 1
            label_t[i, : len(lab)] = torch.tensor(lab)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "pixel_values": torch.cat(pixel_values),
            "image_grid_thw": torch.cat(grids),
            "labels": label_t,
            "shape_ids": torch.tensor(shape_ids),
            "colour_ids": torch.tensor(colour_ids),
        }


def sample_items(rng: random.Random, n: int) -> list[tuple[Picture, str, str]]:
    """``n`` random (picture, content, answer) training items."""
    items = []
    for _ in range(n):
        picture = draw_picture(rng)
        question = rng.choice(QUESTIONS)
        sep = rng.choice(SEPARATORS)
        content = IMAGE_TAG + sep + question if rng.random() < 0.5 else question + sep + IMAGE_TAG
        items.append((picture, content, expected_answer(question, picture.shape, picture.colour)))
    return items


def teacher_forced_accuracy(model: Any, batches: list[dict[str, Any]]) -> dict[str, float]:
    """Share of items whose answer tokens are all the argmax (equals greedy decoding)."""
    import torch

    correct = {q: 0 for q in QUESTIONS}
    total = {q: 0 for q in QUESTIONS}
    model.eval()
    with torch.no_grad():
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k not in ("labels", "questions")}
            inputs.pop("shape_ids")
            inputs.pop("colour_ids")
            logits = model(**inputs).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            mask = labels != -100
            ok = ((logits.argmax(-1) == labels) | ~mask).all(-1)
            for question, good in zip(batch["questions"], ok.tolist(), strict=True):
                correct[question] += int(good)
                total[question] += 1
    model.train()
    return {q: correct[q] / max(total[q], 1) for q in QUESTIONS}


def _held_out_batches(batcher: Batcher, n: int) -> list[dict[str, Any]]:
    """Fixed held-out batches (their own seed), the three questions in equal numbers."""
    rng = random.Random(HELD_OUT_SEED)
    items = []
    for question in QUESTIONS:
        for _ in range(n // len(QUESTIONS)):
            picture = draw_picture(rng)
            sep = rng.choice(SEPARATORS)
            first = rng.random() < 0.5
            content = IMAGE_TAG + sep + question if first else question + sep + IMAGE_TAG
            answer = expected_answer(question, picture.shape, picture.colour)
            items.append((picture, content, answer, question))
    batches = []
    for start in range(0, len(items), 48):
        chunk = items[start : start + 48]
        batch = batcher.build([(p, c, a) for p, c, a, _ in chunk])
        batch["questions"] = [q for *_, q in chunk]
        batches.append(batch)
    return batches


def _schedule(peak: float, warmup: int, steps: int, min_ratio: float) -> Any:
    """Linear warm-up, then cosine decay to ``min_ratio * peak``."""

    def lr_at(step: int) -> float:
        if step < warmup:
            return peak * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    return lr_at


def tie_merger(model: Any) -> None:
    """Make the merger a per-patch MLP shared by the four patches of each 2x2 window.

    The first merger layer becomes block-diagonal with four equal blocks and the second layer
    sums the four per-patch outputs. Applied at initialisation and after every stage-1 step, it
    makes the merger learn one patch detector from four times the data instead of four detectors.
    """
    import torch

    merger = model.model.visual.merger
    dim = merger.hidden_size // 4
    first, second = merger.mlp[0], merger.mlp[2]
    with torch.no_grad():
        weight = first.weight.view(4, dim, 4, dim)
        shared = torch.stack([weight[k, :, k, :] for k in range(4)]).mean(0)
        weight.zero_()
        for k in range(4):
            weight[k, :, k, :] = shared
        first.bias.copy_(first.bias.view(4, dim).mean(0).repeat(4))
        out = second.weight.view(-1, 4, dim)
        out.copy_(out.mean(1, keepdim=True).expand_as(out))


def zero_vision_residuals(model: Any) -> None:
    """Start every vision block as the identity (zero output projections)."""
    import torch

    with torch.no_grad():
        for block in model.model.visual.blocks:
            block.attn.proj.weight.zero_()
            block.mlp.fc2.weight.zero_()


def train(model: Any, batcher: Batcher, cfg: TrainConfig) -> dict[str, Any]:
    """Train ``model`` in place in two stages; print the loss and held-out accuracy curve.

    Stage 1 trains the vision tower and merger alone through the auxiliary shape/colour
    classifier (pooled mean and max of the merged image tokens). Stage 2 trains the whole model
    on the answer tokens, keeping the auxiliary loss.
    """
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    hidden = model.config.text_config.hidden_size
    n_classes = len(SHAPES) + len(COLOURS)
    aux_head = torch.nn.Linear(2 * hidden, n_classes)
    patch_head = torch.nn.Linear(2 * model.config.vision_config.embed_dim, n_classes)
    captured: dict[str, Any] = {}

    def capture(_module: Any, inputs: Any, out: Any) -> None:
        captured["patches"] = inputs[0]
        captured["merged"] = out

    hook = model.model.visual.merger.register_forward_hook(capture)

    def aux_loss(batch: dict[str, Any]) -> tuple[Any, Any]:
        n_patches = batch["image_grid_thw"].prod(-1)
        loss = 0.0
        accs = []
        for head, states, sizes in (
            (aux_head, captured["merged"], (n_patches // 4).tolist()),
            (patch_head, captured["patches"], n_patches.tolist()),
        ):
            chunks = torch.split(states, sizes)
            pooled = torch.stack([torch.cat([c.mean(0), c.amax(0)]) for c in chunks])
            logits = head(pooled)
            shape_logits = logits[:, : len(SHAPES)]
            loss = (
                loss
                + F.cross_entropy(shape_logits, batch["shape_ids"])
                + F.cross_entropy(logits[:, len(SHAPES) :], batch["colour_ids"])
            )
            accs.append((shape_logits.argmax(-1) == batch["shape_ids"]).float().mean())
        return loss, accs[0]

    def vision_forward(batch: dict[str, Any]) -> None:
        model.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])

    held_out = _held_out_batches(batcher, cfg.held_out)
    train_rng = random.Random(TRAIN_SEED)
    start_time = time.perf_counter()
    history: list[dict[str, Any]] = []
    model.train()

    # Stage 1: vision tower, merger and auxiliary classifier only.
    if cfg.zero_blocks:
        zero_vision_residuals(model)
    if cfg.tie_merger:
        tie_merger(model)
    heads = list(aux_head.parameters()) + list(patch_head.parameters())
    vision_params = list(model.model.visual.parameters()) + heads
    optimizer = torch.optim.AdamW(
        vision_params, lr=cfg.vision_lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )
    lr_at = _schedule(cfg.vision_lr, cfg.warmup, cfg.vision_steps, cfg.min_lr_ratio)
    print("stage 1: vision tower with the auxiliary classifier", flush=True)
    print(
        "step  elapsed_s  lr        aux_loss  aux_shape_acc  | held-out aux shape acc", flush=True
    )
    run_aux = run_acc = 0.0
    run_n = 0
    for step in range(cfg.vision_steps):
        batch = batcher.build(sample_items(train_rng, cfg.batch_size))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        vision_forward(batch)
        loss, acc = aux_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vision_params, 1.0)
        optimizer.step()
        if cfg.tie_merger:
            tie_merger(model)
        run_aux += loss.item()
        run_acc += acc.item()
        run_n += 1
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.vision_steps:
            with torch.no_grad():
                accs = []
                for held in held_out:
                    vision_forward(held)
                    accs.append(aux_loss(held)[1].item())
            elapsed = time.perf_counter() - start_time
            held_acc = sum(accs) / len(accs)
            history.append(
                {
                    "stage": 1,
                    "step": step + 1,
                    "elapsed_s": round(elapsed, 1),
                    "aux_loss": run_aux / run_n,
                    "held_out_aux_shape_acc": held_acc,
                }
            )
            print(
                f"{step + 1:5d}  {elapsed:8.1f}  {lr_at(step):.2e}  {run_aux / run_n:.4f}    "
                f"{run_acc / run_n:.3f}          | {held_acc:.3f}",
                flush=True,
            )
            run_aux = run_acc = 0.0
            run_n = 0
            if held_acc >= cfg.stage1_target:
                print(f"stage 1 reached {held_acc:.3f} >= {cfg.stage1_target}", flush=True)
                break

    # Stage 2: the whole model on the answer tokens, auxiliary loss kept.
    params = list(model.parameters()) + heads
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )
    lr_at = _schedule(cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
    print("stage 2: whole model, loss on the answer tokens plus the auxiliary loss", flush=True)
    print(
        "step  elapsed_s  lr        lm_loss  aux_loss  aux_shape_acc  | held-out "
        "teacher-forced accuracy shape / colour / describe",
        flush=True,
    )
    run_loss = run_aux = run_acc = 0.0
    run_n = 0
    for step in range(cfg.steps):
        batch = batcher.build(sample_items(train_rng, cfg.batch_size))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            image_grid_thw=batch["image_grid_thw"],
            labels=batch["labels"],
        )
        aux, acc = aux_loss(batch)
        loss = out.loss + cfg.aux_weight * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        run_loss += out.loss.item()
        run_aux += aux.item()
        run_acc += acc.item()
        run_n += 1
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            accuracy = teacher_forced_accuracy(model, held_out)
            elapsed = time.perf_counter() - start_time
            history.append(
                {
                    "stage": 2,
                    "step": step + 1,
                    "elapsed_s": round(elapsed, 1),
                    "lm_loss": run_loss / run_n,
                    "accuracy": accuracy,
                }
            )
            print(
                f"{step + 1:5d}  {elapsed:8.1f}  {lr_at(step):.2e}  {run_loss / run_n:.4f}   "
                f"{run_aux / run_n:.4f}    {run_acc / run_n:.3f}          | "
                f"{accuracy[Q_SHAPE]:.3f} / {accuracy[Q_COLOUR]:.3f} / "
                f"{accuracy[Q_DESCRIBE]:.3f}",
                flush=True,
            )
            run_loss = run_aux = run_acc = 0.0
            run_n = 0
    hook.remove()
    model.eval()
    return {"history": history, "train_s": time.perf_counter() - start_time}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="OpenVINO IR output folder (omit: no export)")
    parser.add_argument("--hf-out", type=Path, help="keep the trained Hugging Face model here")
    parser.add_argument("--weight-format", choices=("fp16", "int8"), default="fp16")
    parser.add_argument("--vision-steps", type=int, default=TrainConfig.vision_steps)
    parser.add_argument("--vision-lr", type=float, default=TrainConfig.vision_lr)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--eval-every", type=int, default=TrainConfig.eval_every)
    parser.add_argument("--aux-weight", type=float, default=TrainConfig.aux_weight)
    parser.add_argument(
        "--stage1-target", type=float, default=TrainConfig.stage1_target,
        help="end stage 1 once the held-out auxiliary shape accuracy reaches this",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build, train and export the shapes model."""
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_model
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    start = time.perf_counter()
    preset = make_model.PRESETS["shapes"]
    tokenizer = make_model.train_tokenizer(preset.vocab_size, texts=tokenizer_corpus())
    print(f"[train] vocabulary: requested {preset.vocab_size}, actual {len(tokenizer)}")
    for question in QUESTIONS:
        answer = expected_answer(question, "triangle", "purple")
        print(f"[train] {answer!r} -> {tokenizer.tokenize(answer)}")
    config = make_model.build_config(preset, tokenizer)
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    print(f"[train] parameters: {make_model.count_parameters(model)}", flush=True)
    processor = make_image_processor(preset.min_pixels, preset.max_pixels)
    cfg = TrainConfig(
        vision_steps=args.vision_steps, vision_lr=args.vision_lr,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every,
        aux_weight=args.aux_weight, stage1_target=args.stage1_target,
    )  # fmt: skip
    print(f"[train] {cfg}", flush=True)
    result = train(model, Batcher(tokenizer, processor), cfg)
    print(f"[train] training: {result['train_s']:.1f} s", flush=True)
    if args.out is None and args.hf_out is None:
        return 0
    with tempfile.TemporaryDirectory(prefix="qwen2vl-shapes-") as tmp:
        hf_dir = args.hf_out if args.hf_out is not None else Path(tmp)
        make_model.save_hf_model(model, tokenizer, hf_dir, preset.min_pixels, preset.max_pixels)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            with make_model.timed(f"export OpenVINO IR ({args.weight_format})"):
                make_model.export_openvino(hf_dir, args.out, args.weight_format)
            size, files = make_model.folder_size(args.out)
            print(f"[train] IR folder {args.out}: {size:,} B in {files} files")
    print(f"[train] total: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
