"""Load-time rules beyond MediaPipe's initialization checks, and how errors are located.

Each rule catches a mistake that used to pass validation and fail every request instead: a side
packet nobody provides, a subgraph node (OVMS's LLM node) feeding itself without ``back_edge``,
a stream whose two ends declare different payload types. Errors point at the line of the field
at fault and suggest the nearest known name.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovgraph.errors import ContractError, GraphConfigError, ValidationError
from ovgraph.framework import registry
from ovgraph.framework.calculator import Calculator, Input, Output, SidePacket
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph, did_you_mean, validate
from ovgraph.serving.graph_definition import AVAILABLE, GraphDefinition

sys.path.insert(0, str(Path(__file__).parent))

from mediapipe_cases import INVALID_CASES
from mediapipe_oracle import cached_result

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "testdata" / "ovms-graphs"


class NeedsModel(Calculator):
    """Requires the MODEL side packet."""

    IN = Input("IN", str)
    OUT = Output("OUT", str)
    MODEL = SidePacket("MODEL", str)


class MaybeModel(Calculator):
    """Takes the MODEL side packet if there is one."""

    IN = Input("IN", str)
    OUT = Output("OUT", str)
    MODEL = SidePacket("MODEL", str, optional=True)


class EmitsBytes(Calculator):
    IN = Input("IN", str)
    OUT = Output("OUT", bytes)


class WantsText(Calculator):
    IN = Input("IN", str)
    OUT = Output("OUT", str)


class WantsAnything(Calculator):
    IN = Input("IN")
    OUT = Output("OUT", str)


class WantsBase(Calculator):
    IN = Input("IN", Exception)
    OUT = Output("OUT", str)


class EmitsSubclass(Calculator):
    IN = Input("IN", str)
    OUT = Output("OUT", ValueError)


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    classes = (NeedsModel, MaybeModel, EmitsBytes, WantsText, WantsAnything, WantsBase,
               EmitsSubclass)
    with contextlib.ExitStack() as stack:
        for cls in classes:
            stack.enter_context(registry.override(cls.__name__, cls))
        yield


def _errors(text: str) -> list[GraphConfigError]:
    return validate(parse_graph_config(text, path="g.pbtxt"))


# --------------------------------------------------------------------------- side packets

_USES_MODEL = """input_stream: "IN:in"
output_stream: "OUT:out"{graph_side}
node {{
  name: "user"
  calculator: "{calculator}"
  input_stream: "IN:in"
  input_side_packet: "MODEL:model"
  output_stream: "OUT:out"
}}
"""


def test_required_side_packet_nobody_provides_is_a_load_error() -> None:
    errors = _errors(_USES_MODEL.format(graph_side="", calculator="NeedsModel"))
    assert len(errors) == 1
    error = errors[0]
    assert type(error) is ValidationError
    assert error.message.startswith(
        'Side packet "model" of node "user" is required but no node produces it and the graph '
        "does not declare it as an input_side_packet"
    )
    assert 'input_side_packet: "model"' in error.message
    assert (error.node, error.line) == ("user", 7)  # the input_side_packet line


@pytest.mark.parametrize(
    ("graph_side", "calculator"),
    [
        ('\ninput_side_packet: "model"', "NeedsModel"),  # the client passes it at run start
        ("", "MaybeModel"),  # an optional side packet may be absent
    ],
)
def test_declared_or_optional_side_packets_pass(graph_side: str, calculator: str) -> None:
    assert _errors(_USES_MODEL.format(graph_side=graph_side, calculator=calculator)) == []


def test_side_packet_from_another_node_passes_and_near_names_are_suggested() -> None:
    text = """input_stream: "IN:in"
output_stream: "OUT:out"
node { calculator: "OpenVINOModelServerSessionCalculator" output_side_packet: "SESSION:modle"
  node_options: { [type.googleapis.com/mediapipe.OpenVINOModelServerSessionCalculatorOptions]: {
    servable_name: "x" } } }
node { name: "user" calculator: "NeedsModel" input_stream: "IN:in"
  input_side_packet: "MODEL:model" output_stream: "OUT:out" }
