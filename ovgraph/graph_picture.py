"""The picture of a graph without a server: ``ovgraph draw --format svg|html``.

Both formats draw with the dashboard's own code (``ovgraph/dashboard/draw.js``, layout by the
vendored dagre), so a file drawn here looks as the live page shows it. ``svg`` runs that code in
an embedded JavaScript engine (QuickJS, the ``quickjs-ng`` package); ``html`` writes one
self-contained page (scripts inlined, no network) that draws in the browser.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ovgraph.errors import GraphConfigError
from ovgraph.framework.textformat import read_graph_file
from ovgraph.framework.validation import ValidatedGraph
from ovgraph.graph_view import describe

__all__ = ["DASHBOARD_DIR", "graph_view_of_file", "render_html", "render_svg"]

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
# QuickJS has no structuredClone; dagre clones plain data only, which JSON round-trips.
_POLYFILL = (
    "if (typeof globalThis.structuredClone !== 'function') {"
    " globalThis.structuredClone = function (v) {"
    " return v === undefined ? v : JSON.parse(JSON.stringify(v)); }; }"
)


def _script(name: str) -> str:
    return (DASHBOARD_DIR / name).read_text(encoding="utf-8")


def graph_view_of_file(path: str | Path) -> dict[str, Any]:
    """Validate a graph file and describe it (subgraphs expanded).

    Raises:
        GraphConfigError: the file does not parse or validate.
    """
    path = Path(path)
    parsed = read_graph_file(str(path))
    validated = ValidatedGraph(parsed, base_path=path.resolve().parent)
    return describe(validated, path.parent.name if path.stem == "graph" else path.stem)


def render_svg(view: dict[str, Any], title: str | None = None) -> str:
    """Draw a graph view as SVG text (QuickJS runs ``draw.js``)."""
    try:
        import quickjs
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise GraphConfigError(
            "Drawing SVG needs the quickjs-ng package (pip install quickjs-ng)"
        ) from exc
    context = quickjs.Context()
    context.eval(_POLYFILL)
    context.eval(_script("vendor/dagre.min.js"))
    context.eval(_script("draw.js"))
    args = json.dumps(view) + ", " + json.dumps({"title": title} if title else {})
    return str(context.eval(f"ovgraphDraw({args}).svg"))


_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>body {{ margin: 16px; font-family: system-ui, sans-serif; background: #ffffff; }}</style>
</head>
<body>
<div id="graph"></div>
<script>{dagre}</script>
<script>{draw}</script>
<script>
document.getElementById("graph").innerHTML = ovgraphDraw({view}, {options}).svg;
</script>
</body>
</html>
"""


def render_html(view: dict[str, Any], title: str | None = None) -> str:
    """A self-contained HTML page that draws the graph view (works offline)."""

    def inline(text: str) -> str:
        return text.replace("</script", "<\\/script")

    return _HTML.format(
        title=html.escape(title or view.get("name") or "graph"),
        dagre=inline(_script("vendor/dagre.min.js")),
        draw=inline(_script("draw.js")),
        view=inline(json.dumps(view)),
        options=inline(json.dumps({"title": title} if title else {})),
    )
