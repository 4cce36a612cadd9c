"""The /dashboard page in a real headless Chromium (skipped, with a message, without one)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ovgraph.graph_view import describe
from ovgraph.serving.repository import GraphEntry, ModelRepository
from ovgraph.testing import ServeProcess
from tests.conftest import REPO, free_port
from tests.frontends._browser import Browser, chromium_or_skip
from tests.frontends._graph_server import AppServer
from tests.frontends._served_graphs import (
    SHAPES_NODES,
    StreamingLoad,
    chat_body,
    get_json,
    post,
    set_served,
    write_repository,
)

SHAPES = REPO / "graphs" / "qwen2vl-shapes"
DEFAULT = "qwen2vl-shapes"
NODES_JS = "Array.from(document.querySelectorAll('g.node')).map(g => g.dataset.node)"


def _red_circle() -> str:
    image = Image.new("RGB", (64, 64), "white")
    from PIL import ImageDraw

    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=(220, 30, 30))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _chat(url: str, stream: bool = False, tokens: int = 8) -> None:
    body = {
        "model": DEFAULT, "max_completion_tokens": tokens, "stream": stream,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe the picture."},
            {"type": "image_url", "image_url": {"url": _red_circle()}},
        ]}],
    }
    if tokens > 8:
        body["ignore_eos"] = True
    request = urllib.request.Request(
        url + "/v3/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chrome = Browser(chromium_or_skip())
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def repository() -> Iterator[ModelRepository]:
    repo = ModelRepository({})
    repo.add(GraphEntry(name=DEFAULT, graph_path=SHAPES / "graph.pbtxt", base_path=SHAPES))
    (definition,) = repo.definitions()
    assert definition.available, definition.error
    yield repo
    definition.unload()


def _stats_of(browser: Browser, node: str) -> str:
    return browser.evaluate(
        f"document.querySelector('g.node[data-node=\"{node}\"] text.stats').textContent"
    )


def test_page_draws_every_node_and_its_counters_move(
    browser: Browser, repository: ModelRepository
) -> None:
    server = AppServer(repository)
    try:
        browser.console_errors.clear()
        browser.goto(server.url + "/dashboard")
        browser.wait_for(f"{NODES_JS}.length > 0")
        (definition,) = repository.definitions()
        assert definition.validated is not None
        expected = [n["name"] for n in describe(definition.validated, DEFAULT)["nodes"]]
        assert sorted(browser.evaluate(NODES_JS)) == sorted(expected)
        text = browser.evaluate("document.querySelector('svg.ovgraph-graph').textContent")
        for name in expected:
            assert name in text
        assert "loopback (back edge)" in text
        assert "subgraph LLMExecutor : HttpLLMCalculator" in text
        # No key on this server: the key form stays out of sight.
        assert browser.evaluate(
            "getComputedStyle(document.getElementById('key-form')).display") == "none"
        before = _stats_of(browser, "llmexecutor__generation")
        finished_before = browser.evaluate("document.querySelector('.runs-finished b').textContent")
        for _ in range(3):
            _chat(server.url)
        browser.wait_for(
            "document.querySelector('g.node[data-node=\"llmexecutor__generation\"] "
            f"text.stats').textContent !== {json.dumps(before)}", timeout=15,
        )
        after = _stats_of(browser, "llmexecutor__generation")
        assert after.startswith("calls ")
        assert int(after.split()[1]) >= 3
        browser.wait_for(
            "document.querySelector('.runs-finished b').textContent !== "
            f"{json.dumps(finished_before)}", timeout=15,
        )
        assert int(browser.evaluate(
            "document.querySelector('.runs-finished b').textContent")) == int(finished_before) + 3
        assert browser.console_errors == []
    finally:
        browser.goto("about:blank")
        server.stop()


def test_screenshot_under_load(browser: Browser, repository: ModelRepository) -> None:
    server = AppServer(repository)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            _chat(server.url, stream=True, tokens=96)

    workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    try:
        browser.console_errors.clear()
        browser.goto(server.url + "/dashboard")
        browser.wait_for(f"{NODES_JS}.length > 0")
        for worker in workers:
            worker.start()
        browser.wait_for("document.querySelectorAll('table.running tr').length > 1", 30)
        with contextlib.suppress(TimeoutError):  # a fuller picture: every client in flight
            browser.wait_for("document.querySelectorAll('table.running tr').length > 4", 10)
        png = browser.screenshot()
        image = Image.open(io.BytesIO(png))
        assert image.width >= 600 and image.height >= 600
        target = os.environ.get("OVGRAPH_DASHBOARD_SCREENSHOT")
        if target:
            Path(target).write_bytes(png)
        assert browser.console_errors == []
    finally:
        stop.set()
        for worker in workers:
            if worker.is_alive():
                worker.join(60)
        server.stop()


def test_page_asks_for_the_api_key(browser: Browser, repository: ModelRepository) -> None:
    server = AppServer(repository, api_key="s3cret")
    try:
        browser.goto(server.url + "/dashboard")
        browser.wait_for(
            "getComputedStyle(document.getElementById('key-form')).display !== 'none'"
        )
        assert browser.evaluate("document.querySelectorAll('g.node').length") == 0
        browser.evaluate(
            "document.getElementById('key-input').value = 'wrong';"
            "document.getElementById('key-form').requestSubmit(); true"
        )
        browser.wait_for(
            "document.getElementById('key-error').textContent === 'That key was refused.'"
        )
        browser.evaluate(
            "document.getElementById('key-input').value = 's3cret';"
            "document.getElementById('key-form').requestSubmit(); true"
        )
        browser.wait_for(f"{NODES_JS}.length === 6")
        assert browser.evaluate(
            "getComputedStyle(document.getElementById('key-form')).display") == "none"
    finally:
        browser.evaluate("sessionStorage.clear(); true")
        server.stop()


def test_assets_are_served_from_the_package(repository: ModelRepository) -> None:
    server = AppServer(repository)
    try:
        status, headers, body = server.request("GET", "/dashboard/assets/vendor/dagre.min.js")
        assert status == 200
        assert b"dagre" in body
        status, _h, page = server.request("GET", "/dashboard")
        assert status == 200
        assert headers["content-type"].startswith(("application/javascript", "text/javascript"))
        # Offline: the page loads nothing from another host.
        assert b"http://" not in page and b"https://" not in page
        status, _h, _body = server.request("GET", "/dashboard/assets/../../errors.py")
        assert status in (403, 404)
    finally:
        server.stop()


# ---------------------------------------------------------------- a real `ovgraph serve`

SECTION = "document.querySelector('section.graph[data-graph=\"{graph}\"]')"


def _section_nodes(browser: Browser, graph: str) -> list[str]:
    return browser.evaluate(
        f"Array.from({SECTION.format(graph=graph)}.querySelectorAll('g.node'))"
        ".map(g => g.dataset.node)"
    ) or []


def _section_count(browser: Browser, graph: str, counter: str) -> int:
    return int(browser.evaluate(
        f"{SECTION.format(graph=graph)}.querySelector('.runs-{counter} b').textContent"
    ))


def _grpc_two(port: int, values: list[int]) -> None:
    """One unary infer and one ModelStreamInfer request on the ``two`` graph, with grpcio."""
    import numpy as np
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        tensor = tg.InferInput("in", [1], "INT32")
        tensor.set_data_from_numpy(np.array(values[:1], dtype=np.int32))
        assert client.infer("two", [tensor]).as_numpy("out").tolist() == values[:1]
        answers: list[Any] = []
        client.start_stream(callback=lambda result, error: answers.append(error or result))
        tensor.set_data_from_numpy(np.array(values[1:2], dtype=np.int32))
        client.async_stream_infer("two", [tensor])
        deadline = time.monotonic() + 30
        while not answers and time.monotonic() < deadline:
            time.sleep(0.05)
        client.stop_stream()
        assert [a.as_numpy("out").tolist() for a in answers] == [values[1:2]]
    finally:
        client.close()


@pytest.mark.e2e
def test_served_page_follows_streams_grpc_and_a_reload(
    browser: Browser, tmp_path: Path
) -> None:
    """The page on `ovgraph serve --config_path`: every node, a streamed request in flight,
    gRPC requests counted, then a config reload that replaces one graph and adds another."""
    config = write_repository(tmp_path)
    grpc_port = free_port()
    server = ServeProcess(
        ["--config_path", str(config), "--port", str(grpc_port), "--metrics_enable",
         "--file_system_poll_wait_seconds", "0"], cwd=REPO,
    ).wait_ready()
    load: StreamingLoad | None = None
    try:
        browser.console_errors.clear()
        browser.goto(server.url + "/dashboard")
        browser.wait_for(f"{SECTION.format(graph='two')} && "
                         f"{SECTION.format(graph='shapes')}.querySelectorAll('g.node').length")
        assert sorted(_section_nodes(browser, "shapes")) == sorted(SHAPES_NODES)
        assert sorted(_section_nodes(browser, "two")) == ["first", "second"]

        # A streamed request in flight shows as running, in the JSON and on the page.
        load = StreamingLoad(server.url, "shapes")
        deadline = time.monotonic() + 30
        running: list[Any] = []
        while not running and time.monotonic() < deadline:
            running = get_json(server.url + "/v1/graphs/shapes")["running"]
        assert running, "no run of shapes seen in flight"
        assert {"run_id", "age_ms", "nodes_running"} <= running[0].keys()
        browser.wait_for(
            f"{SECTION.format(graph='shapes')}.querySelectorAll('table.running tr').length > 1"
        )

        # gRPC requests (unary and streamed) are runs like REST ones.
        before = _section_count(browser, "two", "finished")
        _grpc_two(grpc_port, [3, 4])
        view = get_json(server.url + "/v1/graphs/two")
        assert view["runs"]["finished"] == before + 2
        assert [n["process_calls"] for n in view["nodes"]] == [before + 2] * 2
        browser.wait_for(f"{SECTION.format(graph='two')}.querySelector('.runs-finished b')"
                         f".textContent === '{before + 2}'")
        with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
            metrics = response.read().decode()
        assert ('ovgraph_node_calls_total{calculator="PassThroughCalculator",graph="two",'
                f'node="second"}} {before + 2}.0') in metrics

        # Reload: "two" goes, "shapes2" comes; the stream in flight goes on.
        set_served(config, ("shapes", "shapes2"))
        status, answer = post(server.url + "/v1/config/reload", {})
        assert status == 200, answer
        listed = {g["name"]: g for g in get_json(server.url + "/v1/graphs")["graphs"]}
        assert set(listed) == {"shapes", "shapes2"}
        assert listed["shapes2"]["runs"]["started"] == 0
        browser.wait_for(f"!{SECTION.format(graph='two')} && "
                         f"{SECTION.format(graph='shapes2')}.querySelectorAll('g.node').length")
        assert sorted(_section_nodes(browser, "shapes2")) == sorted(SHAPES_NODES)
        status, _ = post(server.url + "/v3/chat/completions", chat_body("shapes2"))
        assert status == 200
        assert get_json(server.url + "/v1/graphs/shapes2")["runs"]["finished"] == 1
        browser.wait_for(f"{SECTION.format(graph='shapes2')}.querySelector('.runs-finished b')"
                         ".textContent === '1'")
        generation = browser.evaluate(
            f"{SECTION.format(graph='shapes2')}.querySelector("
            "'g.node[data-node=\"llmexecutor__generation\"] text.stats').textContent"
        )
        assert generation.startswith("calls 1")
        finished = load.done
        load.stop()
        assert load.failures == []
        assert load.done >= finished >= 1
        load = None
        assert browser.console_errors == []
    finally:
        browser.goto("about:blank")  # the page stops polling before its server goes
        if load is not None:
            load.stop()
        server.stop()


@pytest.mark.e2e
def test_served_embedded_default_on_the_page(
    browser: Browser, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`ovgraph serve --api_key_file` without model arguments: the page asks for the key, then
    draws the embedded model's graph and follows a streamed request."""
    monkeypatch.delenv("OVGRAPH_DEFAULT_MODEL", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    auth = {"Authorization": "Bearer s3cret"}
    server = ServeProcess(["--api_key_file", str(key_file)], cwd=REPO)
    try:
        server.wait_ready()
        with pytest.raises(urllib.error.HTTPError) as refused:
            get_json(server.url + "/v1/graphs")
        assert refused.value.code == 401
        (graph,) = get_json(server.url + "/v1/graphs", headers=auth)["graphs"]
        assert graph["state"] == "AVAILABLE"
        browser.goto(server.url + "/dashboard")
        browser.wait_for(
            "getComputedStyle(document.getElementById('key-form')).display !== 'none'"
        )
        browser.evaluate(
            "document.getElementById('key-input').value = 's3cret';"
            "document.getElementById('key-form').requestSubmit(); true"
        )
        browser.wait_for(f"{NODES_JS}.length === 6")
        browser.console_errors.clear()  # the refused first reading (401) is logged
        assert sorted(browser.evaluate(NODES_JS)) == sorted(SHAPES_NODES)
        before = _section_count(browser, graph["name"], "finished")
        status, body = post(server.url + "/v3/chat/completions",
                            chat_body(graph["name"], stream=True, tokens=16), headers=auth)
        assert status == 200 and b"data: [DONE]" in body
        browser.wait_for(f"{SECTION.format(graph=graph['name'])}.querySelector("
                         f"'.runs-finished b').textContent === '{before + 1}'")
        assert browser.console_errors == []
    finally:
        browser.evaluate("sessionStorage.clear(); true")
        browser.goto("about:blank")
        server.stop()
