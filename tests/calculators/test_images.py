"""Tests of calculators.llm.images: decoding, local files and URL downloads (loopback servers)."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from calculators.llm.images import ImagePolicy, load_image
from ovgraph.errors import InvalidParameterError

RED = (255, 0, 0)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def data_url(payload: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(payload).decode()


def red_png(width: int = 4, height: int = 3) -> bytes:
    return encode(Image.new("RGB", (width, height), RED), "PNG")


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR width/height of a PNG and fix the chunk CRC."""
    assert png[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def expect_error(match: str, url: str, policy: ImagePolicy | None = None) -> InvalidParameterError:
    with pytest.raises(InvalidParameterError, match=match) as info:
        load_image(url, policy or ImagePolicy())
    assert info.value.param == "messages"
    assert info.value.http_status == 400
    return info.value


def assert_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.shape == (1, height, width, 3)
    assert array.dtype == np.uint8
    assert array.flags.c_contiguous
    assert array.flags.writeable


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "WEBP"])
def test_lossless_formats_decode_to_exact_rgb(fmt: str) -> None:
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    image = Image.new("RGB", (5, 2), RED)
    image.putpixel((4, 1), (0, 0, 255))
    array = load_image(data_url(encode(image, fmt, **kwargs)), ImagePolicy())
    assert_rgb(array, 2, 5)
    assert array[0, 0, 0].tolist() == [255, 0, 0]
    assert array[0, 1, 4].tolist() == [0, 0, 255]


def test_jpeg_decodes_close_to_red() -> None:
    array = load_image(data_url(encode(Image.new("RGB", (16, 8), RED), "JPEG")), ImagePolicy())
    assert_rgb(array, 8, 16)
    red, green, blue = array[0, 4, 8].tolist()
    assert red > 240
    assert green < 15
    assert blue < 15


def test_cmyk_jpeg_converted_to_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    array = load_image(data_url(encode(cmyk, "JPEG")), ImagePolicy())
    assert_rgb(array, 8, 8)
    red, green, blue = array[0, 0, 0].tolist()
    assert red > 240
    assert green < 15
    assert blue < 15


