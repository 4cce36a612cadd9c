"""Served text equals raw openvino-genai, token for token, over every pipeline type.

One server serves the tiny fixture four ways through config.json: the embedded graph (VLM_CB),
an in-repo VLM graph, and OVMS's own test graphs `vlm_cb_regular.pbtxt` and
`vlm_legacy_regular.pbtxt` with only `models_path` pointed at the fixture. The reference is
`openvino_genai.VLMPipeline.generate` in this process on the same prompt and image.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openvino as ov
import openvino_genai as ov_genai
import pytest

from tests.conftest import TINY_MODEL, ServerProcess, golden_array, png_data_url

OVMS_GRAPHS = Path(__file__).resolve().parent.parent / "testdata" / "ovms-graphs"
MAX_TOKENS = 24
PROMPTS = [
    ("Describe the image.", True),
    ("What is in the picture? Answer briefly.", True),
    ("Hello", False),
]


def _ovms_graph(name: str, folder: Path) -> Path:
    text = (OVMS_GRAPHS / name).read_text()
    text = re.sub(r'models_path: "[^"]*"', f'models_path: "{TINY_MODEL}"', text)
    folder.mkdir(parents=True)
    (folder / "graph.pbtxt").write_text(text)
    return folder


@pytest.fixture(scope="module")
def fidelity_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fidelity")
    vlm = root / "tiny-vlm"
    vlm.mkdir()
    text = (TINY_MODEL / "graph.pbtxt").read_text()
    text = text.replace('models_path: "./"', f'models_path: "{TINY_MODEL}"')
    text = text.replace('device: "CPU",', 'device: "CPU", pipeline_type: VLM,')
    (vlm / "graph.pbtxt").write_text(text)
    _ovms_graph("src__test__llm__visual_language_model__vlm_cb_regular.pbtxt", root / "ovms-cb")
    _ovms_graph(
        "src__test__llm__visual_language_model__vlm_legacy_regular.pbtxt", root / "ovms-legacy"
    )
    config = {
        "model_config_list": [
            {"config": {"name": "tiny-cb", "base_path": str(TINY_MODEL)}},
            {"config": {"name": "tiny-vlm", "base_path": "tiny-vlm"}},
            {"config": {"name": "ovms-cb", "base_path": "ovms-cb"}},
        ],
        "mediapipe_config_list": [{"name": "ovms-legacy", "base_path": "ovms-legacy"}],
    }
    (root / "config.json").write_text(json.dumps(config))
    proc = ServerProcess(["--config_path", str(root / "config.json")]).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def raw_pipeline() -> ov_genai.VLMPipeline:
    return ov_genai.VLMPipeline(str(TINY_MODEL), "CPU")


def _raw(pipeline: ov_genai.VLMPipeline, text: str, with_image: bool) -> str:
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = MAX_TOKENS
    images = [ov.Tensor(golden_array()[None])] if with_image else []
    # OVMS's message parser replaces an image part by its tag followed by a newline.
    prompt = ("<ov_genai_image_0>\n" if with_image else "") + text
    return str(pipeline.generate(prompt, images=images, generation_config=config).texts[0])


def _body(model: str, text: str, with_image: bool, stream: bool) -> dict:
    content: list[dict] = []
    if with_image:
        content.append({"type": "image_url", "image_url": {"url": png_data_url(golden_array())}})
    content.append({"type": "text", "text": text})
    return {
        "model": model, "stream": stream, "temperature": 0, "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": content}],
    }


def _served(server: ServerProcess, body: dict) -> str:
    if not body["stream"]:
        status, answer = server.post("/v3/chat/completions", body)
        assert status == 200, answer
        return str(answer["choices"][0]["message"]["content"])
    request = urllib.request.Request(
        server.url + "/v3/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        raw = r.read().decode()
    text = ""
    for event in raw.split("\n\n"):
        if event.startswith("data: {"):
            for choice in json.loads(event[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


@pytest.mark.parametrize("model", ["tiny-cb", "tiny-vlm", "ovms-cb", "ovms-legacy"])
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize(("text", "with_image"), PROMPTS, ids=["describe", "question", "text"])
def test_served_equals_raw(
    fidelity_server: ServerProcess, raw_pipeline: ov_genai.VLMPipeline,
    model: str, stream: bool, text: str, with_image: bool,
) -> None:
    expected = _raw(raw_pipeline, text, with_image)
    assert expected  # the reference produced something to compare
    assert _served(fidelity_server, _body(model, text, with_image, stream)) == expected


def test_pipeline_types_resolved(fidelity_server: ServerProcess) -> None:
    status, raw = fidelity_server.get("/v1/config")
    assert status == 200
    states = json.loads(raw)
    assert set(states) == {"tiny-cb", "tiny-vlm", "ovms-cb", "ovms-legacy"}
    assert all(s["model_version_status"][0]["state"] == "AVAILABLE" for s in states.values())


def test_golden_text_through_the_server(fidelity_server: ServerProcess) -> None:
    golden = json.loads(
        (Path(__file__).resolve().parent.parent / "testdata" / "golden" / "tiny_describe.json")
        .read_text()
    )
    body = _body("tiny-cb", golden["prompt"], True, False)
    body["max_tokens"] = golden["max_new_tokens"]
    assert _served(fidelity_server, body) == golden["text"]
    assert np.array_equal(golden_array()[0, 0], [0, 1, 2])
