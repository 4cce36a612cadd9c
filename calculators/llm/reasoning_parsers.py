"""Reasoning parsers: the model's thinking, split off its answer.

Like the tool parsers (`calculators.llm.tool_parsers`), a reasoning parser splits the text
generated so far and gives the same split whether the text is complete or still growing: while
text grows, it holds back anything that may still become a tag, so that both parts only ever
grow and stream deltas are their differences.

``qwen3`` (Qwen3, QwQ, DeepSeek-R1 distills): ``<think>reasoning</think>answer``. When the chat
template already ends the prompt with ``<think>`` (Qwen3-VL, thinking-only templates) the output
starts inside the reasoning (``implicit_start``), as OVMS's ``detectAndSetImplicitReasoningStart``
does. Blank space at either end of the reasoning and at the start of the answer is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = ["REASONING_PARSERS", "ReasoningParser", "ReasoningSplit", "get_reasoning_parser"]

_WS = " \t\r\n"


@dataclass
class ReasoningSplit:
    """Reasoning and the rest of the text (the answer, possibly with tool calls)."""

    reasoning: str
    rest: str
    #: The whole reasoning block has been generated (or there is none).
    done: bool


def _held_back(text: str, tag: str) -> int:
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ReasoningParser:
    """``<think>…</think>`` reasoning."""

    name: ClassVar[str] = "qwen3"
    start_tag: ClassVar[str] = "<think>"
    end_tag: ClassVar[str] = "</think>"

    def split(self, text: str, *, final: bool, implicit_start: bool = False) -> ReasoningSplit:
        """Split ``text``; ``final`` when no more text will come."""
        if implicit_start:
            body_start = 0
        else:
            stripped = text.lstrip(_WS)
            if not stripped.startswith(self.start_tag):
                if not final and self.start_tag.startswith(stripped):
                    return ReasoningSplit("", "", False)  # "<thi" may become "<think>"
                return ReasoningSplit("", text, True)
            body_start = len(text) - len(stripped) + len(self.start_tag)
        end = text.find(self.end_tag, body_start)
        if end < 0:
            body = text[body_start:]
            if final:
                return ReasoningSplit(body.strip(_WS), "", True)
            body = body[: len(body) - _held_back(body, self.end_tag)]
            return ReasoningSplit(body.strip(_WS), "", False)
        rest = text[end + len(self.end_tag) :].lstrip(_WS)
        return ReasoningSplit(text[body_start:end].strip(_WS), rest, True)

    def ends_prompt(self, prompt: str) -> bool:
        """Whether a rendered prompt already opens the reasoning block."""
        return prompt.rstrip(_WS).endswith(self.start_tag)


REASONING_PARSERS: dict[str, type[ReasoningParser]] = {"qwen3": ReasoningParser}


def get_reasoning_parser(name: str) -> ReasoningParser | None:
    """The parser called ``name`` (``""`` or ``"none"``: no parser).

    Raises:
        ValueError: an unknown name; the message lists the supported ones.
    """
    if name in ("", "none"):
        return None
    if name not in REASONING_PARSERS:
        raise ValueError(
            f'Unsupported reasoning parser: "{name}". Supported reasoning parsers are: '
            + ", ".join(REASONING_PARSERS)
        )
    return REASONING_PARSERS[name]()
