"""``ovgraph draw --format svg|html``: the dashboard's picture of a graph file, offline."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ovgraph.cli import main
from ovgraph.graph_picture import graph_view_of_file, render_svg
from ovgraph.graph_tools import draw_command

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "graphs" / "qwen2vl-tiny" / "graph.pbtxt"
SVG = "{http://www.w3.org/2000/svg}"


def draw_file(path: str, fmt: str) -> tuple[int, str]:
    """``ovgraph draw --format fmt``: the exit code and what it printed (stdout, else stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = draw_command(path, out, err, fmt=fmt)
    return code, out.getvalue() or err.getvalue()

TWO_EXECUTORS = """
input_stream: "in"
output_stream: "out"
executor { name: "io" options { [mediapipe.ThreadPoolExecutorOptions.ext] { num_threads: 2 } } }
node { name: "fast" calculator: "PassThroughCalculator" input_stream: "in" output_stream: "mid" }
node { name: "slow" calculator: "PassThroughCalculator" input_stream: "mid" output_stream: "out"
       executor: "io" }
"""


def _nodes(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {g.get("data-node"): g for g in root.iter(f"{SVG}g") if g.get("class") == "node"}


def test_svg_of_the_vlm_graph_shows_the_expanded_subgraph() -> None:
    code, svg = draw_file(str(TINY), "svg")
    assert code == 0
    root = ET.fromstring(svg)  # well-formed SVG
    assert root.tag == f"{SVG}svg"
    nodes = _nodes(svg)
    assert set(nodes) == {
        f"llmexecutor__{n}"
        for n in ("request", "images", "template", "generation", "detokenizer", "response")
    }
    texts = {t.get("class"): t.text for t in nodes["llmexecutor__generation"].iter(f"{SVG}text")}
    assert texts["calculator"] == "VLMGenerationCalculator"
    assert texts["stats"].startswith("calls")
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "subgraph"]
    assert [g.get("data-subgraph") for g in groups] == ["LLMExecutor"]
    assert "HttpLLMCalculator" in "".join(groups[0].itertext())
    back = [g for g in root.iter(f"{SVG}g") if "back-edge" in (g.get("class") or "")]
    assert [g.get("data-stream") for g in back] == ["loopback"]
    streams = {g.get("data-stream") for g in root.iter(f"{SVG}g")
               if (g.get("class") or "").startswith("stream")}
    assert {"input", "output", "llmexecutor__tokens"} <= streams
    pills = {g.get("class") for g in root.iter(f"{SVG}g")} & {"graph-input", "graph-output"}
    assert pills == {"graph-input", "graph-output"}


def test_executors_are_coloured_and_named_in_a_legend(tmp_path: Path) -> None:
    path = tmp_path / "graph.pbtxt"
    path.write_text(TWO_EXECUTORS)
    svg = render_svg(graph_view_of_file(path))
    nodes = _nodes(svg)
    fills = {name: g.find(f"{SVG}rect").get("fill") for name, g in nodes.items()}
    assert fills["fast"] != fills["slow"]
    assert nodes["slow"].get("data-executor") == "io"
    legend = " ".join("".join(g.itertext()) for g in ET.fromstring(svg).iter(f"{SVG}g")
                      if g.get("class") == "legend")
    assert "executor io" in legend
    assert "default executor" in legend


def test_html_is_one_offline_page(tmp_path: Path) -> None:
    code, html = draw_file(str(TINY), "html")
    assert code == 0
    assert "<script src" not in html  # everything inlined
    assert not re.search(r"""(src|href)=["']https?:""", html)
    assert "ovgraphDraw(" in html
    assert "dagre" in html
    start = html.index("ovgraphDraw({") + len("ovgraphDraw(")
    view, _end = json.JSONDecoder().raw_decode(html, start)
    assert len(view["nodes"]) == 6


def test_an_invalid_graph_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.pbtxt"
    path.write_text('input_stream: "in"\nnode { calculator: "NoSuchCalculator" '
                    'input_stream: "in" output_stream: "x" }\n')
    code, text = draw_file(str(path), "svg")
    assert code == 1
    assert text.startswith(f"{path}:2: ")
    assert "NoSuchCalculator" in text


@pytest.mark.parametrize("fmt", ["svg", "html", "dot"])
def test_cli_draw_formats(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["draw", str(TINY), "--format", fmt]) == 0
    out = capsys.readouterr().out
    start = {"svg": "<svg", "html": "<!doctype html>", "dot": "digraph"}[fmt]
    assert out.startswith(start)


def test_html_draws_in_a_real_browser_like_the_svg(tmp_path: Path) -> None:
    """`ovgraph draw --format html --expand` opened from disk in headless Chromium draws the
    same nodes, subgraph frame and back edge as `--format svg`, offline, without errors."""
    from tests.frontends._browser import Browser, chromium_or_skip

    out, err = io.StringIO(), io.StringIO()
    assert draw_command(str(TINY), out, err, fmt="html", expand=True) == 0, err.getvalue()
    page = tmp_path / "graph & co.html"
    page.write_text(out.getvalue())
    code, svg = draw_file(str(TINY), "svg")
    assert code == 0
    browser = Browser(chromium_or_skip())
    try:
        # Any request off the page (a CDN, the network) would fail and be logged as an error.
        browser.call("Network.enable")
        browser.call("Network.setBlockedURLs", urls=["http://*", "https://*"])
        browser.goto(page.as_uri())
        browser.wait_for("document.querySelectorAll('#graph g.node').length > 0")
        drawn = browser.evaluate(
            "Array.from(document.querySelectorAll('#graph g.node')).map(g => g.dataset.node)")
        assert sorted(drawn) == sorted(_nodes(svg))
        assert browser.evaluate(
            "Array.from(document.querySelectorAll('#graph g.subgraph'))"
            ".map(g => g.dataset.subgraph)") == ["LLMExecutor"]
        assert browser.evaluate(
            "Array.from(document.querySelectorAll('#graph g.back-edge'))"
            ".map(g => g.dataset.stream)") == ["loopback"]
        assert browser.evaluate("document.title") == "qwen2vl-tiny"
        assert browser.console_errors == []
    finally:
        browser.close()


def test_html_title_is_escaped() -> None:
    from ovgraph.graph_picture import render_html

    html = render_html({"name": "a&b", "nodes": [], "edges": []}, title="<x> & y")
    assert "<title>&lt;x&gt; &amp; y</title>" in html
