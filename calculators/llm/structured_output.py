"""Structured output: ``response_format`` and forced tool calls as genai ``StructuredOutputConfig``.

JSON schemas are turned here into an XGrammar EBNF grammar for compact JSON (no blank space
between tokens, properties in the schema's order), rather than handed to genai as
``json_schema``: genai's converter lets a model write blank space without end, and a schema it
cannot compile fails inside the engine's step, taking every request of the batch with it. So a
schema is checked before anything is queued, and a keyword this converter does not enforce is
refused with a 400 naming it and where it is, instead of being silently ignored.

Supported: ``type`` (one or a list), ``enum``, ``const``, ``properties`` / ``required`` (other
properties are never generated), ``items``, ``minItems`` / ``maxItems`` (up to 32),
``anyOf`` / ``oneOf``, a one-element ``allOf``, ``$ref`` into ``$defs`` / ``definitions``; the
annotations ``title``, ``description``, ``default``, ``examples``, ``$schema``, ``$id``,
``$comment``, ``additionalProperties``, ``strict`` are accepted.

The result is a plain ``dict`` of strings (``grammar`` or ``structural_tags_config``), the form
in which a ``GenerationConfig`` crosses to the engine.
"""

from __future__ import annotations

import json
from typing import Any

from ovgraph.errors import InvalidParameterError

__all__ = ["SchemaError", "json_schema_grammar", "structured_output_fields"]

_ANNOTATIONS = frozenset(
    {
        "title", "description", "default", "examples", "$schema", "$id", "$comment",
        "additionalProperties", "strict", "deprecated", "readOnly", "writeOnly", "$defs",
        "definitions", "type", "enum", "const", "properties", "required", "items", "minItems",
        "maxItems", "anyOf", "oneOf", "allOf", "$ref",
    }
)  # fmt: skip
_MAX_UNROLL = 32

_PRIMITIVES = r"""
string ::= "\"" char* "\""
char ::= [^"\\\r\n\t] | "\\" (["\\/bfnrt] | "u" hex hex hex hex)
hex ::= [0-9a-fA-F]
integer ::= "-"? ("0" | [1-9] [0-9]*)
number ::= integer ("." [0-9]+)? ([eE] [-+]? [0-9]+)?
boolean ::= "true" | "false"
null ::= "null"
value ::= object | array | string | number | boolean | null
object ::= "{" (string ":" value ("," string ":" value)*)? "}"
array ::= "[" (value ("," value)*)? "]"
"""


class SchemaError(ValueError):
    """A JSON schema this converter cannot enforce; the message says what and where."""


