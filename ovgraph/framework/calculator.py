"""The calculator API: declared ports, the contract, and ``open`` / ``process`` / ``close``.

A calculator declares its ports as class attributes, in the spirit of MediaPipe's api2::

    class UpperCaseCalculator(Calculator):
        '''Upper-cases strings.

        node {
          calculator: "UpperCaseCalculator"
          input_stream: "TEXT:in"
          output_stream: "TEXT:out"
        }
        '''

        IN = Input("TEXT", str)
        OUT = Output("TEXT", str)

        def process(self, cc: CalculatorContext) -> None:
            self.OUT(cc).send(self.IN(cc).get().upper())

The contract is derived from those attributes; a calculator with dynamic arity sets
``DYNAMIC_PORTS = True`` and checks the node itself in ``validate_contract``. One instance serves
one graph run and is never called concurrently (thread-compatible, as in MediaPipe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ovgraph.errors import ContractError
from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.packet import EMPTY, Packet
from ovgraph.framework.tag_map import TagMap

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = [
    "Calculator",
    "CalculatorContext",
    "Input",
    "NodeSpec",
    "Output",
    "OutputSidePacket",
    "OutputStream",
    "SidePacket",
    "Subgraph",
]

T = TypeVar("T")


class _Port(Generic[T]):
    """A declared port: a tag, an optional payload type, arity."""

    kind: ClassVar[str] = ""

    def __init__(
        self, tag: str = "", type_: type[T] | None = None, *, optional: bool = False,
        multiple: bool = False,
    ) -> None:
        self.tag = tag
        self.type = type_
        self.optional = optional
        self.multiple = multiple
        self.attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tag!r})"


class Input(_Port[T]):
    """An input stream port; ``port(cc)`` returns this call's packet (maybe empty)."""

    kind = "input_stream"

    def __call__(self, cc: CalculatorContext) -> Packet:
        """Return this call's packet on the port (an empty packet when absent)."""
        index = cc.port_ids.get(self)
        return cc.inputs[index] if index is not None else _ABSENT

    def all(self, cc: CalculatorContext) -> list[Packet]:
        """Return the packets of every index of this tag."""
        return [cc.inputs[i] for i in cc.spec.inputs.ids_of_tag(self.tag)]

    def present(self, cc: CalculatorContext) -> bool:
        """Whether the node connects this port."""
        return self in cc.port_ids


class Output(_Port[T]):
    """An output stream port; ``port(cc)`` returns the ``OutputStream``."""

    kind = "output_stream"

    def __call__(self, cc: CalculatorContext) -> OutputStream:
        """Return the port's output stream (a sink that drops packets when unconnected)."""
        index = cc.port_ids.get(self)
        return cc.outputs[index] if index is not None else _NULL_OUTPUT

    def present(self, cc: CalculatorContext) -> bool:
        """Whether the node connects this port."""
        return self in cc.port_ids


class SidePacket(_Port[T]):
    """An input side packet port; ``port(cc)`` returns the payload (None if absent)."""

    kind = "input_side_packet"

    def __call__(self, cc: CalculatorContext) -> Any:
        """Return the side packet's value (None when unconnected)."""
        index = cc.port_ids.get(self)
        return cc.input_side_packets[index] if index is not None else None


class OutputSidePacket(_Port[T]):
    """An output side packet port, set in ``open``."""

    kind = "output_side_packet"

    def set(self, cc: CalculatorContext, value: Any) -> None:
        """Set the side packet's value."""
        index = cc.port_ids.get(self)
        if index is not None:
            cc.output_side_packets[index] = value


_ABSENT = Packet.empty()


