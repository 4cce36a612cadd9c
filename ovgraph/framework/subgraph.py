"""Subgraph expansion (MediaPipe ``tool/subgraph_expansion.cc``) and node naming.

A node whose ``calculator`` names a registered :class:`~ovgraph.framework.calculator.Subgraph`
is replaced, repeatedly, by the nodes of the graph its ``get_config`` returns. Internal names get
the prefix ``<canonical node name, lowercased, '.', ':' and ' ' → '_'>__``; the subgraph's own
graph-level streams and side packets are matched to the node's by tag and index.

:func:`expand_subgraphs` keeps, for every resulting node, the file line and field lines of the
top-level node it came from, so that errors inside an expanded subgraph still point at the line
of the node that was written. :func:`expand_config` is what ``ovgraph expand`` prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ovgraph.errors import ContractError, GraphConfigError, ValidationError
from ovgraph.framework import registry
from ovgraph.framework.calculator import Subgraph
from ovgraph.framework.tag_map import TagMap, TagMapError, parse_spec
from ovgraph.framework.textformat import ParsedGraphConfig, node_options, option_type_names

__all__ = [
    "Expansion",
    "canonical_node_names",
    "expand_config",
    "expand_subgraphs",
    "is_subgraph",
    "options_for",
]

MAX_SUBGRAPH_DEPTH = 32
Report = Callable[[type[GraphConfigError], str, "str | None", "int | None"], None]


def canonical_node_names(nodes: list[Any]) -> list[str]:
    """Name each node as MediaPipe does: name or calculator, ``_k`` suffixes for duplicates."""
    base = [n.name or n.calculator for n in nodes]
    counts: dict[str, int] = {}
    for b in base:
        counts[b] = counts.get(b, 0) + 1
    seen: dict[str, int] = {}
    names = []
    for b in base:
        if counts[b] <= 1:
            names.append(b)
        else:
            seen[b] = seen.get(b, 0) + 1
            names.append(f"{b}_{seen[b]}")
    return names


def is_subgraph(cls: Any) -> bool:
    """Whether a registered class is a :class:`Subgraph`."""
    return isinstance(cls, type) and issubclass(cls, Subgraph)


def options_for(cls: Any, node: Any) -> Any:
    """Unpack the node's options into ``cls.Options``; reject other option types."""
    wanted = cls.Options
    present = option_type_names(node)
    if wanted is None:
        if present:
            raise ContractError(
                f"{cls.__name__} takes no options, but the node sets {', '.join(present)}."
            )
        return None
    full_name = wanted.DESCRIPTOR.full_name
    others = [p for p in present if p != full_name]
    if others:
        raise ContractError(
            f"{cls.__name__} takes options of type {full_name}, but the node sets "
            f"{', '.join(others)}."
        )
    options = node_options(node, wanted)
    return options if options is not None else wanted()


