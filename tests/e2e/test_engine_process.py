"""Engine processes of a real server: where genai runs, crash and restart, replacement, orphans."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.e2e._reliability import chat, open_stream, request

pytestmark = pytest.mark.e2e

ENGINE_MODULE = "calculators.llm.engine_process"


def _engines(server_pid: int) -> list[int]:
    """Live engine processes whose parent is ``server_pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == server_pid and state != "Z" and ENGINE_MODULE.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _read_stream(sock) -> bytes:
    sock.settimeout(30)
    buf = b""
    while b"data: [DONE]" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def _config_state(url: str) -> tuple[str, str]:
    _, _, raw = request(url + "/v1/config")
    (entry,) = json.loads(raw).values()
    status = entry["model_version_status"][0]
    return status["state"], status["status"]["error_message"]


@pytest.fixture
def server() -> ServerProcess:
    proc = ServerProcess([]).wait_ready()
    yield proc
    proc.stop()


def test_generation_runs_in_an_engine_process(server: ServerProcess) -> None:
    (engine,) = _engines(server.proc.pid)
    status, _, raw = request(server.url + "/v3/chat/completions", chat(max_tokens=4))
    assert status == 200, raw
    assert json.loads(raw)["usage"]["completion_tokens"] == 4
    assert _engines(server.proc.pid) == [engine]
    assert _config_state(server.url) == ("AVAILABLE", "OK")


def test_killed_engine_fails_only_its_requests_and_restarts(server: ServerProcess) -> None:
    (engine,) = _engines(server.proc.pid)
    sock, head = open_stream(server.port, chat(max_tokens=20_000, ignore_eos=True))
    unary: dict[str, object] = {}

    def call() -> None:
        unary["answer"] = request(
            server.url + "/v3/chat/completions", chat(max_tokens=20_000, ignore_eos=True)
        )

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)
    os.kill(engine, signal.SIGKILL)
    states = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state, message = _config_state(server.url)
        states.add((state, message.split(";")[0]))
        if state == "AVAILABLE" and _engines(server.proc.pid):
            break
        time.sleep(0.02)
    body = head + _read_stream(sock)
    sock.close()
    caller.join(30)

    # The stream ends with an error event in the OpenAI shape, then [DONE].
    events = re.findall(rb"data: (\{.*?\})\n\n", body)
    error = json.loads(events[-1])["error"]
    assert "engine process stopped" in error["message"]
    assert body.index(b"data: [DONE]") > body.rindex(b'"error"')
    status, _, raw = unary["answer"]
    assert status == 503, raw
    assert "engine process stopped" in json.loads(raw)["error"]["message"]
    # /v1/config showed the restart, then AVAILABLE again with a new engine.
    assert ("LOADING", "Engine process ended (exit code -9)") in states, states
    (new_engine,) = _engines(server.proc.pid)
    assert new_engine != engine
    status, _, raw = request(server.url + "/v3/chat/completions", chat(max_tokens=3))
    assert status == 200, raw
    assert request(server.url + "/v2/health/ready")[0] == 200


def test_requests_during_a_restart_wait_for_the_new_engine(server: ServerProcess) -> None:
    (engine,) = _engines(server.proc.pid)
    os.kill(engine, signal.SIGKILL)
    time.sleep(0.1)  # the reader has seen the crash; the new engine is loading
    status, _, raw = request(server.url + "/v3/chat/completions", chat(max_tokens=3))
    assert status == 200, raw


def test_sigkill_of_the_server_ends_its_engines() -> None:
    proc = ServerProcess([]).wait_ready()
    engines = _engines(proc.proc.pid)
    assert engines
    sock, _ = open_stream(proc.port, chat(max_tokens=20_000, ignore_eos=True))
    try:
        proc.proc.kill()
        proc.proc.wait(10)
        deadline = time.monotonic() + 2
        while any(_alive(p) for p in engines) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(_alive(p) for p in engines)
    finally:
        sock.close()
        proc.stop()


def test_engine_above_the_rss_limit_is_replaced_without_failing_requests() -> None:
    # A 1 MiB limit: every engine is above it, so each check (2 s) replaces the engine.
    proc = ServerProcess([], env={"OVGRAPH_ENGINE_RSS_LIMIT_MB": "1"}).wait_ready()
    try:
        (first,) = _engines(proc.proc.pid)
        statuses = []
        seen = {first}
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            status, _, _ = request(
                proc.url + "/v3/chat/completions", chat(max_tokens=40, ignore_eos=True)
            )
            statuses.append(status)
            seen.update(_engines(proc.proc.pid))
        assert statuses and set(statuses) == {200}, statuses
        assert len(seen) >= 3  # replaced at least twice
        assert not _alive(first)  # the old engine finished its work and exited
        assert len(_engines(proc.proc.pid)) <= 2  # no pile-up of retired engines
        assert "replacing it" in proc.logs()
    finally:
        proc.stop()


def test_in_process_engine_for_debugging() -> None:
    proc = ServerProcess([], env={"OVGRAPH_ENGINE": "inprocess"}).wait_ready()
    try:
        assert _engines(proc.proc.pid) == []
        status, _, raw = request(proc.url + "/v3/chat/completions", chat(max_tokens=4))
        assert status == 200, raw
        assert json.loads(raw)["usage"]["completion_tokens"] == 4
    finally:
        proc.stop()