class OutputStream:
    """One output stream of a running node: collects packets until the node's call returns."""

    __slots__ = (
        "bound",
        "closed",
        "current_ts",
        "name",
        "next_allowed",
        "node",
        "pending",
        "requested_bound",
        "type",
    )

    def __init__(self, name: str, node: str, type_: type | None) -> None:
        self.name = name
        self.node = node
        self.type = type_ if type_ is not object else None
        self.pending: list[Packet] = []
        self.next_allowed = ts_mod.PRE_STREAM
        self.bound = ts_mod.PRE_STREAM
        self.requested_bound = ts_mod.UNSET
        self.current_ts = ts_mod.UNSTARTED
        self.closed = False

    def add(self, payload: Any, timestamp: int) -> None:
        """Emit ``payload`` at ``timestamp``; timestamps must strictly increase."""
        if self.closed:
            raise ValueError(f'Packet sent to closed stream "{self.name}".')
        if timestamp < self.next_allowed or not ts_mod.is_allowed_in_stream(timestamp):
            raise ValueError(
                f'In stream "{self.name}", timestamp not specified or set to illegal value: '
                f"{ts_mod.timestamp_str(timestamp)} (next allowed "
                f"{ts_mod.timestamp_str(self.next_allowed)})"
            )
        if self.type is not None and not isinstance(payload, self.type):
            raise TypeError(
                f'Packet type mismatch on calculator outputting to stream "{self.name}": '
                f"expected {self.type.__name__}, got {type(payload).__name__}"
            )
        self.pending.append(Packet(payload, timestamp))
        self.next_allowed = ts_mod.next_allowed_in_stream(timestamp)

    def add_packet(self, packet: Packet) -> None:
        """Emit an existing packet (keeps its timestamp)."""
        if packet.payload is EMPTY:
            self.set_next_timestamp_bound(ts_mod.next_allowed_in_stream(packet.timestamp))
        else:
            self.add(packet.payload, packet.timestamp)

    def send(self, payload: Any) -> None:
        """Emit ``payload`` at the current input timestamp."""
        self.add(payload, self.current_ts)

    def set_next_timestamp_bound(self, bound: int) -> None:
        """Promise that no packet before ``bound`` will follow.

        As in MediaPipe, bound updates are batched: they take effect when the current
        ``open`` / ``process`` call returns, so a packet may still be added below ``bound``
        during the same call.
        """
        if bound > self.requested_bound:
            self.requested_bound = bound

    def pending_bound(self) -> int:
        """Return the bound the stream will have once the current call returns."""
        return max(self.next_allowed, self.requested_bound)

    def commit_bound(self) -> int:
        """Apply the bound requested during the call that just ended; return the new bound."""
        if self.requested_bound > self.next_allowed:
            self.next_allowed = self.requested_bound
        self.requested_bound = ts_mod.UNSET
        return self.next_allowed

    def close(self) -> None:
        """Close the stream: no more packets."""
        self.next_allowed = ts_mod.DONE
        self.closed = True


class _NullOutput(OutputStream):
    """Stands in for an optional output the node does not connect: drops everything."""

    def add(self, payload: Any, timestamp: int) -> None:
        return None


_NULL_OUTPUT = _NullOutput("", "", None)


@dataclass
class NodeSpec:
    """A validated node: what a calculator class sees of its node config."""

    name: str
    calculator: str
    index: int
    inputs: TagMap
    outputs: TagMap
    input_side_packets: TagMap
    output_side_packets: TagMap
    options: Any = None
    config: Any = None
    line: int | None = None
    base_path: Path | None = None
    back_edges: frozenset[int] = field(default_factory=frozenset)
    executor: str = ""
    input_stream_handler: str = "DefaultInputStreamHandler"
    handler_options: Any = None


class CalculatorContext:
    """What a calculator sees during one ``open`` / ``process`` / ``close`` call."""

    __slots__ = (
        "cancel_callbacks",
        "graph_side_packets",
        "input_side_packets",
        "input_timestamp",
        "inputs",
        "offset",
        "output_side_packets",
        "outputs",
        "port_ids",
        "resources",
        "span_attributes",
        "spec",
    )

    def __init__(
        self,
        spec: NodeSpec,
        port_ids: dict[_Port[Any], int],
        outputs: list[OutputStream],
        input_side_packets: list[Any],
    ) -> None:
        self.spec = spec
        self.port_ids = port_ids
        self.outputs = outputs
        self.input_side_packets = input_side_packets
        self.output_side_packets: list[Any] = [EMPTY] * len(spec.output_side_packets)
        self.inputs: list[Packet] = []
        self.input_timestamp = ts_mod.UNSTARTED
        self.offset: int | None = None
        self.resources: Any = None
        self.graph_side_packets: dict[str, Any] = {}
        self.cancel_callbacks: list[Any] = []
        # Attributes for the span of the current call when the request is traced
        # (ovgraph.tracing.annotate); None when it is not.
        self.span_attributes: dict[str, Any] | None = None

    def on_cancel(self, callback: Any) -> None:
        """Call ``callback()`` if the run is cancelled (e.g. the client disconnected).

        A calculator blocked inside ``process`` (waiting for tokens) uses this to wake up.
        """
        self.cancel_callbacks.append(callback)

    @property
    def node_name(self) -> str:
        """The node's canonical name."""
        return self.spec.name

    @property
    def options(self) -> Any:
        """The node's options message (an instance of the calculator's ``Options``)."""
        return self.spec.options

    def set_offset(self, offset: int) -> None:
        """Declare that outputs lag inputs by at most ``offset`` (only valid in ``open``)."""
        if self.input_timestamp != ts_mod.UNSTARTED:
            raise ValueError("SetOffset must be called from Calculator::Open()")
        self.offset = offset


