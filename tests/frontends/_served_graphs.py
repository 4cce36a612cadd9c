"""A config.json repository for a real ``ovgraph serve``: the embedded shapes model plus a
two-node KServe graph, and a streamed chat client.

``shapes`` is the embedded default's graph with ``models_path`` pointing at the committed model;
``two`` (``in`` → ``first`` → ``second`` → ``out``, INT32 tensors) is reachable over KServe REST
and gRPC. Editing ``config.json`` and calling ``POST /v1/config/reload`` reloads them.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import REPO

SHAPES = REPO / "graphs" / "qwen2vl-shapes"
TWO_NODES = """
input_stream: "in"
output_stream: "out"
node { name: "first" calculator: "PassThroughCalculator" input_stream: "in" output_stream: "mid" }
node { name: "second" calculator: "PassThroughCalculator" input_stream: "mid" output_stream: "out" }
"""
SHAPES_NODES = [
    f"llmexecutor__{n}"
    for n in ("request", "images", "template", "generation", "detokenizer", "response")
]


def write_repository(root: Path, names: tuple[str, ...] = ("shapes", "two")) -> Path:
    """Write the graph folders and a ``config.json`` serving ``names``; return the config."""
    for name in ("shapes", "shapes2"):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        graph = (SHAPES / "graph.pbtxt").read_text()
        (folder / "graph.pbtxt").write_text(
            graph.replace('models_path: "./"', f'models_path: "{SHAPES.as_posix()}"')
        )
    (root / "two").mkdir(parents=True, exist_ok=True)
    (root / "two" / "graph.pbtxt").write_text(TWO_NODES)
    return set_served(root / "config.json", names)


def set_served(config: Path, names: tuple[str, ...]) -> Path:
    """Rewrite ``config.json`` to serve ``names`` (folders of :func:`write_repository`)."""
    data = {"model_config_list": [{"config": {"name": n, "base_path": n}} for n in names]}
    tmp = config.with_name("config.json.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(config)
    return config


def chat_body(model: str, stream: bool = False, tokens: int = 4) -> dict[str, Any]:
    """A text chat request; more than 8 tokens ignore EOS so the length is known."""
    body: dict[str, Any] = {
        "model": model, "max_completion_tokens": tokens, "stream": stream,
        "messages": [{"role": "user", "content": "What shape is in the picture?"}],
    }
    if tokens > 8:
        body["ignore_eos"] = True
    return body


def post(url: str, body: Any, headers: dict[str, str] | None = None,
         timeout: float = 60.0) -> tuple[int, bytes]:
    """POST JSON; return ``(status, raw body)`` (the whole stream for SSE answers)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def get_json(url: str, timeout: float = 30.0, headers: dict[str, str] | None = None) -> Any:
    """GET and parse JSON (raises on an HTTP error)."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class StreamingLoad:
    """Streamed chat requests one after the other in a thread until stopped.

    Every answer must be 200 with a ``[DONE]`` line; anything else is kept in ``failures``.
    """

    def __init__(self, url: str, model: str, tokens: int = 200) -> None:
        self.url, self.model, self.tokens = url, model, tokens
        self.done = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = post(self.url + "/v3/chat/completions",
                                    chat_body(self.model, stream=True, tokens=self.tokens))
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if status != 200 or b"data: [DONE]" not in body:
                self.failures.append(f"{status}: {body[-300:]!r}")
            else:
                self.done += 1

    def stop(self) -> None:
        """Let the request in flight finish, then stop."""
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive()
