"""``ovgraph export`` / ``tools/export_model.py text_generation``.

The conversion tests (marked ``export``) need the export environment (torch, transformers,
optimum-intel). It is taken from ``OVGRAPH_EXPORT_VENV``, else ``<repo>/.venv-export``; under
``CI=true`` (or ``OVGRAPH_BUILD_EXPORT_VENV=1``) a missing ``.venv-export`` is created with the
pins of the ``export`` extra (torch first, torchvision removed afterwards).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_MODEL, ServerProcess

pytestmark = pytest.mark.e2e

EXPORT_VENV = REPO / ".venv-export"
_PROBE = "import optimum.intel, optimum.exporters.openvino, transformers, torch, tokenizers"


def _usable(python: Path) -> bool:
    if not python.is_file():
        return False
    return subprocess.run([str(python), "-c", _PROBE], capture_output=True).returncode == 0


def _export_pins() -> list[str]:
    """The ``export`` extra of pyproject.toml plus the runtime's openvino pins."""
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^export = \[(.*?)^\]", text, re.S | re.M)
    assert block is not None, "pyproject.toml has no export extra"
    pins = re.findall(r'"([^"]+)"', block.group(1))
    runtime = re.findall(r'"(openvino(?:-tokenizers)?==[^"]+)"', text)
    return [*pins, *runtime, "pillow"]


def _build_venv(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    python = venv / "bin" / "python"
    pins = _export_pins()
    torch = [p for p in pins if p.startswith("torch==")]
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", *torch],
        [str(python), "-m", "pip", "install", "--quiet", *pins],
        [str(python), "-m", "pip", "uninstall", "--quiet", "-y", "torchvision"],
    ]
    for cmd in steps:
        start = time.monotonic()
        subprocess.run(cmd, check=True)
        print(f"[export venv] {' '.join(cmd[-3:])}: {time.monotonic() - start:.0f} s")


@pytest.fixture(scope="session")
def export_python() -> Path:
    given = os.environ.get("OVGRAPH_EXPORT_VENV")
    if given:
        python = Path(given) / "bin" / "python"
        if not _usable(python):
            pytest.fail(f"OVGRAPH_EXPORT_VENV={given} has no usable optimum-intel/torch")
        return python
    python = EXPORT_VENV / "bin" / "python"
    if _usable(python):
        return python
    build = os.environ.get("CI") == "true" or os.environ.get("OVGRAPH_BUILD_EXPORT_VENV") == "1"
    if not build:
        pytest.skip("no export environment: set OVGRAPH_EXPORT_VENV to a venv with the export "
                    "extra, or CI=true / OVGRAPH_BUILD_EXPORT_VENV=1 to build .venv-export")
    _build_venv(EXPORT_VENV)
    if not _usable(python):
        pytest.fail(".venv-export was built but optimum-intel/torch do not import")
    return python


