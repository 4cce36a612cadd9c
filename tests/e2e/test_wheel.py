"""A wheel built from the repository, installed into a fresh virtualenv, serves the default model.

The wheel is built without dependencies and installed with ``--no-deps`` into a new venv that
sees the test environment's site-packages for the dependencies only (openvino, tornado …):
``ovgraph``, ``calculators`` and the embedded model all come from the wheel, and the server runs
outside the source tree, offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.e2e


def _run(cmd: list[str], cwd: Path, **kw: object) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, **kw)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _red_circle_request() -> dict:
    """The README's request: "Describe the picture." of a 64x64 red circle."""
    readme = (REPO / "README.md").read_text()
    url = re.search(r'"url": "(data:image/png;base64,[A-Za-z0-9+/=]+)"', readme)
    assert url is not None
    return {
        "model": "qwen2vl-shapes",
        "max_completion_tokens": 20,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe the picture."},
            {"type": "image_url", "image_url": {"url": url.group(1)}},
        ]}],
    }


def _source_copy(dest: Path) -> Path:
    """The repository's files (tracked or new, not ignored): no stale ``build/`` leaks in."""
    files = _run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO)
    for name in filter(None, files.split("\0")):
        source = REPO / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def test_wheel_in_fresh_venv_serves_the_default_model(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    source = _source_copy(tmp_path / "src")
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
          "--no-build-isolation", "-q", "-w", str(dist)], cwd=tmp_path)
    (wheel,) = dist.glob("ovgraph-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=tmp_path).strip())
    # Dependencies from the test environment (a plain path: its .pth files, such as the
    # editable install of this repository, are not processed).
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
         cwd=tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OVGRAPH_DEFAULT_MODEL", "PYTHONPATH")}
    where = _run([str(python), "-c",
                  "import ovgraph, calculators; print(ovgraph.__file__, calculators.__file__)"],
                 cwd=tmp_path, env=env)
    assert str(REPO) not in where and str(venv) in where

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(venv / "bin" / "ovgraph"), "serve", "--rest_port", str(port),
         "--rest_bind_address", "127.0.0.1"],
        cwd=tmp_path, env={**env, "HF_HUB_OFFLINE": "1"}, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.3)
        request = urllib.request.Request(
            url + "/v3/chat/completions", data=json.dumps(_red_circle_request()).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as r:
            answer = json.loads(r.read())
        assert answer["choices"][0]["message"]["content"] == "A red circle."
        # The live graph page and its vendored layout library come from the wheel too.
        for asset in ("/dashboard", "/dashboard/assets/dashboard.js",
                      "/dashboard/assets/draw.js", "/dashboard/assets/vendor/dagre.min.js"):
            with urllib.request.urlopen(url + asset, timeout=30) as r:
                assert r.status == 200 and r.read(), asset
        with urllib.request.urlopen(url + "/v1/graphs/qwen2vl-shapes", timeout=30) as r:
            assert json.loads(r.read())["runs"]["finished"] == 1
        graph = Path(_run([str(python), "-c", "from calculators.llm.default_model import "
                           "model_dir; print(model_dir())"], cwd=tmp_path, env=env).strip())
        svg = _run([str(venv / "bin" / "ovgraph"), "draw", str(graph / "graph.pbtxt"),
                    "--format", "svg"], cwd=tmp_path, env=env)
        assert svg.startswith("<svg") and "llmexecutor__generation" in svg
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