"""
    errors = _errors(text)
    assert [e.message for e in errors if "Did you mean" in e.message], errors
    assert 'Did you mean "modle"?' in errors[-1].message


class PayloadNeedsModel(Calculator):
    """An HTTP graph node that requires the MODEL side packet."""

    IN = Input("HTTP_REQUEST_PAYLOAD")
    OUT = Output("HTTP_RESPONSE_PAYLOAD", bytes)
    MODEL = SidePacket("MODEL", str)


_HTTP_GRAPH = """input_stream: "HTTP_REQUEST_PAYLOAD:input"
output_stream: "HTTP_RESPONSE_PAYLOAD:output"
node {
  name: "user"
  calculator: "PayloadNeedsModel"
  input_stream: "HTTP_REQUEST_PAYLOAD:input"
  input_side_packet: "MODEL:model"
  output_stream: "HTTP_RESPONSE_PAYLOAD:output"
}
"""


def test_served_http_graph_with_a_missing_side_packet_is_not_available(tmp_path: Path) -> None:
    graph = tmp_path / "graph.pbtxt"
    graph.write_text(_HTTP_GRAPH)
    definition = GraphDefinition("needs_model", graph_path=graph)
    with registry.override("PayloadNeedsModel", PayloadNeedsModel):
        definition.load()
    assert definition.state != AVAILABLE
    status = definition.status()["model_version_status"][0]
    assert status["status"]["error_code"] == "FAILED_PRECONDITION"
    assert 'Side packet "model" of node "user" is required' in status["status"]["error_message"]
    assert f"{graph}:7" not in status["status"]["error_message"]  # no file paths to clients
    json.dumps(status)  # what /v1/config answers


def test_served_graph_with_a_missing_side_packet_says_why_over_rest(tmp_path: Path) -> None:
    """Through a real REST server: /v1/config and /v1/graphs name the missing side packet, and
    a request gets a clean "not available" answer instead of a 500 from every run."""
    from ovgraph.serving.repository import GraphEntry, ModelRepository
    from tests.frontends._graph_server import AppServer

    graph = tmp_path / "graph.pbtxt"
    graph.write_text(_HTTP_GRAPH)
    with registry.override("PayloadNeedsModel", PayloadNeedsModel):
        repo = ModelRepository({})
        repo.add(GraphEntry(name="needs_model", graph_path=graph, base_path=tmp_path))
        repo.definitions()[0].load()
        app = AppServer(repo)
        try:
            status, config = app.json("GET", "/v1/config")
            assert status == 200
            (version,) = config["needs_model"]["model_version_status"]
            assert version["state"] != "AVAILABLE"
            assert 'Side packet "model" of node "user" is required' in \
                version["status"]["error_message"]
            status, listed = app.json("GET", "/v1/graphs")
            (entry,) = listed["graphs"]
            assert entry["state"] != "AVAILABLE"
            assert 'Side packet "model"' in entry["error"]
            status, answer = app.json("POST", "/v3/chat/completions", {
                "model": "needs_model", "messages": [{"role": "user", "content": "hi"}]})
            assert status in (404, 503), answer
            assert "error" in answer
        finally:
            app.stop()


def test_kserve_graph_may_take_side_packets_from_request_parameters(tmp_path: Path) -> None:
    # OVMS turns KServe request parameters into side packets: a tensor graph stays loadable
    # and a run without the parameter fails when it starts, as in OVMS.
    graph = tmp_path / "graph.pbtxt"
    graph.write_text(_USES_MODEL.format(graph_side="", calculator="NeedsModel"))
    definition = GraphDefinition("params", graph_path=graph)
    definition.load()
    assert definition.state == AVAILABLE
    with pytest.raises(ValidationError, match='Side packet "model" is required'):
        definition.new_run().start_run({})


# --------------------------------------------------------------------------- LOOPBACK cycle


def _without_back_edge(path: Path) -> str:
    text = path.read_text()
    stripped = re.sub(r"input_stream_info:\s*\{[^}]*\}", "", text)
    assert stripped != text
    return stripped


def test_llm_graph_without_back_edge_is_refused_like_mediapipe() -> None:
    # MediaPipe's verdict on the same wiring, with PassThroughCalculator standing in for the
    # LLM node (the recorded oracle case "loopback_without_back_edge").
    case = next(c for c in INVALID_CASES if c.name == "loopback_without_back_edge")
    recorded = cached_result(case.payload)
    assert recorded is not None and recorded["error"] is not None
    vlm = CORPUS / "src__test__llm__visual_language_model__vlm_cb_regular.pbtxt"
    text = _without_back_edge(vlm)
    errors = validate(parse_graph_config(text))
    assert [type(e) for e in errors] == [ValidationError]
    assert errors[0].message == recorded["error"]["message"]
    assert errors[0].node == "llmNode1"


def test_repository_graph_without_back_edge_is_refused() -> None:
    text = _without_back_edge(REPO / "graphs" / "qwen2vl-tiny" / "graph.pbtxt")
    errors = validate(parse_graph_config(text, path="graph.pbtxt"))
    assert [e.message for e in errors] == [
        "; Generator side packet cycle or calculator stream cycle detected in graph: "
        "[LLMExecutor]"
    ]
    assert errors[0].line == 5  # the node


def test_llm_graph_with_back_edge_still_validates() -> None:
    path = REPO / "graphs" / "qwen2vl-tiny" / "graph.pbtxt"
    assert validate(parse_graph_config(path.read_text())) == []


# --------------------------------------------------------------------------- payload types

_TWO = """input_stream: "IN:in"
output_stream: "OUT:out"
node {{ name: "first" calculator: "{first}" input_stream: "IN:in" output_stream: "OUT:mid" }}
node {{
  name: "second"
  calculator: "{second}"
  input_stream: "IN:mid"
  output_stream: "OUT:out"
}}
"""


def test_payload_types_are_checked_across_a_stream() -> None:
    errors = _errors(_TWO.format(first="EmitsBytes", second="WantsText"))
    assert len(errors) == 1
    error = errors[0]
    assert type(error) is ContractError
    assert error.message == (
        'Input stream "mid" of calculator "second" expects packets of type "str" but the '
        'connected output stream will contain packets of type "bytes" (from node "first").'
    )
    assert (error.node, error.line) == ("second", 7)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("EmitsBytes", "WantsAnything"),  # an untyped input takes anything
        ("WantsText", "WantsText"),  # the same type
        ("EmitsSubclass", "WantsBase"),  # a subclass of the wanted type
    ],
)
def test_compatible_payload_types_pass(first: str, second: str) -> None:
    assert _errors(_TWO.format(first=first, second=second)) == []


def test_type_mismatch_fails_the_load_not_the_request() -> None:
    with pytest.raises(ContractError, match='expects packets of type "str"'):
        ValidatedGraph(parse_graph_config(_TWO.format(first="EmitsBytes", second="WantsText")))


# --------------------------------------------------------------------------- locations, hints


def test_bad_tag_is_reported_once_without_follow_on_errors() -> None:
    text = """input_stream: "in"
