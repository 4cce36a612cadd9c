"""Shared fixtures: the committed tiny model, images, and real `ovgraph serve` processes."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovgraph.testing import ServeProcess
from ovgraph.testing import free_port as free_port  # tests import it from here

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = REPO / "graphs" / "qwen2vl-tiny"


def golden_array() -> np.ndarray:
    """224x224 RGB whose row-major HWC bytes are ``i mod 251`` (fixture-model golden image)."""
    return (np.arange(224 * 224 * 3) % 251).astype(np.uint8).reshape(224, 224, 3)


def png_data_url(array: np.ndarray, fmt: str = "PNG") -> str:
    """Encode an HxWx3 uint8 array as a data URL."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()


class ServerProcess(ServeProcess):
    """``ovgraph serve`` started for real in a subprocess on free loopback ports.

    Without model arguments it serves ``default_model`` (the tiny fixture).
    """

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        *,
        default_model: Path = TINY_MODEL,
    ) -> None:
        super().__init__(
            args, {"OVGRAPH_DEFAULT_MODEL": str(default_model), **(env or {})}, cwd=REPO
        )

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        """Block until ``/v2/health/ready`` answers 200."""
        super().wait_ready(timeout)
        return self

    def post(self, path: str, body: object, timeout: float = 60.0) -> tuple[int, dict]:
        """POST JSON; return ``(status, parsed JSON body)``."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
        """GET; return ``(status, raw body)``."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """The tiny fixture served with no model arguments (the default folder pointed at it)."""
    proc = ServerProcess([]).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def openai_client(server: ServerProcess):  # type: ignore[no-untyped-def]
    """The official ``openai`` client pointed at the default server."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v3", api_key="unused", max_retries=0)
