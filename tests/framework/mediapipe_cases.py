"""Differential cases run on both real MediaPipe 0.10.21 and ovgraph.

Every case uses only calculators and input stream handlers that exist in both runtimes
(``PassThroughCalculator``, ``PreviousLoopbackCalculator``, ``SidePacketToStreamCalculator``,
``FlowLimiterCalculator``; ``DefaultInputStreamHandler``, ``ImmediateInputStreamHandler``,
``FixedSizeInputStreamHandler``). MediaPipe's observed result of each case is cached in
``tests/testdata/mediapipe_oracle_cache.json`` (see ``mediapipe_oracle.py``).

Cases whose result depends on thread timing are left out on purpose (a ``FlowLimiterCalculator``
whose ``FINISHED`` loop races the next frame, a ``FixedSizeInputStreamHandler`` queue trimmed while
the node runs): the oracle must be deterministic.

Error classes. MediaPipe reports every failure as a status text; :func:`expected_error_class` maps
it, by key phrase, to the ovgraph exception class (``ovgraph.errors``) that must be raised for the
same case. The first matching row wins:

=========================================================  ===============================
MediaPipe key phrase (regular expression)                  ovgraph class
=========================================================  ===============================
``Failed to parse`` (text-format error)                    GraphConfigError
``No registered object with name.*Unable to find           CalculatorNotFoundError
Calculator``
``Calculator::(Open|Process|Close)() for node`` (a         CalculatorError
calculator failed while the graph ran)
``Packet timestamp mismatch``, ``timestamp not specified   RequestError
or set to illegal value``, ``Graph is throttled`` (the
client misused a graph input stream)
``does not have a corresponding output stream``,           ValidationError
``defined twice``, ``cycle detected``
``Unable to initialize TagMaps``, ``TAG:index:name is      ValidationError
invalid``, ``TAG:index is invalid``, ``already had a
name``, ``Not all indexes were assigned names``
``InputStreamInfo``                                        ValidationError
``is not a registered input stream handler``               ValidationError
``is required but was not provided`` (side packet)         ValidationError
``[Ee]xecutor`` (undeclared or reserved executor name)     ValidationError
``must use matching tags``; ``Initialization               ContractError
failed.\n<Name>Calculator: …`` (any other contract check
of a calculator, e.g. SidePacketToStreamCalculator's tags)
=========================================================  ===============================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PRESTREAM = -(2**63) + 2
POSTSTREAM = 2**63 - 1 - 2


@dataclass(frozen=True)
class U64:
    """An unsigned 64-bit payload (MediaPipe ``uint64_t``; a plain int in ovgraph)."""

    value: int


def _typed(value: Any) -> dict[str, Any]:
    if isinstance(value, U64):
        return {"type": "uint64", "value": value.value}
    if isinstance(value, bool):
        return {"type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    raise TypeError(f"unsupported payload type {type(value).__name__}")


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, U64) else value


@dataclass(frozen=True)
class Case:
    """One differential case.

    Attributes:
        name: test id.
        config: graph config in text format.
        inputs: ``(stream, timestamp, payload)`` in the order the client adds them.
        side_packets: graph input side packets.
        observe: graph streams to observe.
        close: close the graph after the inputs (else wait until idle).
        observe_bounds: also compare empty (timestamp bound) packets.
        phrases: key phrases that the error messages of both runtimes must contain (invalid
            cases); each must occur in MediaPipe's message.
    """

    name: str
    config: str
    inputs: tuple[tuple[str, int, Any], ...] = ()
    side_packets: dict[str, Any] = field(default_factory=dict)
    observe: tuple[str, ...] = ("out",)
    close: bool = True
    observe_bounds: bool = False
    phrases: tuple[str, ...] = ()

    @property
    def payload(self) -> dict[str, Any]:
        """The case as the oracle's JSON object (also its cache key)."""
        data: dict[str, Any] = {
            "config": self.config,
            "side_packets": {k: _typed(v) for k, v in self.side_packets.items()},
            "inputs": [[s, t, _typed(v)] for s, t, v in self.inputs],
            "close": self.close,
            "observe": list(self.observe),
        }
        if self.observe_bounds:
            data["observe_bounds"] = True
        return data

    def run_graph_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments of ``ovgraph.testing.run_graph`` for this case."""
        return {
            "config": self.config,
            "inputs": [(s, t, _plain(v)) for s, t, v in self.inputs],
            "side_packets": {k: _plain(v) for k, v in self.side_packets.items()},
            "observe": list(self.observe),
            "close": self.close,
        }


_ERROR_TABLE: tuple[tuple[str, str], ...] = (
    (r"Failed to parse", "GraphConfigError"),
    (r"No registered object with name.*Unable to find Calculator", "CalculatorNotFoundError"),
    (r"Calculator::(Open|Process|Close)\(\) for node", "CalculatorError"),
    (r"Packet timestamp mismatch", "RequestError"),
    (r"timestamp not specified or set to illegal value", "RequestError"),
    (r"Graph is throttled", "RequestError"),
    (r"does not have a corresponding output stream", "ValidationError"),
    (r"defined twice", "ValidationError"),
    (r"cycle detected", "ValidationError"),
    (r"Unable to initialize TagMaps", "ValidationError"),
    (r"TAG:index:name is invalid", "ValidationError"),
    (r"TAG:index is invalid", "ValidationError"),
    (r"already had a name", "ValidationError"),
    (r"Not all indexes were assigned names", "ValidationError"),
    (r"InputStreamInfo", "ValidationError"),
    (r"is not a registered input stream handler", "ValidationError"),
    (r"is required but was not provided", "ValidationError"),
    (r"[Ee]xecutor", "ValidationError"),
    (r"must use matching tags", "ContractError"),
    (r"Initialization failed\.\n\w+Calculator: ", "ContractError"),
)


def expected_error_class(mediapipe_message: str) -> str:
    """Map a MediaPipe error text to the name of the ovgraph exception class for it.

    Raises:
        ValueError: no row of the table matches (extend the table with the new phrase).
    """
    for pattern, class_name in _ERROR_TABLE:
        if re.search(pattern, mediapipe_message, re.DOTALL):
            return class_name
    raise ValueError(f"no error class for MediaPipe message: {mediapipe_message!r}")


def _node(calculator: str, *lines: str) -> str:
    body = "\n".join(f"  {line}" for line in lines)
    return f'node {{\n  calculator: "{calculator}"\n{body}\n}}\n'


def _pt(*lines: str) -> str:
    return _node("PassThroughCalculator", *lines)


_IN_OUT = 'input_stream: "in"\noutput_stream: "out"\n'
_TWO_IN_TWO_OUT = (
    'input_stream: "a"\ninput_stream: "b"\noutput_stream: "out_a"\noutput_stream: "out_b"\n'
)
_FLOW_LIMITER_IO = (
    'input_stream: "in"\ninput_stream: "finished"\noutput_stream: "out"\noutput_stream: "allowed"\n'
)
_INTS = (("in", 0, 10), ("in", 1, 11), ("in", 2, 12))

_LOOPBACK_NODE = (
    'input_stream: "REQUEST:in"',
    'input_stream: "LOOPBACK:loopback"',
    'input_stream_info { tag_index: "LOOPBACK:0" back_edge: true }',
    'output_stream: "REQUEST:out"',
    'output_stream: "LOOPBACK:loopback"',
)

VALID_CASES: tuple[Case, ...] = (
    Case("single_pass_through", _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"'), _INTS),
    Case(
        "chain_of_three",
        _IN_OUT
        + _pt('input_stream: "in"', 'output_stream: "a"')
        + _pt('input_stream: "a"', 'output_stream: "b"')
        + _pt('input_stream: "b"', 'output_stream: "out"'),
        (("in", 0, "x"), ("in", 7, "y"), ("in", 1_000_000, "z")),
    ),
    Case(
        "negative_and_sparse_timestamps",
        _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"'),
        (("in", -1000, 1), ("in", -1, 2), ("in", 0, 3), ("in", 2**40, 4)),
    ),
    Case(
        "fan_out",
        'input_stream: "in"\noutput_stream: "out1"\noutput_stream: "out2"\n'
        + _pt('input_stream: "in"', 'output_stream: "out1"')
        + _pt('input_stream: "in"', 'output_stream: "out2"'),
        _INTS,
        observe=("out1", "out2"),
    ),
    Case(
        "fan_out_fan_in",
        'input_stream: "in"\noutput_stream: "out_x"\noutput_stream: "out_y"\n'
        + _pt('input_stream: "in"', 'output_stream: "x"')
        + _pt('input_stream: "in"', 'output_stream: "y"')
        + _pt(
            'input_stream: "x"',
            'input_stream: "y"',
            'output_stream: "out_x"',
            'output_stream: "out_y"',
        ),
        _INTS,
        observe=("out_x", "out_y"),
    ),
    Case(
        "two_inputs_one_missing_default",
        _TWO_IN_TWO_OUT
        + _pt(
            'input_stream: "a"',
            'input_stream: "b"',
            'output_stream: "out_a"',
            'output_stream: "out_b"',
        ),
        (("a", 0, 1), ("b", 0, 100), ("a", 1, 2), ("a", 2, 3), ("b", 2, 300), ("a", 3, 4)),
        observe=("out_a", "out_b"),
    ),
    Case(
        "two_inputs_one_never_sent",
        _TWO_IN_TWO_OUT
        + _pt(
            'input_stream: "a"',
            'input_stream: "b"',
            'output_stream: "out_a"',
            'output_stream: "out_b"',
        ),
        (("a", 0, 1), ("a", 1, 2)),
        observe=("out_a", "out_b"),
    ),
    Case(
        "two_inputs_one_never_sent_no_close",
        _TWO_IN_TWO_OUT
        + _pt(
            'input_stream: "a"',
            'input_stream: "b"',
            'output_stream: "out_a"',
            'output_stream: "out_b"',
        ),
        (("a", 0, 1), ("a", 1, 2)),
        observe=("out_a", "out_b"),
        close=False,
    ),
    Case(
        "two_inputs_one_missing_immediate",
        _TWO_IN_TWO_OUT
        + _pt(
            'input_stream: "a"',
            'input_stream: "b"',
            'output_stream: "out_a"',
            'output_stream: "out_b"',
            'input_stream_handler { input_stream_handler: "ImmediateInputStreamHandler" }',
        ),
        (("a", 0, 1), ("a", 1, 2)),
        observe=("out_a", "out_b"),
        close=False,
    ),
    Case(
        "graph_input_is_also_output",
        'input_stream: "in"\noutput_stream: "in"\noutput_stream: "out"\n'
        + _pt('input_stream: "in"', 'output_stream: "out"'),
        _INTS,
        observe=("in", "out"),
    ),
    Case(
        "graph_without_nodes",
        'input_stream: "in"\noutput_stream: "in"\n',
        _INTS,
        observe=("in",),
    ),
    Case(
        "no_inputs_sent",
        _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"'),
        (),
    ),
    Case(
        "no_close_waits_until_idle",
        _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"'),
        _INTS,
        close=False,
    ),
    Case(
        "tagged_pass_through",
        _IN_OUT + _pt('input_stream: "DATA:in"', 'output_stream: "DATA:out"'),
        _INTS,
    ),
    Case(
        "explicit_indexes",
        'input_stream: "a"\ninput_stream: "b"\noutput_stream: "c"\noutput_stream: "d"\n'
        + _pt(
            'input_stream: "X:1:b"',
            'input_stream: "X:0:a"',
            'output_stream: "X:0:c"',
            'output_stream: "X:1:d"',
        ),
        (("a", 0, "a0"), ("b", 0, "b0"), ("a", 1, "a1"), ("b", 2, "b2")),
        observe=("c", "d"),
    ),
    Case(
        "duplicate_unnamed_nodes",
        _IN_OUT
        + _pt('input_stream: "in"', 'output_stream: "a"')
        + _pt('input_stream: "a"', 'output_stream: "out"'),
        _INTS,
    ),
    Case(
        "duplicate_explicit_node_names",
        _IN_OUT
        + _pt('name: "pt"', 'input_stream: "in"', 'output_stream: "a"')
        + _pt('name: "pt"', 'input_stream: "a"', 'output_stream: "out"'),
        _INTS,
    ),
    Case(
        "max_queue_size_one",
        "max_queue_size: 1\n"
        + _IN_OUT
        + _pt('input_stream: "in"', 'output_stream: "a"')
        + _pt('input_stream: "a"', 'output_stream: "out"'),
        tuple(("in", t, t * 2) for t in range(20)),
    ),
    Case(
        "max_queue_size_unlimited",
        "max_queue_size: -1\n" + _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"'),
        tuple(("in", t, t) for t in range(20)),
    ),
    Case(
        "prestream_packet_from_client",
        _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"'),
        (("in", PRESTREAM, "header"),),
    ),
    Case(
        "side_packet_at_prestream",
        'input_side_packet: "s"\noutput_stream: "out"\n'
        + _node(
            "SidePacketToStreamCalculator",
            'input_side_packet: "s"',
            'output_stream: "AT_PRESTREAM:out"',
        ),
        side_packets={"s": "hello"},
    ),
    Case(
        "side_packet_at_poststream",
        'input_side_packet: "s"\noutput_stream: "out"\n'
        + _node(
            "SidePacketToStreamCalculator",
            'input_side_packet: "s"',
            'output_stream: "AT_POSTSTREAM:out"',
        ),
        side_packets={"s": 7},
    ),
    Case(
        "side_packet_at_zero",
        'input_side_packet: "s"\noutput_stream: "out"\n'
        + _node(
            "SidePacketToStreamCalculator", 'input_side_packet: "s"', 'output_stream: "AT_ZERO:out"'
        ),
        side_packets={"s": U64(2**63 + 5)},
    ),
    Case(
        "side_packet_at_tick",
        'input_stream: "tick"\ninput_side_packet: "s"\noutput_stream: "out"\n'
        + _node(
            "SidePacketToStreamCalculator",
            'input_stream: "TICK:tick"',
            'input_side_packet: "s"',
            'output_stream: "AT_TICK:out"',
        ),
        (("tick", 1, 0), ("tick", 5, 0), ("tick", 9, 0)),
        side_packets={"s": "v"},
    ),
    Case(
        "side_packet_at_first_tick",
        'input_stream: "tick"\ninput_side_packet: "s"\noutput_stream: "out"\n'
        + _node(
            "SidePacketToStreamCalculator",
            'input_stream: "TICK:tick"',
            'input_side_packet: "s"',
            'output_stream: "AT_FIRST_TICK:out"',
        ),
        (("tick", 3, "t"), ("tick", 4, "t"), ("tick", 8, "t")),
        side_packets={"s": 42},
    ),
    Case(
        "side_packets_indexed_at_prestream",
        'input_side_packet: "s0"\ninput_side_packet: "s1"\n'
        'output_stream: "o0"\noutput_stream: "o1"\n'
        + _node(
            "SidePacketToStreamCalculator",
            'input_side_packet: "s0"',
            'input_side_packet: "s1"',
            'output_stream: "AT_PRESTREAM:0:o0"',
            'output_stream: "AT_PRESTREAM:1:o1"',
        ),
        side_packets={"s0": "zero", "s1": "one"},
        observe=("o0", "o1"),
    ),
    Case(
        "previous_loopback_declared_back_edge",
        'input_stream: "in"\noutput_stream: "prev"\n'
        + _node(
            "PreviousLoopbackCalculator",
            'input_stream: "MAIN:in"',
            'input_stream: "LOOP:out"',
            'input_stream_info { tag_index: "LOOP" back_edge: true }',
            'output_stream: "PREV_LOOP:prev"',
        )
        + _pt('input_stream: "in"', 'output_stream: "out"'),
        (("in", 0, 100), ("in", 1, 101), ("in", 2, 102)),
        observe=("prev",),
    ),
    Case(
        "previous_loopback_cycle",
        'input_stream: "in"\noutput_stream: "out"\noutput_stream: "prev"\n'
        + _node(
            "PreviousLoopbackCalculator",
            'input_stream: "MAIN:in"',
            'input_stream: "LOOP:out"',
            'input_stream_info { tag_index: "LOOP" back_edge: true }',
            'output_stream: "PREV_LOOP:prev"',
        )
        + _pt(
            'input_stream: "in"',
            'input_stream: "prev"',
            'output_stream: "out"',
            'output_stream: "prev_copy"',
        ),
        (("in", 0, 100), ("in", 1, 101), ("in", 2, 102)),
        observe=("out", "prev"),
    ),
    Case(
        "previous_loopback_cycle_bounds",
        'input_stream: "in"\noutput_stream: "prev"\n'
        + _node(
            "PreviousLoopbackCalculator",
            'input_stream: "MAIN:in"',
            'input_stream: "LOOP:out"',
            'input_stream_info { tag_index: "LOOP" back_edge: true }',
            'output_stream: "PREV_LOOP:prev"',
        )
        + _pt(
            'input_stream: "in"',
            'input_stream: "prev"',
            'output_stream: "out"',
            'output_stream: "prev_copy"',
        ),
        (("in", 0, 100), ("in", 1, 101), ("in", 2, 102)),
        observe=("prev",),
        observe_bounds=True,
    ),
    Case(
        "ovms_loopback_default_handler_stalls",
        'input_stream: "in"\noutput_stream: "out"\n' + _pt('name: "llmNode1"', *_LOOPBACK_NODE),
        (("in", 0, "req-1"),),
    ),
    Case(
        "ovms_loopback_immediate_handler_fires",
        'input_stream: "in"\noutput_stream: "out"\n'
        + _pt(
            'name: "llmNode1"',
            *_LOOPBACK_NODE,
            'input_stream_handler { input_stream_handler: "ImmediateInputStreamHandler" }',
        ),
        (("in", 0, "req-1"),),
    ),
    Case(
        "graph_level_immediate_handler",
        'input_stream_handler { input_stream_handler: "ImmediateInputStreamHandler" }\n'
        + _IN_OUT
        + _pt('input_stream: "in"', 'output_stream: "out"'),
        _INTS,
    ),
    Case(
        "fixed_size_handler_single_stream",
        _IN_OUT
        + _pt(
            'input_stream: "in"',
            'output_stream: "out"',
            'input_stream_handler { input_stream_handler: "FixedSizeInputStreamHandler" }',
        ),
        (("in", 0, 1),),
    ),
    Case(
        "flow_limiter_without_finished_signal",
        _FLOW_LIMITER_IO
        + _node(
            "FlowLimiterCalculator",
            'input_stream: "in"',
            'input_stream: "FINISHED:finished"',
            'output_stream: "out"',
            'output_stream: "ALLOW:allowed"',
        ),
        (("in", 0, "f0"), ("in", 1, "f1"), ("in", 2, "f2")),
        observe=("out", "allowed"),
    ),
    Case(
        "fixed_size_handler_trims_waiting_queue",
        _TWO_IN_TWO_OUT
        + _pt(
            'input_stream: "a"',
            'input_stream: "b"',
            'output_stream: "out_a"',
            'output_stream: "out_b"',
            "input_stream_handler {",
            '  input_stream_handler: "FixedSizeInputStreamHandler"',
            "  options { [mediapipe.FixedSizeInputStreamHandlerOptions.ext] {",
            "    trigger_queue_size: 3 target_queue_size: 2 } }",
            "}",
        ),
        (*(("a", t, t) for t in range(6)), ("b", 5, 50)),
        observe=("out_a", "out_b"),
    ),
    Case(
        "fixed_size_handler_default_options",
        _TWO_IN_TWO_OUT
        + _pt(
            'input_stream: "a"',
            'input_stream: "b"',
            'output_stream: "out_a"',
            'output_stream: "out_b"',
            'input_stream_handler { input_stream_handler: "FixedSizeInputStreamHandler" }',
        ),
        (*(("a", t, t) for t in range(6)), ("b", 5, 50)),
        observe=("out_a", "out_b"),
    ),
    Case(
        "flow_limiter_max_in_flight_two",
        _FLOW_LIMITER_IO
        + _node(
            "FlowLimiterCalculator",
            'input_stream: "in"',
            'input_stream: "FINISHED:finished"',
            'output_stream: "out"',
            'output_stream: "ALLOW:allowed"',
            "options { [mediapipe.FlowLimiterCalculatorOptions.ext] { max_in_flight: 2 } }",
        ),
        tuple(("in", t, f"f{t}") for t in range(4)),
        observe=("out", "allowed"),
    ),
    Case(
        "flow_limiter_queue_of_one",
        _FLOW_LIMITER_IO
        + _node(
            "FlowLimiterCalculator",
            'input_stream: "in"',
            'input_stream: "FINISHED:finished"',
            'output_stream: "out"',
            'output_stream: "ALLOW:allowed"',
            "options { [mediapipe.FlowLimiterCalculatorOptions.ext] {",
            "  max_in_flight: 1 max_in_queue: 1 } }",
        ),
        tuple(("in", t, f"f{t}") for t in range(4)),
        observe=("out", "allowed"),
    ),
    Case(
        "poststream_packet_from_client",
        _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"'),
        (("in", POSTSTREAM, "end"),),
    ),
    Case(
        "flow_limiter_loop_single_frame",
        'input_stream: "in"\noutput_stream: "out"\n'
        + _node(
            "FlowLimiterCalculator",
            'input_stream: "in"',
            'input_stream: "FINISHED:out"',
            'input_stream_info { tag_index: "FINISHED" back_edge: true }',
            'output_stream: "sampled"',
        )
        + _pt('input_stream: "sampled"', 'output_stream: "out"'),
        (("in", 0, "f0"),),
    ),
)

INVALID_CASES: tuple[Case, ...] = (
    Case(
        "unknown_calculator",
        _IN_OUT + _node("SomeUnknownCalculator", 'input_stream: "in"', 'output_stream: "out"'),
        phrases=("SomeUnknownCalculator",),
    ),
    Case(
        "unconnected_input",
        _IN_OUT + _pt('input_stream: "nowhere"', 'output_stream: "out"'),
        phrases=('"nowhere"', "does not have a corresponding output stream"),
    ),
    Case(
        "unconnected_input_duplicate_names",
        _IN_OUT
        + _pt('input_stream: "in"', 'output_stream: "a"')
        + _pt('input_stream: "a"', 'output_stream: "b"')
        + _pt('input_stream: "nowhere"', 'output_stream: "out"'),
        phrases=('"nowhere"', "does not have a corresponding output stream"),
    ),
    Case(
        "unconnected_input_duplicate_explicit_names",
        _IN_OUT
        + _pt('name: "pt"', 'input_stream: "in"', 'output_stream: "a"')
        + _pt('name: "pt"', 'input_stream: "nowhere"', 'output_stream: "out"'),
        phrases=('"nowhere"', "pt_2"),
    ),
    Case(
        "unconnected_input_name_clash",
        _IN_OUT
        + _pt('name: "PassThroughCalculator"', 'input_stream: "in"', 'output_stream: "a"')
        + _pt('input_stream: "nowhere"', 'output_stream: "out"'),
        phrases=('"nowhere"', "PassThroughCalculator_2"),
    ),
    Case(
        "stream_defined_twice",
        _IN_OUT
        + _pt('input_stream: "in"', 'output_stream: "out"')
        + _pt('input_stream: "in"', 'output_stream: "out"'),
        phrases=('"out"', "defined twice"),
    ),
    Case(
        "graph_input_reused_as_node_output",
        _IN_OUT
        + _pt('input_stream: "out"', 'output_stream: "in"')
        + _pt('input_stream: "in"', 'output_stream: "out"'),
        phrases=('"in"', "defined twice"),
    ),
    Case(
        "graph_input_declared_twice",
        'input_stream: "in"\n' + _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"'),
        phrases=('"in"', "defined twice"),
    ),
    Case(
        "cycle_without_back_edge",
        _IN_OUT
        + _pt(
            'input_stream: "in"', 'input_stream: "b"', 'output_stream: "a"', 'output_stream: "out"'
        )
        + _pt('input_stream: "a"', 'output_stream: "b"'),
        phrases=("cycle detected", "PassThroughCalculator_1", "PassThroughCalculator_2"),
    ),
    Case(
        "ovms_loopback_without_back_edge",
        _IN_OUT
        + _pt(
            'name: "llmNode1"',
            'input_stream: "REQUEST:in"',
            'input_stream: "LOOPBACK:loopback"',
            'output_stream: "REQUEST:out"',
            'output_stream: "LOOPBACK:loopback"',
        ),
        phrases=("cycle detected", "llmNode1"),
    ),
    Case(
        "lowercase_tag",
        _IN_OUT + _pt('input_stream: "data:in"', 'output_stream: "out"'),
        phrases=("TAG:index:name is invalid", '"data:in"'),
    ),
    Case(
        "too_many_colons",
        _IN_OUT + _pt('input_stream: "A:B:C:in"', 'output_stream: "A:out"'),
        phrases=("TAG:index:name is invalid", '"A:B:C:in"'),
    ),
    Case(
        "uppercase_stream_name",
        'input_stream: "IN"\noutput_stream: "out"\n'
        + _pt('input_stream: "IN"', 'output_stream: "out"'),
        phrases=('"IN"',),
    ),
    Case(
        "repeated_tag_without_index",
        'input_stream: "a"\ninput_stream: "b"\noutput_stream: "c"\noutput_stream: "d"\n'
        + _pt(
            'input_stream: "X:a"',
            'input_stream: "X:b"',
            'output_stream: "X:0:c"',
            'output_stream: "X:1:d"',
        ),
        phrases=("already had a name",),
    ),
    Case(
        "index_gap",
        'input_stream: "a"\ninput_stream: "b"\noutput_stream: "c"\noutput_stream: "d"\n'
        + _pt(
            'input_stream: "X:0:a"',
            'input_stream: "X:2:b"',
            'output_stream: "X:0:c"',
            'output_stream: "X:2:d"',
        ),
        phrases=("Not all indexes were assigned names",),
    ),
    Case(
        "back_edge_on_non_input",
        _IN_OUT
        + _pt(
            'input_stream: "in"',
            'output_stream: "out"',
            'input_stream_info { tag_index: "LOOP:0" back_edge: true }',
        ),
        phrases=('"LOOP:0"', "InputStreamInfo"),
    ),
    Case(
        "duplicate_input_stream_info",
        _IN_OUT
        + _pt(
            'input_stream: "in"',
            'output_stream: "out"',
            'input_stream_info { tag_index: ":0" back_edge: false }',
            'input_stream_info { tag_index: ":0" back_edge: true }',
        ),
        phrases=("more than one InputStreamInfo",),
    ),
    Case(
        "pass_through_mismatched_tags",
        _IN_OUT + _pt('input_stream: "A:in"', 'output_stream: "B:out"'),
        phrases=("must use matching tags",),
    ),
    Case(
        "side_packet_to_stream_unknown_tag",
        'input_side_packet: "s"\noutput_stream: "out"\n'
        + _node(
            "SidePacketToStreamCalculator", 'input_side_packet: "s"', 'output_stream: "AT_NOON:out"'
        ),
        side_packets={"s": 1},
        phrases=("SidePacketToStreamCalculator",),
    ),
    Case(
        "side_packet_to_stream_at_tick_without_tick",
        'input_side_packet: "s"\noutput_stream: "out"\n'
        + _node(
            "SidePacketToStreamCalculator", 'input_side_packet: "s"', 'output_stream: "AT_TICK:out"'
        ),
        side_packets={"s": 1},
        phrases=("SidePacketToStreamCalculator", "TICK"),
    ),
    Case(
        "missing_required_side_packet",
        'input_side_packet: "s"\noutput_stream: "out"\n'
        + _node(
            "SidePacketToStreamCalculator",
            'input_side_packet: "s"',
            'output_stream: "AT_PRESTREAM:out"',
        ),
        phrases=('"s"', "is required but was not provided"),
    ),
    Case(
        # OVMS's LLM node (HttpLLMCalculator) with its LOOPBACK back_edge removed: the node
        # feeds itself. PassThroughCalculator stands in for it with the same wiring.
        "loopback_without_back_edge",
        'input_stream: "PAYLOAD:input"\noutput_stream: "PAYLOAD:output"\n'
        'node {\n  name: "llmNode1"\n  calculator: "PassThroughCalculator"\n'
        '  input_stream: "LOOPBACK:loopback"\n  input_stream: "PAYLOAD:input"\n'
        '  output_stream: "LOOPBACK:loopback"\n  output_stream: "PAYLOAD:output"\n}\n',
        observe=("output",),
        phrases=("cycle detected in graph: [llmNode1]",),
    ),
    Case(
        "unknown_input_stream_handler",
        _IN_OUT
        + _pt(
            'input_stream: "in"',
            'output_stream: "out"',
            'input_stream_handler { input_stream_handler: "NoSuchInputStreamHandler" }',
        ),
        phrases=("NoSuchInputStreamHandler", "is not a registered input stream handler"),
    ),
    Case(
        "undeclared_executor",
        _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"', 'executor: "heavy"'),
        phrases=('"heavy"', "is not declared in an ExecutorConfig"),
    ),
    Case(
        "reserved_executor_name",
        'executor { name: "default" type: "ThreadPoolExecutor" }\n'
        + _IN_OUT
        + _pt('input_stream: "in"', 'output_stream: "out"'),
        phrases=('"default"', "reserved executor name"),
    ),
    Case(
        "unknown_field",
        _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"', "bogus_field: 1"),
        phrases=("bogus_field",),
    ),
    Case(
        "client_repeats_timestamp",
        _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"'),
        (("in", 5, 1), ("in", 5, 2)),
        phrases=("Packet timestamp mismatch", '"in"'),
    ),
    Case(
        "client_decreasing_timestamp",
        _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"'),
        (("in", 5, 1), ("in", 6, 2), ("in", 3, 3)),
        phrases=("Packet timestamp mismatch", '"in"'),
    ),
    Case(
        "client_packet_after_prestream",
        _IN_OUT + _pt('input_stream: "in"', 'output_stream: "out"'),
        (("in", PRESTREAM, 1), ("in", 0, 2)),
        phrases=('"in"',),
    ),
)

CASES: tuple[Case, ...] = VALID_CASES + INVALID_CASES
