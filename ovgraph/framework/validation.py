"""Graph validation: subgraph expansion, wiring, contracts, order (``ValidatedGraphConfig``).

``validate(parsed)`` returns every problem it finds, each a ``GraphConfigError`` naming the node
and the line of the field at fault; ``ValidatedGraph(parsed)`` raises the first one. Messages
keep MediaPipe's wording where MediaPipe has one, so logs read the same in both runtimes, and
add a "did you mean" from the names the graph and the registry know.

Beyond MediaPipe's own checks at graph initialization:

- a side packet a node requires that no node produces and the graph does not declare as its
  ``input_side_packet`` (what a client passes at run start) is an error here, not a failure of
  every run;
- declared payload types are checked across each stream (``Input("T", str)`` fed by an
  ``Output("T", bytes)``);
- a cycle through a subgraph node (OVMS's ``HttpLLMCalculator`` without ``back_edge`` on its
  ``LOOPBACK``) is refused as MediaPipe refuses it, where the node is a single calculator;
- a node whose stream specs do not parse is reported once: its contract and the streams it
  would have produced are not checked again.
"""

from __future__ import annotations

import heapq
import inspect
import logging
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ovgraph.errors import CalculatorNotFoundError, ContractError, GraphConfigError, ValidationError
from ovgraph.framework import registry
from ovgraph.framework.calculator import Calculator, NodeSpec
from ovgraph.framework.diagnostics import Collector as _Collector
from ovgraph.framework.diagnostics import did_you_mean, hint, name_of, parses
from ovgraph.framework.stream_handlers import HANDLERS, sync_sets_from_options
from ovgraph.framework.subgraph import (
    canonical_node_names,
    expand_subgraphs,
    is_subgraph,
    options_for,
)
from ovgraph.framework.tag_map import TagMap, TagMapError, parse_spec, parse_tag_index
from ovgraph.framework.textformat import ParsedGraphConfig

__all__ = ["ValidatedGraph", "canonical_node_names", "did_you_mean", "validate"]

logger = logging.getLogger("ovgraph.graph")

_RESERVED_EXECUTORS = ("default", "gpu")
_THREAD_POOL_OPTIONS = "mediapipe.ThreadPoolExecutorOptions"


class ValidatedGraph:
    """A graph config that passed validation, ready to be instantiated any number of times."""

    def __init__(
        self, parsed: ParsedGraphConfig, *, base_path: Path | None = None,
        request_side_packets: bool = False,
    ) -> None:
        result = _validate(parsed, base_path, request_side_packets)
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


def validate(
    parsed: ParsedGraphConfig, *, base_path: Path | None = None,
    request_side_packets: bool = False,
) -> list[GraphConfigError]:
    """Return every validation problem of ``parsed`` (empty when the graph is valid).

    Args:
        parsed: the parsed graph.
        base_path: folder that relative paths in node options resolve against.
        request_side_packets: each run's start may bring side packets the graph does not
            declare (KServe request parameters, as in OVMS): a required side packet nobody
            produces is then checked when a run starts, as MediaPipe does, instead of here.
    """
    return _validate(parsed, base_path, request_side_packets).errors


