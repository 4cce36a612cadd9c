"""Soak test: N concurrent streaming chat clients for T seconds against a running server.

Every client streams one chat request after another (``max_tokens`` new tokens, EOS ignored
unless ``--no-ignore_eos``). A warm-up of the same load (``--warmup`` seconds, default 60) comes
first: it lets the server size what grows with load and then stays (KV cache blocks for the
concurrent sequences, worker threads, per-shape kernels). The measured window of ``--duration``
seconds follows; its requests, errors, latency percentiles (time to first byte of content and
whole request) and the RSS growth of the server and its engine processes together over it are
printed, next to the growth from before the warm-up. The last line is a JSON object with at
least ``requests``, ``errors`` and ``rss_growth_pct`` (the measured window's).

    python tools/soak.py --url http://127.0.0.1:8000 --clients 64 --duration 60

The server pid comes from ``--pid`` or is found through ``/proc`` by the URL's port (Linux).

``--hostile N`` adds N attacker threads running for the same time next to the normal clients,
each cycling through attacks from the hostile-client review: a huge prompt (``--hostile_mb``,
default 50 MB), lone surrogates in text, role and ``stop``, oversized headers, a chunked body far
over the limit, an absolute-form URI, a KServe shape of 65 dimensions, and a slow client that
sends half its headers and waits. Their answers are counted per attack and status (a 4xx is the
expected outcome, not an error); the normal clients' errors and p99 are what the mode checks:

    python tools/soak.py --clients 64 --hostile 8 --duration 60
"""

from __future__ import annotations

import argparse
import contextlib
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
    """Resident set size of ``pid`` and its child processes (engines) in bytes (0 if unknown)."""
    return sum(_own_rss(p) for p in [pid, *_children(pid)])


