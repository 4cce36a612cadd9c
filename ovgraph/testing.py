"""Test harness: graphs and calculators in-process, or a whole server in a subprocess.

``run_graph`` / ``run_calculator`` play MediaPipe's CalculatorRunner; ``serve_http`` and
``serve_kserve`` send one request through a servable under the data plane, as the frontends do;
``ServeProcess`` starts ``ovgraph serve`` for end-to-end tests and benchmarks.

::

    out = run_calculator(
        'calculator: "PassThroughCalculator" input_stream: "in" output_stream: "out"',
        inputs={"in": [(0, "a"), (1, "b")]},
    )
    assert out["out"] == [(0, "a"), (1, "b")]
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ovgraph.framework.graph import CalculatorGraph
from ovgraph.framework.packet import Packet
from ovgraph.framework.tag_map import parse_spec
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph

__all__ = [
    "ServeProcess",
    "child_pids",
    "free_port",
    "run_calculator",
    "run_graph",
    "serve_http",
    "serve_kserve",
]


def run_graph(
    config: str | ValidatedGraph,
    inputs: Iterable[tuple[str, int, Any]] = (),
    side_packets: Mapping[str, Any] | None = None,
    observe: list[str] | None = None,
    close: bool = True,
    timeout: float = 10.0,
    observe_timestamp_bounds: bool = False,
    resources: Mapping[str, Any] | None = None,
) -> dict[str, list[tuple[int, Any]]]:
    """Run a graph once and return the packets seen on each observed stream.

    Args:
        config: graph text or a validated graph.
        inputs: ``(stream, timestamp, payload)`` triples, added in order.
        side_packets: input side packets for ``start_run``.
        observe: streams to observe (default: every graph output stream).
        close: close all packet sources and wait until done (else wait until idle).
        timeout: seconds to wait before raising ``TimeoutError``.
        observe_timestamp_bounds: also record bound moves as ``(bound - 1, None)``.
        resources: per-node resources keyed by node name.

    Returns:
        ``{stream: [(timestamp, payload), ...]}``; bound-only entries carry payload None.

    Raises:
        Whatever the run raises: ``GraphConfigError`` subclasses for invalid graphs,
        ``CalculatorError`` (or an ``ExceptionGroup`` of them) for failed runs.
    """
    graph = CalculatorGraph(config, resources=resources)
    names = observe if observe is not None else graph.graph.graph_outputs.names()
    results: dict[str, list[tuple[int, Any]]] = {name: [] for name in names}
    lock = threading.Lock()

    def make_callback(name: str) -> Any:
        def callback(_stream: str, packet: Packet) -> None:
            with lock:
                results[name].append(
                    (packet.timestamp, None if packet.is_empty else packet.payload)
                )

        return callback

    for name in names:
        graph.observe_output_stream(name, make_callback(name), observe_timestamp_bounds)
    graph.start_run(side_packets)
    try:
        for stream, timestamp, payload in inputs:
            graph.add_packet_to_input_stream(stream, Packet(payload, timestamp))
    except Exception:
        graph.cancel()
        raise
    if close:
        graph.close(timeout)
    else:
        graph.wait_until_idle(timeout)
    return results


def run_calculator(
    node: str,
    inputs: Mapping[str, Iterable[tuple[int, Any]]] | None = None,
    side_packets: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
    resources: Any = None,
) -> dict[str, list[tuple[int, Any]]]:
    """Run one node, given as the text inside ``node { … }``, on timed inputs.

    Inputs are keyed by stream name (or full spec); every output stream of the node is
    observed. Input packets are added in timestamp order across streams.
    """
    parsed = parse_graph_config(f"node {{ {node} }}")
    config = parsed.config
    node_cfg = config.node[0]
    back_edges = {info.tag_index for info in node_cfg.input_stream_info if info.back_edge}
    for spec in node_cfg.input_stream:
        tag, index, name = parse_spec(spec)
        tag_index = f"{tag}:{index or 0}" if tag else ""
        if tag_index in back_edges or tag in back_edges:
            continue
        config.input_stream.append(name)
    for spec in node_cfg.output_stream:
        config.output_stream.append(parse_spec(spec)[2])
    validated = ValidatedGraph(parsed)
    timed = []
    for key, packets in (inputs or {}).items():
        name = parse_spec(key)[2]
        timed.extend((ts, order, name, payload) for order, (ts, payload) in enumerate(packets))
    timed.sort(key=lambda item: (item[0], item[1]))
    node_name = validated.nodes[0].name
    return run_graph(
        validated,
        [(name, ts, payload) for ts, _, name, payload in timed],
        side_packets=side_packets,
        timeout=timeout,
        resources={node_name: resources} if resources is not None else None,
    )


_PLANE: Any = None
_PLANE_LOCK = threading.Lock()


def _plane() -> Any:
    global _PLANE
    from ovgraph.serving.dataplane import DataPlane

    with _PLANE_LOCK:
        if _PLANE is None:
            _PLANE = DataPlane(request_timeout=0)
        return _PLANE


def serve_http(definition: Any, payload: Any, timeout: float = 60.0) -> bytes | list[bytes]:
    """One HTTP payload through ``definition``: the body, or the chunks of a streamed answer."""
    import asyncio

    from ovgraph.serving import http

    plane = _plane()

    async def call() -> bytes | list[bytes]:
        async with plane.execution(definition, http.http_outputs(definition)) as execution:
            answer = await http.serve_http(execution, payload)
            if isinstance(answer, http.HttpBody):
                return answer.body
            return [chunk async for chunk in answer]

    async def bounded() -> bytes | list[bytes]:
        return await asyncio.wait_for(call(), timeout)

    result: bytes | list[bytes] = plane.call(bounded())
    return result


def serve_kserve(definition: Any, request: Any, timeout: float = 60.0) -> Any:
    """One KServe ``InferRequest`` through ``definition``; returns the response."""
    import asyncio

    from ovgraph.serving import kserve

    plane = _plane()

    async def call() -> Any:
        async with plane.execution(definition) as execution:
            return await kserve.infer(execution, request)

    async def bounded() -> Any:
        return await asyncio.wait_for(call(), timeout)

    return plane.call(bounded())


def child_pids(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (Linux ``/proc``), e.g. a server's engines."""
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


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """``ovgraph serve`` in a subprocess, its REST API on a free loopback port.

    Args:
        args: serve flags (the REST port and address are added).
        env: variables added to this process's environment.
        cwd: working directory of the server.
        log_dir: where ``<log_name>-<port>.log`` collects the server's output (default
            ``$TMPDIR`` or ``/tmp``).
        log_name: prefix of the log file name.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: str | Path | None = None,
        log_dir: str | Path | None = None,
        log_name: str = "ovgraph-serve",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder = Path(log_dir or os.environ.get("TMPDIR", "/tmp"))
        self.log_path = folder / f"{log_name}-{self.port}.log"
        self._log = self.log_path.open("wb")
        cmd = [
            sys.executable, "-m", "ovgraph.cli", "serve",
            "--rest_port", str(self.port), "--rest_bind_address", "127.0.0.1", *args,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
            env={**os.environ, **(env or {})},
        )

    def wait_ready(self, timeout: float = 120.0) -> ServeProcess:
        """Block until ``/v2/health/ready`` answers 200.

        Raises:
            RuntimeError: the server exited (its log is in the message).
            TimeoutError: not ready within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.logs()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as response,
            ):
                if response.status == 200:
                    return self
            time.sleep(0.2)
        raise TimeoutError(f"server not ready:\n{self.logs()}")

    def logs(self) -> str:
        """Everything the server printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then wait (kill after 30 s); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)
