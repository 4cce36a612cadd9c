"""Build a random-weight Qwen2-VL test model offline and export it to OpenVINO IR.

The model is built from a configuration preset (no model hub access), with weights drawn from a
fixed seed. The tokenizer is a byte-level BPE trained on the interpreter's top-level standard
library ``*.py`` files, followed by the 14 Qwen2-VL special tokens, and uses the Qwen2-VL-Instruct
chat template. The Hugging Face model is exported with optimum-intel and the hand-written
``preprocessor_config.json`` is copied next to the IR files.

Needs the export environment (torch, transformers 5.0.0, optimum-intel 2.2.0; see
``fixture-model.md``). Example::

    python tools/make_model.py --preset tiny --weight-format fp16 --out graphs/qwen2vl-tiny
    python tools/make_model.py --preset tiny-lm --out /tmp/qwen2-tiny-lm   # text-only Qwen2

The reusable pieces (``train_tokenizer``, ``build_config``, ``write_preprocessor_config``,
``CHAT_TEMPLATE``, ...) are importable by other build tools.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2 pre-tokenizer split pattern (single digits, contractions, letter runs, punctuation runs).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2-VL-Instruct chat template (default system prompt, one vision block per image).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PATCH_SIZE = 14
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
MODEL_MAX_LENGTH = 32768
WEIGHT_FORMATS = ("fp16", "int8", "int4")


@dataclasses.dataclass(frozen=True)
class Preset:
    """Architecture and preprocessing sizes of one model preset."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    mrope_section: tuple[int, int, int]
    vision_depth: int
    vision_embed_dim: int
    vision_heads: int
    vision_mlp_ratio: int
    min_pixels: int
    max_pixels: int
    rope_theta: float = 1e6


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        vocab_size=4096,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
        mrope_section=(2, 3, 3),
        vision_depth=2,
        vision_embed_dim=32,
        vision_heads=2,
        vision_mlp_ratio=2,
        min_pixels=56 * 56,
        max_pixels=224 * 224,
    ),
    "medium": Preset(
        vocab_size=32000,
        hidden_size=1024,
        num_layers=24,
        num_heads=16,
        num_kv_heads=4,
        intermediate_size=2816,
        mrope_section=(8, 12, 12),
        vision_depth=12,
        vision_embed_dim=768,
        vision_heads=12,
        vision_mlp_ratio=4,
        min_pixels=56 * 56,
        max_pixels=448 * 448,
    ),
    # Trained by tools/train_demo_model.py: every picture is resized to about 140² pixels.
    "shapes": Preset(
        vocab_size=512,
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=512,
        mrope_section=(4, 6, 6),
        vision_depth=4,
        vision_embed_dim=96,
        vision_heads=4,
        vision_mlp_ratio=2,
        min_pixels=140 * 140,
        max_pixels=140 * 140,
        rope_theta=1e4,
    ),
}


@dataclasses.dataclass(frozen=True)
class TextPreset:
    """Architecture of one text-only (``Qwen2ForCausalLM``) preset."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    rope_theta: float = 1e6


# Text-only presets: same tokenizer and chat template, exported for ``text-generation-with-past``.
TEXT_PRESETS: dict[str, TextPreset] = {
    "tiny-lm": TextPreset(
        vocab_size=4096,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
    ),
}


@contextmanager
def timed(label: str) -> Iterator[None]:
    """Print how long the enclosed step took."""
    start = time.perf_counter()
    print(f"[make_model] {label} ...", flush=True)
    yield
    print(f"[make_model] {label}: {time.perf_counter() - start:.1f} s", flush=True)


def resolve_preset(preset: str | Preset) -> Preset:
    """Return the preset object for a preset name (or the object itself)."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}") from None