def _literal(text: str) -> str:
    """An EBNF string literal matching ``text`` exactly."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def _json_literal(value: Any) -> str:
    # ASCII only (\uXXXX escapes): under genai's grammar a literal's non-ASCII characters come
    # out as other characters (an enum value "ï" was written as "\u0efc\u0f6d").
    return _literal(json.dumps(value, ensure_ascii=True, separators=(",", ":")))


class _Converter:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.rules: dict[str, str] = {}
        self.refs: dict[str, str] = {}
        # References being expanded with no "{" or "[" written since: meeting one again would
        # make a left-recursive grammar.
        self.unguarded: set[str] = set()

    def add(self, name: str, body: str) -> str:
        base, n = name, 1
        while name in self.rules:
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = body
        return name

    def convert(self, schema: Any, path: str, name: str) -> str:
        """Return an EBNF expression (usually a rule name) for ``schema``."""
        if schema is True or schema == {}:
            return "value"
        if not isinstance(schema, dict):
            raise SchemaError(f"{path}: a schema must be an object or true")
        for key in schema:
            if key not in _ANNOTATIONS:
                raise SchemaError(f"{path}: keyword '{key}' is not supported")
        if "$ref" in schema:
            return self.ref(schema["$ref"], path)
        if "const" in schema:
            return _json_literal(schema["const"])
        if "enum" in schema:
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                raise SchemaError(f"{path}/enum: must be a non-empty array")
            return self.add(name, " | ".join(_json_literal(v) for v in schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = schema[key]
                if not isinstance(options, list) or not options:
                    raise SchemaError(f"{path}/{key}: must be a non-empty array")
                parts = [
                    self.convert(o, f"{path}/{key}/{i}", f"{name}-{i}")
                    for i, o in enumerate(options)
                ]
                return self.add(name, " | ".join(parts))
        if "allOf" in schema:
            options = schema["allOf"]
            if not isinstance(options, list) or len(options) != 1:
                raise SchemaError(f"{path}/allOf: only a single schema is supported")
            return self.convert(options[0], f"{path}/allOf/0", name)
        kind = schema.get("type")
        if kind is None:
            if "properties" in schema:
                kind = "object"
            elif "items" in schema:
                kind = "array"
            else:
                return "value"
        if isinstance(kind, list):
            if not kind:
                raise SchemaError(f"{path}/type: must not be empty")
            parts = [self.typed(schema, k, path, f"{name}-{k}") for k in kind]
            return self.add(name, " | ".join(parts))
        return self.typed(schema, kind, path, name)

    def typed(self, schema: dict[str, Any], kind: Any, path: str, name: str) -> str:
        if kind in ("string", "integer", "number", "boolean", "null"):
            return str(kind)
        if kind == "object":
            return self.object(schema, path, name)
        if kind == "array":
            return self.array(schema, path, name)
        raise SchemaError(f"{path}/type: unsupported type {json.dumps(kind)}")

    def object(self, schema: dict[str, Any], path: str, name: str) -> str:
        saved, self.unguarded = self.unguarded, set()
        try:
            return self._object(schema, path, name)
        finally:
            self.unguarded = saved

    def _object(self, schema: dict[str, Any], path: str, name: str) -> str:
        props = schema.get("properties")
        if props is None:
            return "object"
        if not isinstance(props, dict):
            raise SchemaError(f"{path}/properties: must be an object")
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError(f"{path}/required: must be an array of strings")
        for missing in set(required) - set(props):
            raise SchemaError(f"{path}/required: '{missing}' is not in properties")
        items = [
            (
                f"{_literal(json.dumps(key, ensure_ascii=False))} \":\" "
                + self.convert(sub, f"{path}/properties/{key}", f"{name}-{_rule_part(key)}"),
                key in required,
            )
            for key, sub in props.items()
        ]
        if not items:
            return '"{}"'
        # first_i: the first property written is one of i.., earlier optional ones skipped.
        following = [
            " ".join(
                f'"," {kv}' if req else f'("," {kv})?' for kv, req in items[i + 1 :]
            )
            for i in range(len(items))
        ]
        first = '""'
        for i in range(len(items) - 1, -1, -1):
            kv, req = items[i]
            option = f"{kv} {following[i]}".strip()
            first = self.add(f"{name}-from{i}", option if req else f"{option} | {first}")
        return self.add(name, f'"{{" {first} "}}"')

    def array(self, schema: dict[str, Any], path: str, name: str) -> str:
        saved, self.unguarded = self.unguarded, set()
        try:
            item = self.convert(schema.get("items", True), f"{path}/items", f"{name}-item")
        finally:
            self.unguarded = saved
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        if not isinstance(low, int) or low < 0 or low > _MAX_UNROLL:
            raise SchemaError(f"{path}/minItems: must be an integer from 0 to {_MAX_UNROLL}")
        if high is not None and (not isinstance(high, int) or high < low or high > _MAX_UNROLL):
            raise SchemaError(
                f"{path}/maxItems: must be an integer from minItems to {_MAX_UNROLL}"
            )
        if low == 0 and high is None:
            return self.add(name, f'"[" ({item} ("," {item})*)? "]"')
        # n items: item ("," item){n-1}; build the alternatives low..high (or low.. unbounded)
        def seq(n: int) -> str:
            return " ".join([item] + [f'"," {item}'] * (n - 1)) if n else ""

        if high is None:
            body = f'{seq(low)} ("," {item})*' if low else f'({item} ("," {item})*)?'
        else:
            body = " | ".join(f"({seq(n)})" if n else '""' for n in range(low, high + 1))
        return self.add(name, f'"[" ({body}) "]"')

    def ref(self, ref: Any, path: str) -> str:
        if not isinstance(ref, str):
            raise SchemaError(f"{path}/$ref: must be a string")
        if ref in self.refs:
            if ref in self.unguarded:
                raise SchemaError(f"{path}/$ref: '{ref}' refers to itself")
            return self.refs[ref]
        parts = ref.split("/")
        if len(parts) != 3 or parts[0] != "#" or parts[1] not in ("$defs", "definitions"):
            raise SchemaError(f"{path}/$ref: only '#/$defs/NAME' references are supported")
        defs = self.root.get(parts[1]) if isinstance(self.root, dict) else None
        target = defs.get(parts[2]) if isinstance(defs, dict) else None
        if target is None:
            raise SchemaError(f"{path}/$ref: '{ref}' is not defined")
        rule = f"def-{_rule_part(parts[2])}"
        self.refs[ref] = rule
        self.rules[rule] = ""  # reserve the name; recursion refers to it
        self.unguarded.add(ref)
        try:
            expression = self.convert(target, ref, f"{rule}-body")
        finally:
            self.unguarded.discard(ref)
        self.rules[rule] = expression
        return rule


def xml_parameters_grammar(schema: Any) -> str:
    """Grammar of Qwen3-Coder's ``<parameter=p>value</parameter>`` list for an object schema.

    String parameters are free text without ``<``; others are compact JSON.

    Raises:
        SchemaError: a keyword or shape the converter cannot enforce.
    """
    if not isinstance(schema, dict) or not isinstance(schema.get("properties", {}), dict):
        raise SchemaError("#: tool parameters must be an object schema")
    converter = _Converter(schema)
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError("#/required: must be an array of strings")
    parts = []
    for key, sub in schema.get("properties", {}).items():
        path = f"#/properties/{key}"
        if isinstance(sub, dict) and sub.get("type") == "string":
            converter.convert(sub, path, f"param-{_rule_part(key)}")  # refuse what it cannot do
            enum = sub.get("enum")
            value = "xml-text" if enum is None else "(" + " | ".join(
                _literal(str(v)) for v in enum
            ) + ")"
        else:
            value = converter.convert(sub, path, f"param-{_rule_part(key)}")
        kv = f'{_literal(f"<parameter={key}>")} "\\n" {value} "\\n</parameter>\\n"'
        parts.append(kv if key in required else f"({kv})?")
    body = " ".join(parts) or '""'
    lines = [f"root ::= {body}", "xml-text ::= [^<]*"]
    lines += [f"{name} ::= {body}" for name, body in converter.rules.items()]
    return "\n".join(lines) + _PRIMITIVES


def _rule_part(text: str) -> str:
    cleaned = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in text)
    return cleaned.strip("-")[:32] or "x"


def json_schema_grammar(schema: Any) -> str:
    """An XGrammar EBNF grammar for compact JSON matching ``schema``.

    Raises:
        SchemaError: a keyword or shape the converter cannot enforce.
    """
    converter = _Converter(schema)
    root = converter.convert(schema, "#", "root-value")
    lines = [f"root ::= {root}"]
    lines += [f"{name} ::= {body}" for name, body in converter.rules.items()]
    return "\n".join(lines) + _PRIMITIVES


def _tool_schema(tool: dict[str, Any]) -> tuple[str, Any]:
    spec = tool.get("function", tool)
    return spec["name"], spec.get("parameters") or {"type": "object", "properties": {}}


def structured_output_fields(
    response_format: dict[str, Any] | None,
    tools: list[dict[str, Any]] | None,
    tool_choice: str,
    tool_parser: Any,
    guided_tools: bool,
    one_call: bool = False,
    format_param: str = "response_format",
) -> dict[str, str] | None:
    """The ``StructuredOutputConfig`` string fields a request asks for, or None.

    A forced tool call (``tool_choice`` ``required`` or a function name, with a tool parser)
    wins over ``response_format``; ``enable_tool_guided_generation`` constrains calls the model
    chooses to make (``auto``) when no ``response_format`` is given. A named function or
    ``one_call`` (``parallel_tool_calls: false``) ends generation after the first call.
    ``format_param`` is the request field the format came from (named in errors).

    Raises:
        InvalidParameterError: a schema that cannot be enforced (400 naming the problem).
    """
    forced = tool_choice not in ("none", "auto")
    if tools and tool_parser is not None and (forced or (guided_tools and not response_format)):
        tags = []
        for tool in tools:
            name, schema = _tool_schema(tool)
            try:
                grammar = (
                    xml_parameters_grammar(schema) if tool_parser.argument_style == "xml"
                    else json_schema_grammar(schema)
                )
            except SchemaError as exc:
                raise InvalidParameterError(
                    f"Tool '{name}' parameters cannot be enforced: {exc}", param="tools"
                ) from exc
            tags.append(tool_parser.call_tag(name, {"type": "grammar", "grammar": grammar}, schema))
        structural = {
            "type": "structural_tag",
            "format": {
                "type": "triggered_tags", "triggers": [tool_parser.trigger()], "tags": tags,
                "at_least_one": forced,
                "stop_after_first": one_call or tool_choice not in ("none", "auto", "required"),
            },
        }
        return {"structural_tags_config": json.dumps(structural, ensure_ascii=False)}
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {"grammar": "root ::= object\n" + _PRIMITIVES}
    if kind == "choice":  # vLLM's guided_choice: one of the strings, exactly
        return {"grammar": "root ::= " + " | ".join(map(_literal, response_format["choices"]))}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema", True) if isinstance(spec, dict) else True
        try:
            return {"grammar": json_schema_grammar(schema)}
        except SchemaError as exc:
            where = (
                "response_format.json_schema.schema" if format_param == "response_format"
                else format_param
            )
            raise InvalidParameterError(
                f"{where} cannot be enforced: {exc}", param=format_param
            ) from exc
    return None