output_stream: "out"
node {
  calculator: "PassThroughCalculator"
  input_stream: "in"
  output_stream: "bad:tag:mid"
}
node {
  calculator: "PassThroughCalculator"
  input_stream: "mid"
  output_stream: "out"
}
"""
    errors = _errors(text)
    assert len(errors) == 1, [e.message for e in errors]
    assert "Unable to initialize TagMaps" in errors[0].message
    assert errors[0].line == 6


def test_errors_point_at_the_field_and_suggest_names() -> None:
    text = """input_stream: "in"
output_stream: "out"
executor { name: "heavy" type: "ThreadPoolExecutor" }
node {
  name: "a"
  calculator: "PassThrougCalculator"
  input_stream: "in"
  output_stream: "mid"
}
node {
  name: "b"
  calculator: "PassThroughCalculator"
  input_stream: "midd"
  output_stream: "out"
  executor: "heavyy"
}
"""
    found = {(e.line, e.message) for e in _errors(text)}
    assert found == {
        (6, 'ValidatedGraphConfig Initialization failed.\nNo registered object with name: '
            'PassThrougCalculator; Unable to find Calculator "PassThrougCalculator" Did you mean '
            '"PassThroughCalculator"?'),
        (13, '; Input Stream "midd" for node with sorted index 1 name b does not have a '
             'corresponding output stream. Did you mean "mid"?'),
        (15, 'The executor "heavyy" is not declared in an ExecutorConfig. Did you mean "heavy"?'),
    }


@pytest.mark.parametrize(
    ("name", "known", "expected"),
    [
        ("PassThrougCalculator", ["PassThroughCalculator", "FlowLimiterCalculator"],
         "PassThroughCalculator"),  # one letter missing
        ("httpllmcalculator", ["HttpLLMCalculator"], "HttpLLMCalculator"),  # case
        ("S2tCalculator", ["HttpLLMCalculator"], None),  # only the suffix is shared
        ("NoSuchInputStreamHandler", ["SyncSetInputStreamHandler"], None),  # same
        ("loopbak", ["loopback", "output"], "loopback"),  # a stream name
    ],
)
def test_did_you_mean(name: str, known: list[str], expected: str | None) -> None:
    assert did_you_mean(name, known) == (f' Did you mean "{expected}"?' if expected else "")


def test_wrong_extension_options_point_at_the_options_field() -> None:
    text = """input_stream: "in"
node {
  calculator: "PassThroughCalculator"
  input_stream: "in"
  output_stream: "out"
  options { [mediapipe.FlowLimiterCalculatorOptions.ext] { max_in_flight: 2 } }
}
"""
    errors = _errors(text)
    assert [(type(e), e.line) for e in errors] == [(ContractError, 6)]
    assert "takes no options" in errors[0].message


def test_an_unknown_stream_without_a_near_name_lists_the_known_ones() -> None:
    text = """input_stream: "in"
output_stream: "out"
node { name: "a" calculator: "PassThroughCalculator" input_stream: "in" output_stream: "mid" }
node { name: "b" calculator: "PassThroughCalculator" input_stream: "qqqq" output_stream: "out" }
"""
    (error,) = _errors(text)
    assert error.message.endswith(
        "does not have a corresponding output stream. (known streams: in, mid, out)"
    )
    assert error.line == 4