def stdlib_sources() -> list[Path]:
    """Return the interpreter's top-level standard-library ``*.py`` files, sorted by name."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def train_tokenizer(
    vocab_size: int,
    texts: Iterable[str] | None = None,
    files: Sequence[str | Path] | None = None,
    min_frequency: int = 2,
) -> Any:
    """Train a Qwen2-style byte-level BPE tokenizer and wrap it for transformers.

    The BPE part gets ``vocab_size - len(SPECIAL_TOKENS)`` entries (fewer if it runs out of
    merges); the Qwen2-VL special tokens follow at the end.

    Args:
        vocab_size: Requested total vocabulary size, special tokens included.
        texts: Training texts. Takes precedence over ``files``.
        files: Training files; when neither is given, the standard-library sources are used.
        min_frequency: Minimum pair count for a merge.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with the chat template set.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    if texts is not None:
        tok.train_from_iterator(texts, trainer=trainer)
    else:
        paths = [str(p) for p in (files if files is not None else stdlib_sources())]
        tok.train(paths, trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """Map each Qwen2-VL special token to its id in ``tokenizer``."""
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def build_config(preset: str | Preset, tokenizer: Any) -> Any:
    """Build the ``Qwen2VLConfig`` of a preset; token ids come from ``tokenizer``."""
    from transformers import Qwen2VLConfig

    p = resolve_preset(preset)
    head_dim = p.hidden_size // p.num_heads
    if sum(p.mrope_section) != head_dim // 2:
        raise ValueError(
            f"mrope_section {p.mrope_section} must sum to head_dim/2 = {head_dim // 2}"
        )
    ids = special_token_ids(tokenizer)
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": p.hidden_size,
        "intermediate_size": p.intermediate_size,
        "num_hidden_layers": p.num_layers,
        "num_attention_heads": p.num_heads,
        "num_key_value_heads": p.num_kv_heads,
        "max_position_embeddings": MODEL_MAX_LENGTH,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": p.rope_theta,
            "mrope_section": list(p.mrope_section),
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": p.vision_depth,
        "embed_dim": p.vision_embed_dim,
        "hidden_size": p.hidden_size,
        "hidden_act": "quick_gelu",
        "mlp_ratio": p.vision_mlp_ratio,
        "num_heads": p.vision_heads,
        "in_channels": 3,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    }
    return Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
        architectures=["Qwen2VLForConditionalGeneration"],
    )


def build_generation_config(tokenizer: Any) -> Any:
    """Greedy generation config: eos ``<|im_end|>`` and ``<|endoftext|>``."""
    from transformers import GenerationConfig

    ids = special_token_ids(tokenizer)
    return GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        do_sample=False,
    )


def preprocessor_config(min_pixels: int, max_pixels: int) -> dict[str, Any]:
    """Return the Qwen2-VL image processor settings."""
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "rescale_factor": 1 / 255,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "resample": 3,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON with a trailing newline."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_preprocessor_config(out_dir: str | Path, min_pixels: int, max_pixels: int) -> Path:
    """Write the hand-written ``preprocessor_config.json`` into ``out_dir``."""
    path = Path(out_dir) / "preprocessor_config.json"
    write_json(path, preprocessor_config(min_pixels, max_pixels))
    return path


def write_chat_template(out_dir: str | Path) -> Path:
    """Write ``chat_template.json`` (where processors look for the template)."""
    path = Path(out_dir) / "chat_template.json"
    write_json(path, {"chat_template": CHAT_TEMPLATE})
    return path


def count_parameters(model: Any) -> dict[str, int]:
    """Count total, language-model and vision parameters."""
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    return {"total": total, "lm": total - vision, "vision": vision}


