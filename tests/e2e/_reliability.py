"""Helpers of the reliability tests: raw sockets, request bodies, leak checks, plugins."""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODEL = "qwen2vl-tiny"
PLUGIN_SRC = Path(__file__).resolve().parent.parent / "plugins" / "ovgraph_fault_plugin"
_LEAKS = ("/work", "Traceback", "0x", "File \"", ".py")


def chat(content: object = "hi", **extra: object) -> dict:
    """A chat completion body for the default model."""
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def assert_clean(raw: bytes, limit: int = 64 * 1024) -> None:
    """An error body is bounded and names no file, traceback or address."""
    assert len(raw) < limit, len(raw)
    text = raw.decode(errors="replace")
    for marker in _LEAKS:
        assert marker not in text, (marker, text[:500])


def raw_http(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send raw bytes on a fresh connection and read until the server closes or answers fully."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> bytes:
    """Read one HTTP response (Content-Length bodies) or until EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length:\s*(\d+)", head)
    if match is None:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return buf
            buf += chunk
    need = int(match.group(1))
    while len(body) < need:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def open_stream(port: int, body: dict, timeout: float = 60.0) -> tuple[socket.socket, bytes]:
    """Start a streaming chat request; return the socket and what arrived up to the first event."""
    data = json.dumps({**body, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(
        b"POST /v3/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(data) + data
    )
    buf = b""
    while b"data: " not in buf:
        chunk = sock.recv(65536)
        assert chunk, buf
        buf += chunk
    return sock, buf


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """``(status, headers (lower-case names), body)`` of a raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def request(
    url: str, body: object = None, headers: dict[str, str] | None = None,
    method: str | None = None, timeout: float = 60.0,
) -> tuple[int, dict[str, str], bytes]:
    """urllib request; returns ``(status, headers, raw body)`` for every status."""
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def metric(url: str, name: str) -> float:
    """The value of one unlabelled (or first labelled) sample of ``/metrics``."""
    with urllib.request.urlopen(url + "/metrics", timeout=60) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def metric_samples(url: str) -> dict[str, float]:
    """Every sample of ``/metrics`` keyed by its full series name."""
    with urllib.request.urlopen(url + "/metrics", timeout=60) as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def install_fault_plugin(target: Path) -> Path:
    """Install the fault plugin into ``target`` (module + dist-info with its entry points)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(PLUGIN_SRC / "ovgraph_fault_plugin.py", target / "ovgraph_fault_plugin.py")
    project = tomllib.loads((PLUGIN_SRC / "pyproject.toml").read_text())["project"]
    dist = target / f"ovgraph_fault_plugin-{project['version']}.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = ["[ovgraph.calculators]"]
    for name, value in project["entry-points"]["ovgraph.calculators"].items():
        lines.append(f"{name} = {value}")
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return target


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
