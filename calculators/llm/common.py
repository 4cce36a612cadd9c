"""What the LLM calculators share: their options and resources.

The packets between them are defined in ``calculators.llm.packets`` (the stable module for
calculators inserted into the LLM graph) and re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from calculators.llm.images import ImagePolicy
from calculators.llm.packets import (
    GenerationInput,
    OtherSequence,
    RequestContext,
    TextChunk,
    TokenChunk,
)
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
    #: ``--num_assistant_tokens`` / ``--assistant_confidence_threshold`` (speculative requests).
    assistant_defaults: Mapping[str, Any] | None = None

    def health(self) -> str | None:
        """The servable's engine trouble, if any (see ``GraphDefinition.health``)."""
        return self.servable.health()

    @property
    def max_concurrent_runs(self) -> int:
        """Graph runs the server admits at once: the engine's ``max_num_seqs``."""
        return self.servable.max_num_seqs


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
        from calculators.llm.serve_flags import assistant_defaults

        return LLMResources(
            get_servable(key), policy, spec.options,
            assistant_defaults=assistant_defaults(settings),
        )