def test_palette_image_converted() -> None:
    image = Image.new("P", (3, 3), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    array = load_image(data_url(encode(image, "PNG")), ImagePolicy())
    assert_rgb(array, 3, 3)
    assert array[0, 1, 1].tolist() == [255, 0, 0]


def test_rgba_alpha_dropped() -> None:
    image = Image.new("RGBA", (2, 2), (255, 0, 0, 10))
    array = load_image(data_url(encode(image, "PNG")), ImagePolicy())
    assert_rgb(array, 2, 2)
    assert array[0, 0, 0].tolist() == [255, 0, 0]


def test_grayscale_replicated_to_three_channels() -> None:
    array = load_image(data_url(encode(Image.new("L", (2, 3), 100), "PNG")), ImagePolicy())
    assert_rgb(array, 3, 2)
    assert array[0, 2, 1].tolist() == [100, 100, 100]


def test_sixteen_bit_grayscale_scaled_not_clipped() -> None:
    image = Image.fromarray(np.full((2, 2), 0x8000, dtype=np.uint16))
    assert image.mode.startswith("I;16")
    array = load_image(data_url(encode(image, "PNG")), ImagePolicy())
    assert array[0, 0, 0].tolist() == [128, 128, 128]


def test_one_by_one_ok() -> None:
    array = load_image(data_url(red_png(1, 1)), ImagePolicy())
    assert_rgb(array, 1, 1)
    assert array[0, 0, 0].tolist() == [255, 0, 0]


def test_aspect_ratio_at_limit_rejected_below_ok() -> None:
    expect_error("aspect ratio must be smaller than 200", data_url(red_png(200, 1)))
    expect_error("aspect ratio must be smaller than 200", data_url(red_png(1, 1000)))
    assert_rgb(load_image(data_url(red_png(199, 1)), ImagePolicy()), 1, 199)
    expect_error("smaller than 10", data_url(red_png(10, 1)), ImagePolicy(max_aspect_ratio=10))


def test_max_pixels_configurable() -> None:
    url = data_url(red_png(100, 100))
    expect_error("100x100 pixels exceeds the limit of 5000", url, ImagePolicy(max_pixels=5000))
    assert_rgb(load_image(url, ImagePolicy(max_pixels=10_000)), 100, 100)


@pytest.mark.parametrize("size", [(100_000, 100_000), (5000, 5000)])
def test_decompression_bomb_rejected_from_header(size: tuple[int, int]) -> None:
    bomb = patch_png_size(red_png(1, 1), *size)
    start = time.monotonic()
    error = expect_error("exceeds the limit of", data_url(bomb))
    assert time.monotonic() - start < 1.0
    assert "Pillow" not in error.message
    assert "Decompression" not in error.message


def test_truncated_png_rejected() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    png = encode(Image.fromarray(noise), "PNG")
    error = expect_error("^Image parsing failed$", data_url(png[: len(png) // 2]))
    assert error.code == "invalid_image"


@pytest.mark.parametrize(
    "payload",
    [
        b"this is not an image at all",
        b"",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
        b"SIMPLE  =                    T" + b" " * 50,
    ],
    ids=["text", "empty", "svg", "fits-like"],
)
def test_non_images_rejected(payload: bytes) -> None:
    expect_error("^Image parsing failed$", data_url(payload))


def test_formats_outside_allowlist_rejected() -> None:
    tiff = encode(Image.new("RGB", (4, 4), RED), "TIFF")
    expect_error("^Image parsing failed$", data_url(tiff))
    jpeg = encode(Image.new("RGB", (4, 4), RED), "JPEG")
    expect_error("^Image parsing failed$", data_url(jpeg), ImagePolicy(allowed_formats=("PNG",)))
    assert_rgb(load_image(data_url(jpeg), ImagePolicy()), 4, 4)


# --------------------------------------------------------------------------- base64


def test_base64_forms_accepted() -> None:
    png = red_png()
    text = base64.b64encode(png).decode()
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    for url in [
        "base64," + text,  # no data: prefix, as OVMS accepts
        "data:text/plain;base64," + text,  # media type not checked
        "data:image/png;base64," + wrapped + "\r\n",
        "data:image/png;base64, " + text.rstrip("="),
    ]:
        assert_rgb(load_image(url, ImagePolicy()), 3, 4)


@pytest.mark.parametrize(
    "payload",
    ["@@@@", "iVBORw0KGgo=AAAA", "A", "iVBO-w0_", "iVBORw0KGgoé"],
    ids=["symbols", "inner-padding", "one-char", "urlsafe", "non-ascii"],
)
def test_invalid_base64_rejected(payload: str) -> None:
    expect_error("^Invalid base64 string in request$", "data:image/png;base64," + payload)


def test_data_url_without_base64_rejected() -> None:
    expect_error("Only base64 data URLs are supported", "data:image/png,%89PNG")


# --------------------------------------------------------------------------- local files


@pytest.fixture
def media(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "red.png").write_bytes(red_png())
    evil = tmp_path / "allowed_evil"
    evil.mkdir()
    (evil / "red.png").write_bytes(red_png())
    (tmp_path / "outside.png").write_bytes(red_png())
    return tmp_path


def local(root) -> ImagePolicy:
    return ImagePolicy(allowed_local_media_path=str(root / "allowed"))


def test_local_files_off_by_default(media) -> None:
    expect_error("^Loading images from local filesystem is disabled.$", str(media / "outside.png"))


def test_local_allowed_file_ok(media) -> None:
    assert_rgb(load_image(str(media / "allowed" / "red.png"), local(media)), 3, 4)


def test_local_dotdot_rejected_even_inside(media) -> None:
    path = str(media / "allowed" / ".." / "allowed" / "red.png")
    error = expect_error(" escape with .. is forbidden.$", path, local(media))
    assert error.message == f"Path {path} escape with .. is forbidden."
    long_path = "../" * 500 + "etc/passwd"
    assert len(expect_error("escape with", long_path, local(media)).message) < 300


def test_local_sibling_prefix_rejected(media) -> None:
    path = str(media / "allowed_evil" / "red.png")
    expect_error("^Given filepath is not subpath of allowed_local_media_path$", path, local(media))


def test_local_symlink_escape_rejected_inner_symlink_ok(media) -> None:
    os.symlink(media / "outside.png", media / "allowed" / "link.png")
    os.symlink(media / "allowed_evil", media / "allowed" / "dirlink")
    os.symlink(media / "allowed" / "red.png", media / "allowed" / "inner.png")
    policy = local(media)
    expect_error("not subpath", str(media / "allowed" / "link.png"), policy)
    expect_error("not subpath", str(media / "allowed" / "dirlink" / "red.png"), policy)
    assert_rgb(load_image(str(media / "allowed" / "inner.png"), policy), 3, 4)


def test_local_allowed_root_given_as_symlink(media) -> None:
    os.symlink(media / "allowed", media / "alias")
    policy = ImagePolicy(allowed_local_media_path=str(media / "alias"))
    assert_rgb(load_image(str(media / "allowed" / "red.png"), policy), 3, 4)
    expect_error("not subpath", str(media / "allowed_evil" / "red.png"), policy)


def test_local_relative_paths_resolved_then_contained(media, monkeypatch) -> None:
    monkeypatch.chdir(media)
    assert_rgb(load_image("allowed/red.png", local(media)), 3, 4)
    expect_error("not subpath", "outside.png", local(media))
    expect_error("not subpath", "allowed_evil/red.png", local(media))


def test_local_missing_directory_fifo_and_non_image(media) -> None:
    allowed = media / "allowed"
    os.mkfifo(allowed / "fifo.png")
    (allowed / "text.png").write_bytes(b"not an image")
    policy = local(media)
    for name in ["missing.png", ".", "fifo.png", "text.png"]:
        start = time.monotonic()
        expect_error("^Image file parsing failed$", str(allowed / name), policy)
        assert time.monotonic() - start < 2.0


def test_local_file_size_capped(media) -> None:
    path = str(media / "allowed" / "red.png")
    size = os.path.getsize(path)
    policy = ImagePolicy(
        allowed_local_media_path=str(media / "allowed"), max_download_bytes=size - 1
    )
    expect_error("^Image file parsing failed$", path, policy)


# --------------------------------------------------------------------------- URL servers

Route = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A loopback HTTP(S) server on a free port that records every request."""

    def __init__(
        self, routes: dict[str, Route], tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.routes = routes
        self.hits: list[tuple[str, str | None]] = []
        self.sent: dict[str, int] = {}
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.hits.append((self.path, self.headers.get("Host")))
                route = server.routes.get(self.path.split("?")[0])
                try:
                    if route is None:
                        self.send_error(404)
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(
        routes: dict[str, Route], tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> Server:
        servers.append(Server(routes, tls, host))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def body(payload: bytes, status: int = 200, length: bool = True) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Connection", "close")
        if length:
            handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    return route


def redirect(location: str, status: int = 302) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def endless_chunked(server_ref: list[Server]) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        server = server_ref[0]
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"\0" * 65536
        server.sent["/chunked"] = 0
        while not server.stop.is_set() and server.sent["/chunked"] < 1 << 30:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            server.sent["/chunked"] += len(chunk)

    return route


def drip(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(1000):
        handler.wfile.write(b"\0")
        handler.wfile.flush()
        time.sleep(0.05)


LOOPBACK_OK = ImagePolicy(allowed_media_domains=("127.0.0.1",), allow_private_addresses=True)


def test_download_ok_with_and_without_content_length(serve) -> None:
    server = serve({"/a.png": body(red_png()), "/b.png": body(red_png(), length=False)})
    for path in ["/a.png", "/b.png?x=1"]:
        array = load_image(f"http://127.0.0.1:{server.port}{path}", LOOPBACK_OK)
        assert_rgb(array, 3, 4)
        assert array[0, 0, 0].tolist() == [255, 0, 0]
    assert server.hits == [
        ("/a.png", f"127.0.0.1:{server.port}"),
        ("/b.png?x=1", f"127.0.0.1:{server.port}"),
    ]


def test_urls_off_by_default(serve) -> None:
    server = serve({"/a.png": body(red_png())})
    url = f"http://127.0.0.1:{server.port}/a.png"
    expect_error("^Given url does not match any allowed domain", url)
    expect_error("does not match", url, ImagePolicy(allow_private_addresses=True))
    assert server.hits == []


def test_host_not_allowed_exact_match(serve) -> None:
    server = serve({"/a.png": body(red_png())})
    url = f"http://127.0.0.1:{server.port}/a.png"
    for near_miss in ["localhost", "127.0.0", "0.0.1", "127.0.0.10", "*"]:
        policy = ImagePolicy(allowed_media_domains=(near_miss,), allow_private_addresses=True)
        expect_error("does not match", url, policy)
    assert server.hits == []
    # A trailing dot names the same host.
    policy = ImagePolicy(allowed_media_domains=("127.0.0.1.",), allow_private_addresses=True)
    assert_rgb(load_image(url, policy), 3, 4)
    policy = ImagePolicy(allowed_media_domains=("LocalHost",), allow_private_addresses=True)
    assert_rgb(load_image(f"http://LOCALHOST:{server.port}/a.png", policy), 3, 4)
    for url in ["http://localhost.evil:1/a.png", "http://a.localhost:1/", "http://evil/?localhost"]:
        expect_error("does not match", url, policy)
    assert len(server.hits) == 2


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "2130706433",
        "0x7f000001",
        "127.1",
        "0177.0.0.1",
        "[::ffff:127.0.0.1]",
    ],
)
def test_loopback_refused_even_when_allowed(serve, host: str) -> None:
    server = serve({"/a.png": body(red_png())})
    allowlisted = host.strip("[]")
    for domains in [(allowlisted,), ("all",)]:
        error = expect_error(
            "resolves to a loopback, private",
            f"http://{host}:{server.port}/a.png",
            ImagePolicy(allowed_media_domains=domains),
        )
        assert "127." not in error.message
    assert server.hits == []


def test_decimal_ip_is_loopback_when_private_allowed(serve) -> None:
    server = serve({"/a.png": body(red_png())})
    policy = ImagePolicy(allowed_media_domains=("all",), allow_private_addresses=True)
    assert_rgb(load_image(f"http://2130706433:{server.port}/a.png", policy), 3, 4)
    assert server.hits == [("/a.png", f"2130706433:{server.port}")]


@pytest.mark.parametrize(
    "host",
    [
        "10.1.2.3",
        "169.254.169.254",
        "192.168.0.1",
        "172.16.0.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "[fe80::1]",
        "[fd00::1]",
        "[::1]",
        "[::]",
        "[::ffff:10.0.0.1]",
        "[2002:7f00:1::1]",
        "[64:ff9b::a00:1]",
        "[::7f00:1]",
        "[ff02::1]",
        "[::ffff:8.8.8.8]",
    ],
)
def test_private_literal_addresses_refused_without_connecting(host: str) -> None:
    policy = ImagePolicy(allowed_media_domains=("all",), connect_timeout=0.01)
    expect_error("resolves to a loopback, private", f"http://{host}/a.png", policy)


def test_redirect_followed_and_rechecked_per_hop(serve) -> None:
    target = serve({"/a.png": body(red_png())})
    start = serve(
        {
            "/ok": redirect("/next"),
            "/next": redirect(f"http://127.0.0.1:{target.port}/a.png", 307),
            "/off-list": redirect(f"http://localhost:{target.port}/a.png"),
            "/file": redirect("file:///etc/passwd"),
            "/loop": redirect("/loop"),
        }
    )
    base = f"http://127.0.0.1:{start.port}"
    assert_rgb(load_image(base + "/ok", LOOPBACK_OK), 3, 4)
    assert len(target.hits) == 1
    expect_error("does not match any allowed domain", base + "/off-list", LOOPBACK_OK)
    expect_error("Unsupported image URL scheme", base + "/file", LOOPBACK_OK)
    assert len(target.hits) == 1
    before = len(start.hits)
    expect_error("too many redirects", base + "/loop", LOOPBACK_OK)
    assert len(start.hits) - before == LOOPBACK_OK.max_redirects + 1


def test_redirect_to_private_address_refused(serve, monkeypatch) -> None:
    """Only the second hop is private: 127.0.0.2 stands in for a public address."""
    import calculators.llm.images as images

    real_is_blocked = images._is_blocked
    monkeypatch.setattr(images, "_is_blocked", lambda a: a != "127.0.0.2" and real_is_blocked(a))
    target = serve({"/a.png": body(red_png())})
    start = serve({"/r": redirect(f"http://127.0.0.1:{target.port}/a.png")}, host="127.0.0.2")
    policy = ImagePolicy(allowed_media_domains=("all",))
    expect_error("resolves to a loopback, private", f"http://127.0.0.2:{start.port}/r", policy)
    assert len(start.hits) == 1
    assert target.hits == []


def test_dns_resolved_once_and_host_header_kept(serve, monkeypatch) -> None:
    server = serve({"/a.png": body(red_png())})
    real = socket.getaddrinfo
    calls: list[str] = []

    def fake_dns(host, port, *args, **kwargs):
        if host == "images.example":
            calls.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    policy = ImagePolicy(allowed_media_domains=("images.example",), allow_private_addresses=True)
    assert_rgb(load_image(f"http://images.example:{server.port}/a.png", policy), 3, 4)
    assert calls == ["images.example"]
    assert server.hits == [("/a.png", f"images.example:{server.port}")]
    refused = ImagePolicy(allowed_media_domains=("images.example",))
    expect_error("resolves to a loopback", f"http://images.example:{server.port}/a.png", refused)
    assert len(server.hits) == 1


def test_size_cap_with_content_length(serve) -> None:
    png = red_png(64, 64)
    server = serve({"/a.png": body(png), "/b.png": body(png, length=False)})
    policy = ImagePolicy(
        allowed_media_domains=("127.0.0.1",),
        allow_private_addresses=True,
        max_download_bytes=len(png) - 1,
    )
    for path in ["/a.png", "/b.png"]:
        expect_error(
            f"exceeds {len(png) - 1} bytes", f"http://127.0.0.1:{server.port}{path}", policy
        )
    exact = ImagePolicy(
        allowed_media_domains=("127.0.0.1",),
        allow_private_addresses=True,
        max_download_bytes=len(png),
    )
    assert_rgb(load_image(f"http://127.0.0.1:{server.port}/b.png", exact), 64, 64)


def test_declared_oversize_rejected_before_reading(serve) -> None:
    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(10**12))
        handler.end_headers()
        handler.wfile.flush()
        server.stop.wait(10)

    server = serve({"/huge": huge})
    start = time.monotonic()
    expect_error("exceeds 20000000 bytes", f"http://127.0.0.1:{server.port}/huge", LOOPBACK_OK)
    assert time.monotonic() - start < 2.0


def test_size_cap_chunked_stops_reading(serve) -> None:
    ref: list[Server] = []
    server = serve({"/chunked": endless_chunked(ref)})
    ref.append(server)
    policy = ImagePolicy(
        allowed_media_domains=("127.0.0.1",),
        allow_private_addresses=True,
        max_download_bytes=100_000,
    )
    start = time.monotonic()
    expect_error("exceeds 100000 bytes", f"http://127.0.0.1:{server.port}/chunked", policy)
    assert time.monotonic() - start < 5.0
    time.sleep(0.3)
    # The server could only push what fits in the socket buffers after the client stopped.
    assert server.sent["/chunked"] < 64 * 1024 * 1024


def test_slow_drip_times_out_within_deadline(serve) -> None:
    server = serve({"/drip": drip})
    policy = ImagePolicy(
        allowed_media_domains=("127.0.0.1",), allow_private_addresses=True, total_timeout=1.0
    )
    start = time.monotonic()
    expect_error(
        "Image downloading failed: timed out", f"http://127.0.0.1:{server.port}/drip", policy
    )
    assert 0.9 < time.monotonic() - start < 3.0


def test_silent_server_read_timeout(serve) -> None:
    server = serve({"/hang": lambda handler: server.stop.wait(5)})
    policy = ImagePolicy(
        allowed_media_domains=("127.0.0.1",), allow_private_addresses=True, read_timeout=0.3
    )
    start = time.monotonic()
    expect_error("timed out", f"http://127.0.0.1:{server.port}/hang", policy)
    assert time.monotonic() - start < 3.0


@pytest.mark.parametrize("status", [404, 403, 500, 503])
def test_remote_error_status(serve, status: int) -> None:
    server = serve({"/x": body(b"nope", status=status)})
    error = expect_error(
        f"^Image downloading failed: the server answered with status {status}$",
        f"http://127.0.0.1:{server.port}/x",
        LOOPBACK_OK,
    )
    assert error.code == "invalid_image"


def test_downloaded_non_image_rejected(serve) -> None:
    server = serve({"/x": body(b"<html>hello</html>")})
    error = expect_error(
        "^Image downloading failed", f"http://127.0.0.1:{server.port}/x", LOOPBACK_OK
    )
    assert "identify" not in error.message


def test_connection_refused(serve) -> None:
    server = serve({})
    port = server.port
    server.close()
    expect_error("^Image downloading failed", f"http://127.0.0.1:{port}/x", LOOPBACK_OK)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/a.png",
        "sftp://host/a.png",
        "gopher://127.0.0.1:70/_x",
        "FILE:/etc/passwd",
        "javascript:alert(1)",
    ],
)
def test_other_schemes_refused(url: str) -> None:
    everything = ImagePolicy(
        allowed_media_domains=("all",), allow_private_addresses=True, allowed_local_media_path="/"
    )
    expect_error("^Unsupported image URL scheme", url, everything)


def test_credentials_and_bad_urls_refused() -> None:
    policy = ImagePolicy(allowed_media_domains=("all",), allow_private_addresses=True)
    expect_error("credentials", "http://user:pw@127.0.0.1:9/a.png", policy)
    expect_error("invalid URL", "http://127.0.0.1:99999/a.png", policy)
    expect_error("invalid URL", "http:///a.png", policy)


# --------------------------------------------------------------------------- HTTPS


@pytest.fixture
def certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


def test_https_verifies_url_host_while_connecting_to_resolved_ip(serve, certificate, monkeypatch):
    cert, context = certificate
    server = serve({"/a.png": body(red_png())}, tls=context)
    policy = ImagePolicy(
        allowed_media_domains=("localhost", "127.0.0.1"), allow_private_addresses=True
    )
    # Untrusted certificate first.
    monkeypatch.setenv("SSL_CERT_FILE", os.devnull)
    expect_error("TLS handshake or certificate", f"https://localhost:{server.port}/a.png", policy)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert_rgb(load_image(f"https://localhost:{server.port}/a.png", policy), 3, 4)
    assert server.hits[-1] == ("/a.png", f"localhost:{server.port}")
    # The certificate names localhost only: the IP literal must fail verification.
    expect_error("TLS handshake or certificate", f"https://127.0.0.1:{server.port}/a.png", policy)
    # TLS against a plain HTTP port: a clean failure.
    plain = serve({"/a.png": body(red_png())})
    expect_error("^Image downloading failed", f"https://127.0.0.1:{plain.port}/a.png", policy)
