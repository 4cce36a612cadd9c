"""The public API for calculator and plugin authors: everything a plugin imports from ovgraph.

Names here are stable: a plugin that imports only from ``ovgraph.api`` (and tests with
``ovgraph.testing``) keeps working when ovgraph's internal modules move. A calculator declares
its ports as class attributes and implements ``open`` / ``process`` / ``close``::

    from ovgraph.api import Calculator, CalculatorContext, Input, Output


    class UpperCaseCalculator(Calculator):
        '''Emits each TEXT packet upper-cased.

        node {
          calculator: "UpperCaseCalculator"
          input_stream: "TEXT:text"
          output_stream: "TEXT:upper_text"
        }
        '''

        TEXT = Input("TEXT", str)
        TEXT_OUT = Output("TEXT", str)

        def process(self, cc: CalculatorContext) -> None:
            self.TEXT_OUT(cc).send(self.TEXT(cc).get().upper())

and is registered by name through the ``ovgraph.calculators`` entry-point group of its
distribution (``UpperCaseCalculator = "my_plugin.upper:UpperCaseCalculator"``), or in-process
with :func:`register_calculator`. Declared payload types are checked at graph load across every
stream. Raise :class:`RequestError` / :class:`InvalidParameterError` for the client's mistakes
(400), anything else fails the run (500, logged with the node's name); raise
:class:`StopProcessing` to end a source. A calculator package documents the packet types of
its graphs in a module of its own, for nodes others insert into them (the built-in LLM graph:
``calculators.llm.packets``).
"""

from __future__ import annotations

from ovgraph.errors import (
    CalculatorError,
    ContractError,
    GraphConfigError,
    InvalidParameterError,
    OvGraphError,
    RequestError,
    StopProcessing,
)
from ovgraph.framework.calculator import (
    Calculator,
    CalculatorContext,
    Input,
    NodeSpec,
    Output,
    OutputSidePacket,
    OutputStream,
    SidePacket,
    Subgraph,
)
from ovgraph.framework.packet import Packet
from ovgraph.framework.registry import ENTRY_POINT_GROUP, register_calculator
from ovgraph.framework.textformat import register_options_module
from ovgraph.framework.timestamp import POST_STREAM, PRE_STREAM

__all__ = [
    "ENTRY_POINT_GROUP",
    "POST_STREAM",
    "PRE_STREAM",
    "Calculator",
    "CalculatorContext",
    "CalculatorError",
    "ContractError",
    "GraphConfigError",
    "Input",
    "InvalidParameterError",
    "NodeSpec",
    "Output",
    "OutputSidePacket",
    "OutputStream",
    "OvGraphError",
    "Packet",
    "RequestError",
    "SidePacket",
    "StopProcessing",
    "Subgraph",
    "register_calculator",
    "register_options_module",
]
