"""``ovgraph.server.Server`` built from a ``ServeConfig`` and run in-process (no subprocess)."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request

from ovgraph.config import DEFAULT_MAX_QUEUED, DEFAULT_REST_PORT, ServeConfig
from ovgraph.server import Server
from tests.conftest import TINY_MODEL, free_port
from tests.frontends._kserve_helpers import VLM, chat_body


def test_config_defaults_live_in_one_place() -> None:
    from ovgraph.cli import build_parser

    args = build_parser().parse_args(["serve"])
    config = ServeConfig.from_args(args)
    assert config.max_queued_requests == DEFAULT_MAX_QUEUED
    assert config.effective_rest_port == DEFAULT_REST_PORT
    assert config == ServeConfig(node_options=config.node_options)  # flags add no defaults
    assert "allowed_media_domains" in config.node_settings()  # a package's flag, passed on


def test_server_runs_in_process() -> None:
    port = free_port()
    config = ServeConfig(
        rest_port=port, rest_bind_address="127.0.0.1", model_path=str(TINY_MODEL),
        model_name=VLM, file_system_poll_wait_seconds=0,
    )
    started = threading.Event()
    holder: dict[str, Server] = {}

    def serve() -> None:
        from tornado.ioloop import IOLoop

        asyncio.set_event_loop(asyncio.new_event_loop())
        server = Server(config)
        server.start()
        holder["server"] = server
        started.set()
        IOLoop.current().start()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    server = holder["server"]
    for _ in range(300):
        if server.repository.all_available():
            break
        threading.Event().wait(0.1)
    data = json.dumps(chat_body(stream=False, max_tokens=3)).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v3/chat/completions", data=data,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert answer["usage"]["completion_tokens"] == 3
    server.loop.add_callback(server.drain)
    thread.join(30)
    assert not thread.is_alive()
    assert server.plane.draining


def test_llm_flags_come_from_the_llm_package(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ovgraph import plugins
    from ovgraph.cli import build_parser

    monkeypatch.delenv("OVGRAPH_ENGINE_RSS_LIMIT_MB", raising=False)
    args = build_parser().parse_args(["serve", "--engine_rss_limit_mb", "512",
                                      "--max_num_seqs", "4"])
    config = ServeConfig.from_args(args)
    assert config.node_settings()["max_num_seqs"] == 4
    plugins.apply_serve_flags(config.node_settings())
    assert __import__("os").environ["OVGRAPH_ENGINE_RSS_LIMIT_MB"] == "512"
    default = ServeConfig.from_args(build_parser().parse_args(["serve"]))
    assert default.node_settings()["engine_rss_limit_mb"] == 0  # off by default
