"""The committed tiny Qwen2-VL fixture loads in openvino-genai and generates its golden text.

The golden file ``tests/testdata/golden/tiny_describe.json`` holds the greedy output of a plain
``openvino_genai.VLMPipeline`` on ``graphs/qwen2vl-tiny`` for the golden prompt and image below. It
equals the output of the PyTorch model the IR was exported from (``tools/make_model.py --preset
tiny``), so a change here means the IR, openvino or openvino-genai changed behaviour.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
ov_genai = pytest.importorskip("openvino_genai")

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "graphs" / "qwen2vl-tiny"
GOLDEN_FILE = REPO_ROOT / "tests" / "testdata" / "golden" / "tiny_describe.json"


def golden_image() -> Any:
    """224x224 RGB image whose row-major HWC bytes are ``i mod 251``, as uint8 [1, H, W, 3]."""
    pixels = (np.arange(224 * 224 * 3) % 251).astype(np.uint8).reshape(1, 224, 224, 3)
    return ov.Tensor(pixels)


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN_FILE.read_text(encoding="utf-8"))


def greedy_config(max_new_tokens: int) -> Any:
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.do_sample = False
    return config


def test_fixture_files_match_readme_hashes() -> None:
    # The README lists the sha256 of every file as built; a re-export must update both together.
    readme = (MODEL_DIR / "README.md").read_text(encoding="utf-8")
    listed = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    assert "openvino_language_model.bin" in listed
    assert "preprocessor_config.json" in listed
    for name, digest in listed.items():
        actual = hashlib.sha256((MODEL_DIR / name).read_bytes()).hexdigest()
        assert actual == digest, name


def test_vlm_pipeline_generates_golden_text(golden: dict[str, Any]) -> None:
    pipe = ov_genai.VLMPipeline(str(MODEL_DIR), "CPU")
    result = pipe.generate(
        golden["prompt"],
        images=[golden_image()],
        generation_config=greedy_config(golden["max_new_tokens"]),
    )
    assert result.texts == [golden["text"]]
    assert result.perf_metrics.get_num_generated_tokens() == golden["max_new_tokens"]


def test_continuous_batching_generates_golden_text(golden: dict[str, Any]) -> None:
    scheduler = ov_genai.SchedulerConfig()
    scheduler.cache_size = 1  # GB of KV cache
    pipe = ov_genai.ContinuousBatchingPipeline(str(MODEL_DIR), scheduler, "CPU")
    results = pipe.generate(
        [golden["prompt"]],
        images=[[golden_image()]],
        generation_config=[greedy_config(golden["max_new_tokens"])],
    )
    assert len(results) == 1
    assert results[0].texts == [golden["text"]]
