"""Request fields that shape an answer: tools, response formats, guided decoding, reasoning.

* ``tools`` and ``tool_choice`` as OVMS parses them (a named function keeps that tool only), plus
  OpenAI's ``allowed_tools`` choice and ``parallel_tool_calls`` (`parse_tools`);
* ``response_format`` (`parse_response_format`) and vLLM's guided decoding fields
  (`parse_guided_decoding`): ``guided_json`` / ``structured_outputs.json`` become a
  ``json_schema`` format, ``guided_choice`` / ``structured_outputs.choice`` a ``choice`` format
  (one of the strings, exactly), ``structured_outputs.json_object`` a ``json_object`` format. The
  grammar is built by `calculators.llm.structured_output`. A regular expression, a free grammar
  or a structural tag is refused: xgrammar compiles it inside the engine, where one that fails
  to compile stops every request of the batch;
* ``reasoning_effort`` (`with_reasoning_effort`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ovgraph.errors import InvalidParameterError

__all__ = [
    "GUIDED_FIELDS",
    "REASONING_EFFORTS",
    "REFUSED_GUIDED_FIELDS",
    "ToolRequest",
    "parse_guided_decoding",
    "parse_response_format",
    "parse_tools",
    "with_reasoning_effort",
]

#: ``reasoning_effort`` values (OpenAI's); any but "none" turns the template's thinking on.
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
#: vLLM's guided decoding fields this server honours (the others are refused).
GUIDED_FIELDS = ("guided_json", "guided_choice", "structured_outputs")
#: vLLM's guided decoding fields it refuses, and why.
REFUSED_GUIDED_FIELDS = {
    "guided_regex": "guided_regex is not supported: use guided_json or guided_choice",
    "guided_grammar": "guided_grammar is not supported: use guided_json or guided_choice",
    "guided_whitespace_pattern": "guided_whitespace_pattern is not supported (JSON is compact)",
}
_STRUCTURED_OUTPUTS_KEYS = ("json", "choice", "json_object")
_MAX_CHOICES = 256
_MAX_CHOICE_CHARS = 4096


def _fail(message: str, param: str) -> InvalidParameterError:
    return InvalidParameterError(message, param=param)


@dataclass(frozen=True)
class ToolRequest:
    """The tools a request offers (after ``tool_choice``), the choice, the most calls."""

    tools: list[dict[str, Any]] | None
    choice: str
    max_calls: int | None


def with_reasoning_effort(
    kwargs: dict[str, Any] | None, effort: Any, param: str
) -> dict[str, Any]:
    """Template kwargs for a reasoning effort; kwargs the request sets itself win.

    The effort reaches the template as ``reasoning_effort`` (as vLLM passes it) and turns
    ``enable_thinking`` on (as OVMS does for the Responses API), or off for ``"none"``.
    """
    if effort not in REASONING_EFFORTS:
        raise _fail(f"{param} must be one of: {', '.join(REASONING_EFFORTS)}", param)
    merged = dict(kwargs or {})
    merged.setdefault("enable_thinking", effort != "none")
    merged.setdefault("reasoning_effort", effort)
    return merged


_RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")


def parse_response_format(value: Any) -> dict[str, Any] | None:
    """``{"type": "text" | "json_object" | "json_schema", "json_schema": {"schema", …}}``.

    ``text`` means no constraint (None). Formats OVMS also passes to XGrammar as structural tags
    are refused: one that fails to compile inside the engine would fail the whole batch.
    """
    if not isinstance(value, dict):
        raise _fail("response_format is not an object", "response_format")
    kind = value.get("type")
    if kind not in _RESPONSE_FORMAT_TYPES:
        raise _fail(
            "response_format.type must be one of: " + ", ".join(_RESPONSE_FORMAT_TYPES),
            "response_format.type",
        )
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise _fail(
                "response_format.json_schema is not an object", "response_format.json_schema"
            )
        if "schema" in spec and not isinstance(spec["schema"], (dict, bool)):
            raise _fail(
                "response_format.json_schema.schema is not an object",
                "response_format.json_schema.schema",
            )
        if "strict" in spec and not isinstance(spec["strict"], (bool, type(None))):
            raise _fail(
                "response_format.json_schema.strict is not a boolean",
                "response_format.json_schema.strict",
            )
    return value


def parse_tools(body: dict[str, Any]) -> ToolRequest:
    """``tool_choice``, ``tools`` filtered by it (OVMS ``parseTools``), ``parallel_tool_calls``.

    Raises:
        InvalidParameterError: the first problem found, naming the field.
    """
    choice = "auto"
    allowed: set[str] | None = None  # tool_choice "allowed_tools": the functions it keeps
    raw_choice = body.get("tool_choice")
    if isinstance(raw_choice, dict) and raw_choice.get("type") == "allowed_tools":
        choice, allowed = _allowed_tools(raw_choice)
    elif raw_choice is not None:
        if isinstance(raw_choice, str):
            if raw_choice not in ("none", "auto", "required"):
                raise _fail(
                    "tool_choice should be either 'none' or 'auto' or 'required'", "tool_choice"
                )
            choice = raw_choice
        elif isinstance(raw_choice, dict):
            function = raw_choice.get("function")
            if isinstance(function, dict):
                if not isinstance(function.get("name"), str):
                    raise _fail("tool_choice.function.name is not a valid string", "tool_choice")
                choice = function["name"]
            elif raw_choice.get("type") == "function":
                if not isinstance(raw_choice.get("name"), str):
                    raise _fail("tool_choice.name is not a valid string", "tool_choice")
                choice = raw_choice["name"]
            else:
                raise _fail("tool_choice.function is not a valid JSON object", "tool_choice")
        else:
            raise _fail("tool_choice is not a valid JSON object or string", "tool_choice")

    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _fail("parallel_tool_calls is not a boolean", "parallel_tool_calls")
    max_calls = 1 if parallel is False else None
    tools = None if choice == "none" else body.get("tools")
    if tools is None:
        return ToolRequest(None, "none", max_calls)
    if not isinstance(tools, list):
        raise _fail("Tools are not an array", "tools")
    kept: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            raise _fail("Tool is not a JSON object", "tools")
        if "function" in tool:
            spec = tool["function"]
            if not isinstance(spec, dict):
                raise _fail("Function is not a valid JSON object", "tools")
        else:
            if not isinstance(tool.get("type"), str):
                raise _fail("Tool type is missing or invalid", "tools")
            if tool["type"] != "function":
                raise _fail("Only function tools are supported", "tools")
            spec = tool
        name = spec.get("name")
        if not isinstance(name, str):
            raise _fail("Function object does not contain a valid name field", "tools")
        if choice not in ("auto", "required") and choice != name:
            continue
        if allowed is not None and name not in allowed:
            continue
        if "parameters" in spec and not isinstance(spec["parameters"], dict):
            raise _fail("Function parameters are not a valid JSON object", "tools")
        kept.append(tool)
    if choice not in ("auto", "required") and not kept:
        raise _fail(f"tool_choice names function '{choice}' that is not in tools", "tool_choice")
    if allowed is not None and not kept:
        raise _fail("tool_choice allowed_tools names no function in tools", "tool_choice")
    return ToolRequest(kept, choice, max_calls)


def _allowed_tools(raw_choice: dict[str, Any]) -> tuple[str, set[str]]:
    """The mode and the function names of an ``allowed_tools`` tool choice.

    OpenAI's chat form is ``{"type": "allowed_tools", "allowed_tools": {"mode", "tools"}}``;
    the Responses API puts ``mode`` and ``tools`` at the top.
    """
    spec = raw_choice.get("allowed_tools", raw_choice)
    mode = spec.get("mode") if isinstance(spec, dict) else None
    if mode not in ("auto", "required"):
        raise _fail("tool_choice allowed_tools mode should be either 'auto' or 'required'",
                    "tool_choice")
    names: set[str] = set()
    for tool in spec.get("tools") if isinstance(spec.get("tools"), list) else [None]:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise _fail("tool_choice allowed_tools needs a list of functions with names",
                        "tool_choice")
        names.add(name)
    return mode, names


def parse_guided_decoding(body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The response format vLLM's guided decoding fields ask for, and the field it came from.

    Returns None when the request sets none of them.
    """
    for name, message in REFUSED_GUIDED_FIELDS.items():
        if body.get(name) is not None:
            raise _fail(message, name)
    present = [name for name in GUIDED_FIELDS if body.get(name) is not None]
    if not present:
        return None
    if len(present) > 1 or body.get("response_format") is not None:
        others = [*present, *(["response_format"] if body.get("response_format") else [])]
        raise _fail(f"set only one of: {', '.join(others)}", present[0])
    name = present[0]
    value = body[name]
    if name == "guided_json":
        return _json_format(value, name), name
    if name == "guided_choice":
        return _choice_format(value, name), name
    if not isinstance(value, dict):
        raise _fail("structured_outputs is not an object", name)
    keys = [key for key, item in value.items() if item not in (None, False)]
    unknown = [key for key in keys if key not in _STRUCTURED_OUTPUTS_KEYS]
    if unknown:
        raise _fail(
            f"structured_outputs.{unknown[0]} is not supported: use json, choice or json_object",
            f"{name}.{unknown[0]}",
        )
    if len(keys) != 1:
        raise _fail("structured_outputs needs exactly one of: json, choice, json_object", name)
    key = keys[0]
    if key == "json":
        return _json_format(value[key], f"{name}.json"), f"{name}.json"
    if key == "choice":
        return _choice_format(value[key], f"{name}.choice"), f"{name}.choice"
    if value[key] is not True:
        raise _fail("structured_outputs.json_object is not a boolean", f"{name}.json_object")
    return {"type": "json_object"}, f"{name}.json_object"


