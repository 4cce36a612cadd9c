"""Reading ``graph.pbtxt`` files: text-format ``CalculatorGraphConfig`` plus source locations.

Parsing uses ``google.protobuf.text_format`` with the process-wide default descriptor pool, into
which MediaPipe's own option modules (calculators, stream handlers, executors) are imported
here, and the option types calculator packages contribute through the ``ovgraph.option_types``
entry points before the first parse, so that both option syntaxes of real graphs resolve:

- ``options { [mediapipe.FooOptions.ext] { ... } }`` (proto2 extension of ``CalculatorOptions``)
- ``node_options: { [type.googleapis.com/mediapipe.FooOptions]: { ... } }`` (``Any``)

Option types of plugins join the same pool when their generated ``_pb2`` module is imported;
:func:`register_options_module` does that (and checks the module really uses the default pool).
Calculators name their ``Options`` with :func:`option_type`.

Errors read like MediaPipe's (``Error parsing text-format mediapipe.CalculatorGraphConfig:
3:12: Message type "mediapipe.CalculatorGraphConfig.Node" has no field named "bogus".``) and
carry ``.path`` and ``.line``. Node line numbers come from text_format's own tokenizer.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from os import PathLike
from types import ModuleType
from typing import Any, TypeVar

from google.protobuf import descriptor_pool, message, message_factory, text_format

from ovgraph._proto.mediapipe.framework import calculator_pb2
from ovgraph.errors import ContractError, GraphConfigError

logger = logging.getLogger("ovgraph.graph")

__all__ = [
    "OPTIONS_MODULES",
    "ParsedGraphConfig",
    "check_unique_node_options",
    "load_contributed_option_types",
    "node_options",
    "option_type",
    "option_type_names",
    "options_class",
    "parse_graph_config",
    "read_graph_file",
    "register_options_module",
]

# MediaPipe's own option messages, always known. Calculator packages add theirs (OVMS's LLM,
# Python executor, inference options …) through the ``ovgraph.option_types`` entry-point group:
# ``Name = "package.module_pb2"``, a generated module of the default descriptor pool.
OPTION_TYPES_GROUP = "ovgraph.option_types"
OPTIONS_MODULES: tuple[str, ...] = (
    "ovgraph._proto.mediapipe.framework.calculator_options_pb2",
    "ovgraph._proto.mediapipe.framework.mediapipe_options_pb2",
    "ovgraph._proto.mediapipe.framework.thread_pool_executor_pb2",
    "ovgraph._proto.mediapipe.framework.stream_handler.sync_set_input_stream_handler_pb2",
    "ovgraph._proto.mediapipe.framework.stream_handler.fixed_size_input_stream_handler_pb2",
    "ovgraph._proto.mediapipe.calculators.core.flow_limiter_calculator_pb2",
    "ovgraph._proto.mediapipe.calculators.image.image_transformation_calculator_pb2",
    "ovgraph._proto.mediapipe.calculators.tflite.ssd_anchors_calculator_pb2",
    "ovgraph._proto.mediapipe.calculators.util.non_max_suppression_calculator_pb2",
    "ovgraph._proto.mediapipe.calculators.util.detection_label_id_to_text_calculator_pb2",
    "ovgraph._proto.mediapipe.calculators.util.detections_to_render_data_calculator_pb2",
    "ovgraph._proto.mediapipe.calculators.openvino.openvino_converter_calculator_pb2",
    "ovgraph._proto.mediapipe.calculators.openvino.openvino_tensors_to_detections_calculator_pb2",
)

_GRAPH_TYPE = "mediapipe.CalculatorGraphConfig"
_ERROR_PREFIX = f"Error parsing text-format {_GRAPH_TYPE}: "
_TYPE_URL_PREFIX = "type.googleapis.com/"
# OVMS' graph pool directive (mediapipegraphdefinition.cpp): a whole comment line whose value
# is one token.
_QUEUE_DIRECTIVE_RE = re.compile(
    r"[ \t]*#[ \t]*OVMS_GRAPH_QUEUE_MAX_SIZE[ \t]*:[ \t]*(\S+)[ \t\r]*"
)
_LOCATION_PREFIX_RE = re.compile(r"^\d+(?::\d+)? : ")
_TYPE_NOT_FOUND_RE = re.compile(r"^Type (\S+) not found in descriptor pool")
_MISSING_REQUIRED_RE = re.compile(r"^Message (\S+) is missing required fields")
_INIT_ERROR_NODE_RE = re.compile(r"^node\[(\d+)\]")

_POOL = descriptor_pool.Default()
_registered_modules: dict[str, ModuleType] = {}

M = TypeVar("M", bound=message.Message)


@dataclass(frozen=True)
class ParsedGraphConfig:
    """A parsed graph config and where it came from.

    Attributes:
        config: the ``CalculatorGraphConfig`` message.
        path: the file it was read from, if any.
        node_lines: 1-based line of each top-level ``node`` entry, in ``config.node`` order.
        queue_size_directive: value of the ``# OVMS_GRAPH_QUEUE_MAX_SIZE: <value>`` comment line
            (e.g. ``"AUTO"``, ``"0"``, ``"4"``), unvalidated; None when absent.
        field_lines: per top-level node, the line of each occurrence of each of its fields
            (``{"input_stream": [5, 6], "calculator": [4]}``), in file order.
        graph_field_lines: the same for the graph's own top-level fields.
    """

    config: Any
    path: str | None = None
    node_lines: list[int] = field(default_factory=list)
    queue_size_directive: str | None = None
    field_lines: list[dict[str, list[int]]] = field(default_factory=list)
    graph_field_lines: dict[str, list[int]] = field(default_factory=dict)


def register_options_module(module: ModuleType | str) -> list[str]:
    """Make the option messages of a generated ``_pb2`` module available to graph parsing.

    Parsing uses the default descriptor pool, so importing a generated module already registers
    its messages and extensions; this function imports the module when given by name and checks
    that its file really lives in the default pool (modules generated into a private pool would
    be invisible to parsing). Call it before parsing graphs that use the plugin's options.

    Args:
        module: the module object or its dotted import name.

    Returns:
        Full names of the messages the module defines.

    Raises:
        ValueError: the module is not a generated protobuf module of the default pool.
    """
    if isinstance(module, str):
        module = importlib.import_module(module)
    file_descriptor = getattr(module, "DESCRIPTOR", None)
    if file_descriptor is None or not hasattr(file_descriptor, "message_types_by_name"):
        raise ValueError(f"{module.__name__} is not a generated protobuf (_pb2) module")
    try:
        pooled = _POOL.FindFileByName(file_descriptor.name)
    except KeyError:
        pooled = None
    if pooled is None or pooled.serialized_pb != file_descriptor.serialized_pb:
        raise ValueError(
            f"{module.__name__} does not use the default descriptor pool; regenerate it with "
            "protoc's standard Python output"
        )
    _registered_modules[module.__name__] = module
    return [d.full_name for d in file_descriptor.message_types_by_name.values()]


for _name in OPTIONS_MODULES:
    register_options_module(_name)

_contributed_lock = threading.Lock()
_contributed_loaded = False


def load_contributed_option_types() -> None:
    """Register the option modules of the ``ovgraph.option_types`` entry points (once).

    A module that fails to import is logged; a graph using its options then fails to parse
    with an error that names the unknown type.
    """
    global _contributed_loaded
    if _contributed_loaded:
        return
    with _contributed_lock:
        if _contributed_loaded:
            return
        for ep in metadata.entry_points(group=OPTION_TYPES_GROUP):
            try:
                register_options_module(ep.value.partition(":")[0])
            except Exception:
                logger.exception("Option types %s (%s) could not be loaded", ep.name, ep.value)
        _contributed_loaded = True


def option_type(full_name: str) -> type[message.Message]:
    """The message class of an option type, by full name (``"mediapipe.FooCalculatorOptions"``).

    This is how calculators name their ``Options``: the type comes from whichever package
    contributed it, never from ``ovgraph``'s generated modules.

    Raises:
        KeyError: no registered module defines ``full_name``.
    """
    found = options_class(full_name)
    if found is None:
        raise KeyError(f"Option type {full_name} is not registered")
    return found


def options_class(full_name: str) -> type[message.Message] | None:
    """Return the message class of a registered type name (e.g. from an ``Any``), or None."""
    load_contributed_option_types()
    try:
        descriptor = _POOL.FindMessageTypeByName(full_name)
    except KeyError:
        return None
    return message_factory.GetMessageClass(descriptor)


def parse_graph_config(text: str, path: str | None = None) -> ParsedGraphConfig:
    """Parse graph text into a ``ParsedGraphConfig``.

    Args:
        text: the ``graph.pbtxt`` contents.
        path: the file the text came from, used in errors.

    Raises:
        GraphConfigError: the text is not a valid ``CalculatorGraphConfig`` (``.line`` is set
            when the location is known).
    """
    load_contributed_option_types()
    config = calculator_pb2.CalculatorGraphConfig()
    try:
        text_format.Parse(text, config, descriptor_pool=_POOL)
    except text_format.ParseError as exc:
        raise _parse_error(exc, text, path) from None
    except message.EncodeError as exc:
        # An Any payload lacks required fields (text_format packs it while parsing).
        raise _missing_required_in_any(str(exc), text, path) from None
    node_lines, field_lines, graph_field_lines = _field_lines(text)
    if len(node_lines) != len(config.node):  # pragma: no cover - tokenizer and parser disagree
        node_lines = (node_lines + [0] * len(config.node))[: len(config.node)]
        field_lines = (field_lines + [{}] * len(config.node))[: len(config.node)]
    if not config.IsInitialized():
        errors = config.FindInitializationErrors()
        match = _INIT_ERROR_NODE_RE.match(errors[0]) if errors else None
        line = node_lines[int(match.group(1))] if match else None
        raise GraphConfigError(
            f"{_ERROR_PREFIX}Message missing required fields: {', '.join(errors)}",
            path=path,
            line=line,
        )
    return ParsedGraphConfig(
        config=config,
        path=path,
        node_lines=node_lines,
        queue_size_directive=_queue_directive(text),
        field_lines=field_lines,
        graph_field_lines=graph_field_lines,
    )


def read_graph_file(path: str | PathLike[str]) -> ParsedGraphConfig:
    """Read and parse a graph file (UTF-8, an optional byte-order mark is ignored).

    Raises:
        GraphConfigError: the file cannot be read or parsed.
    """
    name = str(path)
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise GraphConfigError("Graph file does not exist", path=name) from None
    except UnicodeDecodeError as exc:
        raise GraphConfigError(f"Graph file is not valid UTF-8: {exc.reason}", path=name) from None
    except OSError as exc:
        raise GraphConfigError(f"Graph file cannot be read: {exc.strerror}", path=name) from None
    return parse_graph_config(text, path=name)


def node_options(node: Any, options_cls: type[M]) -> M | None:
    """Return the node's options of type ``options_cls``, or None when the node has none.

    Looks in ``node.options`` (the proto2 extension ``options_cls.ext``) and in
    ``node.node_options`` (``Any``). As in MediaPipe, ``options`` wins when both carry the type.
    The result is a copy.

    Raises:
        ContractError: the type appears more than once in ``node_options``.
    """
    full_name = options_cls.DESCRIPTOR.full_name
    packed = [a for a in node.node_options if a.TypeName() == full_name]
    if len(packed) > 1:
        raise _duplicate_options(node, full_name)
    result = options_cls()
    extension = getattr(options_cls, "ext", None)
    if (
        extension is not None
        and node.HasField("options")
        and extension.containing_type.full_name == node.options.DESCRIPTOR.full_name
        and node.options.HasExtension(extension)
    ):
        result.CopyFrom(node.options.Extensions[extension])
        return result
    if packed:
        result.ParseFromString(packed[0].value)
        return result
    return None


def option_type_names(node: Any) -> list[str]:
    """Return the full names of the option types a node sets, each once, in file order.

    Extension options (``options { [pkg.T.ext] {…} }``) come first, then ``node_options``.
    """
    names: list[str] = []
    if node.HasField("options"):
        for descriptor, _value in node.options.ListFields():
            if descriptor.is_extension and descriptor.message_type is not None:
                names.append(descriptor.message_type.full_name)
    names.extend(a.TypeName() for a in node.node_options)
    return list(dict.fromkeys(names))


def check_unique_node_options(node: Any) -> None:
    """Raise ContractError if one option type appears twice in the node's ``node_options``."""
    seen: set[str] = set()
    for packed in node.node_options:
        name = packed.TypeName()
        if name in seen:
            raise _duplicate_options(node, name)
        seen.add(name)