def _validate(
    parsed: ParsedGraphConfig, base_path: Path | None, request_side_packets: bool = False
) -> _Result:
    out = _Collector(parsed.path)
    res = _Result()
    expansion = expand_subgraphs(parsed, out.report)
    config = expansion.config
    out.field_lines = expansion.field_lines
    res.node_subgraphs = expansion.groups
    res.subgraphs = expansion.subgraphs
    res.config = config
    res.path = parsed.path
    names = canonical_node_names(list(config.node))
    nodes: list[NodeSpec] = []
    classes: list[type[Calculator]] = []
    # Names of streams / side packets in specs that did not parse: never reported again.
    res.unparsed = set()

    def tag_map(specs: Any, node: NodeSpec | None, what: str) -> tuple[TagMap, bool]:
        try:
            return TagMap(specs), True
        except TagMapError as exc:
            bad = [s for s in specs if not parses(s)]
            res.unparsed.update(name_of(s) for s in specs)
            if node is None:
                lines = parsed.graph_field_lines.get(what) or []
                index = list(specs).index(bad[0]) if bad else 0
                out.add(ValidationError,
                        f"Unable to initialize TagMaps for the graph ({what}).\n{exc}",
                        None, lines[index] if index < len(lines) else None)
            else:
                out.add(ValidationError,
                        f"Unable to initialize TagMaps for node {node.name} ({what}).\n{exc}",
                        node.name, out.line_of(node, what, bad[0] if bad else None))
            return TagMap([]), False

    res.graph_inputs, _ = tag_map(config.input_stream, None, "input_stream")
    res.graph_outputs, _ = tag_map(config.output_stream, None, "output_stream")
    res.graph_input_side_packets, _ = tag_map(config.input_side_packet, None, "input_side_packet")

    for index, (node, name, line) in enumerate(zip(config.node, names, expansion.lines)):
        spec = NodeSpec(
            name=name, calculator=node.calculator, index=index, inputs=TagMap([]),
            outputs=TagMap([]), input_side_packets=TagMap([]), output_side_packets=TagMap([]),
            config=node, line=line, base_path=base_path, executor=node.executor,
        )
        parsed_ok = True
        for attr, what in (("inputs", "input_stream"), ("outputs", "output_stream"),
                           ("input_side_packets", "input_side_packet"),
                           ("output_side_packets", "output_side_packet")):
            tags, ok = tag_map(getattr(node, what), spec, what)
            setattr(spec, attr, tags)
            parsed_ok = parsed_ok and ok
        nodes.append(spec)
        # Back edges are known from the config alone: wiring checks need them even when the
        # calculator is unknown (else a LOOPBACK node would also report a false cycle).
        _check_stream_info(spec, out, check_tags=parsed_ok)
        try:
            cls = registry.lookup(node.calculator)
        except CalculatorNotFoundError as exc:
            hint = did_you_mean(node.calculator, registry.known_names()) or (
                " (`ovgraph calculators` lists the registered ones)"
            )
            out.add(CalculatorNotFoundError,
                    f"ValidatedGraphConfig Initialization failed.\n{exc}{hint}",
                    name, out.line_of(spec, "calculator"))
            classes.append(Calculator)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Calculator)):
            out.add(ContractError, f'"{node.calculator}" is not a calculator.', name,
                    out.line_of(spec, "calculator"))
            classes.append(Calculator)
            continue
        classes.append(cls)
        try:
            spec.options = options_for(cls, node)
        except ContractError as exc:
            out.add(ContractError, f"ValidatedGraphConfig Initialization failed.\n{exc}",
                    name, out.line_of(spec, "node_options" if node.node_options else "options"))
        else:
            if parsed_ok:  # a spec that did not parse was reported; its contract is moot
                try:
                    cls.validate_contract(spec)
                except ContractError as exc:
                    out.add(ContractError, f"ValidatedGraphConfig Initialization failed.\n{exc}",
                            name, _contract_line(out, spec, str(exc)))
        _choose_handler(spec, cls, config, out)

    res.nodes, res.classes = nodes, classes
    cycle_reported = _check_outer_cycles(parsed, out)
    _wire(res, out, report_cycles=not cycle_reported)
    if not request_side_packets:
        _check_side_packets(res, out)
    _check_stream_types(res, out)
    _check_executors(res, config, out)
    res.max_queue_size = config.max_queue_size or 100
    res.warnings = _self_loop_warnings(res)
    for w in res.warnings:
        logger.warning("%s", w)
    res.errors = out.errors
    return res


_CONTRACT_FIELD_RE = re.compile(
    r"(Input stream|Output stream|Input side packet|Output side packet) tag \"([^\"]*)\"",
    re.IGNORECASE,
)
_FIELDS = {
    "input stream": "input_stream",
    "output stream": "output_stream",
    "input side packet": "input_side_packet",
    "output side packet": "output_side_packet",
}


def _contract_line(out: _Collector, spec: NodeSpec, message: str) -> int | None:
    """Point a contract error that names a tag at the first spec with that tag."""
    match = _CONTRACT_FIELD_RE.search(message)
    if match is None:
        return spec.line
    field_name = _FIELDS[match.group(1).lower()]
    tag = "" if match.group(2) == "<untagged>" else match.group(2)
    for item in getattr(spec.config, field_name):
        if parses(item) and parse_spec(item)[0] == tag:
            return out.line_of(spec, field_name, item)
    return spec.line


def _check_stream_info(spec: NodeSpec, out: _Collector, *, check_tags: bool) -> None:
    back: set[int] = set()
    seen: set[str] = set()
    for k, info in enumerate(spec.config.input_stream_info):
        line = out.line_at(spec, "input_stream_info", k)
        if info.tag_index in seen:
            out.add(ValidationError,
                    f'Input stream "{info.tag_index}" of node "{spec.name}" has more than one '
                    "InputStreamInfo.", spec.name, line)
            continue
        seen.add(info.tag_index)
        try:
            tag, index = parse_tag_index(info.tag_index)
        except TagMapError as exc:
            out.add(ValidationError, str(exc), spec.name, line)
            continue
        stream_id = spec.inputs.id_of(tag, index)
        if stream_id is None:
            if check_tags:  # else the input specs did not parse, which was reported
                inputs = ", ".join(f'"{t}"' for t in _tag_indexes(spec.inputs)) or "none"
                out.add(ValidationError,
                        f"ValidatedGraphConfig Initialization failed.\n; Input stream with "
                        f'tag_index "{info.tag_index}" requested in InputStreamInfo but is not an '
                        f'input stream of the calculator (node "{spec.name}"; its inputs: '
                        f"{inputs}).", spec.name, line)
            continue
        if info.back_edge:
            back.add(stream_id)
    spec.back_edges = frozenset(back)


