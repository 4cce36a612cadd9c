"""Graph validation: every rule of MediaPipe's ValidatedGraphConfig, with node and file line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ovgraph._proto.mediapipe.calculators.core import flow_limiter_calculator_pb2 as fl_pb2
from ovgraph.errors import CalculatorNotFoundError, ContractError, GraphConfigError, ValidationError
from ovgraph.framework import registry
from ovgraph.framework.calculator import Calculator, Input, Output, SidePacket
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph, canonical_node_names, validate


class Strict(Calculator):
    """Declares IN, optional AUX, OUT and a required side packet; takes FlowLimiter options."""

    IN = Input("IN", int)
    AUX = Input("AUX", int, optional=True)
    OUT = Output("OUT", int)
    CONF = SidePacket("CONF", str, optional=True)
    Options = fl_pb2.FlowLimiterCalculatorOptions


class NoOptions(Calculator):
    IN = Input("IN")
    OUT = Output("OUT")


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    with registry.override("Strict", Strict), registry.override("NoOptions", NoOptions):
        yield


def _errors(text: str) -> list[GraphConfigError]:
    return validate(parse_graph_config(text, path="graphs/x/graph.pbtxt"))


def _one(text: str, cls: type[GraphConfigError], phrase: str) -> GraphConfigError:
    errors = _errors(text)
    matching = [e for e in errors if phrase in str(e)]
    assert matching, f"{phrase!r} not in {[str(e) for e in errors]}"
    error = matching[0]
    assert type(error) is cls, type(error)
    assert error.path == "graphs/x/graph.pbtxt"
    return error


_PT = 'calculator: "PassThroughCalculator"'


def test_valid_graph_has_no_errors() -> None:
    text = f"""
    input_stream: "in"
    output_stream: "out"
    node {{ {_PT} input_stream: "in" output_stream: "out" }}
    """
    assert _errors(text) == []
    validated = ValidatedGraph(parse_graph_config(text))
    assert validated.max_queue_size == 100
    assert validated.order == [0]


def test_unknown_calculator() -> None:
    text = """input_stream: "in"
output_stream: "out"
node {
  name: "mystery"
  calculator: "SomeUnknownCalculator"
  input_stream: "in"
  output_stream: "out"
}
"""
    error = _one(text, CalculatorNotFoundError, "No registered object with name")
    assert str(error) == (
        "ValidatedGraphConfig Initialization failed.\nNo registered object with name: "
        'SomeUnknownCalculator; Unable to find Calculator "SomeUnknownCalculator" '
        "(`ovgraph calculators` lists the registered ones)"
    )
    assert (error.node, error.line) == ("mystery", 5)  # the calculator field's line
    assert error.location() == "graphs/x/graph.pbtxt:5"


def test_unconnected_input() -> None:
    text = f"""input_stream: "in"
output_stream: "out"
node {{ {_PT} input_stream: "nowhere" output_stream: "out" }}
"""
    error = _one(text, ValidationError, "does not have a corresponding output stream")
    assert str(error) == (
        '; Input Stream "nowhere" for node with sorted index 0 name PassThroughCalculator does '
        "not have a corresponding output stream. (known streams: in, out)"
    )
    assert (error.node, error.line) == ("PassThroughCalculator", 3)


def test_stream_produced_twice() -> None:
    text = f"""input_stream: "in"
output_stream: "out"
node {{ {_PT} input_stream: "in" output_stream: "out" }}
node {{ name: "again" {_PT} input_stream: "in" output_stream: "out" }}
"""
    error = _one(text, ValidationError, '; Output Stream "out" defined twice.')
    assert (error.node, error.line) == ("again", 4)


def test_node_output_reusing_a_graph_input_name() -> None:
    text = f"""input_stream: "in"
node {{ name: "n" {_PT} input_stream: "in" output_stream: "in" }}
"""
    error = _one(text, ValidationError, '; Output Stream "in" defined twice.')
    assert (error.node, error.line) == ("n", 2)


def test_output_side_packet_produced_twice() -> None:
    text = f"""input_stream: "in"
