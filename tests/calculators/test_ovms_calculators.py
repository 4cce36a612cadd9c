"""OpenVINOModelServerSessionCalculator and OpenVINOInferenceCalculator on IR models built here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pytest

from calculators.ovms.session_calculator import resolve_model_file
from ovgraph.errors import GraphConfigError
from ovgraph.serving.graph_definition import GraphDefinition
from ovgraph.testing import run_graph
from tests.frontends._kserve_helpers import build_dummy_add, save_ir

ONE_SESSION = """
input_stream: "x"
output_stream: "y"
node {{
  calculator: "OpenVINOModelServerSessionCalculator"
  output_side_packet: "SESSION:s"
  node_options: {{
    [type.googleapis.com / mediapipe.OpenVINOModelServerSessionCalculatorOptions]: {{
      servable_name: "dummy" {extra}
    }}
  }}
}}
node {{
  calculator: "OpenVINOInferenceCalculator"
  input_side_packet: "SESSION:s"
  input_stream: "IN:x"
  output_stream: "OUT:y"
  node_options: {{
    [type.googleapis.com / mediapipe.OpenVINOInferenceCalculatorOptions]: {{
      tag_to_input_tensor_names {{ key: "IN" value: "b" }}
      tag_to_output_tensor_names {{ key: "OUT" value: "a" }}
    }}
  }}
}}
"""

X = np.arange(10, dtype=np.float32).reshape(1, 10)


def _load(text: str, base: Path, settings: dict[str, Any] | None = None) -> GraphDefinition:
    definition = GraphDefinition("g", text=text, base_path=base, settings=settings)
    definition.load()
    return definition


def _run(definition: GraphDefinition, inputs: list[tuple[str, int, Any]]) -> dict[str, Any]:
    assert definition.available, definition.error
    return run_graph(definition.validated, inputs, resources=definition.resources)


def test_dummy_add_demo_graph(tmp_path: Path) -> None:
    graph_dir = build_dummy_add(tmp_path / "demo")
    definition = GraphDefinition("dummyAdd", graph_path=graph_dir / "graph.pbtxt")
    definition.load()
    y = np.full((1, 10), 0.5, np.float32)
    out = _run(definition, [("in1", 0, ov.Tensor(X)), ("in2", 0, y), ("in1", 1, X * 2),
                            ("in2", 1, y)])["out"]
    assert [ts for ts, _ in out] == [0, 1]
    assert isinstance(out[0][1], ov.Tensor)
    np.testing.assert_allclose(out[0][1].data, X + 1 + y)
    np.testing.assert_allclose(out[1][1].data, 2 * X + 1 + y)


def test_highest_version_wins_unless_one_is_named(tmp_path: Path) -> None:
    save_ir(tmp_path / "dummy" / "1", ["b"], "a", "add1")
    save_ir(tmp_path / "dummy" / "12", ["b"], "a", "add1")
    assert resolve_model_file("dummy", graph_dir=tmp_path) == (
        tmp_path / "dummy" / "12" / "model.xml", "12"
    )
    assert resolve_model_file("dummy", "1", graph_dir=tmp_path)[1] == "1"
    with pytest.raises(GraphConfigError, match="has no version 3"):
        resolve_model_file("dummy", "3", graph_dir=tmp_path)


def test_servable_from_config_path_setting(tmp_path: Path) -> None:
    save_ir(tmp_path / "models" / "plus-one" / "1", ["b"], "a", "add1")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [
        {"config": {"name": "dummy", "base_path": "models/plus-one"}},
    ]}))
    graph_dir = tmp_path / "graph"
    graph_dir.mkdir()
    definition = _load(ONE_SESSION.format(extra=""), graph_dir, {"config_path": str(config)})
    out = _run(definition, [("x", 5, X)])["y"]
    np.testing.assert_allclose(out[0][1].data, X + 1)


def test_servable_from_server_config_option(tmp_path: Path) -> None:
    save_ir(tmp_path / "m" / "7", ["b"], "a", "add1")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps({"model_config_list": [
        {"config": {"name": "dummy", "base_path": str(tmp_path / "m")}},
    ]}))
    text = ONE_SESSION.format(extra='server_config: "cfg/config.json" servable_version: "7"')
    out = _run(_load(text, tmp_path), [("x", 0, X)])["y"]
    np.testing.assert_allclose(out[0][1].data, X + 1)


def test_missing_servable_leaves_graph_unavailable(tmp_path: Path) -> None:
    definition = _load(ONE_SESSION.format(extra=""), tmp_path)
    assert not definition.available
    assert definition.error == 'Servable "dummy" was not found'


def test_unknown_tensor_name_fails_the_run(tmp_path: Path) -> None:
    save_ir(tmp_path / "dummy" / "1", ["b"], "a", "add1")
    text = ONE_SESSION.format(extra="").replace('value: "b"', 'value: "nope"')
    definition = _load(text, tmp_path)
    with pytest.raises(Exception, match='Model "dummy" has no input nope'):
        _run(definition, [("x", 0, X)])


def test_inference_calculator_needs_a_session(tmp_path: Path) -> None:
    text = """
input_stream: "x"
output_stream: "y"
node { calculator: "OpenVINOInferenceCalculator" input_stream: "IN:x" output_stream: "OUT:y" }
"""
    definition = _load(text, tmp_path)
    assert not definition.available
    assert "exactly one input side packet, SESSION" in (definition.error or "")


def test_vector_streams_follow_order_lists(tmp_path: Path) -> None:
    save_ir(tmp_path / "add" / "1", ["input1", "input2"], "sum", "add")
    text = """
input_stream: "OVTENSORS:pair"
output_stream: "OVTENSORS:result"
node {
  calculator: "OpenVINOModelServerSessionCalculator"
  output_side_packet: "SESSION:s"
  node_options: {
    [type.googleapis.com / mediapipe.OpenVINOModelServerSessionCalculatorOptions]: {
      servable_name: "add"
    }
  }
}
node {
  calculator: "OpenVINOInferenceCalculator"
  input_side_packet: "SESSION:s"
  input_stream: "OVTENSORS:pair"
  output_stream: "OVTENSORS:result"
  node_options: {
    [type.googleapis.com / mediapipe.OpenVINOInferenceCalculatorOptions]: {
      input_order_list: ["input1", "input2"]
      output_order_list: ["sum"]
    }
  }
}
"""
    out = _run(_load(text, tmp_path), [("pair", 0, [X, 3 * X])])["result"]
    (tensors,) = [payload for _, payload in out]
    assert len(tensors) == 1
    np.testing.assert_allclose(tensors[0].data, 4 * X)
