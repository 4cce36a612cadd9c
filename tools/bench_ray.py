"""Ray Serve against a direct ``ovgraph serve``, in the same run, rounds alternating.

Everything runs inside network and PID namespaces of its own (the script re-executes itself
under ``unshare --net --pid --fork --mount-proc``, as root): a Ray cluster of two simulated
nodes (dashboard off, proxies on the head), a direct ``ovgraph serve`` subprocess, and the
clients, all on the namespace's loopback. When the script ends, the namespace and every Ray
process in it end too.

- **Ingress** (``--ingress``): ``haproxy`` (default; Ray's HAProxy in front of replicas that
  serve HTTP themselves, with ``RAY_SERVE_THROUGHPUT_OPTIMIZED``) or ``proxy`` (Ray's Python
  proxy actor); one per run, since every Ray process reads the choice when it starts.
- **Added latency** (embedded model, ``graphs/qwen2vl-shapes``): one client, the README's
  red-circle chat (20 tokens, unary), through Ray Serve with one replica and through the
  direct server, ``--latency-rounds`` rounds of ``--latency-requests`` each, alternating.
  Reported: p50 and p99 of each side and their differences.
- **Ray's own floor**, the same way: a minimal ASGI deployment that answers the same bytes at
  once against a minimal Tornado server doing the same (no ovgraph on either side). What Ray
  adds to nothing is the least it can add to ovgraph; ``ovgraph_over_floor_p50_ms`` is the rest.
- **Throughput** (``--model``, default ``models/medium-int8``, ``VLM_CB``): ``--clients``
  concurrent clients for ``--seconds`` per round, 32 tokens each with ``ignore_eos``, against
  the direct server, Ray with one replica and Ray with two replicas (one per node), rounds
  alternating with the direct server. Reported: completion tokens per second of each and the
  ratios. On a 2-core machine two replicas share the same two cores: they cannot beat one.

The last line printed is a JSON object with the figures and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _messages() -> list[dict[str, Any]]:
    url = re.search(r'"url": "(data:image/png;base64,[A-Za-z0-9+/=]+)"',
                    (REPO / "README.md").read_text())
    assert url is not None
    return [{"role": "user", "content": [
        {"type": "text", "text": "Describe the picture."},
        {"type": "image_url", "image_url": {"url": url.group(1)}},
    ]}]


def _post(url: str, body: bytes) -> dict[str, Any]:
    request = urllib.request.Request(url + "/v3/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _post_raw(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(url + "/v3/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as r:
        return r.read()  # type: ignore[no-any-return]


def _latencies(url: str, body: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        _post(url, body)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _throughput(url: str, body: bytes, clients: int, seconds: float) -> tuple[float, int]:
    """(completion tokens per second, failed requests) over ``seconds``."""
    tokens = [0]
    failed = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < stop:
            try:
                answer = _post(url, body)
                with lock:
                    tokens[0] += int(answer["usage"]["completion_tokens"])
            except Exception:
                with lock:
                    failed[0] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tokens[0] / (time.monotonic() - started), failed[0]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


_FLOOR_SERVER = """
import sys, tornado.ioloop, tornado.web
body = open(sys.argv[2], "rb").read()
class Answer(tornado.web.RequestHandler):
    def post(self, *_):
        self.set_header("Content-Type", "application/json")
        self.finish(body)
tornado.web.Application([(r"/.*", Answer)]).listen(int(sys.argv[1]), "127.0.0.1")
print("ready", flush=True)
tornado.ioloop.IOLoop.current().start()
"""


def _floor_app(serve: Any, answer: bytes) -> Any:
    """A Ray Serve application answering ``answer`` to every HTTP request, as plain ASGI."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": f"{kind}.complete"})
                if kind == "lifespan.shutdown":
                    return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    @serve.deployment(name="floor", ray_actor_options={"num_cpus": 1})
    @serve.ingress()
    class Floor:
        def __serve_build_asgi_app__(self) -> Any:
            return asgi

    return Floor.bind()