node {{ {_PT} input_stream: "in" output_stream: "a"
       input_side_packet: "s" output_side_packet: "p" }}
node {{ name: "dup" {_PT} input_stream: "in" output_stream: "b"
       input_side_packet: "t" output_side_packet: "p" }}
"""
    error = _one(text, ValidationError, 'Output Side Packet "p" defined twice.')
    assert (error.node, error.line) == ("dup", 5)  # the output_side_packet's line


def test_cycle_without_back_edge() -> None:
    text = f"""input_stream: "in"
node {{ {_PT} input_stream: "in" input_stream: "b" output_stream: "a" output_stream: "x" }}
node {{ {_PT} input_stream: "a" output_stream: "b" }}
"""
    error = _one(text, ValidationError, "cycle detected")
    assert str(error) == (
        "; Generator side packet cycle or calculator stream cycle detected in graph: "
        "[PassThroughCalculator_1, PassThroughCalculator_2]"
    )
    assert error.line == 2


def test_back_edge_breaks_the_cycle() -> None:
    text = f"""input_stream: "in"
node {{ {_PT} input_stream: "in" input_stream: "LOOP:b" output_stream: "a"
       output_stream: "LOOP:x" input_stream_info {{ tag_index: "LOOP" back_edge: true }} }}
node {{ {_PT} input_stream: "a" output_stream: "b" }}
"""
    assert _errors(text) == []


@pytest.mark.parametrize(
    "spec",
    [
        "A:B:C:in",  # too many parts (observed MediaPipe example)
        "lower:in",  # lowercase tag
        "IN:01:in",  # leading zero
    ],
)
def test_bad_stream_spec(spec: str) -> None:
    text = f"""input_stream: "in"
output_stream: "out"
node {{
  {_PT}
  input_stream: "{spec}"
  output_stream: "out"
}}
"""
    error = _one(text, ValidationError, "TAG:index:name is invalid")
    assert "Unable to initialize TagMaps" in str(error)
    assert f'"{spec}" does not match' in str(error)
    assert (error.node, error.line) == ("PassThroughCalculator", 5)  # the bad spec's line


def test_repeated_tag_without_index() -> None:
    text = f"""input_stream: "a"
input_stream: "b"
node {{ {_PT} input_stream: "IN:a" input_stream: "IN:b" output_stream: "IN:c" }}
"""
    error = _one(text, ValidationError, "already had a name")
    assert error.line == 3


def test_bad_graph_level_spec_has_no_node() -> None:
    error = _one('input_stream: "Bad"\n', ValidationError, '"Bad" does not match')
    assert error.node is None


def test_input_stream_info_on_a_non_input() -> None:
    text = f"""input_stream: "in"
output_stream: "out"
node {{
  name: "n"
  {_PT}
  input_stream: "in"
  output_stream: "out"
  input_stream_info {{ tag_index: "LOOP:0" back_edge: true }}
}}
"""
    error = _one(text, ValidationError, "requested in InputStreamInfo but is not an input stream")
    assert 'tag_index "LOOP:0"' in str(error)
    assert '(node "n"; its inputs: ":0")' in str(error)
    assert (error.node, error.line) == ("n", 8)


def test_duplicate_input_stream_info() -> None:
    text = f"""input_stream: "in"
node {{ name: "n" {_PT} input_stream: "LOOP:in" output_stream: "LOOP:out"
       input_stream_info {{ tag_index: "LOOP:0" back_edge: true }}
       input_stream_info {{ tag_index: "LOOP:0" back_edge: false }} }}
"""
    error = _one(text, ValidationError, "has more than one InputStreamInfo")
    assert (error.node, error.line) == ("n", 4)  # the second InputStreamInfo


def test_bad_tag_index_in_input_stream_info() -> None:
    text = f"""input_stream: "in"
node {{ {_PT} input_stream: "in" output_stream: "out"
       input_stream_info {{ tag_index: "loop" back_edge: true }} }}
