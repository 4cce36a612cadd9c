"""config.json management (--add_to_config, --remove_from_config, --list_models) and reload
(POST /v1/config/reload and file polling) while requests keep running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_MODEL, ServerProcess

pytestmark = pytest.mark.e2e


def ovgraph(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ovgraph.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def model_folder(root: Path, name: str, max_num_seqs: int = 256) -> Path:
    """A servable folder whose graph points at the committed tiny model."""
    folder = root / name
    folder.mkdir(parents=True)
    graph = (TINY_MODEL / "graph.pbtxt").read_text()
    graph = graph.replace('models_path: "./"', f'models_path: "{TINY_MODEL.as_posix()}"')
    graph = graph.replace(
        "cache_size: 1,", f"cache_size: 1,\n          max_num_seqs: {max_num_seqs},"
    )
    (folder / "graph.pbtxt").write_text(graph)
    return folder


# ------------------------------------------------------------------------- CLI commands


def test_add_list_remove(tmp_path: Path) -> None:
    models = tmp_path / "models"
    model_folder(models, "alpha")
    model_folder(models / "org", "beta")
    config = models / "config.json"

    added = ovgraph("--add_to_config", "--config_path", str(config), "--model_name", "alpha",
                    "--model_path", str(models / "alpha"))
    assert added.returncode == 0, added.stderr
    added = ovgraph("--add_to_config", "--config_path", str(models), "--model_name", "beta",
                    "--model_repository_path", str(models / "org"))
    assert added.returncode == 0, added.stderr
    data = json.loads(config.read_text())
    assert data["model_config_list"] == [
        {"config": {"name": "alpha", "base_path": "alpha"}},
        {"config": {"name": "beta", "base_path": "org/beta"}},
    ]
    listed = ovgraph("--list_models", "--config_path", str(config))
    assert listed.stdout.split() == ["alpha", "beta"]
    listed = ovgraph("--list_models", "--model_repository_path", str(models))
    assert listed.stdout.split() == ["alpha", "org/beta"]

    removed = ovgraph("--remove_from_config", "--config_path", str(config),
                      "--model_name", "alpha")
    assert removed.returncode == 0, removed.stderr
    assert [c["config"]["name"] for c in json.loads(config.read_text())["model_config_list"]] \
        == ["beta"]
    again = ovgraph("--remove_from_config", "--config_path", str(config), "--model_name", "alpha")
    assert again.returncode != 0
    assert "'alpha' is not in" in again.stderr


def test_add_rejects_folder_without_graph(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = ovgraph("--add_to_config", "--config_path", str(tmp_path / "config.json"),
                     "--model_name", "x", "--model_path", str(tmp_path / "empty"))
    assert result.returncode != 0
    assert "has no graph.pbtxt" in result.stderr
    assert not (tmp_path / "config.json").exists()
    missing = ovgraph("--add_to_config", "--config_path", str(tmp_path / "config.json"),
                      "--model_name", "x", "--model_path", str(tmp_path / "nowhere"))
    assert missing.returncode != 0
    assert "does not exist" in missing.stderr


def test_add_moves_legacy_mediapipe_entries(tmp_path: Path) -> None:
    model_folder(tmp_path, "new")
    model_folder(tmp_path, "old")
    config = tmp_path / "config.json"
    write_json(config, {"model_config_list": [],
                        "mediapipe_config_list": [{"name": "old", "base_path": "old"}]})
    result = ovgraph("--add_to_config", "--config_path", str(config), "--model_name", "new",
                     "--model_path", str(tmp_path / "new"))
    assert result.returncode == 0, result.stderr
    data = json.loads(config.read_text())
    assert "mediapipe_config_list" not in data
    assert [c["config"]["name"] for c in data["model_config_list"]] == ["old", "new"]


# ------------------------------------------------------------------------- reload


def _chat(server: ServerProcess, model: str) -> tuple[int, dict]:
    return server.post("/v3/chat/completions", {
        "model": model, "max_tokens": 3, "temperature": 0,
        "messages": [{"role": "user", "content": "Hello"}],
    }, timeout=120)


def _served(server: ServerProcess) -> list[str]:
    status, raw = server.get("/v3/models")
    assert status == 200
    return sorted(m["id"] for m in json.loads(raw)["data"])


def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_reload_under_concurrent_requests(tmp_path: Path) -> None:
    model_folder(tmp_path, "primary")
    model_folder(tmp_path, "second", max_num_seqs=8)
    config = tmp_path / "config.json"
    one = {"model_config_list": [{"config": {"name": "primary", "base_path": "primary"}}]}
    two = {"model_config_list": [*one["model_config_list"],
                                 {"config": {"name": "second", "base_path": "second"}}]}
    write_json(config, one)
    server = ServerProcess(["--config_path", str(config), "--file_system_poll_wait_seconds", "1"])
    stop = threading.Event()
    failures: list[tuple[int, dict]] = []
    successes = [0]
    lock = threading.Lock()

    def hammer(model: str, allowed: tuple[int, ...]) -> None:
        while not stop.is_set():
            status, body = _chat(server, model)
            with lock:
                if status == 200 and body["usage"]["completion_tokens"] == 3:
                    successes[0] += 1
                elif status not in allowed:
                    failures.append((status, body))

    try:
        server.wait_ready()
        # "primary" must always answer; "second" may be absent (404) but a request it accepted
        # must finish even when the graph is removed meanwhile.
        threads = [threading.Thread(target=hammer, args=("primary", ())) for _ in range(2)]
        threads.append(threading.Thread(target=hammer, args=("second", (404,))))
        for t in threads:
            t.start()
        for _ in range(2):
            # File change picked up by polling.
            write_json(config, two)
            _wait_for(lambda: _served(server) == ["primary", "second"])
            _wait_for(lambda: _chat(server, "second")[0] == 200)
            write_json(config, one)
            _wait_for(lambda: _served(server) == ["primary"])
            assert _chat(server, "second")[0] == 404
            # Explicit reload: applied before the answer.
            write_json(config, two)
            status, states = server.post("/v1/config/reload", b"")
            assert status == 200, states
            assert sorted(states) == ["primary", "second"]
            assert _served(server) == ["primary", "second"]
            assert _chat(server, "second")[0] == 200
            write_json(config, one)
            status, states = server.post("/v1/config/reload", b"")
            assert status == 200, states
            assert sorted(states) == ["primary"]
        # A changed graph file reloads "primary"; runs in flight finish on the old definition.
        graph = tmp_path / "primary" / "graph.pbtxt"
        graph.write_text(graph.read_text().replace("max_num_seqs: 256", "max_num_seqs: 16"))
        status, states = server.post("/v1/config/reload", b"")
        assert status == 200, states
        assert states["primary"]["model_version_status"][0]["state"] == "AVAILABLE"
        # A broken config keeps the current graphs serving, by POST and by polling.
        config.write_text("{ not json")
        status, _ = server.post("/v1/config/reload", b"")
        assert status >= 400
        time.sleep(2.5)
        assert _served(server) == ["primary"]
        assert _chat(server, "primary")[0] == 200
        write_json(config, two)
        _wait_for(lambda: _served(server) == ["primary", "second"])
    finally:
        stop.set()
        for t in threads:
            t.join(120)
        logs = server.logs()
        server.stop()
    assert failures == []
    assert successes[0] >= 10
    assert "Config reload failed" in logs
