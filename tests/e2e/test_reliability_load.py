"""Overload and disconnects: bounded admission queue, cancelled generations, timeout floods."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL, ServerProcess
from tests.e2e._reliability import (
    MODEL,
    assert_clean,
    chat,
    metric,
    open_stream,
    request,
    split_response,
    wait_for,
)

pytestmark = pytest.mark.e2e
LONG = {"max_tokens": 30_000, "ignore_eos": True}
SOAK = Path(__file__).resolve().parents[2] / "tools" / "soak.py"


def _open_stream(port: int, body: dict) -> socket.socket:
    """Start a streaming request and return the socket once the first event arrived."""
    sock, head = open_stream(port, body, timeout=30)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return sock


def _send_unary(port: int, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /v3/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(data) + data
    )
    return sock


@pytest.fixture(scope="module")
def metered() -> Iterator[ServerProcess]:
    proc = ServerProcess(["--metrics_enable"]).wait_ready()
    yield proc
    proc.stop()


def _running(server: ServerProcess) -> float:
    return metric(server.url, "ovgraph_llm_running_sequences")


def test_stream_disconnect_frees_sequence_within_1s(metered: ServerProcess) -> None:
    sock = _open_stream(metered.port, chat(**LONG))
    try:
        assert wait_for(lambda: _running(metered) == 1, 5)
        sock.recv(65536)
    finally:
        sock.close()
    closed = time.monotonic()
    assert wait_for(lambda: _running(metered) == 0, 1.0)
    assert time.monotonic() - closed <= 1.0
    assert wait_for(lambda: metric(metered.url, "ovgraph_requests_running") == 0, 2)


def test_unary_disconnect_frees_sequence_within_1s(metered: ServerProcess) -> None:
    sock = _send_unary(metered.port, chat(**LONG))
    try:
        assert wait_for(lambda: _running(metered) == 1, 5)
    finally:
        sock.close()
    assert wait_for(lambda: _running(metered) == 0, 1.0)


def test_timeout_flood_then_responsive(metered: ServerProcess) -> None:
    errors: list[BaseException] = []

    def client(stream: bool) -> None:
        body = json.dumps(chat(ignore_eos=True, stream=stream)).encode()
        end = time.monotonic() + 0.5  # the client gives up after 0.5 s in total
        try:
            with socket.create_connection(("127.0.0.1", metered.port), timeout=0.5) as sock:
                sock.sendall(
                    b"POST /v3/chat/completions HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body
                )
                while time.monotonic() < end:
                    sock.settimeout(max(0.01, end - time.monotonic()))
                    if not sock.recv(65536):
                        break
        except TimeoutError:
            return
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    started = time.monotonic()
    status, _, raw = request(metered.url + "/v3/chat/completions", chat(max_tokens=4), timeout=5)
    assert status == 200
    assert json.loads(raw)["usage"]["completion_tokens"] == 4
    assert time.monotonic() - started < 5
    assert wait_for(lambda: _running(metered) == 0, 5)


# --------------------------------------------------------------------------- admission


@pytest.fixture(scope="module")
def single_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder: Path = tmp_path_factory.mktemp("oneseq")
    text = (TINY_MODEL / "graph.pbtxt").read_text()
    text = text.replace('models_path: "./",', f'models_path: "{TINY_MODEL}",\n max_num_seqs: 1,')
    assert "max_num_seqs: 1" in text
    (folder / "graph.pbtxt").write_text(text)
    proc = ServerProcess([
        "--model_path", str(folder), "--model_name", MODEL, "--max_queued_requests", "1",
        "--metrics_enable",
    ]).wait_ready()
    yield proc
    proc.stop()


def test_queue_full_503_with_retry_after_then_recovers(single_slot: ServerProcess) -> None:
    url = single_slot.url
    running = _open_stream(single_slot.port, chat(**LONG))
    queued = _send_unary(single_slot.port, chat(max_tokens=3))
    try:
        assert wait_for(lambda: metric(url, "ovgraph_requests_queued") == 1, 5)
        status, headers, raw = request(url + "/v3/chat/completions", chat(max_tokens=3))
        assert status == 503
        assert headers["retry-after"] == "1"
        assert_clean(raw)
        error = json.loads(raw)["error"]
        assert error["code"] == "overloaded"
        assert error["type"] == "service_unavailable"
    finally:
        running.close()
    # The queued request gets the slot once the running one is gone.
    queued.settimeout(10)
    buf = b""
    while b"completion_tokens" not in buf:
        chunk = queued.recv(65536)
        assert chunk, buf
        buf += chunk
    queued.close()
    status, _, body = split_response(buf)
    assert status == 200
    assert json.loads(body)["usage"]["completion_tokens"] == 3
    assert metric(url, "ovgraph_requests_queued") == 0
    status, _, _ = request(url + "/v3/chat/completions", chat(max_tokens=2))
    assert status == 200


def test_client_leaving_the_queue_frees_its_place(single_slot: ServerProcess) -> None:
    url = single_slot.url
    running = _open_stream(single_slot.port, chat(**LONG))
    try:
        leaving = _send_unary(single_slot.port, chat(max_tokens=3))
        assert wait_for(lambda: metric(url, "ovgraph_requests_queued") == 1, 5)
        leaving.close()
        assert wait_for(lambda: metric(url, "ovgraph_requests_queued") == 0, 2)
        staying = _send_unary(single_slot.port, chat(max_tokens=3))
        assert wait_for(lambda: metric(url, "ovgraph_requests_queued") == 1, 5)
        staying.close()
    finally:
        running.close()
    assert wait_for(lambda: _running(single_slot) == 0, 2)


def test_soak_tool_reports_requests_errors_and_rss(metered: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, str(SOAK), "--url", metered.url, "--clients", "4",
         "--warmup", "1", "--duration", "3", "--max_tokens", "8", "--pid", str(metered.proc.pid)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["errors"] == 0
    assert summary["requests"] == summary["ok"] > 0
    assert isinstance(summary["rss_growth_pct"], float)
    assert summary["rss_start_mib"] > 0 and summary["warmup_s"] == 1
    # The model came from /v3/models, and every measured stream ran to max_tokens.
    assert summary["tokens"] == 8 * summary["ok"]


def test_soak_tool_counts_failed_requests(metered: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, str(SOAK), "--url", metered.url, "--clients", "2",
         "--warmup", "0", "--duration", "1", "--model", "no-such-model"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["errors"] > 0 and summary["ok"] == 0
    assert "HTTP 404" in done.stdout