def _tag_indexes(tags: TagMap) -> list[str]:
    return [f"{e.tag}:{e.index}" for e in tags]


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
    line = out.line_of(spec, "input_stream_handler")
    if spec.input_stream_handler not in HANDLERS:
        out.add(ValidationError,
                f"CalculatorGraph::InitializeCalculatorNodes failed: \nNo registered object with "
                f'name: {spec.input_stream_handler}; "{spec.input_stream_handler}" is not a '
                "registered input stream handler."
                + did_you_mean(spec.input_stream_handler, HANDLERS), spec.name, line)
        return
    if spec.input_stream_handler == "SyncSetInputStreamHandler":
        try:
            sync_sets_from_options(spec.inputs, spec.handler_options)
        except TagMapError as exc:
            out.add(ValidationError, f'Node "{spec.name}": {exc}', spec.name, line)


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


def _wire(res: _Result, out: _Collector, *, report_cycles: bool = True) -> None:
    nodes: list[NodeSpec] = res.nodes
    producers: dict[str, tuple[int, int]] = {}
    consumers: dict[str, list[tuple[int, int]]] = {}
    side_producers: dict[str, tuple[int, int]] = {}
    for i, entry in enumerate(res.graph_inputs):
        if entry.name in producers:
            out.add(ValidationError, f'; Output Stream "{entry.name}" defined twice.')
        producers[entry.name] = (-1, i)
    for spec in nodes:
        for out_id, entry in enumerate(spec.outputs):
            if entry.name in producers:
                out.add(ValidationError, f'; Output Stream "{entry.name}" defined twice.',
                        spec.name, out.line_of(spec, "output_stream", entry.name))
                continue
            producers[entry.name] = (spec.index, out_id)
        for out_id, entry in enumerate(spec.output_side_packets):
            if entry.name in side_producers:
                out.add(ValidationError, f'Output Side Packet "{entry.name}" defined twice.',
                        spec.name, out.line_of(spec, "output_side_packet", entry.name))
                continue
            side_producers[entry.name] = (spec.index, out_id)
    required: list[str] = []
    edges: list[set[int]] = [set() for _ in nodes]
    indegree = [0] * len(nodes)
    for spec in nodes:
        for in_id, entry in enumerate(spec.inputs):
            producer = producers.get(entry.name)
            if producer is None:
                if entry.name not in res.unparsed:  # else its producer's spec was reported
                    out.add(ValidationError,
                            f'; Input Stream "{entry.name}" for node with sorted index '
                            f"{spec.index} name {spec.name} does not have a corresponding output "
                            f"stream.{hint(entry.name, producers, 'known streams')}",
                            spec.name, out.line_of(spec, "input_stream", entry.name))
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
        if report_cycles:
            cycle = _find_cycle(edges, {i for i, d in enumerate(indegree) if d > 0})
            first = nodes[cycle[0]]
            out.add(ValidationError, _cycle_message([nodes[i].name for i in cycle]),
                    first.name, first.line)
        order.extend(i for i in range(len(nodes)) if i not in order)
    res.producers, res.consumers, res.side_producers = producers, consumers, side_producers
    res.required_side_packets = [n for n in required if not _all_optional(res, n)]
    res.order = order


def _cycle_message(names: list[str]) -> str:
    return (
        "; Generator side packet cycle or calculator stream cycle detected in graph: "
        f"[{', '.join(names)}]"
    )


def _side_packet_ports(res: _Result, name: str) -> Iterable[tuple[NodeSpec, bool]]:
    """Yield ``(node, optional)`` for every node input side packet named ``name``."""
    for spec, cls in zip(res.nodes, res.classes):
        optional_tags = {
            p.tag for p in cls.ports() if p.kind == "input_side_packet" and p.optional
        }
        for entry in spec.input_side_packets:
            if entry.name == name:
                yield spec, entry.tag in optional_tags


def _all_optional(res: _Result, name: str) -> bool:
    return all(optional for _spec, optional in _side_packet_ports(res, name))


