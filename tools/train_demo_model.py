"""Train a small Qwen2-VL offline to answer questions about synthetic pictures; export it to IR.

The task - pictures, prompts, answers, the tool and the chat template - is defined in
``tools/shapes_task.py``: the model names a picture's shape and colour in words, as JSON when a
``response_format`` grammar makes it start with ``{``, as a ``report_shape`` Hermes tool call
when given the tool and asked to report, in words after the tool's result, and after a short
``<think>`` block when asked to think first.

Design (aimed at circle vs square, which plain next-token training on small inputs did not learn):

* Fixed input size: ``min_pixels == max_pixels == 140²`` in ``preprocessor_config.json``, so every
  picture, 64 px or 512 px, reaches the vision tower as about 10x10 patches of 14 px (about 25
  image tokens after the 2x2 merge); the smallest shape still spans about a patch and its
  corners or arcs are visible inside single patches.
* A vision tower with 4 blocks of width 96, each block starting as the identity (zero output
  projections). During training only, two auxiliary linear classifiers (shape and colour): one
  on the mean and the maximum over the single patches before the merger (the block MLPs then
  act as per-patch edge and corner detectors, which learn quickly), one on the mean and the
  maximum of the merged image tokens. Neither is part of the exported model.
* Two stages: first the vision tower and merger alone learn shape and colour through the
  auxiliary classifiers (cheap steps, a direct gradient instead of one through the language
  model) until the merged-token classifier reaches the stage-1 target on held-out pictures;
  then the whole model learns the answers of every behaviour (:data:`KIND_WEIGHTS`), with the
  loss on the answer tokens only plus the auxiliary loss. AdamW with warm-up and cosine decay in
  each stage.
* Training inputs are produced exactly as at serving time: ``pixel_values`` by transformers'
  ``Qwen2VLImageProcessor`` configured like the exported ``preprocessor_config.json`` and the
  prompt by the chat template (``shapes_task.CHAT_TEMPLATE``, checked to render like
  openvino-genai's) over messages whose content holds ``<ov_genai_image_0>`` and the question in
  either order (separators "", " " or a newline, as the server flattens OpenAI content parts),
  the tag replaced by ``<|vision_start|>``, ``<|image_pad|>`` x N, ``<|vision_end|>`` as
  openvino-genai does. Answers end with ``<|im_end|>``. JSON answers to the plain questions carry
  no loss on their first token (the server's grammar forces it; the prompt does not ask for
  JSON).

Training needs the export environment (torch, transformers 5.0.0, optimum-intel 2.2.0; see
``tools/make_model.py``). Example::

    nice -n 5 python tools/train_demo_model.py --out graphs/qwen2vl-shapes \\
        | tee tools/train_demo_model.log
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes_task import (  # the task's public names, re-exported
    CHAT_TEMPLATE,
    CLASSIC,
    COLOURS,
    IMAGE_TAG,
    PICTURE_RANGES,
    Q_COLOUR,
    Q_DESCRIBE,
    Q_JSON,
    Q_REPORT,
    Q_SHAPE,
    Q_THINK,
    QUESTIONS,
    REPORT_TOOL,
    SHAPES,
    TOOL_RESULTS,
    Picture,
    PictureRange,
    after_tool_answer,
    draw_picture,
    expected_answer,
    grade,
    json_answer,
    think_answer,
    tokenizer_corpus,
    tool_call_text,
)

__all__ = [
    "COLOURS", "IMAGE_TAG", "KINDS", "QUESTIONS", "Q_COLOUR", "Q_DESCRIBE", "Q_SHAPE", "SHAPES",
    "Picture", "TrainConfig", "draw_picture", "expected_answer", "grade", "main",
]  # fmt: skip

TRAIN_SEED = 1
HELD_OUT_SEED = 2
SEPARATORS: tuple[str, ...] = ("", " ", "\n")
VOCAB_SIZE = 1024
#: Behaviours of stage 2 and their share of the training items.
KIND_WEIGHTS: dict[str, float] = {
    "plain": 0.40,  # one of the three questions, no tools
    "json": 0.12,  # a question, answered as the JSON object
    "tool": 0.14,  # tools + "Report the shape in the picture." -> report_shape call
    "after_tool": 0.12,  # ... + the call + the tool's result -> answer in words
    "think": 0.12,  # "Think, then describe the picture." -> <think>...</think> answer
    "tools_plain": 0.06,  # tools given, one of the three questions -> plain answer
    "report_plain": 0.04,  # "Report the shape in the picture." without tools -> description
}
KINDS: tuple[str, ...] = tuple(KIND_WEIGHTS)
#: The training pictures (``--pictures``).
PICTURES: PictureRange = CLASSIC
#: Share of "after_tool" items whose call reports other values than the picture shows.
AFTER_TOOL_OTHER_CALL = 0.3
EVAL_KINDS: tuple[str, ...] = ("json", "tool", "after_tool", "think")


@dataclasses.dataclass(frozen=True)
class Item:
    """One training example: a picture, the conversation before the answer, the answer."""

    picture: Picture
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    answer: str
    kind: str
    mask_first: bool = False  # no loss on the answer's first token


def user_content(rng: random.Random, question: str) -> str:
    """The user message as the server flattens it: image tag and question in either order."""
    sep = rng.choice(SEPARATORS)
    if rng.random() < 0.5:
        return IMAGE_TAG + sep + question
    return question + sep + IMAGE_TAG + ("\n" if rng.random() < 0.5 else "")


def make_item(rng: random.Random, picture: Picture, kind: str) -> Item:
    """The ``kind`` behaviour about ``picture`` (prompt variations drawn from ``rng``)."""
    shape, colour = picture.shape, picture.colour
    if kind in ("plain", "tools_plain"):
        question = rng.choice(QUESTIONS)
        tools = [REPORT_TOOL] if kind == "tools_plain" else None
        messages = [{"role": "user", "content": user_content(rng, question)}]
        return Item(picture, messages, tools, expected_answer(question, shape, colour), kind)
    if kind == "json":
        question = rng.choice((*QUESTIONS, Q_REPORT, Q_JSON))
        messages = [{"role": "user", "content": user_content(rng, question)}]
        return Item(
            picture, messages, None, json_answer(shape, colour), kind,
            mask_first=question != Q_JSON,
        )  # fmt: skip
    if kind == "report_plain":
        messages = [{"role": "user", "content": user_content(rng, Q_REPORT)}]
        return Item(picture, messages, None, expected_answer(Q_REPORT, shape, colour), kind)
    if kind == "think":
        messages = [{"role": "user", "content": user_content(rng, Q_THINK)}]
        return Item(picture, messages, None, think_answer(shape, colour), kind)
    messages = [{"role": "user", "content": user_content(rng, Q_REPORT)}]
    if kind == "tool":
        return Item(picture, messages, [REPORT_TOOL], tool_call_text(shape, colour), kind)
    if kind != "after_tool":
        raise ValueError(f"unknown kind {kind!r}")
    call_id = f"call_{rng.getrandbits(40):010x}"
    if AFTER_TOOL_OTHER_CALL and rng.random() < AFTER_TOOL_OTHER_CALL:
        # The answer says what was reported: read it from the call, not from the picture.
        shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
    call = {
        "id": call_id, "type": "function",
        "function": {"name": "report_shape", "arguments": {"shape": shape, "color": colour}},
    }  # fmt: skip
    messages += [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": rng.choice(TOOL_RESULTS)},
    ]
    return Item(picture, messages, [REPORT_TOOL], after_tool_answer(shape, colour), kind)


def sample_items(rng: random.Random, n: int) -> list[Item]:
    """``n`` random training items, behaviours drawn with :data:`KIND_WEIGHTS`."""
    kinds = rng.choices(KINDS, weights=list(KIND_WEIGHTS.values()), k=n)
    return [make_item(rng, draw_picture(rng, pictures=PICTURES), kind) for kind in kinds]


# --------------------------------------------------------------------------------------------
# Training (needs torch and transformers; imported lazily)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of one training run."""

    vision_steps: int = 2000
    vision_lr: float = 3e-3
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1.5e-3
    warmup: int = 60
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    aux_weight: float = 1.0
    eval_every: int = 200
    vision_eval_every: int = 100
    held_out: int = 20  # held-out items per question / behaviour
    threads: int = 2
    tie_merger: bool = False
    zero_blocks: bool = True
    stage1_target: float = 0.97
    seed: int = 0
    data_seed: int = TRAIN_SEED


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
    """Turns items into model inputs exactly as served."""

    def __init__(self, tokenizer: Any, processor: Any) -> None:
        self.tokenizer = tokenizer
        self.processor = processor
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def prompt_ids(self, item: Item, n_image_tokens: int) -> list[int]:
        """Token ids of the chat prompt with the image tag expanded."""
        text = self.tokenizer.apply_chat_template(
            item.messages, tools=item.tools, add_generation_prompt=True, tokenize=False
        )
        vision = "<|vision_start|>" + "<|image_pad|>" * n_image_tokens + "<|vision_end|>"
        return self.tokenizer(text.replace(IMAGE_TAG, vision), add_special_tokens=False)[
            "input_ids"
        ]

    def pictures(self, pictures: Sequence[Picture]) -> dict[str, Any]:
        """Pixel values, grids and class ids of pictures (stage 1)."""
        import torch

        out = self.processor(images=[p.decode() for p in pictures], return_tensors="pt")
        return {
            "pixel_values": out["pixel_values"],
            "image_grid_thw": out["image_grid_thw"],
            "shape_ids": torch.tensor([SHAPES.index(p.shape) for p in pictures]),
            "colour_ids": torch.tensor([sorted(COLOURS).index(p.colour) for p in pictures]),
        }

    def build(self, items: Sequence[Item]) -> dict[str, Any]:
        """A batch of items as padded tensors (plus ``kinds``)."""
        import torch

        batch = self.pictures([item.picture for item in items])
        seqs, labels = [], []
        for item, grid in zip(items, batch["image_grid_thw"], strict=True):
            prompt = self.prompt_ids(item, int(grid.prod()) // 4)
            target = self.tokenizer(item.answer, add_special_tokens=False)["input_ids"]
            target = [*target, self.im_end]
            label = list(target)
            if item.mask_first:
                label[0] = -100
            seqs.append(prompt + target)
            labels.append([-100] * len(prompt) + label)
        length = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), length), self.pad, dtype=torch.long)
        attention = torch.zeros((len(seqs), length), dtype=torch.long)
        label_t = torch.full((len(seqs), length), -100, dtype=torch.long)
        for i, (seq, lab) in enumerate(zip(seqs, labels, strict=True)):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            attention[i, : len(seq)] = 1
            label_t[i, : len(lab)] = torch.tensor(lab)
        batch.update(input_ids=input_ids, attention_mask=attention, labels=label_t)
        batch["kinds"] = [item.kind for item in items]
        return batch


