"""Generated text to an assistant message: content, ``reasoning_content`` and ``tool_calls``.

`OutputParser` chains the graph's reasoning parser and tool parser. Unary requests call
`OutputParser.finish` on the whole text. Streams call `OutputParser.feed` with each new piece of
text and get the OpenAI deltas to send: ``{"reasoning_content": …}``, ``{"content": …}`` and, for
tool calls, first ``{"tool_calls": [{"index", "id", "type": "function", "function": {"name",
"arguments": ""}}]}`` and then argument fragments ``{"tool_calls": [{"index", "function":
{"arguments": …}}]}``, as the OpenAI API streams them. The fragments of one call add up to the
arguments object as the model wrote it; the unary answer carries it re-serialised compactly.

`detect_parsers` picks parsers from a chat template's source as OVMS does at start-up
(``src/llm/io_processing/chat_template/analyzer.cpp``) when the graph names none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from calculators.llm.reasoning_parsers import ReasoningParser, get_reasoning_parser
from calculators.llm.tool_parsers import (
    PartialCall,
    ToolCall,
    ToolParse,
    ToolParser,
    get_tool_parser,
    new_tool_call_id,
)

__all__ = ["GraphParsers", "OutputParser", "ParsedMessage", "detect_parsers", "graph_parsers"]

logger = logging.getLogger(__name__)


@dataclass
class ParsedMessage:
    """The final split of a whole answer."""

    content: str
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


class OutputParser:
    """One request's parser state (a fresh one per request).

    Args:
        tool_parser: the graph's tool parser, or None.
        reasoning_parser: the graph's reasoning parser, or None.
        tools: the request's tools (after ``tool_choice`` filtering); tool calls are only looked
            for when there are some.
        implicit_reasoning: the prompt ends with the reasoning start tag.
        max_calls: the most tool calls the answer carries (``parallel_tool_calls: false``: 1);
            later ones are dropped, as text the model wrote after them. None: no limit.
    """

    def __init__(
        self,
        tool_parser: ToolParser | None,
        reasoning_parser: ReasoningParser | None,
        tools: list[dict[str, Any]] | None,
        implicit_reasoning: bool = False,
        max_calls: int | None = None,
    ) -> None:
        self.tool_parser = tool_parser if tools else None
        self.max_calls = max_calls
        self.reasoning_parser = reasoning_parser
        self.tools = tools
        self.implicit = implicit_reasoning and reasoning_parser is not None
        self.text = ""
        self.sent_reasoning = ""
        self.sent_content = ""
        self.sent_calls: list[tuple[str, str]] = []  # (id, arguments sent) per announced call

    @property
    def active(self) -> bool:
        """Whether any parser applies to this request."""
        return self.tool_parser is not None or self.reasoning_parser is not None

    def _split(self, final: bool) -> tuple[str, ToolParse]:
        reasoning, rest = "", self.text
        if self.reasoning_parser is not None:
            split = self.reasoning_parser.split(
                self.text, final=final, implicit_start=self.implicit
            )
            reasoning, rest = split.reasoning, split.rest
        if self.tool_parser is None:
            return reasoning, ToolParse(rest)
        return reasoning, self.tool_parser.parse(rest, final=final, tools=self.tools)

    def feed(self, text: str, final: bool = False) -> list[dict[str, Any]]:
        """Add generated text; return the deltas that became certain."""
        self.text += text
        reasoning, parsed = self._split(final)
        deltas: list[dict[str, Any]] = []
        new = _grown(self.sent_reasoning, reasoning)
        if new:
            self.sent_reasoning = reasoning
            deltas.append({"reasoning_content": new})
        new = _grown(self.sent_content, parsed.content)
        if new:
            self.sent_content = parsed.content
            deltas.append({"content": new})
        for index, call in enumerate(parsed.calls[: self.max_calls]):
            deltas.extend(self._call_deltas(index, call))
        return deltas

    def _call_deltas(self, index: int, call: PartialCall) -> list[dict[str, Any]]:
        if index == len(self.sent_calls):
            if call.name is None:
                return []
            call_id = new_tool_call_id()
            self.sent_calls.append((call_id, ""))
            announce = {
                "index": index, "id": call_id, "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            deltas = [{"tool_calls": [announce]}]
        elif index < len(self.sent_calls):
            deltas = []
        else:
            return []
        call_id, sent = self.sent_calls[index]
        new = _grown(sent, call.arguments)
        if new:
            self.sent_calls[index] = (call_id, call.arguments)
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": new}}]})
        return deltas

    @property
    def called_tools(self) -> bool:
        """Whether the stream announced at least one tool call."""
        return bool(self.sent_calls)

    def finish(self, text: str = "") -> ParsedMessage:
        """Parse the whole answer (unary): invalid tool calls are dropped, as in OVMS."""
        self.text += text
        reasoning, parsed = self._split(final=True)
        calls = [
            ToolCall(new_tool_call_id(), call.name or "", call.canonical_arguments())
            for call in parsed.calls
            if call.valid
        ]
        dropped = len(parsed.calls) - len(calls)
        if dropped:
            logger.debug("Dropped %d tool call(s) that are not valid JSON calls", dropped)
        calls = calls[: self.max_calls]
        return ParsedMessage(
            parsed.content, reasoning if self.reasoning_parser is not None else None, calls
        )


def _grown(sent: str, now: str) -> str:
    """What ``now`` adds to ``sent`` (empty if it does not extend it)."""
    if len(now) > len(sent) and now.startswith(sent):
        return now[len(sent) :]
    if now != sent and not sent.startswith(now):
        logger.debug("Parsed text changed after it was streamed: %r -> %r", sent, now)
    return ""


def detect_parsers(template: str) -> tuple[str, str]:
    """``(tool_parser, reasoning_parser)`` names for a chat template's source (``""``: none)."""
    think = "<think>" in template or "</think>" in template
    if "<parameter=" in template and "</parameter>" in template and "<function=" in template:
        return "qwen3coder", "qwen3" if think else ""
    if "functools" in template:
        return "phi4", ""
    if "[TOOL_CALLS]" in template and "[ARGS]" not in template:
        return "mistral", ""
    if "<|python_tag|>" in template:
        return "llama3", ""
    if "<tool_call>" in template and "</tool_call>" in template:
        return "hermes3", "qwen3" if think else ""
    return "", "qwen3" if think else ""


@dataclass(frozen=True)
class GraphParsers:
    """The parsers a graph's ``LLMCalculatorOptions`` select."""

    tool_parser: ToolParser | None
    reasoning_parser: ReasoningParser | None
    guided_tools: bool


def graph_parsers(options: Any, chat_template: str = "") -> GraphParsers:
    """Parsers from ``tool_parser`` / ``reasoning_parser`` (unset: detected from the template).

    ``"none"`` turns a parser off without detection, as in OVMS.

    Raises:
        ValueError: an unknown parser name (the message lists the supported ones).
    """
    detected = detect_parsers(chat_template) if chat_template else ("", "")
    tool = options.tool_parser if options.HasField("tool_parser") else detected[0]
    reasoning = (
        options.reasoning_parser if options.HasField("reasoning_parser") else detected[1]
    )
    return GraphParsers(
        get_tool_parser(tool), get_reasoning_parser(reasoning),
        bool(options.enable_tool_guided_generation),
    )