def _own_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


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
        self.measuring = False
        headers = {"Content-Type": "application/json"}
        if args.api_key:
            headers["Authorization"] = f"Bearer {args.api_key}"
        self.headers = headers

    def body(self, n: int) -> bytes:
        return json.dumps({
            "model": self.args.model,
            "messages": [{"role": "user", "content": f"Soak request {n}: say something."}],
            "max_tokens": self.args.max_tokens,
            "ignore_eos": self.args.ignore_eos,
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
            if not self.measuring:
                return
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
                    # Errors count in the warm-up too: a soak must have none at all.
                    self.errors[type(exc).__name__ + ": " + str(exc)[:80]] += 1
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.args.timeout)
            finally:
                with self.lock:
                    self.requests += self.measuring
        conn.close()


class Hostile:
    """Attacker threads (``--hostile N``): every answer counted per attack and outcome."""

    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        self.outcomes: Counter[str] = Counter()
        model = soak.args.model
        big = "hello world " * (int(soak.args.hostile_mb * 1e6) // 12)
        self.big = json.dumps({"model": model, "messages": [{"role": "user", "content": big}]})
        self.attacks = [
            ("big_prompt", self.big_prompt),
            ("surrogate", self.surrogates),
            ("big_headers", self.big_headers),
            ("chunked_oversize", self.chunked_oversize),
            ("absolute_uri", self.absolute_uri),
            ("deep_shape", self.deep_shape),
            ("slow_headers", self.slow_headers),
        ]

    def run(self, index: int) -> None:
        n = index
        while time.monotonic() < self.soak.stop_at:
            name, attack = self.attacks[n % len(self.attacks)]
            n += 1
            try:
                outcome = str(attack())
            except Exception as exc:
                outcome = type(exc).__name__
            with self.soak.lock:
                self.outcomes[f"{name} {outcome}"] += 1

    def _post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
        conn = http.client.HTTPConnection(self.soak.host, self.soak.port, timeout=120)
        try:
            conn.request("POST", path, body=body, headers={**self.soak.headers, **(headers or {})})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def _raw(self, data: bytes, then: bytes | None = None, pause: float = 0.0) -> int:
        import socket

        with socket.create_connection((self.soak.host, self.soak.port), timeout=60) as sock:
            sock.sendall(data)
            if pause:
                time.sleep(pause)
            if then:
                with contextlib.suppress(OSError):  # the server may answer and close first
                    sock.sendall(then)
            head = sock.recv(65536)
        return int(head.split()[1]) if head.startswith(b"HTTP/") else 0

    def big_prompt(self) -> int:
        return self._post(self.soak.args.path, self.big.encode())

    def surrogates(self) -> int:
        model = self.soak.args.model
        raw = (b'{"model":"%s","messages":[{"role":"us\\ud800er","content":"a\\udfff"}],'
               b'"stop":["\\ud800"]}') % model.encode()
        return self._post(self.soak.args.path, raw)

    def big_headers(self) -> int:
        return self._raw(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: "
                         + b"a" * 200_000 + b"\r\n\r\n")

    def chunked_oversize(self) -> int:
        head = (b"POST /v3/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 65536
        chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
        return self._raw(head, chunk * 1400)  # about 90 MiB

    def absolute_uri(self) -> int:
        return self._raw(b"GET http://x/v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")

    def deep_shape(self) -> int:
        body = {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1] * 65,
                            "data": ["{}"]}]}
        return self._post(f"/v2/models/{self.soak.args.model}/infer", json.dumps(body).encode())

    def slow_headers(self) -> int:
        return self._raw(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n", b"\r\n", pause=5.0)


def first_model(soak: Soak) -> str:
    """The first model the server lists under ``/v3/models``."""
    conn = http.client.HTTPConnection(soak.host, soak.port, timeout=10)
    try:
        conn.request("GET", "/v3/models", headers=soak.headers)
        models = json.loads(conn.getresponse().read())["data"]
    finally:
        conn.close()
    if not models:
        raise SystemExit("the server lists no model")
    return str(models[0]["id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--path", default="/v3/chat/completions")
    parser.add_argument("--model", default=None, help="default: the first of /v3/models")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="seconds of the same load before the measured window")
    parser.add_argument("--ignore_eos", action=argparse.BooleanOptionalAction, default=True,
                        help="every stream runs to max_tokens (default on)")
    parser.add_argument("--api_key", default=os.environ.get("API_KEY"))
    parser.add_argument("--pid", type=int, default=None)
    parser.add_argument("--hostile", type=int, default=0,
                        help="attacker threads next to the normal clients (see above)")
    parser.add_argument("--hostile_mb", type=float, default=50.0,
                        help="size of the huge-prompt attack in MB")
    args = parser.parse_args(argv)

    soak = Soak(args)
    if args.model is None:
        args.model = first_model(soak)
    pid = args.pid or find_pid_by_port(soak.port)
    rss_cold = rss_bytes(pid) if pid else 0
    soak.stop_at = time.monotonic() + args.warmup + args.duration
    threads = [threading.Thread(target=soak.client, args=(i,), daemon=True)
               for i in range(args.clients)]
    hostile = Hostile(soak) if args.hostile else None
    if hostile is not None:
        threads += [threading.Thread(target=hostile.run, args=(i,), daemon=True)
                    for i in range(args.hostile)]
    for thread in threads:
        thread.start()
    time.sleep(args.warmup)
    with soak.lock:
        soak.measuring = True
    rss_start = rss_bytes(pid) if pid else 0
    rss_peak = rss_start
    while any(t.is_alive() for t in threads):
        if pid:
            rss_peak = max(rss_peak, rss_bytes(pid))
        time.sleep(1.0)
    rss_end = rss_bytes(pid) if pid else 0
    growth = (rss_end - rss_start) / rss_start * 100 if rss_start else None
    cold_growth = (rss_end - rss_cold) / rss_cold * 100 if rss_cold else None
    errors = sum(soak.errors.values())

    if hostile is not None:
        for outcome, count in sorted(hostile.outcomes.items()):
            print(f"hostile {outcome}: {count}")
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
    if growth is not None and cold_growth is not None:
        print(f"server pid {pid}: RSS {rss_cold / 2**20:.1f} MiB before the warm-up, "
              f"{rss_start / 2**20:.1f} MiB after it, {rss_end / 2**20:.1f} MiB at the end "
              f"(peak {rss_peak / 2**20:.1f} MiB): growth {growth:.2f} % over the measured "
              f"window, {cold_growth:.2f} % from cold")
    else:
        print("server pid unknown: no RSS figures")
    summary = {
        "requests": soak.requests,
        "ok": ok,
        "errors": errors,
        "tokens": soak.tokens,
        "rss_growth_pct": None if growth is None else round(growth, 2),
        "rss_cold_growth_pct": None if cold_growth is None else round(cold_growth, 2),
        "rss_start_mib": round(rss_start / 2**20, 1),
        "rss_end_mib": round(rss_end / 2**20, 1),
        "p50_ms": round(percentile(soak.latency, 0.5) * 1000, 1),
        "p99_ms": round(percentile(soak.latency, 0.99) * 1000, 1),
        "ttfb_p50_ms": round(percentile(soak.first_byte, 0.5) * 1000, 1),
        "clients": args.clients,
        "hostile": args.hostile,
        "hostile_outcomes": dict(hostile.outcomes) if hostile is not None else {},
        "duration_s": args.duration,
        "warmup_s": args.warmup,
    }
    print(json.dumps(summary))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
