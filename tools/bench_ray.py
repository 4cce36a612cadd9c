"""Ray Serve against a direct ``ovgraph serve``, in the same run, rounds alternating.

Everything runs inside network and PID namespaces of its own (the script re-executes itself
under ``unshare --net --pid --fork --mount-proc``, as root): a Ray cluster of two simulated
nodes (dashboard off, proxies on the head), a direct ``ovgraph serve`` subprocess, and the
clients, all on the namespace's loopback. When the script ends, the namespace and every Ray
process in it end too.

- **Added latency** (embedded model, ``graphs/qwen2vl-shapes``): one client, the README's
  red-circle chat (20 tokens, unary), through Ray Serve with one replica and through the
  direct server, ``--latency-rounds`` rounds of ``--latency-requests`` each, alternating.
  Reported: p50 and p99 of each side and their differences.
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


def _direct(args: list[str]) -> Any:
    from ovgraph.testing import ServeProcess

    return ServeProcess(args, log_name="bench-ray-direct").wait_ready(600)


def inside(opts: argparse.Namespace) -> dict[str, Any]:
    from ray import serve

    from ovgraph.ray_serve.local_cluster import HTTP_PORT, deploy, start_serve_cluster

    ray_url = f"http://127.0.0.1:{HTTP_PORT}"
    result: dict[str, Any] = {}
    started = time.monotonic()
    start_serve_cluster(2, 1)
    result["cluster_start_s"] = round(time.monotonic() - started, 1)

    # ---- added latency, embedded model, one replica against one direct server
    body = json.dumps({"model": "qwen2vl-shapes", "messages": _messages(),
                       "max_completion_tokens": 20}).encode()
    result["replica_start_s"] = round(deploy(serve, {"num_replicas": 1}), 1)
    direct = _direct([])
    try:
        for url in (ray_url, direct.url):
            _latencies(url, body, 5)  # warm-up
        ray_ms: list[float] = []
        direct_ms: list[float] = []
        for _ in range(opts.latency_rounds):
            direct_ms += _latencies(direct.url, body, opts.latency_requests)
            ray_ms += _latencies(ray_url, body, opts.latency_requests)
    finally:
        direct.stop()
    for name, values in (("direct", direct_ms), ("ray", ray_ms)):
        result[f"latency_{name}_p50_ms"] = round(statistics.median(values), 1)
        result[f"latency_{name}_p99_ms"] = round(_pct(values, 0.99), 1)
    for q in ("p50", "p99"):
        added = result[f"latency_ray_{q}_ms"] - result[f"latency_direct_{q}_ms"]
        result[f"added_{q}_ms"] = round(added, 1)
    print(json.dumps(result), file=sys.stderr, flush=True)

    # ---- throughput, medium model: direct vs Ray 1 replica vs Ray 2 replicas (2 nodes)
    model = str(Path(opts.model).resolve())
    served = {"model_path": model, "model_name": "bench", "task": "text_generation",
              "pipeline_type": "VLM_CB"}
    body = json.dumps({"model": "bench", "messages": _messages(), "max_completion_tokens": 32,
                       "ignore_eos": True, "temperature": 0}).encode()
    serve.delete("ovgraph")
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