class Calculator:
    """Base class of every calculator.

    Class attributes:
        Options: generated protobuf message class of the node's options, or None.
        INPUT_STREAM_HANDLER: the default handler for this calculator (the config overrides it).
        TIMESTAMP_OFFSET: automatic output bound offset, as ``SetOffset`` in ``GetContract``.
        PROCESS_TIMESTAMP_BOUNDS: also call ``process`` on bound-only input changes.
        DYNAMIC_PORTS: skip the declared-port check and call ``validate_contract`` only.
    """

    Options: ClassVar[type[Message] | None] = None
    INPUT_STREAM_HANDLER: ClassVar[str | None] = None
    TIMESTAMP_OFFSET: ClassVar[int | None] = None
    PROCESS_TIMESTAMP_BOUNDS: ClassVar[bool] = False
    DYNAMIC_PORTS: ClassVar[bool] = False

    @classmethod
    def ports(cls) -> list[_Port[Any]]:
        """Return every declared port of the class (inherited ones included)."""
        seen: dict[str, _Port[Any]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, _Port):
                    seen[name] = value
        return list(seen.values())

    @classmethod
    def validate_contract(cls, spec: NodeSpec) -> None:
        """Check the node against the contract; raise ``ContractError`` on a mismatch."""
        if cls.DYNAMIC_PORTS:
            return
        sides = {
            "input_stream": ("Input stream", spec.inputs),
            "output_stream": ("Output stream", spec.outputs),
            "input_side_packet": ("Input side packet", spec.input_side_packets),
            "output_side_packet": ("Output side packet", spec.output_side_packets),
        }
        ports = cls.ports()
        for kind, (label, tag_map) in sides.items():
            declared = {p.tag: p for p in ports if p.kind == kind}
            for tag, count in tag_map.tags().items():
                port = declared.get(tag)
                shown = tag or "<untagged>"
                if port is None:
                    accepted = ", ".join(sorted(t or "<untagged>" for t in declared)) or "none"
                    raise ContractError(
                        f'{cls.__name__}: {label} tag "{shown}" is not accepted '
                        f"(accepted: {accepted})."
                    )
                if count > 1 and not port.multiple:
                    raise ContractError(
                        f'{cls.__name__}: {label} tag "{shown}" accepts a single stream, '
                        f"got {count}."
                    )
            present = tag_map.tags()
            for port in declared.values():
                if not port.optional and port.tag not in present:
                    raise ContractError(
                        f'{cls.__name__}: required {label.lower()} tag "{port.tag}" is missing.'
                    )

    @classmethod
    def create_node_resources(cls, spec: NodeSpec, settings: Mapping[str, Any]) -> Any:
        """Build per-node resources once per graph definition (OVMS node initializer).

        The serving layer calls this when a graph is loaded, with the server's settings (command
        line flags), and hands the result to every run as ``cc.resources``. Return None (the
        default) when the calculator needs none.
        """
        return None

    def open(self, cc: CalculatorContext) -> None:
        """Prepare for a run; may emit packets and set output side packets."""

    def process(self, cc: CalculatorContext) -> None:
        """Handle one input set (or produce one batch, for a source)."""

    def close(self, cc: CalculatorContext) -> None:
        """Finish the run after all inputs are done, or on error or cancellation."""


class Subgraph:
    """A calculator name that expands into a graph of other nodes (MediaPipe ``Subgraph``).

    Subclasses implement ``get_config``; its graph-level streams and side packets are matched to
    the node's by tag and index.
    """

    Options: ClassVar[type[Message] | None] = None

    @classmethod
    def get_config(cls, node: Any, options: Any) -> Any:
        """Return the ``CalculatorGraphConfig`` that replaces ``node``."""
        raise NotImplementedError


def bind_ports(
    cls: type[Calculator], spec: NodeSpec
) -> dict[_Port[Any], int]:
    """Map each declared port to its id in the node's tag maps (index 0 of its tag)."""
    maps = {
        "input_stream": spec.inputs,
        "output_stream": spec.outputs,
        "input_side_packet": spec.input_side_packets,
        "output_side_packet": spec.output_side_packets,
    }
    bound: dict[_Port[Any], int] = {}
    for port in cls.ports():
        index = maps[port.kind].id_of(port.tag, 0)
        if index is not None:
            bound[port] = index
    return bound


def output_types(cls: type[Calculator], spec: NodeSpec) -> Sequence[type | None]:
    """Return the declared payload type of each output stream id (None = any)."""
    by_tag = {p.tag: p.type for p in cls.ports() if p.kind == "output_stream"}
    return [by_tag.get(entry.tag) for entry in spec.outputs]
