"""Images over real HTTP: pixel and shape limits, no pipeline poisoning, URL and path policies."""

from __future__ import annotations

import http.server
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServerProcess, golden_array, png_data_url
from tests.e2e._reliability import assert_clean, chat, request

pytestmark = pytest.mark.e2e


def _image_chat(url: str, **extra: object) -> dict:
    return chat(
        [{"type": "text", "text": "Describe."}, {"type": "image_url", "image_url": {"url": url}}],
        max_tokens=8, temperature=0, **extra,
    )


def _png_header_only(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width x height`` (its data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))


def _post(server: ServerProcess, body: dict) -> tuple[int, dict]:
    status, _, raw = request(server.url + "/v3/chat/completions", body)
    if status != 200:
        assert_clean(raw)
    return status, json.loads(raw)


# --------------------------------------------------------------------------- decoding


def test_pixel_bomb_rejected_before_decode(server: ServerProcess) -> None:
    import base64

    url = "data:image/png;base64," + base64.b64encode(_png_header_only(30_000, 30_000)).decode()
    started = time.monotonic()
    status, answer = _post(server, _image_chat(url))
    assert status == 400
    assert "exceeds the limit" in answer["error"]["message"]
    assert answer["error"]["param"] == "messages"
    assert time.monotonic() - started < 5


def test_one_pixel_image_ok(server: ServerProcess) -> None:
    status, answer = _post(server, _image_chat(png_data_url(np.full((1, 1, 3), 200, np.uint8))))
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] == 8


def test_extreme_aspect_ratio_400_and_pipeline_not_poisoned(server: ServerProcess) -> None:
    good = _image_chat(png_data_url(golden_array()))
    status, before = _post(server, good)
    assert status == 200
    for shape in ((1, 300, 3), (300, 1, 3), (2, 1000, 3)):
        status, answer = _post(server, _image_chat(png_data_url(np.zeros(shape, np.uint8))))
        assert status == 400, shape
        assert "aspect ratio" in answer["error"]["message"]
    status, after = _post(server, good)
    assert status == 200
    assert after["choices"][0]["message"]["content"] == before["choices"][0]["message"]["content"]


# --------------------------------------------------------------------------- URLs and paths


class _CountingServer:
    """A loopback HTTP server that counts requests and serves a small PNG."""

    def __init__(self) -> None:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(golden_array()).save(buf, format="PNG")
        png = buf.getvalue()
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def image_host() -> Iterator[_CountingServer]:
    host = _CountingServer()
    yield host
    host.close()


@pytest.fixture(scope="module")
def media_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    from PIL import Image

    (root / "allowed").mkdir()
    (root / "allowed_evil").mkdir()
    Image.fromarray(golden_array()).save(root / "allowed" / "ok.png")
    Image.fromarray(golden_array()).save(root / "allowed_evil" / "evil.png")
    Image.fromarray(golden_array()).save(root / "outside.png")
    os.symlink(root / "outside.png", root / "allowed" / "link.png")
    return root


@pytest.fixture(scope="module")
def media_server(media_dirs: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess([
        "--allowed_media_domains", "localhost,127.0.0.1",
        "--allowed_local_media_path", str(media_dirs / "allowed"),
    ]).wait_ready()
    yield proc
    proc.stop()


def test_url_refused_without_allowlist(server: ServerProcess, image_host: _CountingServer) -> None:
    before = image_host.hits
    status, answer = _post(server, _image_chat(f"http://127.0.0.1:{image_host.port}/a.png"))
    assert status == 400
    assert "allowed_media_domains" in answer["error"]["message"]
    assert image_host.hits == before == 0


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_allowlisted_host_resolving_to_loopback_refused(
    media_server: ServerProcess, image_host: _CountingServer, host: str
) -> None:
    status, answer = _post(media_server, _image_chat(f"http://{host}:{image_host.port}/a.png"))
    assert status == 400
    assert "non-public address" in answer["error"]["message"]
    assert image_host.hits == 0


def test_other_schemes_refused(media_server: ServerProcess) -> None:
    for url in ("file:///etc/passwd", "ftp://localhost/x.png", "gopher://localhost/x"):
        status, answer = _post(media_server, _image_chat(url))
        assert status == 400, url
        assert "passwd" not in json.dumps(answer)


def test_local_path_disabled_by_default(server: ServerProcess, media_dirs: Path) -> None:
    status, answer = _post(server, _image_chat(str(media_dirs / "allowed" / "ok.png")))
    assert status == 400
    assert answer["error"]["message"] == "Loading images from local filesystem is disabled."


def test_local_path_inside_allowed_dir_ok(media_server: ServerProcess, media_dirs: Path) -> None:
    status, answer = _post(media_server, _image_chat(str(media_dirs / "allowed" / "ok.png")))
    assert status == 200, answer
    assert answer["usage"]["prompt_tokens"] > 64


@pytest.mark.parametrize(
    "relative",
    ["allowed_evil/evil.png", "outside.png", "allowed/link.png", "allowed/../outside.png"],
)
def test_local_path_escapes_refused(
    media_server: ServerProcess, media_dirs: Path, relative: str
) -> None:
    status, answer = _post(media_server, _image_chat(str(media_dirs) + "/" + relative))
    assert status == 400
    assert answer["error"]["param"] == "messages"