def save_hf_model(
    model: Any, tokenizer: Any, hf_dir: str | Path, min_pixels: int, max_pixels: int
) -> None:
    """Save model, tokenizer, generation, preprocessor and chat-template files to ``hf_dir``."""
    out = Path(hf_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = build_generation_config(tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_preprocessor_config(out, min_pixels, max_pixels)
    write_chat_template(out)


def build_hf_model(preset: str | Preset, hf_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Train the tokenizer, build the random-weight model and save it to ``hf_dir``.

    Returns:
        Summary with vocabulary size and parameter counts.
    """
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    p = resolve_preset(preset)
    with timed("train tokenizer"):
        tokenizer = train_tokenizer(p.vocab_size)
    print(f"[make_model] vocabulary: requested {p.vocab_size}, actual {len(tokenizer)}")
    with timed("build model"):
        config = build_config(p, tokenizer)
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config).eval()
    params = count_parameters(model)
    print(f"[make_model] parameters: {params}")
    with timed("save HF model"):
        save_hf_model(model, tokenizer, hf_dir, p.min_pixels, p.max_pixels)
    return {"vocab_size": len(tokenizer), "parameters": params}


def optimum_export(hf_dir: str | Path, ov_dir: str | Path, task: str, weight_format: str) -> None:
    """Run ``optimum-cli export openvino`` from this interpreter."""
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight format must be one of {WEIGHT_FORMATS}")
    cmd = [
        sys.executable, "-m", "optimum.commands.optimum_cli", "export", "openvino",
        "-m", str(hf_dir), "--task", task, "--weight-format", weight_format, str(ov_dir),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)


def export_openvino(hf_dir: str | Path, ov_dir: str | Path, weight_format: str = "fp16") -> None:
    """Export ``hf_dir`` to OpenVINO IR with optimum-intel; ship the hand-written preprocessor."""
    optimum_export(hf_dir, ov_dir, "image-text-to-text", weight_format)
    shutil.copyfile(
        Path(hf_dir) / "preprocessor_config.json", Path(ov_dir) / "preprocessor_config.json"
    )


def build_text_config(preset: str | TextPreset, tokenizer: Any) -> Any:
    """Build the ``Qwen2Config`` of a text-only preset; token ids come from ``tokenizer``."""
    from transformers import Qwen2Config

    p = preset if isinstance(preset, TextPreset) else TEXT_PRESETS[preset]
    ids = special_token_ids(tokenizer)
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_kv_heads,
        max_position_embeddings=MODEL_MAX_LENGTH,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": p.rope_theta},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
        architectures=["Qwen2ForCausalLM"],
    )


def build_hf_text_model(
    preset: str | TextPreset, hf_dir: str | Path, seed: int = 0
) -> dict[str, Any]:
    """Train the tokenizer, build the random-weight ``Qwen2ForCausalLM``, save it to ``hf_dir``.

    Returns:
        Summary with vocabulary size and parameter count.
    """
    import torch
    from transformers import Qwen2ForCausalLM

    p = preset if isinstance(preset, TextPreset) else TEXT_PRESETS[preset]
    with timed("train tokenizer"):
        tokenizer = train_tokenizer(p.vocab_size)
    print(f"[make_model] vocabulary: requested {p.vocab_size}, actual {len(tokenizer)}")
    with timed("build model"):
        config = build_text_config(p, tokenizer)
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).eval()
    params = sum(t.numel() for t in model.parameters())
    print(f"[make_model] parameters: {params}")
    with timed("save HF model"):
        out = Path(hf_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.generation_config = build_generation_config(tokenizer)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return {"vocab_size": len(tokenizer), "parameters": params}


TEXT_MODEL_FILES = (
    "openvino_model.xml",
    "openvino_model.bin",
    "openvino_tokenizer.xml",
    "openvino_detokenizer.xml",
)


def export_openvino_text(
    hf_dir: str | Path, ov_dir: str | Path, weight_format: str = "fp16"
) -> None:
    """Export a text-only ``hf_dir`` (``text-generation-with-past``) and check the IR files."""
    optimum_export(hf_dir, ov_dir, "text-generation-with-past", weight_format)
    missing = [name for name in TEXT_MODEL_FILES if not (Path(ov_dir) / name).is_file()]
    if missing:
        raise RuntimeError(
            f"export produced no {', '.join(missing)} (is openvino-tokenizers installed?)"
        )


def folder_size(path: Path) -> tuple[int, int]:
    """Return total bytes and file count below ``path``."""
    files = [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files), len(files)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted([*PRESETS, *TEXT_PRESETS]), default="tiny")
    parser.add_argument("--weight-format", choices=WEIGHT_FORMATS, default="fp16")
    parser.add_argument("--out", required=True, type=Path, help="OpenVINO IR output folder")
    parser.add_argument(
        "--hf-out", type=Path, help="keep the Hugging Face model here (default: temporary folder)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build and export one model."""
    args = parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qwen2vl-hf-") as tmp:
        hf_dir = args.hf_out if args.hf_out is not None else Path(tmp)
        text_only = args.preset in TEXT_PRESETS
        build = build_hf_text_model if text_only else build_hf_model
        build(args.preset, hf_dir, seed=args.seed)
        hf_bytes, _ = folder_size(Path(hf_dir))
        print(f"[make_model] HF folder: {hf_bytes:,} B")
        with timed(f"export OpenVINO IR ({args.weight_format})"):
            args.out.mkdir(parents=True, exist_ok=True)
            export = export_openvino_text if text_only else export_openvino
            export(hf_dir, args.out, args.weight_format)
    ov_bytes, ov_files = folder_size(args.out)
    print(f"[make_model] IR folder {args.out}: {ov_bytes:,} B in {ov_files} files")
    print(f"[make_model] total: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
