"""The /dashboard page in a real headless Chromium (skipped, with a message, without one)."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from ovgraph.graph_view import describe
from ovgraph.serving.repository import GraphEntry, ModelRepository
from tests.conftest import REPO
from tests.frontends._browser import Browser, chromium_or_skip
from tests.frontends._graph_server import AppServer

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
