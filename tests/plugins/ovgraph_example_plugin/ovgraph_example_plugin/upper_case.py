"""UpperCaseCalculator: upper-cases text packets."""

from __future__ import annotations

from ovgraph.api import Calculator, CalculatorContext, Input, Output


class UpperCaseCalculator(Calculator):
    """Emits each TEXT packet upper-cased, at the same timestamp.

    node {
      calculator: "UpperCaseCalculator"
      input_stream: "TEXT:text"
      output_stream: "TEXT:upper_text"
    }
    """

    TEXT = Input("TEXT", str)
    TEXT_OUT = Output("TEXT", str)

    def process(self, cc: CalculatorContext) -> None:
        """Upper-case one packet."""
        self.TEXT_OUT(cc).send(self.TEXT(cc).get().upper())