def export(*args: str, exporter: Path | str | None = None,
           tool: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ([sys.executable, str(REPO / "tools" / "export_model.py")] if tool
           else [sys.executable, "-m", "ovgraph.cli", "export"])
    cmd += ["text_generation", *args]
    if exporter is not None:
        cmd += ["--exporter_python", str(exporter)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def _chat(server: ServerProcess, model: str) -> dict:
    status, body = server.post("/v3/chat/completions", {
        "model": model, "max_tokens": 6, "temperature": 0,
        "messages": [{"role": "user", "content": "Hello"}],
    })
    assert status == 200, body
    return body


@pytest.fixture(scope="session")
def hf_model(export_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Hugging Face Qwen2-VL built by tools/make_model.py in the export environment."""
    out = tmp_path_factory.mktemp("hf") / "qwen2vl-tiny-hf"
    code = ("import sys; sys.path.insert(0, 'tools'); import make_model; "
            f"make_model.build_hf_model('tiny', {str(out)!r})")
    start = time.monotonic()
    subprocess.run([str(export_python), "-c", code], cwd=REPO, check=True, timeout=600)
    print(f"HF model built in {time.monotonic() - start:.1f} s")
    return out


# ------------------------------------------------------------------------- conversion


@pytest.mark.export
def test_export_then_serve(export_python: Path, hf_model: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    config = models / "config.json"
    start = time.monotonic()
    result = export("--source_model", str(hf_model), "--model_name", "tiny-export",
                    "--weight-format", "fp16", "--model_repository_path", str(models),
                    "--config_file_path", str(config), "--max_num_seqs", "4",
                    exporter=export_python)
    took = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"export: {took:.1f} s")
    assert "optimum task: image-text-to-text" in result.stdout
    assert "[export] total:" in result.stdout
    dest = models / "tiny-export"
    for name in ("openvino_language_model.xml", "openvino_text_embeddings_model.xml",
                 "openvino_vision_embeddings_model.bin", "openvino_tokenizer.xml",
                 "openvino_detokenizer.xml", "preprocessor_config.json", "graph.pbtxt"):
        assert (dest / name).is_file(), name
    assert (dest / "preprocessor_config.json").read_bytes() == \
        (hf_model / "preprocessor_config.json").read_bytes()
    graph = (dest / "graph.pbtxt").read_text()
    assert 'models_path: "./"' in graph and "max_num_seqs: 4" in graph
    assert json.loads(config.read_text())["model_config_list"] == [
        {"config": {"name": "tiny-export", "base_path": "tiny-export"}}
    ]
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []

    server = ServerProcess(["--config_path", str(config)])
    try:
        server.wait_ready()
        body = _chat(server, "tiny-export")
        assert body["usage"]["completion_tokens"] == 6
        assert body["choices"][0]["message"]["content"]
    finally:
        server.stop()


@pytest.mark.export
def test_unsupported_architecture(export_python: Path, tmp_path: Path) -> None:
    source = tmp_path / "odd-model"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "no_such_arch"}))
    result = export("--source_model", str(source), "--model_repository_path",
                    str(tmp_path / "models"), "--config_file_path",
                    str(tmp_path / "config.json"), exporter=export_python, tool=False)
    assert result.returncode != 0
    assert "Unsupported architecture: model_type 'no_such_arch'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists()
    assert not (tmp_path / "config.json").exists()


# ------------------------------------------------------------------------- no torch needed


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    result = export("--source_model", str(tmp_path / "nowhere"), "--model_repository_path",
                    str(tmp_path / "models"), "--config_file_path",
                    str(tmp_path / "config.json"))
    assert result.returncode != 0
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "config.json").exists()


def test_missing_optimum_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "hf"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    result = export("--source_model", str(source), "--model_name", "m",
                    "--model_repository_path", str(tmp_path / "models"),
                    "--config_file_path", str(tmp_path / "config.json"),
                    exporter=sys.executable, tool=False)
    assert result.returncode != 0
    assert "optimum-intel is not usable" in result.stderr
    assert "--exporter_python" in result.stderr
    assert not (tmp_path / "models" / "m").exists()


def test_openvino_source_is_copied_registered_and_served(tmp_path: Path) -> None:
    models = tmp_path / "models"
    config = models / "config.json"
    models.mkdir()
    config.write_text(json.dumps({
        "model_config_list": [],
        "mediapipe_config_list": [{"name": "legacy", "base_path": "legacy"}],
    }))
    shutil.copytree(TINY_MODEL, models / "legacy")
    args = ("--source_model", str(TINY_MODEL), "--model_name", "copied",
            "--model_repository_path", str(models), "--config_file_path", str(config),
            "--pipeline_type", "VLM", "--cache_size", "1", "--enable_prefix_caching", "false")
    result = export(*args, tool=False)
    assert result.returncode == 0, result.stderr
    assert f"Graph: graph.pbtxt created in: {models / 'copied'}" in result.stdout
    graph = (models / "copied" / "graph.pbtxt").read_text()
    assert "# OVMS_GRAPH_QUEUE_MAX_SIZE: AUTO" in graph
    assert "pipeline_type: VLM" in graph and "enable_prefix_caching: false" in graph
    data = json.loads(config.read_text())
    assert "mediapipe_config_list" not in data
    assert [c["config"] for c in data["model_config_list"]] == [
        {"name": "legacy", "base_path": "legacy"},
        {"name": "copied", "base_path": "copied"},
    ]

    again = export(*args)
    assert again.returncode != 0
    assert "already exists; give --overwrite_models" in again.stderr
    replaced = export(*args, "--overwrite_models", "--max_num_seqs", "3")
    assert replaced.returncode == 0, replaced.stderr
    assert "max_num_seqs: 3" in (models / "copied" / "graph.pbtxt").read_text()
    assert len(json.loads(config.read_text())["model_config_list"]) == 2

    server = ServerProcess(["--config_path", str(config)])
    try:
        server.wait_ready()
        assert _chat(server, "copied")["usage"]["completion_tokens"] == 6
        assert _chat(server, "legacy")["usage"]["completion_tokens"] == 6
    finally:
        server.stop()
