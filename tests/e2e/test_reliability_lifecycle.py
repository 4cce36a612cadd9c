"""Shutdown drain and Prometheus metrics of a real server process."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.e2e._reliability import MODEL, chat, metric_samples, open_stream, request

pytestmark = pytest.mark.e2e


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _read_all(sock: socket.socket) -> bytes:
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return buf
        if not chunk or b"data: [DONE]" in buf + chunk:
            return buf + chunk
        buf += chunk


def test_sigterm_drains_in_flight_and_refuses_new() -> None:
    proc = ServerProcess(["--drain_timeout", "60"]).wait_ready()
    children = _children(proc.proc.pid)
    sock, head = open_stream(proc.port, chat(max_tokens=3000, ignore_eos=True,
                                               stream_options={"include_usage": True}))
    try:
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        status, headers, raw = request(proc.url + "/v3/chat/completions", chat(max_tokens=2))
        assert status == 503
        assert headers["retry-after"] == "1"
        assert json.loads(raw)["error"]["type"] == "service_unavailable"
        assert request(proc.url + "/v2/health/ready")[0] == 503
        assert request(proc.url + "/v2/health/live")[0] == 200
        body = head + _read_all(sock)
    finally:
        sock.close()
    assert body.rstrip().endswith(b"data: [DONE]")
    usage = [json.loads(e[6:]) for e in body.split(b"\n\n") if b'"usage": {' in e
             or b'"usage":{' in e]
    assert usage and usage[-1]["usage"]["completion_tokens"] == 3000
    assert proc.proc.wait(30) == 0
    assert not [c for c in children if _alive(c)]
    proc.stop()


def test_drain_timeout_cancels_and_exits() -> None:
    proc = ServerProcess(["--drain_timeout", "1"]).wait_ready()
    sock, _ = open_stream(proc.port, chat(max_tokens=30_000, ignore_eos=True))
    try:
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(20) == 0
        assert time.monotonic() - started < 15
        sock.settimeout(5)
        tail = _read_all(sock)
        assert b"[DONE]" not in tail or b'"error"' in tail
    finally:
        sock.close()
    proc.stop()


def test_idle_server_exits_at_once() -> None:
    proc = ServerProcess([]).wait_ready()
    started = time.monotonic()
    assert proc.stop() == 0
    assert time.monotonic() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(proc.proc.pid, 0)


# --------------------------------------------------------------------------- metrics

DOCUMENTED = (
    "ovgraph_requests_total", "ovgraph_request_duration_seconds_bucket",
    "ovgraph_requests_running", "ovgraph_requests_queued", "ovgraph_requests_rejected_total",
    "ovgraph_llm_running_sequences", "ovgraph_llm_waiting_sequences",
    "ovgraph_llm_time_to_first_token_seconds_bucket",
    "ovgraph_llm_time_per_output_token_seconds_bucket",
    "ovgraph_llm_prompt_tokens_total", "ovgraph_llm_generation_tokens_total",
)


def test_metrics_names_and_counters_move() -> None:
    proc = ServerProcess(["--metrics_enable"]).wait_ready()
    try:
        status, headers, _ = request(proc.url + "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        for _ in range(2):
            status, _, _ = request(proc.url + "/v3/chat/completions", chat(max_tokens=5))
            assert status == 200
        request(proc.url + "/v3/chat/completions", b"{bad")
        samples = metric_samples(proc.url)
        names = {key.split("{")[0] for key in samples}
        for name in DOCUMENTED:
            assert name in names, name
        ok = 'ovgraph_requests_total{endpoint="/v3/chat/completions",status="200"}'
        bad = 'ovgraph_requests_total{endpoint="/v3/chat/completions",status="400"}'
        assert samples[ok] == 2
        assert samples[bad] == 1
        label = f'{{model="{MODEL}"}}'
        assert samples[f"ovgraph_llm_time_to_first_token_seconds_count{label}"] == 2
        assert samples[f"ovgraph_llm_time_per_output_token_seconds_count{label}"] == 2
        assert samples[f"ovgraph_llm_generation_tokens_total{label}"] == 10
        assert samples[f"ovgraph_llm_prompt_tokens_total{label}"] > 10
        assert samples["ovgraph_llm_running_sequences"] == 0
        assert not any("python_gc" in key or "process_" in key for key in samples)
    finally:
        proc.stop()


def test_metrics_off_by_default(server: ServerProcess) -> None:
    status, _, raw = request(server.url + "/metrics")
    assert status == 404
    assert "--metrics_enable" in json.loads(raw)["error"]["message"]