def _eval_label(item: Item) -> str:
    """The accuracy bucket of a held-out item: the question for plain items, else the kind."""
    if item.kind == "plain":
        return item.messages[0]["content"].replace(IMAGE_TAG, "").strip()
    return item.kind


def teacher_forced_accuracy(model: Any, batches: list[dict[str, Any]]) -> dict[str, float]:
    """Share of items whose answer tokens are all the argmax (equals greedy decoding)."""
    import torch

    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    model.eval()
    with torch.no_grad():
        for batch in batches:
            inputs = {
                k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values",
                                      "image_grid_thw")
            }  # fmt: skip
            logits = model(**inputs).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            mask = labels != -100
            ok = ((logits.argmax(-1) == labels) | ~mask).all(-1)
            for label, good in zip(batch["labels_eval"], ok.tolist(), strict=True):
                correct[label] = correct.get(label, 0) + int(good)
                total[label] = total.get(label, 0) + 1
    model.train()
    return {k: correct[k] / total[k] for k in total}


def _held_out_batches(batcher: Batcher, n: int) -> list[dict[str, Any]]:
    """Fixed held-out batches (their own seed): ``n`` items per question and per behaviour."""
    rng = random.Random(HELD_OUT_SEED)
    items = []
    for question in QUESTIONS:
        for _ in range(n):
            picture = draw_picture(rng, pictures=PICTURES)
            messages = [{"role": "user", "content": user_content(rng, question)}]
            answer = expected_answer(question, picture.shape, picture.colour)
            items.append(Item(picture, messages, None, answer, "plain"))
    for kind in EVAL_KINDS:
        items += [make_item(rng, draw_picture(rng, pictures=PICTURES), kind) for _ in range(n)]
    batches = []
    for start in range(0, len(items), 40):
        chunk = items[start : start + 40]
        batch = batcher.build(chunk)
        batch["labels_eval"] = [_eval_label(item) for item in chunk]
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