"""
    _one(text, ValidationError, "TAG:index is invalid")


def test_contract_passthrough_tags_must_match() -> None:
    text = f"""input_stream: "in"
node {{ {_PT} input_stream: "A:in" output_stream: "B:out" }}
"""
    error = _one(text, ContractError, "must use matching tags and indexes")
    assert str(error).startswith("ValidatedGraphConfig Initialization failed.\n"
                                 "PassThroughCalculator: ")
    assert error.line == 2


@pytest.mark.parametrize(
    ("streams", "phrase"),
    [
        ('input_stream: "IN:in" input_stream: "BOGUS:in" output_stream: "OUT:o"',
         'Input stream tag "BOGUS" is not accepted'),  # undeclared input tag
        ('input_stream: "IN:in" output_stream: "OUT:o" output_stream: "MORE:m"',
         'Output stream tag "MORE" is not accepted'),  # undeclared output tag
        ('input_stream: "AUX:in" output_stream: "OUT:o"',
         'required input stream tag "IN" is missing'),  # required port missing
        ('input_stream: "IN:0:in" input_stream: "IN:1:in" output_stream: "OUT:o"',
         'tag "IN" accepts a single stream, got 2'),  # arity
        ('input_stream: "IN:in" output_stream: "OUT:o" input_side_packet: "X:x"',
         'Input side packet tag "X" is not accepted'),  # undeclared side packet
    ],
)
def test_contract_port_violations(streams: str, phrase: str) -> None:
    text = f"""input_stream: "in"
node {{ name: "s" calculator: "Strict" {streams} }}
"""
    error = _one(text, ContractError, phrase)
    assert str(error).startswith("ValidatedGraphConfig Initialization failed.\nStrict: ")
    assert (error.node, error.line) == ("s", 2)


def test_contract_wrong_options_type() -> None:
    text = """input_stream: "in"
node {
  name: "s"
  calculator: "Strict"
  input_stream: "IN:in"
  output_stream: "OUT:o"
  node_options: {
    [type.googleapis.com/mediapipe.FixedSizeInputStreamHandlerOptions]: { trigger_queue_size: 3 }
  }
}
"""
    error = _one(
        text, ContractError, "takes options of type mediapipe.FlowLimiterCalculatorOptions"
    )
    assert "mediapipe.FixedSizeInputStreamHandlerOptions" in str(error)
    assert (error.node, error.line) == ("s", 7)  # the node_options line


def test_options_on_a_calculator_without_options() -> None:
    text = """input_stream: "in"
node {
  calculator: "NoOptions" input_stream: "IN:in" output_stream: "OUT:o"
  options { [mediapipe.FlowLimiterCalculatorOptions.ext] { max_in_flight: 2 } }
}
"""
    _one(text, ContractError, "NoOptions takes no options")


def test_matching_options_are_unpacked() -> None:
    text = """input_stream: "in"
node {
  calculator: "Strict" input_stream: "IN:in" output_stream: "OUT:o"
  node_options: {
    [type.googleapis.com/mediapipe.FlowLimiterCalculatorOptions]: { max_in_queue: 7 }
  }
}
"""
    validated = ValidatedGraph(parse_graph_config(text))
    options: Any = validated.nodes[0].options
    assert isinstance(options, fl_pb2.FlowLimiterCalculatorOptions)
    assert options.max_in_queue == 7


def test_unknown_input_stream_handler() -> None:
    text = f"""input_stream: "in"
node {{ name: "n" {_PT} input_stream: "in" output_stream: "out"
       input_stream_handler {{ input_stream_handler: "NoSuchInputStreamHandler" }} }}
"""
    error = _one(text, ValidationError, "is not a registered input stream handler")
    assert str(error) == (
        "CalculatorGraph::InitializeCalculatorNodes failed: \nNo registered object with name: "
        'NoSuchInputStreamHandler; "NoSuchInputStreamHandler" is not a registered input stream '
        "handler."
    )
    assert (error.node, error.line) == ("n", 3)


def test_unknown_graph_level_handler_applies_to_every_node() -> None:
    text = f"""input_stream_handler {{ input_stream_handler: "Nope" }}
