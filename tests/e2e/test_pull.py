"""Pull mode against a local stand-in hub: download, graph, serve; resume; clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_MODEL, ServerProcess
from tests.hub_server import HubServer

pytestmark = pytest.mark.e2e

SOURCE = "ovgraph/qwen2vl-tiny"
BIG_FILE = "extra_weights.bin"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    server = HubServer()
    server.add_repo(SOURCE, TINY_MODEL, exclude={"graph.pbtxt"})
    big = tmp_path / "big-model"
    shutil.copytree(TINY_MODEL, big, ignore=shutil.ignore_patterns("graph.pbtxt"))
    # Larger than huggingface_hub's 10 MiB read chunk, so a dropped connection resumes by Range.
    (big / BIG_FILE).write_bytes(hashlib.sha256(b"seed").digest() * (24 * 1024 * 1024 // 32))
    server.add_repo("ovgraph/big", big)
    server.start()
    yield server
    server.stop()


def hub_env(hub: HubServer, tmp_path: Path) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1"}


def ovgraph(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ovgraph.cli", *args], cwd=REPO, capture_output=True,
        text=True, env={**os.environ, **env}, timeout=300,
    )


def same_files(folder: Path, reference: Path) -> bool:
    names = sorted(p.name for p in reference.iterdir() if p.name != "graph.pbtxt")
    return all((folder / n).read_bytes() == (reference / n).read_bytes() for n in names)


def served_folders(repository: Path) -> list[Path]:
    """Folders a server could be pointed at: those holding a graph.pbtxt."""
    return [p.parent for p in repository.rglob("graph.pbtxt")
            if not any(part.startswith(".") for part in p.relative_to(repository).parts)]


def test_pull_then_serve_chat_completion(hub: HubServer, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    start = time.monotonic()
    server = ServerProcess(
        ["--source_model", SOURCE, "--model_repository_path", str(repository),
         "--task", "text_generation", "--pipeline_type", "VLM"],
        env=hub_env(hub, tmp_path),
    )
    try:
        server.wait_ready()
        ready_after = time.monotonic() - start
        dest = repository / "ovgraph" / "qwen2vl-tiny"
        assert f"Graph: graph.pbtxt created in: {dest}" in server.logs()
        assert same_files(dest, TINY_MODEL)
        graph = (dest / "graph.pbtxt").read_text()
        assert 'models_path: "./"' in graph and "pipeline_type: VLM" in graph
        status, body = server.post("/v3/chat/completions", {
            "model": SOURCE, "max_tokens": 5, "temperature": 0,
            "messages": [{"role": "user", "content": "Hello"}],
        })
        assert status == 200, body
        assert body["usage"]["completion_tokens"] == 5
        assert body["choices"][0]["message"]["content"]
        status, raw = server.get("/v3/models")
        assert status == 200
        assert [m["id"] for m in json.loads(raw)["data"]] == [SOURCE]
    finally:
        server.stop()
    print(f"pull + load + ready: {ready_after:.1f} s")
    assert [p.name for p in (repository / "ovgraph").iterdir()] == ["qwen2vl-tiny"]


def test_pull_only_exits_and_second_pull_skips_download(hub: HubServer, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    env = hub_env(hub, tmp_path)
    first = ovgraph("--pull", "--source_model", SOURCE, "--model_repository_path",
                    str(repository), "--task", "text_generation", env=env)
    assert first.returncode == 0, first.stderr
    assert "Graph: graph.pbtxt created in:" in first.stdout
    gets = len(hub.file_gets("openvino_language_model.bin"))
    assert gets == 1
    second = ovgraph("--pull", "--source_model", SOURCE, "--model_repository_path",
                     str(repository), "--max_num_seqs", "7", env=env)
    assert second.returncode == 0, second.stderr
    assert "already exists" in second.stdout
    assert len(hub.file_gets("openvino_language_model.bin")) == gets
    assert "max_num_seqs: 7" in (repository / SOURCE / "graph.pbtxt").read_text()
    listed = ovgraph("--list_models", "--model_repository_path", str(repository), env=env)
    assert listed.returncode == 0
    assert listed.stdout.split() == [SOURCE]


def test_dropped_connection_resumes_with_range(hub: HubServer, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    hub.drop_once.add(BIG_FILE)
    result = ovgraph("--pull", "--source_model", "ovgraph/big", "--model_repository_path",
                     str(repository), env=hub_env(hub, tmp_path))
    assert result.returncode == 0, result.stderr
    ranges = hub.file_gets(BIG_FILE)
    assert len(ranges) == 2
    assert ranges[0] is None
    assert ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1][6:].split("-")[0]) > 0
    dest = repository / "ovgraph" / "big"
    expected = hub.repos["ovgraph/big"].files[BIG_FILE]
    assert (dest / BIG_FILE).read_bytes() == expected
    assert same_files(dest, TINY_MODEL)


def test_interrupted_pull_leaves_nothing_served_and_resumes(
    hub: HubServer, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    env = hub_env(hub, tmp_path)
    hub.forbidden.add("openvino_vision_embeddings_model.bin")
    failed = ovgraph("--pull", "--source_model", SOURCE, "--model_repository_path",
                     str(repository), env=env)
    assert failed.returncode != 0
    assert "was refused (403)" in failed.stderr
    assert "run the pull again to resume" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (repository / SOURCE).exists()
    assert served_folders(repository) == []
    done_before = len(hub.file_gets("openvino_language_model.bin"))
    assert done_before == 1

    hub.forbidden.clear()
    resumed = ovgraph("--pull", "--source_model", SOURCE, "--model_repository_path",
                      str(repository), env=env)
    assert resumed.returncode == 0, resumed.stderr
    # Files completed by the first attempt are not fetched again.
    assert len(hub.file_gets("openvino_language_model.bin")) == done_before
    assert len(hub.file_gets("openvino_vision_embeddings_model.bin")) == 1
    assert same_files(repository / SOURCE, TINY_MODEL)
    assert served_folders(repository) == [repository / SOURCE]


def test_missing_repository_is_a_clear_error(hub: HubServer, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    result = ovgraph("--pull", "--source_model", "ovgraph/does-not-exist",
                     "--model_repository_path", str(repository), env=hub_env(hub, tmp_path))
    assert result.returncode != 0
    assert "Repository ovgraph/does-not-exist was not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not repository.exists() or served_folders(repository) == []
    assert not (repository / "ovgraph" / "does-not-exist").exists()


def test_missing_file_is_a_clear_error(hub: HubServer, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    hub.missing.add("openvino_tokenizer.xml")
    result = ovgraph("--pull", "--source_model", SOURCE, "--model_repository_path",
                     str(repository), env=hub_env(hub, tmp_path))
    assert result.returncode != 0
    assert "openvino_tokenizer.xml was not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (repository / SOURCE).exists()
    assert served_folders(repository) == []


def test_serve_with_missing_repository_exits_non_zero(hub: HubServer, tmp_path: Path) -> None:
    server = ServerProcess(
        ["--source_model", "ovgraph/nothing-here", "--model_repository_path",
         str(tmp_path / "models")],
        env=hub_env(hub, tmp_path),
    )
    try:
        code = server.proc.wait(120)
        logs = server.logs()
    finally:
        server.stop()
    assert code != 0
    assert "Repository ovgraph/nothing-here was not found" in logs


def test_hf_token_is_sent(hub: HubServer, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    hub.token = "hf_secret"
    env = hub_env(hub, tmp_path)
    denied = ovgraph("--pull", "--source_model", SOURCE, "--model_repository_path",
                     str(repository), env={**env, "HF_TOKEN": ""})
    assert denied.returncode != 0
    assert "was refused (401): set HF_TOKEN" in denied.stderr
    allowed = ovgraph("--pull", "--source_model", SOURCE, "--model_repository_path",
                      str(repository), env={**env, "HF_TOKEN": "hf_secret"})
    assert allowed.returncode == 0, allowed.stderr
    assert same_files(repository / SOURCE, TINY_MODEL)
