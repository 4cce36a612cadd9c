"""Tools for graph authors behind ``ovgraph validate``, ``draw``, ``expand`` and ``calculators``.

- :func:`validate_paths` parses and validates graph files and reports every problem as one
  ``PATH:LINE: message`` line, the way compilers and linters do.
- :func:`to_dot` renders a graph as Graphviz DOT: one box per node (name, calculator, input
  stream handler), one edge per stream (its name, the tag at each end, dashed for back edges),
  side packets as dotted edges, each executor's nodes in a cluster; subgraphs as written or
  expanded.
- :func:`expand_path` writes a graph with its subgraphs expanded, as pbtxt to edit.
- :func:`describe_calculators` lists the registered calculators, their ports and packages.

The ``*_command`` functions are the subcommands: they print and return the exit code.
- ``ovgraph draw --format svg|html`` draws the dashboard's picture of the validated graph
  (subgraphs expanded and grouped; ``ovgraph/graph_picture.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from google.protobuf import text_format

from ovgraph.errors import GraphConfigError
from ovgraph.framework import registry
from ovgraph.framework.subgraph import expand_config, is_subgraph
from ovgraph.framework.tag_map import TagMapError, parse_spec, parse_tag_index
from ovgraph.framework.textformat import parse_graph_config, read_graph_file
from ovgraph.framework.validation import canonical_node_names, validate

__all__ = [
    "DRAW_FORMATS",
    "calculators_command",
    "describe_calculators",
    "draw_command",
    "expand_command",
    "expand_path",
    "to_dot",
    "validate_command",
    "validate_paths",
]

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


def expand_path(path: str) -> tuple[int, str]:
    """Return ``(exit code, text)``: the graph with every subgraph expanded, as pbtxt.

    The text is what a graph author edits to add a node inside a subgraph (e.g. between the
    detokenizer and the response encoder of ``HttpLLMCalculator``): it validates and serves as
    the original does. An invalid graph gives exit code 1 and its ``PATH:LINE: message`` lines.
    """
    code, lines = validate_paths([path])
    if code:
        return code, "\n".join(lines) + "\n"
    parsed = read_graph_file(path)
    config = expand_config(parsed)
    nodes = list(config.node)
    del config.node[:]
    out = [f"# Expanded by `ovgraph expand {Path(path).name}`: every subgraph node replaced by "
           "its nodes."]
    if parsed.queue_size_directive is not None:
        out.append(f"# OVMS_GRAPH_QUEUE_MAX_SIZE: {parsed.queue_size_directive}")
    header = text_format.MessageToString(config)
    if header:
        out.append(header.rstrip("\n"))
    for node in nodes:
        body = text_format.MessageToString(node, indent=2).rstrip("\n")
        out.append(f"\nnode {{\n{body}\n}}")
    return 0, "\n".join(out) + "\n"


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


def _tag_label(tag: str, index: int) -> str:
    if not tag:
        return ""
    return tag if index == 0 else f"{tag}:{index}"


def _edge(source: str, target: str, label: str, tail: str = "", head: str = "",
          style: str = "") -> str:
    attrs = [f"label={_quote(label)}"]
    if tail:
        attrs.append(f"taillabel={_quote(tail)}")
    if head:
        attrs.append(f"headlabel={_quote(head)}")
    if style:
        attrs.append(f"style={style}")
    return f"  {_quote(source)} -> {_quote(target)} [{', '.join(attrs)}];"


def to_dot(text: str, name: str = "graph", *, expand: bool = False) -> str:
    """Render graph text as a Graphviz ``digraph``.

    One box per node (name, calculator, a non-default input stream handler), one edge per
    stream labelled with its name and, at each end, its tag (dashed for back edges); side
    packets as dotted edges from their producer (a node or the graph's ``input_side_packet``);
    the nodes of each declared executor in a cluster. With ``expand``, subgraph nodes are drawn
    as the nodes they expand to.

    Raises:
        GraphConfigError: the text does not parse, or a subgraph cannot be expanded.
    """
    parsed = parse_graph_config(text)
    config = expand_config(parsed) if expand else parsed.config
    names = canonical_node_names(list(config.node))
    out = [
        f"digraph {_quote(name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    producers: dict[str, tuple[str, str]] = {}
    for tag, index, stream in _stream_names(config.input_stream):
        ident = f"input:{stream}"
        producers[stream] = (ident, _tag_label(tag, index))
        out.append(f"  {_quote(ident)} [shape=plaintext, label={_quote(stream)}];")
    side_producers: dict[str, tuple[str, str]] = {}
    for tag, index, packet in _stream_names(config.input_side_packet):
        ident = f"side:{packet}"
        side_producers[packet] = (ident, _tag_label(tag, index))
        out.append(f"  {_quote(ident)} [shape=note, label={_quote(packet)}];")
    executors: dict[str, list[str]] = {}
    for i, (node, node_name) in enumerate(zip(config.node, names)):
        ident = f"node{i}"
        parts = [node_name] if node_name == node.calculator else [node_name, node.calculator]
        handler = node.input_stream_handler.input_stream_handler
        if handler and handler != "DefaultInputStreamHandler":
            parts.append(handler)
        # DOT's "\n" line break between the escaped name, calculator and handler.
        label = '"' + "\\n".join(_escape(p) for p in parts) + '"'
        out.append(f"  {ident} [label={label}];")
        if node.executor:
            executors.setdefault(node.executor, []).append(ident)
        for tag, index, stream in _stream_names(node.output_stream):
            producers.setdefault(stream, (ident, _tag_label(tag, index)))
        for tag, index, packet in _stream_names(node.output_side_packet):
            side_producers.setdefault(packet, (ident, _tag_label(tag, index)))
    for executor, members in executors.items():
        out.append(f"  subgraph {_quote('cluster_executor_' + executor)} {{")
        out.append(f"    label={_quote('executor: ' + executor)}; style=dashed;")
        out.extend(f"    {member};" for member in members)
        out.append("  }")
    for i, node in enumerate(config.node):
        back = _back_edges(node)
        for tag, index, stream in _stream_names(node.input_stream):
            source = producers.get(stream)
            if source is None:
                source = (f"missing:{stream}", "")
                producers[stream] = source
                out.append(
                    f"  {_quote(source[0])} [shape=plaintext, fontcolor=red, "
                    f"label={_quote(stream + ' (no producer)')}];"
                )
            style = "dashed" if (tag, index) in back else ""
            out.append(_edge(source[0], f"node{i}", stream, source[1], _tag_label(tag, index),
                             style))
        for tag, index, packet in _stream_names(node.input_side_packet):
            side = side_producers.get(packet)
            if side is None:
                # Neither produced nor declared: given at run start (the server's own side
                # packets, KServe request parameters) or missing; `validate` tells which.
                side = (f"side:{packet}", "")
                side_producers[packet] = side
                out.append(
                    f"  {_quote(side[0])} [shape=note, fontcolor=gray40, "
                    f"label={_quote(packet + ' (run start)')}];"
                )
            out.append(_edge(side[0], f"node{i}", packet, side[1], _tag_label(tag, index),
                             "dotted"))
    for _tag, _index, stream in _stream_names(config.output_stream):
        ident = f"output:{stream}"
        out.append(f"  {_quote(ident)} [shape=plaintext, label={_quote(stream)}];")
        source = producers.get(stream)
        if source is not None:
            out.append(_edge(source[0], ident, stream, source[1]))
    out.append("}")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------- calculators


def _port_line(port: Any) -> str:
    kind = {
        "input_stream": "in",
        "output_stream": "out",
        "input_side_packet": "side in",
        "output_side_packet": "side out",
    }[port.kind]
    type_name = getattr(port.type, "__name__", None) if port.type not in (None, object) else None
    flags = [f for f, on in (("optional", port.optional), ("several", port.multiple)) if on]
    suffix = f" ({', '.join(flags)})" if flags else ""
    return f"  {kind:<9}{port.tag or '<untagged>'}: {type_name or 'any'}{suffix}"


def describe_calculators() -> list[str]:
    """Return a listing of every registered calculator: package, summary, options, ports."""
    lines: list[str] = []
    for name in registry.known_names():
        package = registry.provider(name) or "registered in-process"
        try:
            cls = registry.lookup(name)
        except GraphConfigError:
            reason = registry.import_failure(name) or "not importable"
            lines += [f"{name}  [{package}]", f"  failed to import: {reason}", ""]
            continue
        kind = "  subgraph" if is_subgraph(cls) else ""
        lines.append(f"{name}  [{package}]{kind}")
        summary = (cls.__doc__ or "").strip().split("\n", 1)[0]
        if summary:
            lines.append(f"  {summary}")
        options = getattr(cls, "Options", None)
        if options is not None:
            lines.append(f"  options  {options.DESCRIPTOR.full_name}")
        ports = cls.ports() if hasattr(cls, "ports") else []
        lines += [_port_line(p) for p in ports]
        if is_subgraph(cls):
            lines.append("  expands into nodes: `ovgraph expand` shows them")
        elif getattr(cls, "DYNAMIC_PORTS", False):
            lines.append("  streams: any tags, checked by the calculator (see its docstring)")
        lines.append("")
    return lines


# ------------------------------------------------------------------------- commands


def validate_command(paths: Sequence[str], out: IO[str]) -> int:
    """``ovgraph validate``: ``PATH: OK`` per valid file, else ``PATH:LINE: message`` lines."""
    code = 0
    for path in paths:
        file_code, lines = validate_paths([path])
        code = max(code, file_code)
        for line in lines or [f"{path}: OK"]:
            print(line, file=out)
    return code


def draw_command(
    path: str, out: IO[str], err: IO[str], *, expand: bool = False, fmt: str = "dot"
) -> int:
    """``ovgraph draw``: validate, then print DOT, SVG or an HTML page (errors go to ``err``).

    ``svg`` and ``html`` draw the graph as it runs: subgraphs expanded and grouped.
    """
    if fmt not in DRAW_FORMATS:
        print(f"unknown format {fmt!r}: use one of {', '.join(DRAW_FORMATS)}", file=err)
        return 2
    code, lines = validate_paths([path])
    if code:
        for line in lines:
            print(line, file=err)
        return code
    if fmt == "dot":
        text = Path(path).read_text(encoding="utf-8-sig")
        out.write(to_dot(text, name=Path(path).parent.name or Path(path).stem, expand=expand))
        return 0
    from ovgraph.graph_picture import graph_view_of_file, render_html, render_svg

    view = graph_view_of_file(Path(path))
    render = render_svg if fmt == "svg" else render_html
    print(render(view, title=view["name"]), file=out)
    return 0


def expand_command(path: str, out: IO[str], err: IO[str]) -> int:
    """``ovgraph expand``: print the graph with subgraphs expanded (errors go to ``err``)."""
    code, text = expand_path(path)
    (err if code else out).write(text)
    return code


def calculators_command(out: IO[str]) -> int:
    """``ovgraph calculators``: print :func:`describe_calculators`."""
    for line in describe_calculators():
        print(line, file=out)
    return 0
