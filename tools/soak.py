"""Soak test: N concurrent streaming chat clients for T seconds against a running server.

Prints errors, latency percentiles (time to first byte of content and whole request) and the RSS
growth of the server process; the last line is a JSON object with at least ``requests``,
``errors`` and ``rss_growth_pct``.

    python tools/soak.py --url http://127.0.0.1:8000 --clients 64 --duration 60

The server pid comes from ``--pid`` or is found through ``/proc`` by the URL's port (Linux).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit


def find_pid_by_port(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` (Linux ``/proc``), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 if unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values`` by nearest rank (0.0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Soak:
    """Shared counters of the client threads."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        parts = urlsplit(args.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.lock = threading.Lock()
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.latency: list[float] = []
        self.first_byte: list[float] = []
        self.tokens = 0
        self.stop_at = 0.0
        headers = {"Content-Type": "application/json"}
        if args.api_key:
            headers["Authorization"] = f"Bearer {args.api_key}"
        self.headers = headers

    def body(self, n: int) -> bytes:
        return json.dumps({
            "model": self.args.model,
            "messages": [{"role": "user", "content": f"Soak request {n}: say something."}],
            "max_tokens": self.args.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }).encode()

    def one(self, conn: http.client.HTTPConnection, n: int) -> None:
        started = time.monotonic()
        conn.request("POST", self.args.path, body=self.body(n), headers=self.headers)
        response = conn.getresponse()
        if response.status != 200:
            response.read()
            raise RuntimeError(f"HTTP {response.status}")
        first = None
        done = False
        tokens = 0
        buf = b""
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            if first is None:
                first = time.monotonic() - started
            buf += chunk
            *events, buf = buf.split(b"\n\n")
            for event in events:
                if event == b"data: [DONE]":
                    done = True
                elif event.startswith(b"data: "):
                    data = json.loads(event[6:])
                    if "error" in data:
                        raise RuntimeError("error event")
                    if data.get("usage"):
                        tokens = data["usage"]["completion_tokens"]
        if not done:
            raise RuntimeError("stream ended without [DONE]")
        with self.lock:
            self.latency.append(time.monotonic() - started)
            self.first_byte.append(first or 0.0)
            self.tokens += tokens

    def client(self, index: int) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.args.timeout)
        n = 0
        while time.monotonic() < self.stop_at:
            n += 1
            try:
                self.one(conn, index * 1_000_000 + n)
            except Exception as exc:
                with self.lock:
                    self.errors[type(exc).__name__ + ": " + str(exc)[:80]] += 1
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.args.timeout)
            finally:
                with self.lock:
                    self.requests += 1
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--path", default="/v3/chat/completions")
    parser.add_argument("--model", default="qwen2vl-tiny")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of load before the baseline RSS is taken")
    parser.add_argument("--api_key", default=os.environ.get("API_KEY"))
    parser.add_argument("--pid", type=int, default=None)
    args = parser.parse_args(argv)

    soak = Soak(args)
    pid = args.pid or find_pid_by_port(soak.port)
    rss_start = rss_bytes(pid) if pid else 0
    soak.stop_at = time.monotonic() + args.duration
    threads = [threading.Thread(target=soak.client, args=(i,), daemon=True)
               for i in range(args.clients)]
    for thread in threads:
        thread.start()
    if pid and args.warmup < args.duration:
        time.sleep(args.warmup)
        rss_start = rss_bytes(pid)
    rss_peak = rss_start
    while any(t.is_alive() for t in threads):
        if pid:
            rss_peak = max(rss_peak, rss_bytes(pid))
        time.sleep(1.0)
    rss_end = rss_bytes(pid) if pid else 0
    growth = (rss_end - rss_start) / rss_start * 100 if rss_start else None
    errors = sum(soak.errors.values())

    for message, count in soak.errors.most_common(10):
        print(f"error x{count}: {message}")
    ok = len(soak.latency)
    print(f"requests {soak.requests}  ok {ok}  errors {errors}  "
          f"throughput {ok / args.duration:.1f} req/s  tokens {soak.tokens}")
    for name, values in (("first byte", soak.first_byte), ("latency", soak.latency)):
        print(f"{name:>10}: p50 {percentile(values, 0.5) * 1000:.0f} ms  "
              f"p90 {percentile(values, 0.9) * 1000:.0f} ms  "
              f"p99 {percentile(values, 0.99) * 1000:.0f} ms  "
              f"max {max(values, default=0) * 1000:.0f} ms  "
              f"mean {statistics.fmean(values) * 1000 if values else 0:.0f} ms")
    if pid:
        print(f"server pid {pid}: RSS {rss_start / 2**20:.1f} MiB -> {rss_end / 2**20:.1f} MiB "
              f"(peak {rss_peak / 2**20:.1f} MiB)")
    else:
        print("server pid unknown: no RSS figures")
    summary = {
        "requests": soak.requests,
        "ok": ok,
        "errors": errors,
        "rss_growth_pct": None if growth is None else round(growth, 2),
        "rss_start_mib": round(rss_start / 2**20, 1),
        "rss_end_mib": round(rss_end / 2**20, 1),
        "p50_ms": round(percentile(soak.latency, 0.5) * 1000, 1),
        "p99_ms": round(percentile(soak.latency, 0.99) * 1000, 1),
        "ttfb_p50_ms": round(percentile(soak.first_byte, 0.5) * 1000, 1),
        "clients": args.clients,
        "duration_s": args.duration,
    }
    print(json.dumps(summary))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
