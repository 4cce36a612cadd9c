"""KServe v2 REST routes (``/v2``, ``/v2/models/{name}``, ``…/infer``) on the in-process app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ovgraph.serving.repository import GraphEntry
from tests.frontends._kserve_helpers import (
    BROKEN_GRAPH,
    VLM,
    RestServer,
    build_repository,
    chat_body,
)


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    repository = build_repository(tmp_path_factory.mktemp("kserve-rest"))
    repository.add(GraphEntry(name="broken", text=BROKEN_GRAPH, base_path=Path.cwd()))
    server = RestServer(repository)
    yield server
    server.stop()


def _tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


X = [float(i) for i in range(10)]


def _add_body(x: list[Any] = X, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [_tensor("in1", "FP32", [1, 10], x), _tensor("in2", "FP32", [1, 10], X)],
        **extra,
    }


def test_server_metadata(rest: RestServer) -> None:
    status, body = rest.request("GET", "/v2")
    assert status == 200
    assert body["name"] == "OpenVINO Model Server"
    assert body["extensions"] == []


@pytest.mark.parametrize("path", ["/v2/models/dummyAdd", "/v2/models/dummyAdd/versions/1"])
def test_model_metadata(rest: RestServer, path: str) -> None:
    status, body = rest.request("GET", path)
    assert status == 200
    assert body["name"] == "dummyAdd"
    assert body["versions"] == ["1"]
    assert sorted(i["name"] for i in body["inputs"]) == ["in1", "in2"]
    assert body["outputs"] == [{"name": "out", "datatype": "INVALID", "shape": []}]


def test_unknown_model(rest: RestServer) -> None:
    status, body = rest.request("GET", "/v2/models/nope")
    assert status == 404
    # KServe's REST error shape: {"error": "<message>"}
    assert body == {"error": "Mediapipe graph definition with requested name is not found"}
    status, body = rest.request("POST", "/v2/models/nope/infer", _add_body())
    assert status == 404


def test_not_loaded_graph_is_503(rest: RestServer) -> None:
    status, _ = rest.request("GET", "/v2/models/broken")
    assert status == 503
    status, _ = rest.request("POST", "/v2/models/broken/infer", {"inputs": []})
    assert status == 503


@pytest.mark.parametrize(
    "path", ["/v2/models/dummyAdd/infer", "/v2/models/dummyAdd/versions/1/infer"]
)
def test_infer_dummy_add(rest: RestServer, path: str) -> None:
    status, body = rest.request("POST", path, _add_body(id="abc"))
    assert status == 200, body
    assert body["model_name"] == "dummyAdd"
    assert body["id"] == "abc"
    (out,) = body["outputs"]
    assert out["name"] == "out"
    assert out["datatype"] == "FP32"
    assert out["shape"] == [1, 10]
    np.testing.assert_allclose(out["data"], [2 * v + 1 for v in X])
    assert isinstance(body["parameters"]["OVMS_MP_TIMESTAMP"], int)


def test_infer_nested_data_and_timestamp(rest: RestServer) -> None:
    body = _add_body(x=[X], parameters={"OVMS_MP_TIMESTAMP": 77})
    status, answer = rest.request("POST", "/v2/models/dummyAdd/infer", body)
    assert status == 200, answer
    assert answer["parameters"]["OVMS_MP_TIMESTAMP"] == 77
    np.testing.assert_allclose(answer["outputs"][0]["data"], [2 * v + 1 for v in X])


def test_infer_bytes_and_side_packets(rest: RestServer) -> None:
    status, body = rest.request(
        "POST", "/v2/models/sidepacket/infer",
        {"inputs": [_tensor("tick", "INT32", [1], [0])], "parameters": {"value": "héllo"}},
    )
    assert status == 200, body
    assert body["outputs"][0] == {
        "name": "value_out", "datatype": "BYTES", "shape": [1], "data": ["héllo"]
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{broken", "Cannot parse JSON body"),  # not JSON
        ([1, 2], "JSON body must be an object"),  # not an object
        ({"inputs": [_tensor("in1", "FLOAT", [1, 10], X)]}, 'Invalid datatype "FLOAT"'),
        ({"inputs": [_tensor("in1", "FP32", [1, -10], X)]}, "negative dimension"),
        ({"inputs": [_tensor("in1", "FP32", [1, 11], X)]}, "needs 11 values, got 10"),
        ({"inputs": [_tensor("in1", "FP32", [1, 10], ["a"] * 10)]}, "Invalid value"),
        ({"inputs": [_tensor("in1", "INT32", [1, 10], [1.5] * 10)]}, "Invalid value"),
        (_add_body() | {"inputs": [*_add_body()["inputs"], _tensor("x", "FP32", [1], [1.0])]},
         "x is unexpected"),
        ({"inputs": [_tensor("in1", "FP32", [1, 10], X)]}, "Not all input packets created"),
        ({"inputs": [_tensor("in1", "INT32", [1, 10], list(range(10))),
                     _tensor("in2", "FP32", [1, 10], X)]}, "Invalid input precision"),
        (_add_body(parameters={"OVMS_MP_TIMESTAMP": "now"}), "Should be int64"),
        (_add_body(parameters={"py": 1}), "reserved"),
    ],
)
def test_bad_infer_requests_are_400(rest: RestServer, body: Any, message: str) -> None:
    status, answer = rest.request("POST", "/v2/models/dummyAdd/infer", body)
    assert status == 400, answer
    assert isinstance(answer["error"], str)  # KServe's shape, not OpenAI's
    assert message in answer["error"]
    ok, _ = rest.request("POST", "/v2/models/dummyAdd/infer", _add_body())
    assert ok == 200


def test_vlm_over_kserve_rest_matches_chat_completions(rest: RestServer) -> None:
    status, chat = rest.request("POST", "/v3/chat/completions", chat_body(stream=False))
    assert status == 200
    request = {"inputs": [_tensor("input", "BYTES", [1], [json.dumps(chat_body(stream=False))])]}
    status, body = rest.request("POST", f"/v2/models/{VLM}/infer", request)
    assert status == 200, body
    (out,) = body["outputs"]
    assert out["name"] == "output"
    answer = json.loads(out["data"][0])
    assert answer["choices"][0]["message"]["content"] == chat["choices"][0]["message"]["content"]


def test_vlm_over_kserve_rest_uri_parameter(rest: RestServer) -> None:
    request = {
        "inputs": [_tensor("input", "BYTES", [1], [json.dumps(chat_body(stream=False))])],
        "parameters": {"uri": "/v3/completions"},
    }
    status, body = rest.request("POST", f"/v2/models/{VLM}/infer", request)
    assert status == 400
    assert "VLM Servable does not support the /completions endpoint" in body["error"]
