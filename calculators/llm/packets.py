"""The packets of the LLM graph: the stable types a calculator inserted into it consumes.

``HttpLLMCalculator`` expands into six calculators joined by these streams (tags in brackets)::

    HTTP_REQUEST_PAYLOAD → OpenAIRequestCalculator → [REQUEST] RequestContext
      → ImageDecodeCalculator → [REQUEST] RequestContext
      → ChatTemplateCalculator → [PROMPT] GenerationInput
      → VLMGenerationCalculator (LOOPBACK) → [TOKENS] TokenChunk
      → DetokenizerCalculator → [TEXT] TextChunk
      → OpenAIResponseCalculator → HTTP_RESPONSE_PAYLOAD (bytes)

``ovgraph expand graph.pbtxt`` writes that six-node graph out so a node can be added at any of
these points: a calculator that takes and sends the same type on the same tag drops in between
two of them. For example, one that edits the generated text before it is encoded::

    import dataclasses

    from calculators.llm.packets import TextChunk
    from ovgraph.api import Calculator, CalculatorContext, Input, Output


    class ShoutCalculator(Calculator):
        '''Upper-cases the generated text.

        node {
          calculator: "ShoutCalculator"
          input_stream: "TEXT:llmexecutor__text"
          output_stream: "TEXT:shouted"
        }
        '''

        IN = Input("TEXT", TextChunk)
        OUT = Output("TEXT", TextChunk)

        def process(self, cc: CalculatorContext) -> None:
            chunk = self.IN(cc).get()
            self.OUT(cc).send(dataclasses.replace(chunk, text=chunk.text.upper()))

A streamed request sends one ``TokenChunk`` / ``TextChunk`` per generation step (the last with
``finished=True``), a unary one a single chunk with the whole answer. Every chunk carries the
request's ``RequestContext``. Packets are shared, not copied: send a new object
(``dataclasses.replace``) rather than changing the one received.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from calculators.llm.chunks import Usage, new_request_id
from calculators.llm.request_validation import ChatRequest

__all__ = [
    "ChatRequest",
    "GenerationInput",
    "OtherSequence",
    "RequestContext",
    "TextChunk",
    "TokenChunk",
    "Usage",
]


@dataclass
class RequestContext:
    """A validated request travelling down the graph, with what later nodes add to it.

    Attributes:
        request: the validated OpenAI request (``endpoint``, ``messages``, sampling fields).
        payload: the HTTP payload it came from (URI, headers, body).
        request_id: the response id (``chatcmpl-…``).
        created: the response's ``created`` time (seconds).
        images: decoded images (set by ``ImageDecodeCalculator``).
        image_sizes: their ``(width, height)``.
        prompt: the templated prompt (set by ``ChatTemplateCalculator``).
        prompt_tokens: its token count.
        implicit_reasoning: the rendered prompt ends inside a reasoning block (``<think>``),
            so the output starts in it.
    """

    request: ChatRequest
    payload: Any
    request_id: str = field(default_factory=new_request_id)
    created: int = field(default_factory=lambda: int(time.time()))
    images: list[Any] = field(default_factory=list)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    prompt: str = ""
    prompt_tokens: int = 0
    implicit_reasoning: bool = False


@dataclass
class GenerationInput:
    """A templated prompt ready for the pipeline (``config``: genai's ``GenerationConfig``)."""

    context: RequestContext
    prompt: str
    config: Any
    prompt_tokens: int


@dataclass
class TokenChunk:
    """New token ids of one generation step (or all of them, for unary requests)."""

    context: RequestContext
    ids: list[int]
    finished: bool
    finish_reason: str | None = None
    usage: Usage | None = None
    # Log-probabilities of ``ids`` when the request asked for them.
    logprobs: list[float] | None = None
    # Requests for several sequences (n, best_of): every sequence at the end, best first, as
    # (ids, logprobs or None, finish reason, score); ``ids`` then holds the best one.
    sequences: list[tuple[list[int], list[float] | None, str | None, float]] | None = None


@dataclass
class OtherSequence:
    """Choice 1, 2, … of a request with ``n`` > 1 (beam search), decoded.

    The detokenizer builds it from `TokenChunk.sequences` (all but the best).
    """

    ids: list[int]
    finish_reason: str
    logprobs: list[float] | None = None
    text: str = ""
    token_logprobs: list[tuple[bytes, float]] | None = None


@dataclass
class TextChunk:
    """New text decoded from a ``TokenChunk`` (``usage`` is set on the last chunk)."""

    context: RequestContext
    text: str
    finished: bool
    finish_reason: str | None = None
    usage: Usage | None = None
    #: The token ids this text was decoded from.
    ids: list[int] = field(default_factory=list)
    #: ``(token bytes, log probability)`` per id, when the request asked for ``logprobs``.
    token_logprobs: list[tuple[bytes, float]] | None = None
    #: Choices after the first, decoded (from `TokenChunk.sequences`).
    others: list[OtherSequence] = field(default_factory=list)
