"""A local Ray cluster of simulated nodes, sealed in network and PID namespaces of its own.

For tests and benchmarks. :class:`LocalCluster` starts this module as ``unshare --net --pid
--fork --mount-proc python -m ovgraph.ray_serve.local_cluster`` (root only): inside, only a
loopback interface exists, so Ray's node-to-node traffic, its GCS and its proxies never leave
it, and every Ray process ends with the namespace when this module's process (its PID 1) exits
— nothing is ever stopped by name. The dashboard is off.

The only doors are two listening sockets the parent opens on its own loopback and hands over
(inherited descriptors keep their namespace): bytes accepted on them are relayed to Ray's HTTP
and gRPC proxies inside. The parent then drives the cluster with one JSON command per line on
stdin (``status``, ``replica_pids``, ``kill``, ``deploy``), reading one JSON answer per line.

::

    with LocalCluster(nodes=2, app_args={"num_replicas": 2}) as cluster:
        openai.OpenAI(base_url=cluster.url + "/v3", api_key="-") ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

__all__ = ["APP_NAME", "GRPC_PORT", "HTTP_PORT", "INGRESS_ENV", "LocalCluster", "can_isolate",
           "deploy", "start_serve_cluster"]

APP_NAME = "ovgraph"
HTTP_PORT = 8000
GRPC_PORT = 9000
#: Ray Serve's ingress modes and the variables that select them (read by every Ray process).
#: ``haproxy``: Ray's HAProxy in front of replicas that serve HTTP and gRPC themselves (direct
#: ingress) with its throughput-optimised settings; ``proxy``: Ray's Python proxy actor, which
#: hands each request to a replica through actor calls. Behind HAProxy, a request whose replica
#: closed the connection without answering (killed while holding it) goes to another replica.
INGRESS_ENV: dict[str, dict[str, str]] = {
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response"},
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"},
}


def can_isolate() -> bool:
    """Whether namespaces can be made here (root and ``unshare``/``ip`` present)."""
    from shutil import which

    return os.geteuid() == 0 and bool(which("unshare")) and bool(which("ip"))


class LocalCluster:
    """The parent's side: start, command and end the namespaced cluster.

    Args:
        nodes: simulated nodes (the head included), ``cpus_per_node`` CPUs each.
        app_args: ``build_app`` arguments of the application.
        env: variables for the Ray processes (e.g. ``OVGRAPH_DEFAULT_MODEL``).
        ingress: ``haproxy`` or ``proxy`` (:data:`INGRESS_ENV`).
        log_path: where the cluster's output goes.
    """

    def __init__(
        self,
        nodes: int = 2,
        app_args: Mapping[str, Any] | None = None,
        *,
        cpus_per_node: float = 1,
        env: Mapping[str, str] | None = None,
        ingress: str = "haproxy",
        log_path: str | Path | None = None,
        timeout: float = 240.0,
    ) -> None:
        self._listeners = [_listen(), _listen()]
        self.url = f"http://127.0.0.1:{self._listeners[0].getsockname()[1]}"
        self.grpc_target = f"127.0.0.1:{self._listeners[1].getsockname()[1]}"
        self.ingress = ingress
        self.log_path = Path(log_path or tempfile.mktemp(prefix="ovgraph-ray-", suffix=".log"))
        self._log = self.log_path.open("wb")
        spec = {
            "nodes": nodes, "cpus": cpus_per_node, "app_args": dict(app_args or {}),
            "fds": [s.fileno() for s in self._listeners],
        }
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child",
             sys.executable, "-m", "ovgraph.ray_serve.local_cluster", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            pass_fds=spec["fds"], env={**os.environ, **INGRESS_ENV[ingress], **(env or {})},
        )
        self._lock = threading.Lock()
        try:
            ready = self._read(timeout)
        except BaseException:
            self.close()
            raise
        if not ready.get("ok"):
            self.close()
            raise RuntimeError(f"the cluster did not start: {ready}\n{self.logs()[-4000:]}")
        self.started_in = float(ready.get("seconds", 0))

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def command(self, op: str, timeout: float = 240.0, **fields: Any) -> dict[str, Any]:
        """Send one command, return its answer (``{"ok": …, …}``)."""
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
            return self._read(timeout)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()),
                                  daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise RuntimeError(f"the cluster did not answer:\n{self.logs()[-4000:]}")
        return json.loads(result[0])  # type: ignore[no-any-return]

    def logs(self) -> str:
        """Everything the cluster printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        """End the namespace: its first process exits, the kernel ends every other one."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # unshare --kill-child: the namespace goes with it
                self.proc.wait()
        for sock in self._listeners:
            sock.close()
        self._log.close()


def _listen() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


# ---------------------------------------------------------------------- inside the namespace


def _relay(loop: asyncio.AbstractEventLoop, fd: int, port: int) -> None:
    """Accept on the inherited socket ``fd``; pipe each connection to ``127.0.0.1:port``."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            inner_reader, inner_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, inner_writer), pipe(inner_reader, writer))

    async def start() -> None:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        await asyncio.start_server(handle, sock=sock)

    asyncio.run_coroutine_threadsafe(start(), loop).result()


