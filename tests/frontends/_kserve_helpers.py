"""Shared by the KServe tests: tiny IR models built at test time, test graphs, servers."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from ovgraph.serving.repository import GraphEntry, ModelRepository
from tests.conftest import REPO, TINY_MODEL, free_port

DUMMY_ADD_GRAPH = (
    REPO / "tests" / "testdata" / "ovms-graphs"
    / "demos__mediapipe__multi_model_graph__dummyAdd__graph.pbtxt"
)
VLM = "qwen2vl-tiny"

# Every datatype through untagged / OVTENSOR / OVMS_PY_TENSOR / TENSOR streams unchanged.
PASSTHROUGH_GRAPH = """
input_stream: "in"
input_stream: "OVTENSOR:ov_in"
input_stream: "OVMS_PY_TENSOR:py_in"
input_stream: "TENSOR:np_in"
output_stream: "out"
output_stream: "OVTENSOR:ov_out"
output_stream: "OVMS_PY_TENSOR:py_out"
output_stream: "TENSOR:np_out"
node {
  calculator: "PassThroughCalculator"
  input_stream: "in"
  input_stream: "OVTENSOR:ov_in"
  input_stream: "OVMS_PY_TENSOR:py_in"
  input_stream: "TENSOR:np_in"
  output_stream: "out"
  output_stream: "OVTENSOR:ov_out"
  output_stream: "OVMS_PY_TENSOR:py_out"
  output_stream: "TENSOR:np_out"
}
"""

# Request parameters become side packets: the "value" side packet comes back on "value_out".
SIDE_PACKET_GRAPH = """
input_stream: "tick"
output_stream: "value_out"
node {
  calculator: "SidePacketToStreamCalculator"
  input_stream: "TICK:tick"
  input_side_packet: "value"
  output_stream: "AT_TICK:value_out"
}
"""

BROKEN_GRAPH = """
input_stream: "in"
output_stream: "out"
node { calculator: "NoSuchCalculatorAnywhere" input_stream: "in" output_stream: "out" }
"""


def save_ir(folder: Path, inputs: list[str], output: str, op: str) -> None:
    """Write ``folder/model.xml``: f32 [1,10] inputs; ``op`` is ``add1`` or ``add``."""
    import openvino as ov
    import openvino.opset13 as ops

    params = []
    for name in inputs:
        param = ops.parameter([1, 10], np.float32, name=name)
        param.output(0).set_names({name})
        params.append(param)
    if op == "add1":
        node = ops.add(params[0], ops.constant(np.ones((1, 10), np.float32)))
    else:
        node = ops.add(params[0], params[1])
    node.output(0).set_names({output})
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([ops.result(node)], params, output), str(folder / "model.xml"))


def build_dummy_add(root: Path) -> Path:
    """The OVMS multi-model demo: graph.pbtxt with models ``dummy`` (+1) and ``add`` beside it."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(DUMMY_ADD_GRAPH, root / "graph.pbtxt")
    save_ir(root / "dummy" / "1", ["b"], "a", "add1")
    save_ir(root / "add" / "1", ["input1", "input2"], "sum", "add")
    return root


def build_repository(root: Path, *, with_vlm: bool = True) -> ModelRepository:
    """Every test graph, loaded."""
    graph_dir = build_dummy_add(root / "dummyAdd")
    repository = ModelRepository({})
    repository.add(
        GraphEntry(name="dummyAdd", graph_path=graph_dir / "graph.pbtxt", base_path=graph_dir)
    )
    repository.add(GraphEntry(name="passthrough", text=PASSTHROUGH_GRAPH, base_path=root))
    repository.add(GraphEntry(name="sidepacket", text=SIDE_PACKET_GRAPH, base_path=root))
    if with_vlm:
        repository.add(
            GraphEntry(name=VLM, graph_path=TINY_MODEL / "graph.pbtxt", base_path=TINY_MODEL)
        )
    for definition in repository.definitions():
        assert definition.available, (definition.name, definition.error)
    return repository


def chat_body(stream: bool, max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    """A deterministic chat request for the tiny VLM."""
    return {
        "model": VLM,
        "messages": [{"role": "user", "content": "Describe a teapot."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        **extra,
    }


def sse_text(chunks: list[bytes]) -> str:
    """Concatenate ``choices[0].delta.content`` of SSE ``data:`` events."""
    text = ""
    for event in b"".join(chunks).split(b"\n\n"):
        if not event.startswith(b"data: ") or event == b"data: [DONE]":
            continue
        payload = json.loads(event[len(b"data: "):])
        for choice in payload.get("choices", []):
            text += choice.get("delta", {}).get("content") or ""
    return text


class RestServer:
    """The Tornado app of ``ovgraph.frontends.rest.app`` on a loopback port, in a thread."""

    def __init__(self, repository: ModelRepository, state: Any = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._repository = repository
        self._state = state
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(30)

    def _run(self) -> None:
        import tornado.httpserver
        from tornado.ioloop import IOLoop

        from ovgraph.frontends.rest.app import make_app

        asyncio.set_event_loop(asyncio.new_event_loop())
        self.loop = IOLoop.current()
        server = tornado.httpserver.HTTPServer(make_app(self._repository, {}, self._state))
        server.listen(self.port, address="127.0.0.1")
        self._ready.set()
        self.loop.start()
        server.stop()

    def stop(self) -> None:
        """Stop the loop and join the thread."""
        self.loop.add_callback(self.loop.stop)
        self._thread.join(10)

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 60.0,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send a request; return ``(status, parsed JSON body or None)``."""
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw, status = r.read(), r.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        return status, json.loads(raw) if raw else None
