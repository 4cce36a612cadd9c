"""Benchmark: ovgraph vs MediaPipe 0.10.21 on PassThroughCalculator chains.

Both runtimes are measured in the same run on the same machine: 10,000 integer packets (payload t
at timestamp t) through a chain of 10 ``PassThroughCalculator`` nodes and through a single node,
observing the last stream, then closing all packet sources and waiting until done. ovgraph runs
in-process; MediaPipe runs in ``.venv-mediapipe`` (created on first use, see
``tests/framework/mediapipe_oracle.py``) through a subprocess.

Usage::

    .venv/bin/python tools/bench_graph.py [--packets N] [--repeat R] [--skip-mediapipe]
    .venv/bin/python tools/bench_graph.py --baseline REF [--rounds K]

Prints per-packet microseconds for both chain lengths; the last line is a JSON object with
``ovgraph_us_per_packet``, ``mediapipe_us_per_packet`` and ``ratio`` (10-node chain,
ovgraph / mediapipe).

``--baseline REF`` compares this tree's ovgraph with the ovgraph of git revision ``REF``
(extracted to a temporary folder) instead: both run in subprocesses, alternating ABAB for
``--rounds`` rounds on the 10-node chain, and the last line is a JSON object with both medians,
``ratio`` (this tree / baseline, of the median wall times), ``best_ratio`` (of the best rounds) and
``cpu_ratio`` (of the median process CPU time per packet, less sensitive to a busy machine).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def chain_config(length: int) -> str:
    """Return a graph of ``length`` PassThroughCalculators from ``in`` to ``out``."""
    streams = ["in"] + [f"s{i}" for i in range(1, length)] + ["out"]
    nodes = "".join(
        f'node {{ calculator: "PassThroughCalculator" input_stream: "{a}" output_stream: "{b}" }}\n'
        for a, b in itertools.pairwise(streams)
    )
    return f'input_stream: "in"\noutput_stream: "out"\n{nodes}'


_MEDIAPIPE_SCRIPT = r"""
import json, sys, time
from mediapipe.python import packet_creator
from mediapipe.python._framework_bindings import calculator_graph

args = json.loads(sys.argv[1])
results = {}
for length, config in args["configs"].items():
    best = None
    for _ in range(args["repeat"]):
        graph = calculator_graph.CalculatorGraph(graph_config=config)
        seen = []
        graph.observe_output_stream("out", lambda name, packet: seen.append(packet.timestamp))
        graph.start_run()
        start = time.perf_counter()
        for t in range(args["packets"]):
            graph.add_packet_to_input_stream(
                stream="in", packet=packet_creator.create_int(t), timestamp=t
            )
        graph.close_all_packet_sources()
        graph.wait_until_done()
        elapsed = time.perf_counter() - start
        assert len(seen) == args["packets"], len(seen)
        best = elapsed if best is None else min(best, elapsed)
    results[length] = best * 1e6 / args["packets"]