def _replica_pids() -> list[int]:
    """Ray's replica processes of this namespace (the only ones this /proc shows)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                if b"ServeReplica:" in title:
                    found.append(int(entry.name))
    return sorted(found)


def _memory() -> dict[str, float]:
    """Resident memory (MiB) of this namespace's processes, summed by process title."""
    found: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == "1":
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            rss = next(line for line in (entry / "status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
            key = argv[0].split(" ")[0]
            if not key.startswith("ray::"):
                key = key.rsplit("/", 1)[-1]
                if key.startswith("python") and len(argv) > 1:  # name the script or module
                    script = argv[2] if argv[1] == "-m" and len(argv) > 2 else argv[1]
                    key = f"python {script.rsplit('/', 1)[-1]}"
            found[key] = found.get(key, 0.0) + int(rss.split()[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(found.items())}


def _status(serve: Any) -> dict[str, Any]:
    """Every application's status and replica states (``replicas``: those of ``APP_NAME``)."""
    apps = {}
    for name, app in serve.status().applications.items():
        replicas: dict[str, int] = {}
        for deployment in app.deployments.values():
            for state, count in deployment.replica_states.items():
                replicas[str(state)] = replicas.get(str(state), 0) + count
        apps[name] = {"status": str(app.status).rsplit(".", 1)[-1], "replicas": replicas}
    main = apps.get(APP_NAME, {})
    return {"ok": True, "apps": apps, "app": main.get("status"),
            "replicas": main.get("replicas", {})}


def _serve_run_file(address: str, path: str) -> float:
    """``serve run FILE --non-blocking`` against this cluster (the CLI users run)."""
    started = time.monotonic()
    serve_cli = Path(sys.executable).with_name("serve")
    subprocess.run([str(serve_cli), "run", "--address", address, path, "--non-blocking"],
                   check=True, stdout=sys.stderr, stderr=sys.stderr, timeout=300)
    return time.monotonic() - started


def deploy(serve: Any, app_args: Mapping[str, Any]) -> float:
    """(Re)deploy the application ``APP_NAME`` with ``build_app(app_args)``; seconds it took."""
    from ovgraph.ray_serve import build_app

    started = time.monotonic()
    serve.run(build_app(app_args), name=APP_NAME, route_prefix="/", blocking=False)
    return time.monotonic() - started


def _answer(out: TextIO, value: Mapping[str, Any]) -> None:
    out.write(json.dumps(value) + "\n")
    out.flush()


def start_serve_cluster(nodes: int, cpus: float) -> Any:
    """Inside a fresh network namespace: a Ray cluster of ``nodes`` simulated nodes with Serve.

    Brings the loopback interface up, starts the head (dashboard off) and the other nodes on
    127.0.0.1, connects this process as the driver and starts Serve with its HTTP proxy on
    127.0.0.1:8000 and its gRPC proxy (KServe) on 127.0.0.1:9000, both on the head node only.
    Returns the ``ray.cluster_utils.Cluster``. Never call it outside a namespace of its own.
    """
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray-"))
    os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from ovgraph.ray_serve.deployment import GRPC_SERVICER_FUNCTION

    node = {"num_cpus": cpus, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args=dict(node))
    for _ in range(int(nodes) - 1):
        cluster.add_node(num_cpus=cpus, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address, logging_level="WARNING")
    serve.start(
        proxy_location="HeadOnly",
        http_options={"host": "127.0.0.1", "port": HTTP_PORT},
        grpc_options={"port": GRPC_PORT, "grpc_servicer_functions": [GRPC_SERVICER_FUNCTION]},
    )
    return cluster


def _inside(spec: dict[str, Any]) -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # Ray prints; the command channel stays clean
    started = time.monotonic()
    from ray import serve

    cluster = start_serve_cluster(int(spec["nodes"]), spec["cpus"])
    try:
        deploy(serve, spec["app_args"])
    except Exception as exc:
        _answer(out, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    _relay(loop, spec["fds"][0], HTTP_PORT)
    _relay(loop, spec["fds"][1], GRPC_PORT)
    _answer(out, {"ok": True, "seconds": time.monotonic() - started})
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        try:
            if op == "status":
                answer = _status(serve)
            elif op == "memory":
                answer = {"ok": True, "rss_mib": _memory()}
            elif op == "replica_pids":
                answer = {"ok": True, "pids": _replica_pids()}
            elif op == "kill":
                pid = int(request["pid"])
                if pid not in _replica_pids():
                    raise ValueError(f"{pid} is not a replica of this cluster")
                os.kill(pid, 9)
                answer = {"ok": True}
            elif op == "deploy":
                answer = {"ok": True, "seconds": deploy(serve, request["app_args"])}
            elif op == "serve_run":
                answer = {"ok": True, "seconds": _serve_run_file(cluster.address,
                                                                 request["path"])}
            elif op == "delete":
                serve.delete(request["name"])
                answer = {"ok": True}
            else:
                answer = {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        _answer(out, answer)
    return 0  # stdin closed: leaving ends the namespace and every Ray process in it


if __name__ == "__main__":
    if os.getpid() != 1:
        sys.exit("run through LocalCluster (it must be PID 1 of its own namespace)")
    code = _inside(json.loads(sys.argv[1]))
    sys.stderr.flush()
    os._exit(code)  # as PID 1: the kernel now ends every process of the namespace
