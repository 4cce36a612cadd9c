"""OVMS's Python quickstart (docs/python_support/quickstart.md), run against ``ovgraph serve``.

The handler, graph, config and client are the quickstart's, word for word, with only the paths
(``/models/...`` → the test's folder) and the gRPC port changed. The client sends the text as
plain UTF-8 ``BYTES`` in ``raw_input_contents`` (no length prefixes), which OVMS hands to the
handler unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ovgraph.testing import ServeProcess, free_port

pytestmark = pytest.mark.e2e

MODEL_PY = """
from pyovms import Tensor

class OvmsPythonModel:

    def execute(self, inputs: list):
        input_data = inputs[0]
        text = bytes(input_data).decode()
        output_data = text.upper().encode()
        return [Tensor("uppercase", output_data)]
"""

GRAPH_PBTXT = """
input_stream: "OVMS_PY_TENSOR:text"
output_stream: "OVMS_PY_TENSOR:uppercase"

node {
  name: "pythonNode"
  calculator: "PythonExecutorCalculator"
  input_side_packet: "PYTHON_NODE_RESOURCES:py"
  input_stream: "INPUT:text"
  output_stream: "OUTPUT:uppercase"
  node_options: {
    [type.googleapis.com / mediapipe.PythonExecutorCalculatorOptions]: {
      handler_path: "/models/python_model/model.py"
    }
  }
}"""

CONFIG_JSON = """
{
    "model_config_list": [],
    "mediapipe_config_list": [
    {
        "name":"python_model",
        "graph_path":"/models/python_model/graph.pbtxt"
    }
    ]
}
"""

CLIENT_PY = """
import tritonclient.grpc as grpcclient
client = grpcclient.InferenceServerClient("localhost:9000")
data = "Make this text uppercase.".encode()
infer_input = grpcclient.InferInput("text", [len(data)], "BYTES")
infer_input._raw_content = data
results = client.infer("python_model", [infer_input])
print(results.as_numpy("uppercase").tobytes().decode())
"""


def test_ovms_python_quickstart(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    models = workspace / "models"
    (models / "python_model").mkdir(parents=True)
    (models / "python_model" / "model.py").write_text(MODEL_PY)
    (models / "python_model" / "graph.pbtxt").write_text(
        GRAPH_PBTXT.replace("/models/", f"{models}/")
    )
    (models / "config.json").write_text(CONFIG_JSON.replace("/models/", f"{models}/"))
    grpc_port = free_port()
    (workspace / "client.py").write_text(CLIENT_PY.replace("localhost:9000",
                                                           f"localhost:{grpc_port}"))
    server = ServeProcess(
        ["--config_path", str(models / "config.json"), "--port", str(grpc_port)],
        cwd=workspace, log_dir=tmp_path,
    )
    try:
        server.wait_ready()
        client = subprocess.run(
            [sys.executable, "client.py"], cwd=workspace, capture_output=True, text=True,
            timeout=60, check=False,
        )
        assert client.returncode == 0, client.stderr + server.logs()
        assert client.stdout == "MAKE THIS TEXT UPPERCASE.\n"
    finally:
        server.stop()
