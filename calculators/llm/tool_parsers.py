"""Tool-call parsers: the tool calls a model family writes, found in its generated text.

Each parser splits the text generated so far into ``content`` and a list of `PartialCall`, the
same way whether the text is complete (unary) or still growing (streaming): while text grows,
content stops before anything that may still become a tool-call tag, and a call's ``arguments``
only ever grow (the raw text of the arguments object as written so far), so deltas can be sent
as the difference between two parses. Formats, as OVMS's ``src/llm/io_processing`` reads them:

==============  ==============================================================================
``hermes3``     ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` (Qwen2.5 / Qwen3, Hermes)
``llama3``      ``<|python_tag|>{"name": …, "parameters": {…}}; {…}`` or the output starting ``{``
``mistral``     ``[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`` (or the output starting ``[{``)
``phi4``        ``functools[{"name": …, "arguments": {…}}, …]``
``qwen3coder``  ``<tool_call><function=NAME><parameter=P>value</parameter>…</function></tool_call>``
==============  ==============================================================================

Special tokens are usually skipped when decoding, so ``<|python_tag|>`` and ``[TOOL_CALLS]`` may
be absent from the text; their parsers also accept the bare JSON at the start of the output.
openvino-genai's ``Llama3JsonToolParser`` was tried and does not fit: it keeps the call in the
content and fails on ``;``-separated calls.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "TOOL_PARSERS",
    "PartialCall",
    "ToolCall",
    "ToolParse",
    "ToolParser",
    "get_tool_parser",
    "new_tool_call_id",
]

_ID_ALPHABET = string.ascii_letters + string.digits
_WS = " \t\r\n"


def new_tool_call_id() -> str:
    """A 9-character alphanumeric id, as OVMS makes them (Mistral templates require this form)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))