input_stream: "in"
node {{ {_PT} input_stream: "in" output_stream: "a" }}
node {{ {_PT} input_stream: "a" output_stream: "b" }}
"""
    errors = [e for e in _errors(text) if '"Nope" is not a registered' in str(e)]
    assert [e.line for e in errors] == [3, 4]


def test_sync_set_tag_index_unknown_is_caught_at_load() -> None:
    text = """input_stream: "in"
node {
  name: "llmNode1"
  calculator: "PassThroughCalculator"
  input_stream: "REQUEST:in"
  input_stream: "LOOPBACK:loop"
  output_stream: "REQUEST:out"
  output_stream: "LOOPBACK:loop"
  input_stream_info: { tag_index: 'LOOPBACK:0', back_edge: true }
  input_stream_handler {
    input_stream_handler: "SyncSetInputStreamHandler",
    options {
      [mediapipe.SyncSetInputStreamHandlerOptions.ext] { sync_set { tag_index: "LOOPBACK:1" } }
    }
  }
}
"""
    error = _one(text, ValidationError, 'sync_set tag_index "LOOPBACK:1" is not an input stream')
    assert (error.node, error.line) == ("llmNode1", 10)  # the input_stream_handler line


def test_executor_not_declared() -> None:
    text = f"""input_stream: "in"
node {{ name: "n" {_PT} input_stream: "in" output_stream: "out" executor: "heavy" }}
"""
    error = _one(text, ValidationError,
                 'The executor "heavy" is not declared in an ExecutorConfig.')
    assert (error.node, error.line) == ("n", 2)


@pytest.mark.parametrize("name", ["default", "gpu"])
def test_reserved_executor_name(name: str) -> None:
    text = f"""executor {{ name: "{name}" type: "ThreadPoolExecutor" }}
input_stream: "in"
node {{ {_PT} input_stream: "in" output_stream: "out" }}
"""
    _one(text, ValidationError, f'"{name}" is a reserved executor name.')


def test_declared_executor_and_default_threads() -> None:
    text = f"""num_threads: 3
executor {{
  name: "io" options {{ [mediapipe.ThreadPoolExecutorOptions.ext] {{ num_threads: 4 }} }}
}}
input_stream: "in"
node {{ {_PT} input_stream: "in" output_stream: "out" executor: "io" }}
"""
    validated = ValidatedGraph(parse_graph_config(text))
    assert validated.executors == {"io": 4}
    assert validated.num_threads == 3
    assert validated.nodes[0].executor == "io"


def test_validate_returns_every_error_and_validated_graph_raises_the_first() -> None:
    text = f"""input_stream: "in"
node {{ calculator: "Missing1" input_stream: "in" output_stream: "a" }}
node {{ {_PT} input_stream: "nowhere" output_stream: "b" executor: "x" }}
"""
    errors = _errors(text)
    assert [type(e).__name__ for e in errors] == [
        "CalculatorNotFoundError",
        "ValidationError",
        "ValidationError",
    ]
    assert [e.line for e in errors] == [2, 3, 3]
    with pytest.raises(CalculatorNotFoundError):
        ValidatedGraph(parse_graph_config(text))


def test_canonical_node_names() -> None:
    class N:
        def __init__(self, name: str, calculator: str) -> None:
            self.name, self.calculator = name, calculator

    nodes = [N("", "A"), N("", "A"), N("x", "B"), N("", "C"), N("x", "D")]
    assert canonical_node_names(nodes) == ["A_1", "A_2", "x_1", "C", "x_2"]


def test_max_queue_size_from_config() -> None:
    text = f"""max_queue_size: 1
input_stream: "in"
node {{ {_PT} input_stream: "in" output_stream: "out" }}
"""
    assert ValidatedGraph(parse_graph_config(text)).max_queue_size == 1
