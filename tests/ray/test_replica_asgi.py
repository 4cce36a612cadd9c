"""A Ray replica's request path without Ray: ASGI calls into ovgraph's REST application.

The replica serves ASGI (what Ray Serve's proxy sends) through the Tornado application and the
data plane of ``ovgraph serve``; these tests drive that ASGI app directly on the tiny fixture
model: answers and their error shapes, chunk-by-chunk streaming, a client that leaves, the body
limit, the API key, drain on shutdown, and the health a replica reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovgraph.config import ServeConfig
from ovgraph.ray_serve.asgi import TornadoASGI
from ovgraph.ray_serve.replica import ReplicaServer, build_replica_repository
from ovgraph.testing import child_pids
from tests.conftest import TINY_MODEL

MODEL = "qwen2vl-tiny"
KEY = "s3cret-key"


def _chat(stream: bool, max_tokens: int = 8, **extra: Any) -> bytes:
    return json.dumps({
        "model": MODEL, "messages": [{"role": "user", "content": "Describe a teapot."}],
        "max_tokens": max_tokens, "temperature": 0, "stream": stream, **extra,
    }).encode()


class Replica:
    """A ``ReplicaServer`` on a loop thread of its own, called as Ray's proxy would."""

    def __init__(self, config: ServeConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ReplicaServer(config, self.loop)
        self.asgi: TornadoASGI = self.server.asgi

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def call(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
        *, leave_after_chunks: int | None = None, root_path: str = "",
    ) -> tuple[int, dict[str, str], list[bytes]]:
        """One ASGI HTTP call: (status, headers, body pieces as sent)."""
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        gone = asyncio.Event()
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if pending:
                return pending.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            pieces = [m for m in sent if m["type"] == "http.response.body" and m["body"]]
            if leave_after_chunks is not None and len(pieces) >= leave_after_chunks:
                gone.set()

        raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        scope = {
            "type": "http", "method": method, "path": root_path + path,
            "raw_path": (root_path + path).encode(), "root_path": root_path,
            "query_string": b"", "headers": raw, "client": ("127.0.0.1", 5555),
        }
        await self.asgi(scope, receive, send)
        start = sent[0]
        assert start["type"] == "http.response.start"
        head = {k.decode(): v.decode() for k, v in start["headers"]}
        pieces = [m["body"] for m in sent[1:] if m["body"]]
        return start["status"], head, pieces

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def replica() -> Iterator[Replica]:
    r = Replica(ServeConfig(model_path=str(TINY_MODEL), max_body_size=4096))
    yield r
    r.close()


def test_unary_chat_and_models(replica: Replica) -> None:
    status, head, pieces = replica.run(replica.call("POST", "/v3/chat/completions", _chat(False)))
    assert status == 200, pieces
    answer = json.loads(b"".join(pieces))
    assert answer["choices"][0]["message"]["content"]
    assert answer["usage"]["completion_tokens"] <= 8
    assert "server" not in head and "connection" not in head  # the ASGI server frames
    status, _, pieces = replica.run(replica.call("GET", "/v3/models"))
    assert status == 200
    assert [m["id"] for m in json.loads(b"".join(pieces))["data"]] == [MODEL]


def test_stream_arrives_chunk_by_chunk(replica: Replica) -> None:
    status, head, pieces = replica.run(
        replica.call("POST", "/v3/chat/completions", _chat(True, max_tokens=40, ignore_eos=True))
    )
    assert status == 200
    assert head["content-type"].startswith("text/event-stream")
    # One ASGI message per write of the graph: whole SSE events, not one buffered body.
    assert len(pieces) >= 2
    assert all(p.startswith(b"data: ") and p.endswith(b"\n\n") for p in pieces)
    assert pieces[-1].endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        # the same validation and error shape as ovgraph serve
        ("POST", "/v3/chat/completions", b"{nope", 400, "Cannot parse JSON body"),
        ("POST", "/v3/chat/completions", b'{"model": "missing"}', 404, "not found"),
        ("GET", "/v1/not-a-route", b"", 404, "Invalid request URL"),
        # the body limit (4096 bytes here) answers 413, not a dropped connection
        ("POST", "/v3/chat/completions", b'{"model": "' + b"x" * 5000 + b'"}', 413, "limit"),
    ],
)
def test_errors_in_the_api_shape(
    replica: Replica, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    got, head, pieces = replica.run(replica.call(
        method, path, body, {"Content-Length": str(len(body))} if body else None
    ))
    assert got == status
    assert head["content-type"] == "application/json"
    assert message in json.loads(b"".join(pieces))["error"]["message"]


def test_route_prefix_is_stripped(replica: Replica) -> None:
    """An application mounted at ``/model`` (one application per model) routes below it."""
    status, _, pieces = replica.run(replica.call("GET", "/v3/models", root_path="/tiny"))
    assert status == 200, pieces


def test_client_leaving_cancels_the_run(replica: Replica) -> None:
    plane = replica.server.plane
    status, _, pieces = replica.run(replica.call(
        "POST", "/v3/chat/completions", _chat(True, max_tokens=2000, ignore_eos=True),
        leave_after_chunks=2,
    ))
    assert status == 200
    assert len(pieces) < 50  # it stopped soon after the client left
    deadline = time.monotonic() + 10
    while plane.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert plane.active == 0


def test_api_key_is_required_for_model_routes(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    r = Replica(ServeConfig(model_path=str(TINY_MODEL), api_key_file=str(key_file)))
    try:
        status, head, pieces = r.run(r.call("POST", "/v3/chat/completions", _chat(False)))
        assert status == 401
        assert head["www-authenticate"].startswith("Bearer")
        assert "api-key" in json.loads(b"".join(pieces))["error"]["message"]
        status, _, _ = r.run(r.call("POST", "/v3/chat/completions", _chat(False),
                                    {"Authorization": f"Bearer {KEY}"}))
        assert status == 200
        status, _, _ = r.run(r.call("GET", "/v3/models"))  # read-only: no key needed
        assert status == 200
    finally:
        r.close()


def test_shutdown_drains_then_refuses() -> None:
    r = Replica(ServeConfig(model_path=str(TINY_MODEL), drain_timeout=30))
    try:
        async def scenario() -> tuple[Any, Any, Any]:
            long = asyncio.ensure_future(r.call(
                "POST", "/v3/chat/completions", _chat(True, max_tokens=60, ignore_eos=True)))
            for _ in range(500):  # until the run is admitted
                if r.server.plane.active:
                    break
                await asyncio.sleep(0.01)
            shutdown = asyncio.ensure_future(r.asgi.on_shutdown())  # type: ignore[misc]
            await asyncio.sleep(0.05)
            refused = await r.call("POST", "/v3/chat/completions", _chat(False))
            return await long, refused, await shutdown

        (status, _, pieces), refused, _ = r.run(scenario())
        assert status == 200
        assert pieces[-1].endswith(b"data: [DONE]\n\n")  # finished, not cut
        assert b'"finish_reason":"length"' in b"".join(pieces)  # all 60 tokens
        assert refused[0] == 503
    finally:
        r.close()


def test_health_reports_a_dead_engine(replica: Replica) -> None:
    assert replica.server.problem() is None
    engines = sorted({
        pid for d in replica.server.repository.definitions()
        for resource in d.resources.values() for pid in resource.servable.engine.pids()
    })
    assert engines, "the fixture model runs its engine in a child process"
    before = set(engines)
    for pid in engines:
        os.kill(pid, signal.SIGKILL)
    seen = None
    deadline = time.monotonic() + 10
    while seen is None and time.monotonic() < deadline:
        seen = replica.server.problem()
        time.sleep(0.01)
    assert seen is not None and "Engine" in seen
    deadline = time.monotonic() + 60
    while replica.server.problem() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert replica.server.problem() is None  # the engine restarted: healthy again
    assert set(child_pids(os.getpid())) - before  # in a new process


def test_one_model_of_a_repository(tmp_path: Path) -> None:
    """``model_name`` with ``config_path``: one Serve application per model."""
    from ovgraph.errors import GraphConfigError

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [], "mediapipe_config_list": [
        {"name": "a", "base_path": str(TINY_MODEL)},
        {"name": "b", "base_path": str(tmp_path / "b")},
    ]}))
    repository = build_replica_repository(ServeConfig(config_path=str(config), model_name="a"))
    try:
        assert [d.name for d in repository.definitions()] == ["a"]
    finally:
        for definition in repository.definitions():
            for resource in definition.resources.values():
                getattr(resource, "stop", lambda: None)()
    with pytest.raises(GraphConfigError, match='"c" is not in'):
        build_replica_repository(ServeConfig(config_path=str(config), model_name="c"))


def test_a_graph_that_fails_to_load_fails_the_replica(tmp_path: Path) -> None:
    """Ray then reports the error and stops retrying, instead of restarting the replica."""
    from ovgraph.errors import GraphConfigError

    (tmp_path / "graph.pbtxt").write_text('node { calculator: "NoSuchCalculator" }\n')
    with pytest.raises(GraphConfigError, match="NoSuchCalculator"):
        ReplicaServer(ServeConfig(model_path=str(tmp_path), model_name="broken"))
