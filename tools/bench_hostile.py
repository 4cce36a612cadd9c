"""Big request bodies against ``ovgraph serve``, next to a bare Tornado server in the same run.

The targets: a 50 MB prompt is refused with a 400 quickly and cheaply (peak RSS), and
``/v2/health/live`` stays fast while four such requests are refused at once. Measured here:

- **refusal**: ``--repeats`` 50 MB chats (``--mb``) one after another: seconds from the first
  byte sent to the 400 (p50 and max), and the growth of the server's peak RSS (``VmHWM``) over
  all of them;
- **health under big bodies**: four such chats at once while one client polls
  ``/v2/health/live`` every 10 ms: p50 and p99 of those polls;
- **the floor**, the same two measures against a minimal Tornado server (a subprocess with the
  server's body-size limit) that reads the whole body and answers 400 without looking at it:
  what sending 50 MB over loopback into a Tornado process costs on this machine, whatever the
  server does with it. ``refusal_over_floor_s`` is ovgraph's own share.

The server is the embedded default model (``ovgraph serve`` on free loopback ports). The last
line printed is a JSON object with the figures and the load average::

    python tools/bench_hostile.py --mb 50 --repeats 5
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_FLOOR_SERVER = """
import sys, tornado.httpserver, tornado.ioloop, tornado.web
class Refuse(tornado.web.RequestHandler):
    def post(self, *_):
        self.set_status(400)
        self.finish({"error": {"message": "refused"}})
class Live(tornado.web.RequestHandler):
    def get(self, *_):
        self.finish(b"")
app = tornado.web.Application([(r"/v2/health/live", Live), (r"/.*", Refuse)])
server = tornado.httpserver.HTTPServer(app, max_body_size=64 * 1024 * 1024,
                                       max_buffer_size=64 * 1024 * 1024)
server.listen(int(sys.argv[1]), "127.0.0.1")
print("ready", flush=True)
tornado.ioloop.IOLoop.current().start()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _send(port: int, method: str, path: str, body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _chat(megabytes: float) -> bytes:
    text = "hello world " * (int(megabytes * 1e6) // 12)
    return json.dumps({"model": "qwen2vl-shapes", "max_tokens": 2,
                       "messages": [{"role": "user", "content": text}]}).encode()


def _measure(port: int, pid: int, body: bytes, repeats: int) -> dict[str, float]:
    """Refusal times, peak RSS growth and health latency under four big bodies at once."""
    assert _send(port, "POST", "/v3/chat/completions", _chat(2)) == 400  # warm-up
    before = _peak_rss_mib(pid)
    seconds: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        status = _send(port, "POST", "/v3/chat/completions", body)
        seconds.append(time.perf_counter() - started)
        assert status == 400, status
    grown = _peak_rss_mib(pid) - before
    statuses: list[int] = []
    senders = [
        threading.Thread(target=lambda: statuses.append(
            _send(port, "POST", "/v3/chat/completions", body)))
        for _ in range(4)
    ]
    for t in senders:
        t.start()
    health: list[float] = []
    while any(t.is_alive() for t in senders):
        started = time.perf_counter()
        assert _send(port, "GET", "/v2/health/live") == 200
        health.append(time.perf_counter() - started)
        time.sleep(0.01)
    for t in senders:
        t.join()
    assert statuses == [400] * 4, statuses
    return {
        "refusal_p50_s": round(statistics.median(seconds), 3),
        "refusal_max_s": round(max(seconds), 3),
        "peak_rss_growth_mib": round(grown, 1),
        "health_p50_ms": round(statistics.median(health) * 1000, 1),
        "health_p99_ms": round(_pct(health, 0.99) * 1000, 1),
        "health_polls": len(health),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=50.0, help="prompt size in MB")
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    from ovgraph.testing import ServeProcess

    body = _chat(opts.mb)
    result: dict[str, Any] = {"body_mb": round(len(body) / 1e6, 1)}

    port = _free_port()
    floor = subprocess.Popen([sys.executable, "-c", _FLOOR_SERVER, str(port)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert floor.stdout is not None and floor.stdout.readline().strip() == "ready"
        for key, value in _measure(port, floor.pid, body, opts.repeats).items():
            result[f"floor_{key}"] = value
    finally:
        floor.kill()
        floor.wait()

    server = ServeProcess([], log_name="bench-hostile").wait_ready(300)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        for key, value in _measure(port, server.proc.pid, body, opts.repeats).items():
            result[f"server_{key}"] = value
    finally:
        server.stop()
    result["refusal_over_floor_s"] = round(
        result["server_refusal_p50_s"] - result["floor_refusal_p50_s"], 3)
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