def _json_format(schema: Any, param: str) -> dict[str, Any]:
    if isinstance(schema, str):  # vLLM also takes the schema as a JSON string
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise _fail(f"{param} is not valid JSON: {exc}", param) from exc
    if not isinstance(schema, (dict, bool)):
        raise _fail(f"{param} is not a JSON schema object", param)
    return {"type": "json_schema", "json_schema": {"schema": schema}}


def _choice_format(choices: Any, param: str) -> dict[str, Any]:
    if not isinstance(choices, list) or not choices:
        raise _fail(f"{param} must be a non-empty array of strings", param)
    if len(choices) > _MAX_CHOICES:
        raise _fail(f"{param} exceeds the limit of {_MAX_CHOICES} choices", param)
    for choice in choices:
        if not isinstance(choice, str) or not choice:
            raise _fail(f"{param} must hold non-empty strings", param)
        if len(choice) > _MAX_CHOICE_CHARS:
            raise _fail(f"{param}: a choice exceeds {_MAX_CHOICE_CHARS} characters", param)
        if any(ord(c) < 32 and c not in "\n\r\t" for c in choice):
            raise _fail(f"{param}: a choice holds a control character", param)
        if not choice.isascii():
            # Under genai's grammar a non-ASCII character comes out as other characters.
            raise _fail(f"{param}: only ASCII choices can be enforced exactly", param)
    return {"type": "choice", "choices": list(dict.fromkeys(choices))}