def _check_side_packets(res: _Result, out: _Collector) -> None:
    """A required side packet must come from a node or be declared by the graph."""
    declared = set(res.graph_input_side_packets.names())
    for name in res.required_side_packets:
        if name in declared or name in res.unparsed:
            continue
        for spec, optional in _side_packet_ports(res, name):
            if optional or spec.calculator == "" or res.classes[spec.index] is Calculator:
                continue
            hint = did_you_mean(name, res.side_producers)
            out.add(ValidationError,
                    f'Side packet "{name}" of node "{spec.name}" is required but no node '
                    "produces it and the graph does not declare it as an input_side_packet, "
                    f"so every run would fail.{hint} (A side packet the client passes at run "
                    f'start is declared at graph level: input_side_packet: "{name}".)',
                    spec.name, out.line_of(spec, "input_side_packet", name))
            break


def _port_types(cls: type[Calculator], kind: str) -> dict[str, Any]:
    return {p.tag: p.type for p in cls.ports() if p.kind == kind}


def _checkable(t: Any) -> bool:
    return inspect.isclass(t) and t is not object and typing.get_origin(t) is None


def _type_name(t: type) -> str:
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _check_stream_types(res: _Result, out: _Collector) -> None:
    """Declared payload types of the two ends of each stream must be compatible."""
    for stream, readers in res.consumers.items():
        node_index, out_id = res.producers[stream]
        if node_index < 0:
            continue
        producer = res.nodes[node_index]
        sent = _port_types(res.classes[node_index], "output_stream").get(
            producer.outputs.entries[out_id].tag
        )
        if not _checkable(sent):
            continue
        for reader_index, in_id in readers:
            reader = res.nodes[reader_index]
            wanted = _port_types(res.classes[reader_index], "input_stream").get(
                reader.inputs.entries[in_id].tag
            )
            if not _checkable(wanted) or issubclass(sent, wanted) or issubclass(wanted, sent):
                continue
            out.add(ContractError,
                    f'Input stream "{stream}" of calculator "{reader.name}" expects packets of '
                    f'type "{_type_name(wanted)}" but the connected output stream will contain '
                    f'packets of type "{_type_name(sent)}" (from node "{producer.name}").',
                    reader.name, out.line_of(reader, "input_stream", stream))


def _check_outer_cycles(parsed: ParsedGraphConfig, out: _Collector) -> bool:
    """Refuse a cycle through a subgraph node, as MediaPipe does where it is one calculator.

    Expansion keeps only the back edges the subgraph declares inside, so OVMS's LLM node with
    its ``LOOPBACK`` back edge removed would otherwise pass. Returns whether one was reported.
    """
    top = list(parsed.config.node)
    classes = [registry.lookup_optional(n.calculator) for n in top]
    if not any(is_subgraph(c) for c in classes):
        return False
    names = canonical_node_names(top)
    producers: dict[str, int] = {}
    specs: list[list[tuple[str, bool]]] = []
    for i, node in enumerate(top):
        try:
            inputs, outputs = TagMap(node.input_stream), TagMap(node.output_stream)
            back = {parse_tag_index(info.tag_index) for info in node.input_stream_info
                    if info.back_edge}
        except TagMapError:
            specs.append([])
            continue
        for entry in outputs:
            producers.setdefault(entry.name, i)
        specs.append([(e.name, (e.tag, e.index) in back) for e in inputs])
    edges: list[set[int]] = [set() for _ in top]
    indegree = [0] * len(top)
    for i, inputs in enumerate(specs):
        for stream, is_back in inputs:
            j = producers.get(stream)
            if j is not None and not is_back and i not in edges[j]:
                edges[j].add(i)
                indegree[i] += 1
    ready = [i for i, d in enumerate(indegree) if d == 0]
    while ready:
        i = ready.pop()
        for j in edges[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                ready.append(j)
    stuck = {i for i, d in enumerate(indegree) if d > 0}
    if not stuck:
        return False
    cycle = _find_cycle(edges, stuck)
    if not any(is_subgraph(classes[i]) for i in cycle):
        return False
    first = cycle[0]
    line = parsed.node_lines[first] if first < len(parsed.node_lines) else None
    out.add(ValidationError, _cycle_message([names[i] for i in cycle]), names[first], line)
    return True


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
            hint = did_you_mean(spec.executor, executors) or (
                f" (declared: {', '.join(sorted(executors))})" if executors
                else " (the graph declares no executor)"
            )
            out.add(ValidationError,
                    f'The executor "{spec.executor}" is not declared in an ExecutorConfig.'
                    + hint, spec.name, out.line_of(spec, "executor"))
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
