"""Subgraph expansion (MediaPipe ``tool/subgraph_expansion.cc``)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from ovgraph._proto.mediapipe.calculators.core import flow_limiter_calculator_pb2 as fl_pb2
from ovgraph.errors import ContractError, ValidationError
from ovgraph.framework import registry
from ovgraph.framework.calculator import (
    Calculator,
    CalculatorContext,
    Input,
    Output,
    SidePacket,
    Subgraph,
)
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph, validate
from ovgraph.testing import run_graph


class AddK(Calculator):
    IN = Input("IN", int)
    OUT = Output("OUT", int)
    K = SidePacket("K", int)

    def open(self, cc: CalculatorContext) -> None:
        self.k = self.K(cc)

    def process(self, cc: CalculatorContext) -> None:
        self.OUT(cc).send(self.IN(cc).get() + self.k)


class DoubleAdd(Subgraph):
    """IN + 2 * K through two AddK nodes."""

    @classmethod
    def get_config(cls, node: Any, options: Any) -> Any:
        return parse_graph_config("""
          input_stream: "IN:x"
          output_stream: "OUT:y"
          input_side_packet: "K:k"
          node { name: "first" calculator: "AddK" input_stream: "IN:x" output_stream: "OUT:mid"
                 input_side_packet: "K:k" }
          node { calculator: "AddK" input_stream: "IN:mid" output_stream: "OUT:y"
                 input_side_packet: "K:k" }
        """).config


class Nested(Subgraph):
    """A subgraph whose only node is another subgraph."""

    @classmethod
    def get_config(cls, node: Any, options: Any) -> Any:
        return parse_graph_config("""
          input_stream: "IN:a" output_stream: "OUT:b" input_side_packet: "K:k"
          node { name: "inner" calculator: "DoubleAdd" input_stream: "IN:a"
                 output_stream: "OUT:b" input_side_packet: "K:k" }
        """).config


class RepeatAdd(Subgraph):
    """``max_in_flight`` (borrowed FlowLimiter options) chained AddK nodes."""

    Options = fl_pb2.FlowLimiterCalculatorOptions

    @classmethod
    def get_config(cls, node: Any, options: Any) -> Any:
        n = options.max_in_flight
        streams = ["x"] + [f"s{i}" for i in range(1, n)] + ["y"]
        nodes = "".join(
            f'node {{ calculator: "AddK" input_stream: "IN:{a}" output_stream: "OUT:{b}" '
            'input_side_packet: "K:k" }\n'
            for a, b in itertools.pairwise(streams)
        )
        return parse_graph_config(
            'input_stream: "IN:x" output_stream: "OUT:y" input_side_packet: "K:k"\n' + nodes
        ).config


class Forever(Subgraph):
    """Expands into itself."""

    @classmethod
    def get_config(cls, node: Any, options: Any) -> Any:
        return parse_graph_config("""
          input_stream: "IN:a" output_stream: "OUT:b"
          node { calculator: "Forever" input_stream: "IN:a" output_stream: "OUT:b" }
        """).config


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for cls in (AddK, DoubleAdd, Nested, RepeatAdd, Forever):
            stack.enter_context(registry.override(cls.__name__, cls))
        yield


_GRAPH = """
input_stream: "in"
output_stream: "out"
input_side_packet: "k"
node {
  name: "My.Sub node"
  calculator: "DoubleAdd"
  input_stream: "IN:in"
  output_stream: "OUT:out"
  input_side_packet: "K:k"
}
"""


def test_subgraph_expands_and_runs() -> None:
    out = run_graph(_GRAPH, [("in", 0, 1), ("in", 1, 2)], side_packets={"k": 10})
    assert out == {"out": [(0, 21), (1, 22)]}


def test_internal_names_are_prefixed_with_the_node_name() -> None:
    validated = ValidatedGraph(parse_graph_config(_GRAPH))
    assert [n.name for n in validated.nodes] == ["my_sub_node__first", "my_sub_node__AddK"]
    assert [n.calculator for n in validated.nodes] == ["AddK", "AddK"]
    # The internal stream is prefixed; the subgraph's I/O took the node's stream names.
    assert set(validated.producers) == {"in", "my_sub_node__mid", "out"}
    assert validated.required_side_packets == ["k"]


def test_unnamed_subgraph_node_uses_calculator_name_as_prefix() -> None:
    validated = ValidatedGraph(parse_graph_config(_GRAPH.replace('name: "My.Sub node"', "")))
    assert validated.nodes[0].name == "doubleadd__first"


def test_two_instances_get_distinct_prefixes() -> None:
    text = """
    input_stream: "in" output_stream: "out" input_side_packet: "k"
    node { calculator: "DoubleAdd" input_stream: "IN:in" output_stream: "OUT:mid"
           input_side_packet: "K:k" }
    node { calculator: "DoubleAdd" input_stream: "IN:mid" output_stream: "OUT:out"
           input_side_packet: "K:k" }
    """
    validated = ValidatedGraph(parse_graph_config(text))
    names = [n.name for n in validated.nodes]
    assert names[:2] == ["doubleadd_1__first", "doubleadd_1__AddK"]
    assert names[2:] == ["doubleadd_2__first", "doubleadd_2__AddK"]
    assert run_graph(validated, [("in", 0, 0)], side_packets={"k": 1}) == {"out": [(0, 4)]}


def test_nested_subgraphs_expand_repeatedly() -> None:
    text = _GRAPH.replace("DoubleAdd", "Nested")
    validated = ValidatedGraph(parse_graph_config(text))
    assert [n.name for n in validated.nodes] == [
        "my_sub_node__inner__first",
        "my_sub_node__inner__AddK",
    ]
    assert run_graph(validated, [("in", 0, 1)], side_packets={"k": 5}) == {"out": [(0, 11)]}


def test_subgraph_receives_its_options() -> None:
    text = """
    input_stream: "in" output_stream: "out" input_side_packet: "k"
    node { calculator: "RepeatAdd" input_stream: "IN:in" output_stream: "OUT:out"
           input_side_packet: "K:k"
           options { [mediapipe.FlowLimiterCalculatorOptions.ext] { max_in_flight: 4 } } }
    """
    validated = ValidatedGraph(parse_graph_config(text))
    assert len(validated.nodes) == 4
    assert run_graph(validated, [("in", 0, 0)], side_packets={"k": 1}) == {"out": [(0, 4)]}


def test_unknown_tag_on_subgraph_node_is_an_error() -> None:
    text = _GRAPH.replace('output_stream: "OUT:out"', 'output_stream: "OUT:out"\n'
                          '  output_stream: "EXTRA:extra"')
    errors = validate(parse_graph_config(text, path="g.pbtxt"))
    matching = [e for e in errors if 'Tag "EXTRA" does not exist in the subgraph config.' in str(e)]
    assert matching, [str(e) for e in errors]
    error = matching[0]
    assert isinstance(error, ContractError)
    assert error.node == "My.Sub node"
    assert 'Subgraph "My.Sub node"' in str(error)
    assert error.line == 5 and error.path == "g.pbtxt"


def test_recursive_subgraph_is_reported() -> None:
    text = """
    input_stream: "in" output_stream: "out"
    node { calculator: "Forever" input_stream: "IN:in" output_stream: "OUT:out" }
    """
    with pytest.raises(ValidationError, match="maximum depth"):
        ValidatedGraph(parse_graph_config(text))
