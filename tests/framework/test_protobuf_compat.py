"""ovgraph beside the protobuf its users' clients bring.

OVMS's quickstarts tell users to ``pip install tritonclient[grpc]``, which resolves protobuf 6;
the committed modules in ``ovgraph/_proto`` must load on it and on the lowest protobuf the
project declares. Each test makes a throwaway venv, installs the client (or that protobuf) into
it, and puts the project's own environment *behind* it on ``sys.path``: what the venv installed
wins, everything else (openvino, tornado, ovgraph itself) comes from the project.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from ovgraph.testing import free_port
from tests.calculators.test_python_quickstart import CLIENT_PY, CONFIG_JSON, GRAPH_PBTXT, MODEL_PY

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LOWEST_PROTOBUF = "5.26.1"


def _venv_with(tmp_path: Path, *packages: str) -> Path:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *packages],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"pip install {' '.join(packages)} failed:\n{done.stderr[-2000:]}")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    project = sysconfig.get_paths()["purelib"]
    (Path(site) / "zz_project_env.pth").write_text(
        f"import site; site.addsitedir({project!r})\n"
    )
    return python


def _protobuf_version(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import google.protobuf as p; print(p.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


_IMPORT_EVERYTHING = """
import importlib, pathlib, sys
import ovgraph._proto as root
names = []
for path in sorted(pathlib.Path(root.__path__[0]).rglob("*_pb2*.py")):
    rel = path.relative_to(pathlib.Path(root.__path__[0])).with_suffix("")
    names.append("ovgraph._proto." + ".".join(rel.parts))
for name in names:
    importlib.import_module(name)
from ovgraph.framework.textformat import read_graph_file
from ovgraph.framework.validation import validate
errors = validate(read_graph_file(sys.argv[1]))
assert not errors, errors
import ovgraph.frontends.grpc.server
print(len(names))
"""


def test_generated_modules_load_on_the_lowest_supported_protobuf(tmp_path: Path) -> None:
    python = _venv_with(tmp_path, f"protobuf=={LOWEST_PROTOBUF}")
    assert _protobuf_version(python) == LOWEST_PROTOBUF
    done = subprocess.run(
        [str(python), "-W", "error", "-c", _IMPORT_EVERYTHING,
         str(REPO / "graphs" / "qwen2vl-tiny" / "graph.pbtxt")],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 30  # every generated module


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server not ready:\n{log.read_text()}")


def test_server_starts_beside_tritonclient_grpc(tmp_path: Path) -> None:
    python = _venv_with(tmp_path, "tritonclient[grpc]")
    version = _protobuf_version(python)
    models = tmp_path / "models"
    (models / "python_model").mkdir(parents=True)
    (models / "python_model" / "model.py").write_text(MODEL_PY)
    (models / "python_model" / "graph.pbtxt").write_text(
        GRAPH_PBTXT.replace("/models/", f"{models}/")
    )
    (models / "config.json").write_text(CONFIG_JSON.replace("/models/", f"{models}/"))
    rest, grpc_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(python), "-m", "ovgraph.cli", "serve", "--config_path",
             str(models / "config.json"), "--port", str(grpc_port), "--rest_port", str(rest),
             "--rest_bind_address", "127.0.0.1", "--grpc_bind_address", "127.0.0.1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    try:
        url = f"http://127.0.0.1:{rest}"
        _wait_ready(url, proc, log)
        with urllib.request.urlopen(url + "/v1/config", timeout=5) as response:
            status = json.load(response)["python_model"]["model_version_status"][0]
        assert status["state"] == "AVAILABLE"
        client = tmp_path / "client.py"
        client.write_text(CLIENT_PY.replace("localhost:9000", f"localhost:{grpc_port}"))
        done = subprocess.run([str(python), str(client)], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr + log.read_text()
        assert done.stdout == "MAKE THIS TEXT UPPERCASE.\n"
    finally:
        proc.terminate()
        proc.wait(30)
    # The client's protobuf, not the project's, served the run.
    assert not version.startswith("7."), f"tritonclient[grpc] now resolves protobuf {version}"