_STOP = threading.Event()
WIND_DOWN = 60  # steps of linear learning-rate decay after SIGUSR1 in stage 2


def _on_sigusr1(_signum: int, _frame: Any) -> None:
    _STOP.set()


def train(model: Any, batcher: Batcher, cfg: TrainConfig) -> dict[str, Any]:
    """Train ``model`` in place in two stages; print the loss and held-out accuracy curve.

    Stage 1 trains the vision tower and merger alone through the auxiliary shape/colour
    classifier (pooled mean and max of the merged image tokens). Stage 2 trains the whole model
    on the answer tokens, keeping the auxiliary loss. SIGUSR1 ends stage 1 at the next step, or
    stage 2 after a short linear decay of the learning rate (the log says where).
    """
    signal.signal(signal.SIGUSR1, _on_sigusr1)
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
    train_rng = random.Random(cfg.data_seed)
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
        if _STOP.is_set():
            _STOP.clear()
            print(f"stage 1 stopped by SIGUSR1 after {step} steps", flush=True)
            break
        pictures = [draw_picture(train_rng, pictures=PICTURES) for _ in range(cfg.batch_size)]
        batch = batcher.pictures(pictures)
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
        if (step + 1) % cfg.vision_eval_every == 0 or step + 1 == cfg.vision_steps:
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
        "teacher-forced accuracy shape / colour / describe / json / tool / after_tool / "
        "think",
        flush=True,
    )
    run_loss = run_aux = run_acc = 0.0
    run_n = 0
    wind_down: int | None = None  # first step of the early end's linear decay
    for step in range(cfg.steps):
        if _STOP.is_set() and wind_down is None:
            wind_down = step
            print(f"stage 2: SIGUSR1 at step {step}, decaying over {WIND_DOWN} steps", flush=True)
        lr = lr_at(step)
        if wind_down is not None:
            if step - wind_down >= WIND_DOWN:
                print(f"stage 2 ended early after {step} steps", flush=True)
                break
            lr = lr_at(wind_down) * (1 - (step - wind_down) / WIND_DOWN)
        items = sample_items(train_rng, cfg.batch_size)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        # Prompts with tools are several times longer: two sub-batches waste no compute on
        # padding; their gradients add up to the whole batch's (loss per answer token).
        parts = [[i for i in items if not i.tools], [i for i in items if i.tools]]
        batches = [batcher.build(part) for part in parts if part]
        n_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        for batch in batches:
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"],
                image_grid_thw=batch["image_grid_thw"],
                labels=batch["labels"],
            )
            aux, acc = aux_loss(batch)
            share = len(batch["kinds"]) / len(items)
            lm_share = int((batch["labels"][:, 1:] != -100).sum()) / n_tokens
            loss = out.loss * lm_share + cfg.aux_weight * aux * share
            loss.backward()
            run_loss += out.loss.item() * lm_share
            run_aux += aux.item() * share
            run_acc += acc.item() * share
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
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
                f"{step + 1:5d}  {elapsed:8.1f}  {lr:.2e}  {run_loss / run_n:.4f}   "
                f"{run_aux / run_n:.4f}    {run_acc / run_n:.3f}          | "
                + " / ".join(f"{accuracy[k]:.3f}" for k in (*QUESTIONS, *EVAL_KINDS))
                + f"  (cpu {time.process_time():.0f} s)",
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
    parser.add_argument(
        "--held-out", type=int, default=TrainConfig.held_out,
        help="held-out items per question and per behaviour for the accuracy curve",
    )  # fmt: skip
    parser.add_argument(
        "--after-tool-other-call", type=float, default=AFTER_TOOL_OTHER_CALL,
        help="share of answers after a tool whose call reports other values than the picture",
    )  # fmt: skip
    parser.add_argument(
        "--pictures", choices=sorted(PICTURE_RANGES), default="classic",
        help="training pictures (tools/shapes_task.py: CLASSIC or WIDE)",
    )  # fmt: skip
    parser.add_argument(
        "--init", type=Path, metavar="HF_DIR",
        help="continue training a model saved with --hf-out instead of starting from scratch",
    )  # fmt: skip
    parser.add_argument(
        "--side", type=int, default=None,
        help="pixels per side every picture is resized to (a multiple of 28; default: the "
        "shapes preset's; with --init, the side that model was trained at)",
    )  # fmt: skip
    parser.add_argument(
        "--data-seed", type=int, default=TRAIN_SEED,
        help="seed of the training pictures (use another one when continuing with --init)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build, train and export the shapes model."""
    args = parse_args(argv)
    global AFTER_TOOL_OTHER_CALL, PICTURES
    AFTER_TOOL_OTHER_CALL = args.after_tool_other_call
    PICTURES = PICTURE_RANGES[args.pictures]
    import make_model
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    start, cpu_start = time.perf_counter(), time.process_time()
    preset = dataclasses.replace(make_model.PRESETS["shapes"], vocab_size=VOCAB_SIZE)
    if args.side is not None:
        if args.side % 28:
            raise SystemExit(f"--side {args.side} is not a multiple of 28 (two 14-pixel patches)")
        preset = dataclasses.replace(preset, min_pixels=args.side**2, max_pixels=args.side**2)
    tokenizer = make_model.train_tokenizer(preset.vocab_size, texts=tokenizer_corpus())
    tokenizer.chat_template = CHAT_TEMPLATE
    print(f"[train] vocabulary: requested {preset.vocab_size}, actual {len(tokenizer)}")
    for text in (
        expected_answer(Q_DESCRIBE, "triangle", "purple"), json_answer("triangle", "purple"),
        tool_call_text("triangle", "purple"), think_answer("triangle", "purple"),
    ):  # fmt: skip
        print(f"[train] {text!r} -> {tokenizer.tokenize(text)}")
    if args.init is not None:
        # Continue a model saved by --hf-out (same tokenizer: it is trained deterministically).
        model = Qwen2VLForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32)
        if model.config.text_config.vocab_size != len(tokenizer):
            raise SystemExit(f"{args.init} was trained with another tokenizer")
        print(f"[train] continuing {args.init}", flush=True)
    else:
        config = make_model.build_config(preset, tokenizer)
        torch.manual_seed(0)
        model = Qwen2VLForConditionalGeneration(config)
    print(f"[train] parameters: {make_model.count_parameters(model)}", flush=True)
    processor = make_image_processor(preset.min_pixels, preset.max_pixels)
    cfg = TrainConfig(
        vision_steps=args.vision_steps, vision_lr=args.vision_lr,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every,
        aux_weight=args.aux_weight, stage1_target=args.stage1_target, held_out=args.held_out,
        zero_blocks=args.init is None, data_seed=args.data_seed,
    )  # fmt: skip
    print(f"[train] {cfg}", flush=True)
    result = train(model, Batcher(tokenizer, processor), cfg)
    print(
        f"[train] training: {result['train_s']:.1f} s wall, "
        f"{time.process_time() - cpu_start:.1f} s CPU (this process)",
        flush=True,
    )
    if args.out is None and args.hf_out is None:
        return 0
    with tempfile.TemporaryDirectory(prefix="qwen2vl-shapes-") as tmp:
        hf_dir = args.hf_out if args.hf_out is not None else Path(tmp)
        make_model.save_hf_model(model, tokenizer, hf_dir, preset.min_pixels, preset.max_pixels)
        # save_hf_model writes make_model's plain Qwen2-VL template there: use the task's.
        (hf_dir / "chat_template.json").write_text(
            json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2) + "\n", encoding="utf-8"
        )
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            with make_model.timed(f"export OpenVINO IR ({args.weight_format})"):
                make_model.export_openvino(hf_dir, args.out, args.weight_format)
            size, files = make_model.folder_size(args.out)
            print(f"[train] IR folder {args.out}: {size:,} B in {files} files")
    print(
        f"[train] total: {time.perf_counter() - start:.1f} s wall, "
        f"{time.process_time() - cpu_start:.1f} s CPU (this process; export runs in a child)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
