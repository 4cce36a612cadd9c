"""Graph file tools behind ``ovgraph validate`` and ``ovgraph draw``.

- :func:`validate_paths` parses and validates graph files and reports every problem as one
  ``PATH:LINE: message`` line, the way compilers and linters do.
- :func:`to_dot` renders a graph as Graphviz DOT: one box per node (name and calculator), one
  edge per stream (labelled with its name, dashed for back edges), graph inputs and outputs as
  plain text nodes. Nodes are drawn as written; subgraphs are not expanded.
- :func:`draw_file` is ``ovgraph draw``: DOT as above, or ``svg`` / ``html``, the dashboard's
  picture of the validated graph (subgraphs expanded and grouped; ``ovgraph/graph_picture.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ovgraph.errors import GraphConfigError
from ovgraph.framework.tag_map import TagMapError, parse_spec, parse_tag_index
from ovgraph.framework.textformat import parse_graph_config, read_graph_file
from ovgraph.framework.validation import canonical_node_names, validate

__all__ = ["DRAW_FORMATS", "draw_file", "to_dot", "validate_paths"]

DRAW_FORMATS = ("dot", "svg", "html")


def _line(error: GraphConfigError, path: str) -> str:
    message = " ".join(error.message.split("\n"))
    return f"{path}:{error.line or 0}: {message}"


def validate_paths(paths: Iterable[str]) -> tuple[int, list[str]]:
    """Validate graph files; return ``(exit code, error lines)``.

    Every error of every file is reported (``PATH:LINE: message``, one line each; line 0 when
    the location is unknown). The exit code is 0 when every file is valid, else 1.
    """
    lines: list[str] = []
    for path in paths:
        try:
            parsed = read_graph_file(path)
        except GraphConfigError as exc:
            lines.append(_line(exc, path))
            continue
        for error in validate(parsed, base_path=Path(path).resolve().parent):
            lines.append(_line(error, path))
    return (1 if lines else 0), lines


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _quote(text: str) -> str:
    return f'"{_escape(text)}"'


def _stream_names(specs: Iterable[str]) -> list[tuple[str, int, str]]:
    """Return ``(tag, index, name)`` per spec, tolerating specs MediaPipe would reject."""
    result = []
    untagged = 0
    for spec in specs:
        try:
            tag, index, name = parse_spec(spec)
        except TagMapError:
            tag, index, name = "", None, spec.rsplit(":", 1)[-1]
        if index is None:
            if tag:
                index = 0
            else:
                index, untagged = untagged, untagged + 1
        result.append((tag, index, name))
    return result


def _back_edges(node: Any) -> set[tuple[str, int]]:
    edges = set()
    for info in node.input_stream_info:
        if not info.back_edge:
            continue
        try:
            edges.add(parse_tag_index(info.tag_index))
        except TagMapError:
            continue
    return edges


def to_dot(text: str, name: str = "graph") -> str:
    """Render graph text as a Graphviz ``digraph``.

    Raises:
        GraphConfigError: the text does not parse.
    """
    config = parse_graph_config(text).config
    names = canonical_node_names(list(config.node))
    out = [
        f"digraph {_quote(name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    producers: dict[str, str] = {}
    for _tag, _index, stream in _stream_names(config.input_stream):
        ident = f"input:{stream}"
        producers[stream] = ident
        out.append(f"  {_quote(ident)} [shape=plaintext, label={_quote(stream)}];")
    for i, (node, node_name) in enumerate(zip(config.node, names)):
        ident = f"node{i}"
        parts = [node_name] if node_name == node.calculator else [node_name, node.calculator]
        # DOT's "\n" line break between the escaped name and calculator.
        label = '"' + "\\n".join(_escape(p) for p in parts) + '"'
        out.append(f"  {ident} [label={label}];")
        for _tag, _index, stream in _stream_names(node.output_stream):
            producers.setdefault(stream, ident)
    for i, node in enumerate(config.node):
        back = _back_edges(node)
        for tag, index, stream in _stream_names(node.input_stream):
            source = producers.get(stream)
            if source is None:
                source = f"missing:{stream}"
                producers[stream] = source
                out.append(
                    f"  {_quote(source)} [shape=plaintext, fontcolor=red, "
                    f"label={_quote(stream + ' (no producer)')}];"
                )
            style = ", style=dashed" if (tag, index) in back else ""
            out.append(
                f"  {_quote(source)} -> node{i} [label={_quote(stream)}{style}];"
            )
    for _tag, _index, stream in _stream_names(config.output_stream):
        ident = f"output:{stream}"
        out.append(f"  {_quote(ident)} [shape=plaintext, label={_quote(stream)}];")
        source = producers.get(stream)
        if source is not None:
            out.append(f"  {_quote(source)} -> {_quote(ident)} [label={_quote(stream)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def draw_file(path: str, fmt: str = "dot") -> tuple[int, str]:
    """``ovgraph draw``: return ``(exit code, text)``; errors as ``PATH:LINE: message`` lines.

    ``dot`` draws the file as written (even an invalid graph); ``svg`` and ``html`` validate it
    first and draw it as it runs.
    """
    if fmt not in DRAW_FORMATS:
        return 2, f"unknown format {fmt!r}: use one of {', '.join(DRAW_FORMATS)}"
    file = Path(path)
    try:
        if fmt == "dot":
            return 0, to_dot(file.read_text(), name=file.stem)
        from ovgraph.graph_picture import graph_view_of_file, render_html, render_svg

        view = graph_view_of_file(file)
    except GraphConfigError as exc:
        return 1, _line(exc, path)
    except OSError as exc:
        return 1, f"{path}:0: {exc.strerror}"
    render = render_svg if fmt == "svg" else render_html
    return 0, render(view, title=view["name"])