def _duplicate_options(node: Any, full_name: str) -> ContractError:
    return ContractError(
        f"Options type: '{full_name}' specified more than once for a single calculator node "
        "config.",
        node=node.name or node.calculator or None,
    )


def _parse_error(exc: text_format.ParseError, text: str, path: str | None) -> GraphConfigError:
    detail = _LOCATION_PREFIX_RE.sub("", str(exc), count=1)
    line, column = exc.GetLine(), exc.GetColumn()
    not_found = _TYPE_NOT_FOUND_RE.match(detail)
    if not_found:
        type_name = not_found.group(1)
        detail = (
            f'Could not find type "{_TYPE_URL_PREFIX}{type_name}" stored in google.protobuf.Any.'
        )
        line, column = _any_location(text, type_name) or (line, column)
    return _located_error(detail, line, column, path)


def _missing_required_in_any(reason: str, text: str, path: str | None) -> GraphConfigError:
    match = _MISSING_REQUIRED_RE.match(reason)
    type_name = match.group(1) if match else "?"
    fields = reason.split(":", 1)[1].strip() if ":" in reason else ""
    detail = (
        f'Value of type "{type_name}" stored in google.protobuf.Any has missing required '
        f"fields: {fields}"
    )
    line, column = _any_location(text, type_name) or (None, None)
    return _located_error(detail, line, column, path)