def _floor_direct(answer: bytes) -> tuple[subprocess.Popen[str], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-ray-floor-{os.getpid()}.json"
    path.write_bytes(answer)
    proc = subprocess.Popen([sys.executable, "-c", _FLOOR_SERVER, str(port), str(path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, f"http://127.0.0.1:{port}"


def _side_by_side(ray_url: str, direct_url: str, body: bytes,
                  opts: argparse.Namespace) -> tuple[list[float], list[float]]:
    for url in (ray_url, direct_url):
        _latencies(url, body, 5)  # warm-up
    ray_ms: list[float] = []
    direct_ms: list[float] = []
    for _ in range(opts.latency_rounds):
        direct_ms += _latencies(direct_url, body, opts.latency_requests)
        ray_ms += _latencies(ray_url, body, opts.latency_requests)
    return ray_ms, direct_ms


def _report(result: dict[str, Any], prefix: str, ray_ms: list[float],
            direct_ms: list[float]) -> None:
    for name, values in (("direct", direct_ms), ("ray", ray_ms)):
        result[f"{prefix}_{name}_p50_ms"] = round(statistics.median(values), 1)
        result[f"{prefix}_{name}_p99_ms"] = round(_pct(values, 0.99), 1)


def _direct(args: list[str]) -> Any:
    from ovgraph.testing import ServeProcess

    return ServeProcess(args, log_name="bench-ray-direct").wait_ready(600)


def inside(opts: argparse.Namespace) -> dict[str, Any]:
    from ovgraph.ray_serve.local_cluster import HTTP_PORT, INGRESS_ENV, deploy, start_serve_cluster

    os.environ.update(INGRESS_ENV[opts.ingress])  # before Ray is imported anywhere here
    from ray import serve

    ray_url = f"http://127.0.0.1:{HTTP_PORT}"
    result: dict[str, Any] = {"ingress": opts.ingress}
    started = time.monotonic()
    start_serve_cluster(2, 1)
    result["cluster_start_s"] = round(time.monotonic() - started, 1)

    # ---- added latency, embedded model, one replica against one direct server
    body = json.dumps({"model": "qwen2vl-shapes", "messages": _messages(),
                       "max_completion_tokens": 20}).encode()
    result["replica_start_s"] = round(deploy(serve, {"num_replicas": 1}), 1)
    direct = _direct([])
    try:
        answer = _post_raw(direct.url, body)
        ray_ms, direct_ms = _side_by_side(ray_url, direct.url, body, opts)
    finally:
        direct.stop()
    _report(result, "latency", ray_ms, direct_ms)
    for q in ("p50", "p99"):
        added = result[f"latency_ray_{q}_ms"] - result[f"latency_direct_{q}_ms"]
        result[f"added_{q}_ms"] = round(added, 1)

    # ---- Ray's own floor: the same answer from nothing, through Ray and directly
    serve.delete("ovgraph")
    serve.run(_floor_app(serve, answer), name="floor", route_prefix="/", blocking=False)
    floor, floor_url = _floor_direct(answer)
    try:
        ray_ms, direct_ms = _side_by_side(ray_url, floor_url, body, opts)
    finally:
        floor.kill()
        floor.wait()
    serve.delete("floor")
    _report(result, "floor", ray_ms, direct_ms)
    for q in ("p50", "p99"):
        added = result[f"floor_ray_{q}_ms"] - result[f"floor_direct_{q}_ms"]
        result[f"ray_floor_added_{q}_ms"] = round(added, 1)
    result["ovgraph_over_floor_p50_ms"] = round(
        result["added_p50_ms"] - result["ray_floor_added_p50_ms"], 1)
    print(json.dumps(result), file=sys.stderr, flush=True)

    # ---- throughput, medium model: direct vs Ray 1 replica vs Ray 2 replicas (2 nodes)
    model = str(Path(opts.model).resolve())
    served = {"model_path": model, "model_name": "bench", "task": "text_generation",
              "pipeline_type": "VLM_CB"}
    body = json.dumps({"model": "bench", "messages": _messages(), "max_completion_tokens": 32,
                       "ignore_eos": True, "temperature": 0}).encode()
    direct = _direct(["--model_path", model, "--model_name", "bench", "--task",
                      "text_generation", "--pipeline_type", "VLM_CB"])
    try:
        _throughput(direct.url, body, opts.clients, 5)  # warm-up
        for replicas in (1, 2):
            deploy(serve, {**served, "num_replicas": replicas})
            _throughput(ray_url, body, opts.clients, 5)  # warm-up
            d_runs, r_runs, failures = [], [], 0
            for _ in range(opts.rounds):
                tok, bad = _throughput(direct.url, body, opts.clients, opts.seconds)
                d_runs.append(tok)
                failures += bad
                tok, bad = _throughput(ray_url, body, opts.clients, opts.seconds)
                r_runs.append(tok)
                failures += bad
            d, r = statistics.mean(d_runs), statistics.mean(r_runs)
            result[f"tok_s_direct_vs_{replicas}"] = round(d, 1)
            result[f"tok_s_ray_{replicas}_replica"] = round(r, 1)
            result[f"throughput_ratio_{replicas}_replica"] = round(r / d, 3)
            result[f"failed_requests_{replicas}"] = failures
            print(json.dumps(result), file=sys.stderr, flush=True)
    finally:
        direct.stop()
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "medium-int8"))
    parser.add_argument("--ingress", choices=("haproxy", "proxy"), default="haproxy")
    parser.add_argument("--latency-rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if not opts.inside:
        from ovgraph.ray_serve.local_cluster import can_isolate

        if not can_isolate():
            sys.exit("bench_ray.py needs root, unshare and ip (it runs in namespaces of its own)")
        command = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child",
                   sys.executable, __file__, "--inside", *sys.argv[1:]]
        return subprocess.call(command)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result = inside(opts)
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # PID 1 of the namespace: leaving ends every Ray process in it


if __name__ == "__main__":
    sys.exit(main())
