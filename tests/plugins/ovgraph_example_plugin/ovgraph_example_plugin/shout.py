"""ShoutCalculator: a node added to the LLM graph, between the detokenizer and the encoder."""

from __future__ import annotations

import dataclasses

from calculators.llm.packets import TextChunk
from ovgraph.api import Calculator, CalculatorContext, Input, Output


class ShoutCalculator(Calculator):
    """Upper-cases the generated text of each ``TextChunk``, streamed or not.

    Insert it into the graph that ``ovgraph expand`` writes for an ``HttpLLMCalculator`` node:
    feed it the detokenizer's ``TEXT`` stream and give its output to the response encoder.

    node {
      name: "shout"
      calculator: "ShoutCalculator"
      input_stream: "TEXT:llmexecutor__text"
      output_stream: "TEXT:shouted"
    }
    """

    IN = Input("TEXT", TextChunk)
    OUT = Output("TEXT", TextChunk)

    def process(self, cc: CalculatorContext) -> None:
        """Send a copy of the chunk with its text upper-cased (packets are shared)."""
        chunk: TextChunk = self.IN(cc).get()
        self.OUT(cc).send(dataclasses.replace(chunk, text=chunk.text.upper()))