def _located_error(
    detail: str, line: int | None, column: int | None, path: str | None
) -> GraphConfigError:
    location = ""
    if line is not None:
        location = f"{line}:{column}: " if column is not None else f"{line}: "
    return GraphConfigError(f"{_ERROR_PREFIX}{location}{detail}", path=path, line=line)


def _tokens(text: str) -> Iterator[tuple[str, int, int]]:
    """Yield ``(token, line, column)`` (1-based) using text_format's tokenizer, comments skipped.

    Stops quietly at text the tokenizer cannot read (only used on text that already parsed or
    to locate errors).
    """
    tokenizer = text_format.Tokenizer(text.split("\n"))
    while not tokenizer.AtEnd():
        # The tokenizer's ParseError factory reports the position of the current token.
        position = tokenizer.ParseError("")
        yield tokenizer.token, position.GetLine(), position.GetColumn()
        try:
            tokenizer.NextToken()
        except text_format.ParseError:
            return


def _field_lines(
    text: str,
) -> tuple[list[int], list[dict[str, list[int]]], dict[str, list[int]]]:
    """Return the line of every top-level ``node``, of each node's fields and the graph's."""
    node_lines: list[int] = []
    field_lines: list[dict[str, list[int]]] = []
    graph_fields: dict[str, list[int]] = {}
    depth = 0
    previous = ""
    for token, line, _column in _tokens(text):
        if token in ("{", "<"):
            depth += 1
        elif token in ("}", ">"):
            depth -= 1
        elif previous not in (":", "[", "/", ".") and (token[:1].isalpha() or token[:1] == "_"):
            # A field name: an identifier that is not a value (values follow ":" or sit in
            # an extension/Any bracket).
            if depth == 0:
                if token == "node":
                    node_lines.append(line)
                    field_lines.append({})
                else:
                    graph_fields.setdefault(token, []).append(line)
            elif depth == 1 and field_lines:
                field_lines[-1].setdefault(token, []).append(line)
        previous = token
    return node_lines, field_lines, graph_fields


def _any_location(text: str, type_name: str) -> tuple[int, int] | None:
    """Return the position of the first ``[<prefix>/<type_name>]`` Any expansion."""
    tokens = list(_tokens(text))
    for i, (token, line, column) in enumerate(tokens):
        if token != "[":
            continue
        url = []
        for inner, _line, _column in tokens[i + 1 :]:
            if inner == "]":
                break
            url.append(inner)
        joined = "".join(url)
        if "/" in joined and joined.rsplit("/", 1)[1] == type_name:
            return line, column
    return None


def _queue_directive(text: str) -> str | None:
    for line in text.split("\n"):
        match = _QUEUE_DIRECTIVE_RE.fullmatch(line)
        if match:
            return match.group(1)
    return None
