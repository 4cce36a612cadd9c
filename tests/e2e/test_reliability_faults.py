"""Faults inside graphs: a raising calculator, a silent one, a model that fails to load.

The misbehaving calculators come from a plugin distribution (``tests/plugins/
ovgraph_fault_plugin``) installed into a temporary directory on the server's ``PYTHONPATH``; the
server discovers them through their entry points like any third-party plugin.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL, ServerProcess
from tests.e2e._reliability import (
    MODEL,
    assert_clean,
    chat,
    install_fault_plugin,
    metric,
    request,
    wait_for,
)

pytestmark = pytest.mark.e2e
TIMEOUT = 2

_GRAPH = """
input_stream: "HTTP_REQUEST_PAYLOAD:input"
output_stream: "HTTP_RESPONSE_PAYLOAD:output"
node {{
  name: "{name}"
  calculator: "{calculator}"
  input_stream: "HTTP_REQUEST_PAYLOAD:input"
  output_stream: "HTTP_RESPONSE_PAYLOAD:output"
}}
"""


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("faults")
    plugin_dir = install_fault_plugin(root / "site")
    for name, calculator in (("faulty", "FaultyCalculator"), ("silent", "SilentCalculator")):
        (root / name).mkdir()
        (root / name / "graph.pbtxt").write_text(
            _GRAPH.format(name=f"{name}_node", calculator=calculator)
        )
    (root / "broken").mkdir()
    (root / "broken" / "empty_model").mkdir()
    broken = (TINY_MODEL / "graph.pbtxt").read_text().replace(
        'models_path: "./"', 'models_path: "./empty_model"'
    )
    (root / "broken" / "graph.pbtxt").write_text(broken)
    config = {
        "model_config_list": [],
        "mediapipe_config_list": [
            {"name": "faulty", "base_path": "faulty"},
            {"name": "silent", "base_path": "silent"},
            {"name": "broken", "base_path": "broken"},
            {"name": MODEL, "base_path": str(TINY_MODEL)},
        ],
    }
    (root / "config.json").write_text(json.dumps(config))
    proc = ServerProcess(
        ["--config_path", str(root / "config.json"), "--request_timeout", str(TIMEOUT),
         "--metrics_enable"],
        env={"PYTHONPATH": str(plugin_dir)},
    )
    assert wait_for(lambda: _status(proc, f"/v2/models/{MODEL}/ready") == 200, 120, 0.2), (
        proc.logs()
    )
    yield proc
    proc.stop()


def _status(server: ServerProcess, path: str) -> int:
    try:
        return request(server.url + path, timeout=5)[0]
    except OSError:
        return 0


def test_raising_calculator_fails_only_that_request(faulty: ServerProcess) -> None:
    url = faulty.url + "/v3/chat/completions"
    seen = []
    for _ in range(3):
        status, _, raw = request(url, {"model": "faulty", "fail": True})
        assert status == 500
        assert_clean(raw)
        error = json.loads(raw)["error"]
        assert error["type"] == "server_error"
        assert "boom" not in error["message"]
        status, _, raw = request(url, {"model": "faulty"})
        assert status == 200
        seen.append(json.loads(raw)["n"])
    assert seen == sorted(seen)
    assert "boom in" in faulty.logs()  # the server log keeps the detail


def test_raising_calculator_streaming_request(faulty: ServerProcess) -> None:
    status, _, raw = request(
        faulty.url + "/v3/chat/completions", {"model": "faulty", "fail": True, "stream": True}
    )
    assert status == 500
    assert_clean(raw)


def test_silent_calculator_hits_the_deadline(faulty: ServerProcess) -> None:
    for stream in (False, True):
        started = time.monotonic()
        status, _, raw = request(
            faulty.url + "/v3/chat/completions", {"model": "silent", "stream": stream},
            timeout=30,
        )
        elapsed = time.monotonic() - started
        assert status == 504, raw
        assert TIMEOUT - 0.1 <= elapsed < TIMEOUT + 5
        assert_clean(raw)
        assert json.loads(raw)["error"]["message"] == (
            f"The request produced no output within {TIMEOUT} seconds"
        )
    # The silent runs were cancelled, not left behind.
    assert wait_for(lambda: metric(faulty.url, "ovgraph_requests_running") == 0, 5)


def test_model_that_fails_to_load(faulty: ServerProcess) -> None:
    assert _status(faulty, "/v2/health/live") == 200
    assert _status(faulty, "/v2/health/ready") == 503
    assert _status(faulty, "/v2/models/broken/ready") == 503
    status, _, raw = request(faulty.url + "/v1/config")
    assert status == 200
    config = json.loads(raw)
    broken = config["broken"]["model_version_status"][0]
    assert broken["state"] != "AVAILABLE"
    message = broken["status"]["error_message"]
    assert "Could not find a model" in message
    assert ".cpp" not in message
    assert "Exception from" not in message
    assert config[MODEL]["model_version_status"][0]["state"] == "AVAILABLE"
    status, headers, raw = request(
        faulty.url + "/v3/chat/completions", {**chat(), "model": "broken"}
    )
    assert status == 503
    assert headers["retry-after"] == "1"
    assert_clean(raw)
    status, _, raw = request(faulty.url + "/v3/chat/completions", chat(max_tokens=3))
    assert status == 200
    assert json.loads(raw)["usage"]["completion_tokens"] == 3