print(json.dumps(results))
"""


def _collector(seen: list[int]) -> Any:
    def observe(_name: str, packet: Any) -> None:
        seen.append(packet.timestamp)

    return observe


def bench_ovgraph(length: int, packets: int, repeat: int) -> float:
    """Return the best per-packet time in µs of ovgraph on a chain of ``length`` nodes."""
    from ovgraph.framework.graph import CalculatorGraph
    from ovgraph.framework.packet import Packet
    from ovgraph.framework.textformat import parse_graph_config
    from ovgraph.framework.validation import ValidatedGraph

    validated = ValidatedGraph(parse_graph_config(chain_config(length)))
    best = None
    for _ in range(repeat):
        graph = CalculatorGraph(validated)
        seen: list[int] = []
        graph.observe_output_stream("out", _collector(seen))
        graph.start_run()
        start = time.perf_counter()
        for t in range(packets):
            graph.add_packet_to_input_stream("in", Packet(t, t))
        graph.close_all_packet_sources()
        graph.wait_until_done(timeout=600)
        elapsed = time.perf_counter() - start
        if len(seen) != packets:
            raise RuntimeError(f"ovgraph delivered {len(seen)} of {packets} packets")
        best = elapsed if best is None else min(best, elapsed)
    assert best is not None
    return best * 1e6 / packets


def bench_mediapipe(lengths: list[int], packets: int, repeat: int) -> dict[int, float]:
    """Return MediaPipe's best per-packet time in µs per chain length (subprocess)."""
    sys.path.insert(0, str(REPO_ROOT / "tests" / "framework"))
    from mediapipe_oracle import ensure_venv

    python = ensure_venv()
    args = {
        "configs": {str(n): chain_config(n) for n in lengths},
        "packets": packets,
        "repeat": repeat,
    }
    done = subprocess.run(
        [str(python), "-c", _MEDIAPIPE_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"MediaPipe benchmark failed: {done.stderr.strip()[-2000:]}")
    return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
import bench_graph  # puts this tree first on sys.path: the measured tree goes before it
sys.path.insert(0, sys.argv[1])
import ovgraph.framework.graph as graph_module
assert graph_module.__file__.startswith(sys.argv[1]), graph_module.__file__
import time
cpu = time.process_time()
wall = bench_graph.bench_ovgraph(10, int(sys.argv[3]), int(sys.argv[4]))
cpu = (time.process_time() - cpu) * 1e6 / (int(sys.argv[3]) * int(sys.argv[4]))
print(json.dumps([wall, cpu]))
"""


def _bench_tree(root: Path, packets: int, repeat: int) -> tuple[float, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), str(REPO_ROOT / "tools"), str(packets),
         str(repeat)],
        capture_output=True, text=True, timeout=1800, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark of {root} failed: {done.stderr.strip()[-2000:]}")
    wall, cpu = json.loads(done.stdout.strip().splitlines()[-1])
    return float(wall), float(cpu)


def compare_baseline(ref: str, packets: int, repeat: int, rounds: int) -> dict[str, Any]:
    """Median µs/packet of this tree and of git revision ``ref``, measured alternately."""
    import statistics
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ovgraph-baseline-") as tmp:
        archive = Path(tmp) / "src.tar"
        subprocess.run(
            ["git", "-C", str(REPO_ROOT), "archive", "-o", str(archive), ref, "ovgraph",
             "calculators"],
            check=True,
        )
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        base_root = Path(tmp)
        ours: list[tuple[float, float]] = []
        theirs: list[tuple[float, float]] = []
        for _ in range(rounds):
            theirs.append(_bench_tree(base_root, packets, repeat))
            ours.append(_bench_tree(REPO_ROOT, packets, repeat))
            print(f"baseline {theirs[-1][0]:.2f} us/packet (cpu {theirs[-1][1]:.2f}), "
                  f"this tree {ours[-1][0]:.2f} us/packet (cpu {ours[-1][1]:.2f})", flush=True)

    def ratio(pick: Any, index: int) -> float:
        return round(pick(r[index] for r in ours) / pick(r[index] for r in theirs), 3)

    return {
        "baseline": ref,
        "baseline_us_per_packet": round(statistics.median(r[0] for r in theirs), 2),
        "us_per_packet": round(statistics.median(r[0] for r in ours), 2),
        "ratio": ratio(statistics.median, 0),
        "best_ratio": ratio(min, 0),
        "cpu_ratio": ratio(statistics.median, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; best wins")
    parser.add_argument("--skip-mediapipe", action="store_true")
    parser.add_argument("--baseline", help="git revision to compare this tree's ovgraph with")
    parser.add_argument("--rounds", type=int, default=3, help="ABAB rounds with --baseline")
    args = parser.parse_args()
    if args.baseline:
        print(json.dumps(compare_baseline(args.baseline, args.packets, args.repeat, args.rounds)))
        return 0
    lengths = [10, 1]
    ours = {n: bench_ovgraph(n, args.packets, args.repeat) for n in lengths}
    theirs = {} if args.skip_mediapipe else bench_mediapipe(lengths, args.packets, args.repeat)
    for n in lengths:
        line = f"{n:2d}-node chain: ovgraph {ours[n]:7.2f} us/packet"
        if n in theirs:
            line += f", mediapipe {theirs[n]:7.2f} us/packet, ratio {ours[n] / theirs[n]:.2f}"
        print(line)
    mediapipe_us = theirs.get(10)
    summary = {
        "ovgraph_us_per_packet": round(ours[10], 2),
        "mediapipe_us_per_packet": None if mediapipe_us is None else round(mediapipe_us, 2),
        "ratio": None if mediapipe_us is None else round(ours[10] / mediapipe_us, 3),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