@dataclass
class Expansion:
    """A graph config with its subgraphs expanded, and where each node came from.

    Attributes:
        config: the expanded ``CalculatorGraphConfig``.
        lines: per node, the file line of the top-level node it comes from.
        field_lines: per node, its field lines when it was written in the file as is (empty
            for nodes that come out of a subgraph).
        origins: per node, the canonical name of the top-level node it comes from.
        groups: per node, the subgraph nodes it was expanded from, outermost first.
        subgraphs: every expanded subgraph node's name and its calculator.
    """

    config: Any
    lines: list[int | None] = field(default_factory=list)
    field_lines: list[dict[str, list[int]]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    groups: list[tuple[str, ...]] = field(default_factory=list)
    subgraphs: dict[str, str] = field(default_factory=dict)


def _prefix_for(node_name: str) -> str:
    clean = node_name.lower()
    for ch in ".: ":
        clean = clean.replace(ch, "_")
    return clean + "__"


def expand_subgraphs(parsed: ParsedGraphConfig, report: Report) -> Expansion:
    """Replace subgraph nodes by their graphs; problems go to ``report(cls, msg, node, line)``."""
    from ovgraph._proto.mediapipe.framework import calculator_pb2

    config = calculator_pb2.CalculatorGraphConfig()
    config.CopyFrom(parsed.config)
    count = len(config.node)
    lines: list[int | None] = [*parsed.node_lines, *[None] * count][:count]
    field_lines: list[dict[str, list[int]]] = [*parsed.field_lines, *[{}] * count][:count]
    origins = canonical_node_names(list(config.node))
    groups: list[tuple[str, ...]] = [()] * count
    subgraphs: dict[str, str] = {}
    for _depth in range(MAX_SUBGRAPH_DEPTH):
        names = canonical_node_names(list(config.node))
        if not any(is_subgraph(registry.lookup_optional(n.calculator)) for n in config.node):
            return Expansion(config, lines, field_lines, origins, groups, subgraphs)
        out = Expansion(None)
        kept: list[Any] = []
        for i, node in enumerate(config.node):
            cls = registry.lookup_optional(node.calculator)
            if not is_subgraph(cls):
                produced, fields, group = [node], field_lines[i], groups[i]
            else:
                try:
                    sub = cls.get_config(node, options_for(cls, node))
                    produced = _rename_subgraph(sub, node, _prefix_for(names[i]))
                except (GraphConfigError, TagMapError, ValueError) as exc:
                    report(ContractError, f'Subgraph "{names[i]}": {exc}', names[i], lines[i])
                    continue
                fields, group = {}, (*groups[i], names[i])
                subgraphs[names[i]] = node.calculator
            for new_node in produced:
                copy = type(new_node)()
                copy.CopyFrom(new_node)
                kept.append(copy)
                out.lines.append(lines[i])
                out.field_lines.append(fields)
                out.origins.append(origins[i])
                out.groups.append(group)
        del config.node[:]
        config.node.extend(kept)
        lines, field_lines, origins, groups = out.lines, out.field_lines, out.origins, out.groups
    report(ValidationError,
           "Subgraph expansion exceeded the maximum depth (recursive subgraph?)", None, None)
    return Expansion(config, lines, field_lines, origins, groups, subgraphs)


def _rename_subgraph(sub: Any, node: Any, prefix: str) -> list[Any]:
    """Prefix a subgraph's internal names and connect its graph-level I/O to ``node``'s."""
    mapping: dict[str, str] = {}
    side_mapping: dict[str, str] = {}
    pairs = (
        (sub.input_stream, node.input_stream, mapping),
        (sub.output_stream, node.output_stream, mapping),
        (sub.input_side_packet, node.input_side_packet, side_mapping),
        (sub.output_side_packet, node.output_side_packet, side_mapping),
    )
    for inner_specs, outer_specs, target in pairs:
        outer = TagMap(outer_specs)
        inner = TagMap(inner_specs)
        for entry in inner:
            outer_id = outer.id_of(entry.tag, entry.index)
            if outer_id is not None:
                target[entry.name] = outer.entries[outer_id].name
        for entry in outer:
            if not inner.has(entry.tag, entry.index):
                raise ValueError(f'Tag "{entry.tag}" does not exist in the subgraph config.')

    def rename(spec: str, table: dict[str, str]) -> str:
        tag, index, name = parse_spec(spec)
        new = table.get(name, prefix + name)
        if not tag:
            return new
        return f"{tag}:{index}:{new}" if index is not None else f"{tag}:{new}"

    result = []
    for inner_node in sub.node:
        copy = type(inner_node)()
        copy.CopyFrom(inner_node)
        copy.name = prefix + (inner_node.name or inner_node.calculator)
        for field_name, table in (
            ("input_stream", mapping),
            ("output_stream", mapping),
            ("input_side_packet", side_mapping),
            ("output_side_packet", side_mapping),
        ):
            specs = [rename(s, table) for s in getattr(copy, field_name)]
            del getattr(copy, field_name)[:]
            getattr(copy, field_name).extend(specs)
        result.append(copy)
    return result


def expand_config(parsed: ParsedGraphConfig) -> Any:
    """Return ``parsed``'s config with every subgraph expanded (what ``ovgraph expand`` writes).

    Raises:
        GraphConfigError: a subgraph cannot be expanded.
    """
    problems: list[GraphConfigError] = []

    def report(cls: type[GraphConfigError], message: str, node: str | None,
               line: int | None) -> None:
        problems.append(cls(message, node=node, path=parsed.path, line=line))

    expansion = expand_subgraphs(parsed, report)
    if problems:
        raise problems[0]
    return expansion.config
