"""DetokenizerCalculator: token ids to text, incrementally and UTF-8 safe."""

from __future__ import annotations

from typing import Any

from calculators.llm.common import LLMNodeCalculator, LLMResources, TextChunk, TokenChunk
from ovgraph.framework.calculator import CalculatorContext, Input, Output

_REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Decodes a growing id sequence into text deltas (the prefix/read offset method).

    Only a window of recent ids is decoded per step. A delta is held back while it ends in an
    incomplete UTF-8 sequence (U+FFFD), so a character split across tokens comes out whole; at the
    end whatever remains is flushed, so the deltas always add up to ``decode(all ids)``.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.emitted = ""

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return str(self.tokenizer.decode(ids, skip_special_tokens=self.skip))

    def add(self, new_ids: list[int]) -> str:
        """Append ids and return the text that became final."""
        if not new_ids:
            return ""
        self.ids.extend(new_ids)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        if len(text) > len(prefix) and not text.endswith(_REPLACEMENT) and text.startswith(prefix):
            delta = text[len(prefix) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            self.emitted += delta
            return delta
        return ""

    def flush(self) -> str:
        """Return the rest of the text once generation has ended."""
        full = self._decode(self.ids)
        if full.startswith(self.emitted):
            delta = full[len(self.emitted) :]
        else:  # a tokenizer whose windows do not concatenate: emit the window remainder
            delta = self._decode(self.ids[self.prefix_offset :])[
                len(self._decode(self.ids[self.prefix_offset : self.read_offset])) :
            ]
        self.emitted += delta
        return delta


class DetokenizerCalculator(LLMNodeCalculator):
    """Turns ``TOKENS`` chunks into ``TEXT`` chunks with the model's detokenizer.

    node {
      calculator: "DetokenizerCalculator"
      input_stream: "TOKENS:tokens"
      output_stream: "TEXT:text"
      node_options: {
        [type.googleapis.com/mediapipe.LLMCalculatorOptions]: { models_path: "./" }
      }
    }
    """

    IN = Input("TOKENS", TokenChunk)
    OUT = Output("TEXT", TextChunk)

    def open(self, cc: CalculatorContext) -> None:
        """No decoder until the first chunk says whether special tokens are skipped."""
        self.decoder: IncrementalDecoder | None = None

    def process(self, cc: CalculatorContext) -> None:
        """Decode the new ids; flush on the last chunk."""
        chunk: TokenChunk = self.IN(cc).get()
        if self.decoder is None:
            resources: LLMResources = cc.resources
            skip = chunk.context.request.skip_special_tokens
            self.decoder = IncrementalDecoder(resources.servable.tokenizer, skip)
        text = self.decoder.add(chunk.ids)
        if chunk.finished:
            text += self.decoder.flush()
        self.OUT(cc).send(
            TextChunk(chunk.context, text, chunk.finished, chunk.finish_reason, chunk.usage)
        )