@dataclass
class ToolCall:
    """A finished tool call as it appears in a response."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        """``{"id", "type": "function", "function": {"name", "arguments"}}``."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class PartialCall:
    """A tool call as far as it has been generated.

    Attributes:
        name: the function name once it is complete, else None.
        arguments: the raw arguments text written so far (only ever grows while streaming).
        complete: the call has ended (its closing tag or bracket was generated).
        value: the parsed arguments once complete and valid JSON, else None.
    """

    name: str | None
    arguments: str = ""
    complete: bool = False
    value: Any = None

    @property
    def valid(self) -> bool:
        """Complete, named, and with an arguments object."""
        return self.complete and self.name is not None and isinstance(self.value, dict)

    def canonical_arguments(self) -> str:
        """The arguments as compact JSON (what a unary response carries)."""
        return json.dumps(self.value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class ToolParse:
    """Text split into content and tool calls."""

    content: str
    calls: list[PartialCall] = field(default_factory=list)


# --- JSON scanning ----------------------------------------------------------------------------


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _scan_string(text: str, i: int) -> int | None:
    """End (after the closing quote) of the string starting at ``text[i] == '"'``."""
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    return None


def _scan_value(text: str, i: int) -> int | None:
    """End of the JSON value starting at ``i`` (no leading blanks), None while incomplete.

    Only the bracket structure is checked; the caller parses complete values with ``json``.
    """
    if i >= len(text):
        return None
    ch = text[i]
    if ch == '"':
        return _scan_string(text, i)
    if ch in "{[":
        depth = 0
        while i < len(text):
            ch = text[i]
            if ch == '"':
                end = _scan_string(text, i)
                if end is None:
                    return None
                i = end
                continue
            if ch in "{[":
                depth += 1
            elif ch in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return None
    j = i
    while j < len(text) and text[j] not in ",}] \t\r\n":
        j += 1
    return j if j < len(text) else None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _INVALID


_INVALID = object()


def _json_call(text: str, start: int, *, closed: bool, arg_keys: tuple[str, ...]) -> tuple[
    PartialCall | None, int | None
]:
    """Read ``{"name": …, "<arg key>": {…}}`` at ``start``; return the call and where it ends.

    ``closed`` says that no more text will come for this call (its end tag was seen or the
    output ended). Returns ``(None, None)`` while not even ``{`` has been generated.
    """
    i = _skip_ws(text, start)
    if i >= len(text):
        return None, None
    if text[i] != "{":
        return PartialCall(None, complete=closed), None
    call = PartialCall(None)
    i += 1
    end: int | None = None
    while True:
        i = _skip_ws(text, i)
        if i >= len(text):
            break
        if text[i] == "}":
            end = i + 1
            break
        if text[i] == ",":
            i += 1
            continue
        if text[i] != '"':
            break
        key_end = _scan_string(text, i)
        if key_end is None:
            break
        key = _loads(text[i:key_end])
        i = _skip_ws(text, key_end)
        if i >= len(text) or text[i] != ":":
            break
        i = _skip_ws(text, i + 1)
        value_end = _scan_value(text, i)
        raw = text[i:value_end] if value_end is not None else text[i:]
        if key == "name" and value_end is not None:
            name = _loads(raw)
            call.name = name if isinstance(name, str) else None
        elif key in arg_keys:
            if value_end is not None:
                call.value = _loads(raw)
                if isinstance(call.value, str):  # arguments written as a JSON string
                    inner = _loads(call.value)
                    call.value = inner if isinstance(inner, dict) else call.value
                call.arguments = raw if raw.startswith("{") else ""
            elif raw.startswith("{"):
                call.arguments = raw
        if value_end is None:
            break
        i = value_end
    call.complete = end is not None or closed
    if call.value is _INVALID:
        call.value = None
    return call, end


def _held_back(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``tags``."""
    best = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:size]):
                best = size
                break
    return best


# --- parsers ----------------------------------------------------------------------------------


class ToolParser:
    """Base of the tool parsers: ``parse`` and the structural tag that forces a call."""

    name: ClassVar[str] = ""
    #: Text that announces tool calls (hold content back while it may be forming).
    start_tags: ClassVar[tuple[str, ...]] = ()
    #: How arguments are written: a JSON object, or Qwen3-Coder's XML parameters.
    argument_style: ClassVar[str] = "json"

    def parse(self, text: str, *, final: bool, tools: list[dict[str, Any]] | None) -> ToolParse:
        """Split ``text`` into content and calls; ``final`` when no more text will come."""
        raise NotImplementedError

    def call_tag(
        self, name: str, content: dict[str, Any], schema: dict[str, Any]
    ) -> dict[str, Any]:
        """The XGrammar ``tag`` format of one call to ``name``.

        ``content`` is the format of its arguments object, made from its JSON ``schema``.
        """
        raise NotImplementedError

    def trigger(self) -> str:
        """Text after which generation is constrained to a call (XGrammar ``triggers``)."""
        return self.start_tags[0]

    def _content(self, text: str, final: bool) -> str:
        return text if final else text[: len(text) - _held_back(text, self.start_tags)]


class Hermes3ToolParser(ToolParser):
    """``<tool_call>{"name": "f", "arguments": {…}}</tool_call>``, one block per call."""

    name = "hermes3"
    start_tags = ("<tool_call>",)
    end_tag = "</tool_call>"

    def parse(self, text: str, *, final: bool, tools: list[dict[str, Any]] | None) -> ToolParse:
        """Content is everything before the first ``<tool_call>``."""
        start = text.find(self.start_tags[0])
        if start < 0:
            return ToolParse(self._content(text, final))
        result = ToolParse(text[:start])
        pos = start
        while pos >= 0:
            body = pos + len(self.start_tags[0])
            end = text.find(self.end_tag, body)
            closed = end >= 0 or final
            call, _ = _json_call(
                text[: end if end >= 0 else len(text)], body, closed=closed,
                arg_keys=("arguments", "parameters"),
            )
            if call is not None:
                result.calls.append(call)
            if end < 0:
                break
            pos = text.find(self.start_tags[0], end)
        return result

    def call_tag(
        self, name: str, content: dict[str, Any], schema: dict[str, Any]
    ) -> dict[str, Any]:
        """Hermes call block (OVMS's ``Hermes3GenerationConfigBuilder``)."""
        begin = f'<tool_call>\n{{"name": {json.dumps(name)}, "arguments": '
        return {"type": "tag", "begin": begin, "content": content, "end": "}\n</tool_call>"}


class _JsonListParser(ToolParser):
    """Calls as JSON objects after a start tag: a JSON array or ``;``-separated objects."""

    arg_keys: ClassVar[tuple[str, ...]] = ("arguments",)
    #: How the bare form (no start tag, special token skipped) begins.
    bare_start: ClassVar[str] = ""
    array: ClassVar[bool] = True

    def parse(self, text: str, *, final: bool, tools: list[dict[str, Any]] | None) -> ToolParse:
        """Content is the text before the start tag; calls follow it to the end."""
        region = -1
        content = ""
        for tag in self.start_tags:
            at = text.find(tag)
            if at >= 0:
                region, content = at + len(tag), text[:at]
                break
        stripped = text.lstrip()
        if region < 0 and self.bare_start and stripped.startswith(self.bare_start):
            region = len(text) - len(stripped)
        if region < 0:
            if not final and self.bare_start.startswith(stripped):
                return ToolParse("")  # the bare form may be starting
            return ToolParse(self._content(text, final))
        return ToolParse(content, self._calls(text, region, final))

    def _calls(self, text: str, i: int, final: bool) -> list[PartialCall]:
        calls: list[PartialCall] = []
        i = _skip_ws(text, i)
        if self.array:
            if i >= len(text) or text[i] != "[":
                return calls
            i += 1
        while True:
            i = _skip_ws(text, i)
            if i < len(text) and text[i] in ",;":
                i += 1
                continue
            if i >= len(text) or text[i] != "{":
                return calls
            call, end = _json_call(text, i, closed=final, arg_keys=self.arg_keys)
            if call is None:
                return calls
            calls.append(call)
            if end is None:
                return calls
            i = end


class Llama3ToolParser(_JsonListParser):
    """``<|python_tag|>{"name": "f", "parameters": {…}}; {…}``."""

    name = "llama3"
    start_tags = ("<|python_tag|>",)
    arg_keys = ("parameters", "arguments")
    bare_start = "{"
    array = False

    def trigger(self) -> str:
        """Llama writes the call's JSON directly (OVMS's llama3 builder)."""
        return '{"name":'

    def call_tag(
        self, name: str, content: dict[str, Any], schema: dict[str, Any]
    ) -> dict[str, Any]:
        """``{"name": "f", "parameters": …}``."""
        begin = f'{{"name": {json.dumps(name)}, "parameters": '
        return {"type": "tag", "begin": begin, "content": content, "end": "}"}


class MistralToolParser(_JsonListParser):
    """``[TOOL_CALLS][{"name": "f", "arguments": {…}}]``."""

    name = "mistral"
    start_tags = ("[TOOL_CALLS]",)
    bare_start = "[{"

    def call_tag(
        self, name: str, content: dict[str, Any], schema: dict[str, Any]
    ) -> dict[str, Any]:
        """A one-call array."""
        begin = f'[TOOL_CALLS][{{"name": {json.dumps(name)}, "arguments": '
        return {"type": "tag", "begin": begin, "content": content, "end": "}]"}


class Phi4ToolParser(_JsonListParser):
    """``functools[{"name": "f", "arguments": {…}}]``."""

    name = "phi4"
    start_tags = ("functools",)

    def call_tag(
        self, name: str, content: dict[str, Any], schema: dict[str, Any]
    ) -> dict[str, Any]:
        """A one-call ``functools`` array."""
        begin = f'functools[{{"name": {json.dumps(name)}, "arguments": '
        return {"type": "tag", "begin": begin, "content": content, "end": "}]"}


class Qwen3CoderToolParser(ToolParser):
    """``<tool_call><function=f><parameter=p>value</parameter></function></tool_call>``.

    Parameter values are typed by the tool's JSON schema: strings stay strings, other types are
    read as JSON (falling back to the string). Arguments grow one parameter at a time.
    """

    name = "qwen3coder"
    start_tags = ("<tool_call>", "<function=")
    argument_style = "xml"

    def parse(self, text: str, *, final: bool, tools: list[dict[str, Any]] | None) -> ToolParse:
        """Content is the text before the first ``<tool_call>`` or ``<function=``."""
        starts = [at for at in (text.find(tag) for tag in self.start_tags) if at >= 0]
        if not starts:
            return ToolParse(self._content(text, final))
        result = ToolParse(text[: min(starts)])
        types = _parameter_types(tools)
        pos = text.find("<function=", min(starts))
        while pos >= 0:
            name_end = text.find(">", pos)
            if name_end < 0:
                break
            call = PartialCall(text[pos + len("<function=") : name_end].strip())
            end = text.find("</function>", name_end)
            body = text[name_end + 1 : end if end >= 0 else len(text)]
            values = _xml_parameters(body, types.get(call.name or "", {}))
            pieces = [f"{json.dumps(k, ensure_ascii=False)}:{_dump(v)}" for k, v in values]
            call.complete = end >= 0 or final
            call.arguments = "{" + ",".join(pieces) + ("}" if call.complete else "")
            if call.complete:
                call.value = dict(values)
            result.calls.append(call)
            pos = text.find("<function=", end) if end >= 0 else -1
        return result

    def call_tag(
        self, name: str, content: dict[str, Any], schema: dict[str, Any]
    ) -> dict[str, Any]:
        """The XML call; ``content`` is the grammar of its parameter list."""
        return {
            "type": "tag", "begin": f"<tool_call>\n<function={name}>\n", "content": content,
            "end": "</function>\n</tool_call>",
        }


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _parameter_types(tools: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Tool name → parameter name → JSON schema ``type``."""
    result: dict[str, dict[str, Any]] = {}
    for tool in tools or ():
        spec = tool.get("function", tool)
        props = (spec.get("parameters") or {}).get("properties") or {}
        if isinstance(spec.get("name"), str) and isinstance(props, dict):
            result[spec["name"]] = {
                k: v.get("type") for k, v in props.items() if isinstance(v, dict)
            }
    return result


def _xml_parameters(body: str, types: dict[str, Any]) -> list[tuple[str, Any]]:
    """Complete ``<parameter=p>value</parameter>`` pairs of a function body, typed."""
    values: list[tuple[str, Any]] = []
    pos = body.find("<parameter=")
    while pos >= 0:
        name_end = body.find(">", pos)
        end = body.find("</parameter>", name_end) if name_end >= 0 else -1
        if end < 0:
            break
        name = body[pos + len("<parameter=") : name_end].strip()
        raw = body[name_end + 1 : end]
        raw = raw[1:] if raw.startswith("\n") else raw
        raw = raw[:-1] if raw.endswith("\n") else raw
        values.append((name, _typed(raw, types.get(name))))
        pos = body.find("<parameter=", end)
    return values


def _typed(raw: str, kind: Any) -> Any:
    if kind == "string":
        return raw
    value = _loads(raw.strip())
    if value is _INVALID:
        return raw
    if kind in ("integer", "number") and not isinstance(value, (int, float)):
        return raw
    if kind == "boolean" and not isinstance(value, bool):
        return raw
    return value


TOOL_PARSERS: dict[str, type[ToolParser]] = {
    cls.name: cls
    for cls in (
        Hermes3ToolParser, Llama3ToolParser, MistralToolParser, Phi4ToolParser,
        Qwen3CoderToolParser,
    )
}


def get_tool_parser(name: str) -> ToolParser | None:
    """The parser called ``name`` (``""`` or ``"none"``: no parser).

    Raises:
        ValueError: an unknown name; the message lists the supported ones.
    """
    if name in ("", "none"):
        return None
    if name not in TOOL_PARSERS:
        raise ValueError(
            f'Unsupported tool parser: "{name}". Supported tool parsers are: '
            + ", ".join(TOOL_PARSERS)
        )
    return TOOL_PARSERS[name]()
