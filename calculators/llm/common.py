"""What the LLM calculators share: their options, resources, and the packets between them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from calculators.llm.chunks import Usage, new_request_id
from calculators.llm.images import ImagePolicy
from calculators.llm.request_validation import ChatRequest
from calculators.llm.servable import Servable, ServableKey, get_servable
from ovgraph.framework.calculator import Calculator, NodeSpec
from ovgraph.framework.textformat import option_type

__all__ = [
    "GenerationInput",
    "LLMNodeCalculator",
    "LLMResources",
    "OtherSequence",
    "RequestContext",
    "TextChunk",
    "TokenChunk",
]

LLMCalculatorOptions = option_type("mediapipe.LLMCalculatorOptions")


@dataclass
class LLMResources:
    """Per-node resources: the shared servable plus the server settings that matter here."""

    servable: Servable
    image_policy: ImagePolicy
    options: Any
    #: ``--verbose_response``: answers carry the prompt and the raw output (``__verbose``).
    verbose_response: bool = False

    def health(self) -> str | None:
        """The servable's engine trouble, if any (see ``GraphDefinition.health``)."""
        return self.servable.health()

    @property
    def max_concurrent_runs(self) -> int:
        """Graph runs the server admits at once: the engine's ``max_num_seqs``."""
        return self.servable.max_num_seqs


@dataclass
class RequestContext:
    """A validated request travelling down the graph, with what later nodes add to it."""

    request: ChatRequest
    payload: Any
    request_id: str = field(default_factory=new_request_id)
    created: int = field(default_factory=lambda: int(time.time()))
    images: list[Any] = field(default_factory=list)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    #: The templated prompt and its token count, set by the chat template node.
    prompt: str = ""
    prompt_tokens: int = 0
    #: The rendered prompt ends inside a reasoning block (``<think>``): output starts in it.
    implicit_reasoning: bool = False


@dataclass
class GenerationInput:
    """A templated prompt ready for the pipeline."""

    context: RequestContext
    prompt: str
    config: Any
    prompt_tokens: int


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
class TextChunk:
    """New text decoded from a ``TokenChunk``."""

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


class LLMNodeCalculator(Calculator):
    """Base of the LLM calculators: ``LLMCalculatorOptions`` and the shared servable."""

    Options: ClassVar[Any] = LLMCalculatorOptions

    @classmethod
    def create_node_resources(cls, spec: NodeSpec, settings: Mapping[str, Any]) -> Any:
        """Load (or reuse) the servable named by the node's ``models_path``."""
        key = ServableKey.from_options(spec.options, spec.base_path)
        domains = settings.get("allowed_media_domains") or ()
        if isinstance(domains, str):
            domains = tuple(d.strip() for d in domains.split(",") if d.strip())
        policy = ImagePolicy(
            allowed_media_domains=tuple(domains),
            allowed_local_media_path=settings.get("allowed_local_media_path") or None,
        )
        return LLMResources(get_servable(key), policy, spec.options)
