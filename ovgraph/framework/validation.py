"""Graph validation: subgraph expansion, wiring, contracts, order (``ValidatedGraphConfig``).

``validate(parsed)`` returns every problem it finds, each a ``GraphConfigError`` naming the node
and the file line; ``ValidatedGraph(parsed)`` raises the first one. Messages keep MediaPipe's
wording where MediaPipe has one, so logs read the same in both runtimes.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovgraph.errors import CalculatorNotFoundError, ContractError, GraphConfigError, ValidationError
from ovgraph.framework import registry
from ovgraph.framework.calculator import Calculator, NodeSpec, Subgraph
from ovgraph.framework.stream_handlers import HANDLERS, sync_sets_from_options
from ovgraph.framework.tag_map import TagMap, TagMapError, parse_spec, parse_tag_index
from ovgraph.framework.textformat import ParsedGraphConfig, node_options, option_type_names

__all__ = ["ValidatedGraph", "canonical_node_names", "validate"]

logger = logging.getLogger("ovgraph.graph")

_RESERVED_EXECUTORS = ("default", "gpu")
_MAX_SUBGRAPH_DEPTH = 32
_THREAD_POOL_OPTIONS = "mediapipe.ThreadPoolExecutorOptions"


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


@dataclass
class _Collector:
    path: str | None
    errors: list[GraphConfigError] = field(default_factory=list)

    def add(
        self, cls: type[GraphConfigError], message: str, node: str | None = None,
        line: int | None = None,
    ) -> None:
        self.errors.append(cls(message, node=node, path=self.path, line=line))


def _prefix_for(node_name: str) -> str:
    clean = node_name.lower()
    for ch in ".: ":
        clean = clean.replace(ch, "_")
    return clean + "__"


def _expand_subgraphs(
    parsed: ParsedGraphConfig, out: _Collector, subgraphs: dict[str, str] | None = None
) -> tuple[Any, list[int | None], list[tuple[str, ...]]]:
    """Replace subgraph nodes by their graphs.

    Returns the expanded config, each node's file line, and each node's enclosing subgraph nodes
    (outermost first); ``subgraphs`` receives the calculator of every expanded subgraph node.
    """
    from ovgraph._proto.mediapipe.framework import calculator_pb2

    config = calculator_pb2.CalculatorGraphConfig()
    config.CopyFrom(parsed.config)
    lines: list[int | None] = list(parsed.node_lines) + [None] * (
        len(config.node) - len(parsed.node_lines)
    )
    groups: list[tuple[str, ...]] = [()] * len(config.node)
    for _depth in range(_MAX_SUBGRAPH_DEPTH):
        names = canonical_node_names(list(config.node))
        expanded_any = False
        new_nodes: list[Any] = []
        new_lines: list[int | None] = []
        new_groups: list[tuple[str, ...]] = []
        for node, name, line, group in zip(config.node, names, lines, groups):
            cls = registry.lookup_optional(node.calculator)
            if not (isinstance(cls, type) and issubclass(cls, Subgraph)):
                new_nodes.append(node)
                new_lines.append(line)
                new_groups.append(group)
                continue
            expanded_any = True
            try:
                options = _options_for(cls, node)
                sub = cls.get_config(node, options)
                sub_nodes = _rename_subgraph(sub, node, _prefix_for(name))
            except (GraphConfigError, TagMapError, ValueError) as exc:
                out.add(ContractError, f'Subgraph "{name}": {exc}', name, line)
                continue
            new_nodes.extend(sub_nodes)
            new_lines.extend([line] * len(sub_nodes))
            new_groups.extend([(*group, name)] * len(sub_nodes))
            if subgraphs is not None:
                subgraphs[name] = node.calculator
        if not expanded_any:
            return config, lines, groups
        del config.node[:]
        config.node.extend(new_nodes)
        lines, groups = new_lines, new_groups
    out.add(ValidationError, "Subgraph expansion exceeded the maximum depth (recursive subgraph?)")
    return config, lines, groups


def _rename_subgraph(sub: Any, node: Any, prefix: str) -> list[Any]:
    """Prefix a subgraph's internal names and connect its graph-level I/O to ``node``'s."""
    mapping: dict[str, str] = {}
    pairs = (
        (sub.input_stream, node.input_stream, "stream"),
        (sub.output_stream, node.output_stream, "stream"),
        (sub.input_side_packet, node.input_side_packet, "side"),
        (sub.output_side_packet, node.output_side_packet, "side"),
    )
    side_mapping: dict[str, str] = {}
    for inner_specs, outer_specs, kind in pairs:
        outer = TagMap(outer_specs)
        target = mapping if kind == "stream" else side_mapping
        for entry in TagMap(inner_specs):
            outer_id = outer.id_of(entry.tag, entry.index)
            if outer_id is None:
                continue
            target[entry.name] = outer.entries[outer_id].name
        for entry in outer:
            if not TagMap(inner_specs).has(entry.tag, entry.index):
                raise ValueError(f'Tag "{entry.tag}" does not exist in the subgraph config.')

    def rename(spec: str, table: dict[str, str]) -> str:
        tag, index, name = parse_spec(spec)
        new = table.get(name, prefix + name)
        if not tag:
            return new
        return f"{tag}:{index}:{new}" if index is not None else f"{tag}:{new}"

    result = []
    for inner in sub.node:
        copy = type(inner)()
        copy.CopyFrom(inner)
        copy.name = prefix + (inner.name or inner.calculator)
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


def _options_for(cls: Any, node: Any) -> Any:
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


class ValidatedGraph:
    """A graph config that passed validation, ready to be instantiated any number of times."""

    def __init__(self, parsed: ParsedGraphConfig, *, base_path: Path | None = None) -> None:
        result = _validate(parsed, base_path)
        if result.errors:
            raise result.errors[0]
        self.__dict__.update(result.__dict__)

    # Attributes filled by _validate (declared for readers and type checkers).
    config: Any
    path: str | None
    nodes: list[NodeSpec]
    classes: list[type[Calculator]]
    order: list[int]
    graph_inputs: TagMap
    graph_outputs: TagMap
    graph_input_side_packets: TagMap
    producers: dict[str, tuple[int, int]]
    consumers: dict[str, list[tuple[int, int]]]
    side_producers: dict[str, tuple[int, int]]
    required_side_packets: list[str]
    executors: dict[str, int]
    num_threads: int
    max_queue_size: int
    warnings: list[str]
    node_subgraphs: list[tuple[str, ...]]
    """Per node: the subgraph nodes it was expanded from, outermost first."""
    subgraphs: dict[str, str]
    """Expanded subgraph node name → its subgraph calculator."""


class _Result:
    def __init__(self) -> None:
        self.errors: list[GraphConfigError] = []


def validate(parsed: ParsedGraphConfig, *, base_path: Path | None = None) -> list[GraphConfigError]:
    """Return every validation problem of ``parsed`` (empty when the graph is valid)."""
    return _validate(parsed, base_path).errors


def _validate(parsed: ParsedGraphConfig, base_path: Path | None) -> _Result:
    out = _Collector(parsed.path)
    res = _Result()
    res.subgraphs = {}
    config, lines, res.node_subgraphs = _expand_subgraphs(parsed, out, res.subgraphs)
    res.config = config
    res.path = parsed.path
    names = canonical_node_names(list(config.node))
    nodes: list[NodeSpec] = []
    classes: list[type[Calculator]] = []

    def tag_map(specs: Any, node_name: str | None, line: int | None, what: str) -> TagMap:
        try:
            return TagMap(specs)
        except TagMapError as exc:
            where = f"node {node_name}" if node_name else "the graph"
            out.add(
                ValidationError, f"Unable to initialize TagMaps for {where} ({what}).\n{exc}",
                node_name, line,
            )
            return TagMap([])

    res.graph_inputs = tag_map(config.input_stream, None, None, "input_stream")
    res.graph_outputs = tag_map(config.output_stream, None, None, "output_stream")
    res.graph_input_side_packets = tag_map(config.input_side_packet, None, None, "side packets")

    for index, (node, name, line) in enumerate(zip(config.node, names, lines)):
        spec = NodeSpec(
            name=name,
            calculator=node.calculator,
            index=index,
            inputs=tag_map(node.input_stream, name, line, "input_stream"),
            outputs=tag_map(node.output_stream, name, line, "output_stream"),
            input_side_packets=tag_map(node.input_side_packet, name, line, "input_side_packet"),
            output_side_packets=tag_map(node.output_side_packet, name, line, "output_side_packet"),
            config=node,
            line=line,
            base_path=base_path,
            executor=node.executor,
        )
        nodes.append(spec)
        # Back edges are known from the config alone: wiring checks need them even when the
        # calculator is unknown (else a LOOPBACK node would also report a false cycle).
        _check_stream_info(spec, out)
        try:
            cls = registry.lookup(node.calculator)
        except CalculatorNotFoundError as exc:
            out.add(CalculatorNotFoundError, f"ValidatedGraphConfig Initialization failed.\n{exc}",
                    name, line)
            classes.append(Calculator)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Calculator)):
            out.add(ContractError, f'"{node.calculator}" is not a calculator.', name, line)
            classes.append(Calculator)
            continue
        classes.append(cls)
        try:
            spec.options = _options_for(cls, node)
            cls.validate_contract(spec)
        except ContractError as exc:
            out.add(ContractError, f"ValidatedGraphConfig Initialization failed.\n{exc}",
                    name, line)
        _choose_handler(spec, cls, config, out)

    res.nodes, res.classes = nodes, classes
    _wire(res, out)
    _check_executors(res, config, out)
    res.max_queue_size = config.max_queue_size or 100
    res.warnings = _self_loop_warnings(res)
    for w in res.warnings:
        logger.warning("%s", w)
    res.errors = out.errors
    return res


def _check_stream_info(spec: NodeSpec, out: _Collector) -> None:
    back: set[int] = set()
    seen: set[str] = set()
    for info in spec.config.input_stream_info:
        if info.tag_index in seen:
            out.add(ValidationError,
                    f'Input stream "{info.tag_index}" of node "{spec.name}" has more than one '
                    "InputStreamInfo.", spec.name, spec.line)
            continue
        seen.add(info.tag_index)
        try:
            tag, index = parse_tag_index(info.tag_index)
        except TagMapError as exc:
            out.add(ValidationError, str(exc), spec.name, spec.line)
            continue
        stream_id = spec.inputs.id_of(tag, index)
        if stream_id is None:
            out.add(ValidationError,
                    f'ValidatedGraphConfig Initialization failed.\n; Input stream with tag_index '
                    f'"{info.tag_index}" requested in InputStreamInfo but is not an input stream '
                    f'of the calculator (node "{spec.name}").', spec.name, spec.line)
            continue
        if info.back_edge:
            back.add(stream_id)
    spec.back_edges = frozenset(back)


def _choose_handler(spec: NodeSpec, cls: type[Calculator], config: Any, out: _Collector) -> None:
    node = spec.config
    if node.HasField("input_stream_handler"):
        handler_cfg = node.input_stream_handler
    elif cls.INPUT_STREAM_HANDLER:
        handler_cfg = None
        spec.input_stream_handler = cls.INPUT_STREAM_HANDLER
    elif config.HasField("input_stream_handler"):
        handler_cfg = config.input_stream_handler
    else:
        handler_cfg = None
    if handler_cfg is not None:
        spec.input_stream_handler = handler_cfg.input_stream_handler or "DefaultInputStreamHandler"
        spec.handler_options = _handler_options(handler_cfg, spec.input_stream_handler)
    if spec.input_stream_handler not in HANDLERS:
        out.add(ValidationError,
                f"CalculatorGraph::InitializeCalculatorNodes failed: \nNo registered object with "
                f'name: {spec.input_stream_handler}; "{spec.input_stream_handler}" is not a '
                "registered input stream handler.", spec.name, spec.line)
        return
    if spec.input_stream_handler == "SyncSetInputStreamHandler":
        try:
            sync_sets_from_options(spec.inputs, spec.handler_options)
        except TagMapError as exc:
            out.add(ValidationError, f'Node "{spec.name}": {exc}', spec.name, spec.line)


def _handler_options(handler_cfg: Any, name: str) -> Any:
    from ovgraph._proto.mediapipe.framework.stream_handler import (
        fixed_size_input_stream_handler_pb2 as fixed_pb2,
    )
    from ovgraph._proto.mediapipe.framework.stream_handler import (
        sync_set_input_stream_handler_pb2 as sync_pb2,
    )

    if not handler_cfg.HasField("options"):
        return None
    opts = handler_cfg.options
    for message in (sync_pb2.SyncSetInputStreamHandlerOptions,
                    fixed_pb2.FixedSizeInputStreamHandlerOptions):
        ext = message.ext
        if opts.HasExtension(ext):
            return opts.Extensions[ext]
    return None


def _wire(res: _Result, out: _Collector) -> None:
    nodes: list[NodeSpec] = res.nodes
    producers: dict[str, tuple[int, int]] = {}
    consumers: dict[str, list[tuple[int, int]]] = {}
    side_producers: dict[str, tuple[int, int]] = {}
    for i, entry in enumerate(res.graph_inputs):
        if entry.name in producers:
            out.add(ValidationError, f'; Output Stream "{entry.name}" defined twice.')
        producers[entry.name] = (-1, i)
    # Graph-level input_side_packet entries only document what start_run expects: a side
    # packet no node produces is required whether or not the graph declares it.
    for spec in nodes:
        for out_id, entry in enumerate(spec.outputs):
            if entry.name in producers:
                out.add(ValidationError, f'; Output Stream "{entry.name}" defined twice.',
                        spec.name, spec.line)
                continue
            producers[entry.name] = (spec.index, out_id)
        for out_id, entry in enumerate(spec.output_side_packets):
            if entry.name in side_producers:
                out.add(ValidationError, f'Output Side Packet "{entry.name}" defined twice.',
                        spec.name, spec.line)
                continue
            side_producers[entry.name] = (spec.index, out_id)
    required: list[str] = []
    edges: list[set[int]] = [set() for _ in nodes]
    indegree = [0] * len(nodes)
    for spec in nodes:
        for in_id, entry in enumerate(spec.inputs):
            producer = producers.get(entry.name)
            if producer is None:
                out.add(ValidationError,
                        f'; Input Stream "{entry.name}" for node with sorted index {spec.index} '
                        f"name {spec.name} does not have a corresponding output stream.",
                        spec.name, spec.line)
                continue
            consumers.setdefault(entry.name, []).append((spec.index, in_id))
            if producer[0] >= 0 and in_id not in spec.back_edges and spec.index not in edges[
                producer[0]
            ]:
                edges[producer[0]].add(spec.index)
                indegree[spec.index] += 1
        for entry in spec.input_side_packets:
            producer = side_producers.get(entry.name)
            if producer is None:
                if entry.name not in required:
                    required.append(entry.name)
            elif producer[0] >= 0 and spec.index not in edges[producer[0]]:
                edges[producer[0]].add(spec.index)
                indegree[spec.index] += 1
    ready = [i for i, d in enumerate(indegree) if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in edges[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < len(nodes):
        cycle = _find_cycle(edges, {i for i, d in enumerate(indegree) if d > 0})
        names = ", ".join(nodes[i].name for i in cycle)
        first = nodes[cycle[0]]
        out.add(ValidationError,
                "; Generator side packet cycle or calculator stream cycle detected in graph: "
                f"[{names}]", first.name, first.line)
        order.extend(i for i in range(len(nodes)) if i not in order)
    res.producers, res.consumers, res.side_producers = producers, consumers, side_producers
    res.required_side_packets = required
    res.order = order


def _find_cycle(edges: list[set[int]], candidates: set[int]) -> list[int]:
    for start in sorted(candidates):
        path = [start]
        on_path = {start}
        stack = [iter(sorted(e for e in edges[start] if e in candidates))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                on_path.discard(path.pop())
                continue
            if nxt in on_path:
                return path[path.index(nxt):]
            path.append(nxt)
            on_path.add(nxt)
            stack.append(iter(sorted(e for e in edges[nxt] if e in candidates)))
    return sorted(candidates)


def _check_executors(res: _Result, config: Any, out: _Collector) -> None:
    executors: dict[str, int] = {}
    default_threads = config.num_threads if config.num_threads > 0 else 0
    for ex in config.executor:
        if ex.name in _RESERVED_EXECUTORS:
            out.add(ValidationError, f'"{ex.name}" is a reserved executor name.')
            continue
        threads = 0
        for field_desc, value in ex.options.ListFields():
            if field_desc.full_name == _THREAD_POOL_OPTIONS + ".ext":
                threads = value.num_threads
        if ex.name == "":
            default_threads = threads if threads > 0 else default_threads
        else:
            executors[ex.name] = threads if threads > 0 else 1
    for spec in res.nodes:
        if spec.executor and spec.executor not in executors:
            out.add(ValidationError,
                    f'The executor "{spec.executor}" is not declared in an ExecutorConfig.',
                    spec.name, spec.line)
    res.executors = executors
    res.num_threads = default_threads


def _self_loop_warnings(res: _Result) -> list[str]:
    warnings = []
    for spec in res.nodes:
        if not spec.back_edges or spec.input_stream_handler != "DefaultInputStreamHandler":
            continue
        if len(spec.inputs) > len(spec.back_edges):
            warnings.append(
                f'Node "{spec.name}" has a back edge and uses DefaultInputStreamHandler: it waits '
                "for its own back-edge stream and will never fire (use SyncSetInputStreamHandler "
                "with the back edge in its own sync_set, or ImmediateInputStreamHandler)."
            )
    return warnings
