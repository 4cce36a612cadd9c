"""Turn an OpenAI ``image_url.url`` string into an RGB uint8 array ``[1, H, W, 3]``, safely.

Three forms are accepted, as in OpenVINO Model Server:

* **base64** — any string containing ``base64,`` (a ``data:`` URL or a bare ``base64,<payload>``).
  Everything after the first ``base64,`` is decoded; the data-URL media type is not checked. The
  decoder is strict about the alphabet (standard ``A-Z a-z 0-9 + /`` only, ``=`` only at the
  end) but tolerates ASCII whitespace and line breaks anywhere in the payload and missing ``=``
  padding. A ``data:`` URL without ``;base64`` is rejected.
* **http(s) URLs** — downloaded only from hosts listed in ``ImagePolicy.allowed_media_domains``
  (exact, case-insensitive host match; the single value ``"all"`` allows any host). Every other
  scheme (``file:``, ``ftp:``, ``gopher:`` ...) is refused. The host is resolved once per hop and
  every resolved address must be public (no loopback, private, link-local, CGNAT, multicast,
  unspecified, reserved, IPv4-mapped or tunnelled-private addresses) unless
  ``allow_private_addresses``; the connection goes to the checked address (no second lookup, so
  DNS rebinding cannot switch it), with the ``Host`` header and TLS SNI/verification using the
  URL's host name. Redirects are followed by hand up to ``max_redirects`` hops, each re-checked
  like the first URL. Environment proxies are not used. Connect and read timeouts apply per
  operation and ``total_timeout`` bounds the whole download (DNS included). The body is capped
  at ``max_download_bytes`` whether or not a ``Content-Length`` is sent.
* **local paths** — anything else; needs ``allowed_local_media_path``. Paths with a ``..``
  component are refused; the path is canonicalised (symlinks resolved, relative paths against
  the working directory) and must lie inside the canonical allowed directory, checked per path
  component and again on the opened file. Only regular files are read, at most
  ``max_download_bytes`` of them.

Decoding uses Pillow restricted to ``allowed_formats``. The header size is checked against
``max_pixels`` and ``max_aspect_ratio`` before any pixel data is decoded; the image is then
converted to RGB (palette, alpha, grayscale, CMYK; 16-bit grayscale is scaled to 8 bits, alpha is
dropped). Decoder errors are never passed to the client: every failure is an
:class:`~ovgraph.errors.InvalidParameterError` with ``param="messages"`` and a fixed message.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import ipaddress
import os
import re
import socket
import ssl
import stat
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote, urljoin, urlsplit

import numpy as np
from PIL import Image

from ovgraph.errors import InvalidParameterError

__all__ = ["ImagePolicy", "load_image"]

MSG_INVALID_BASE64 = "Invalid base64 string in request"
MSG_DATA_URL_NOT_BASE64 = "Only base64 data URLs are supported"
MSG_PARSE = "Image parsing failed"
MSG_FILE_PARSE = "Image file parsing failed"
MSG_DOWNLOAD = "Image downloading failed"
MSG_DOMAIN = "Given url does not match any allowed domain from allowed_media_domains"
MSG_SCHEME = "Unsupported image URL scheme; only http and https URLs are allowed"
MSG_PRIVATE = (
    f"{MSG_DOWNLOAD}: the URL host resolves to a loopback, private or otherwise non-public address"
)
MSG_LOCAL_OFF = "Loading images from local filesystem is disabled."
MSG_NOT_SUBPATH = "Given filepath is not subpath of allowed_local_media_path"

_ERROR_CODE = "invalid_image"
_PARAM = "messages"
_MAX_ECHOED_PATH = 200
_READ_CHUNK = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_B64_WHITESPACE_RE = re.compile(r"[ \t\r\n\f\v]+")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


@dataclass(frozen=True)
class ImagePolicy:
    """What ``load_image`` may fetch and decode.

    Attributes:
        allowed_media_domains: Hosts images may be downloaded from (exact, case-insensitive).
            Empty disables URLs; the single value ``"all"`` allows any host.
        allowed_local_media_path: Directory local images may be read from; None disables them.
        max_pixels: Largest accepted ``width * height`` (checked on the header, before decoding).
            Pillow's own bomb guard (``2 * Image.MAX_IMAGE_PIXELS``) still applies above this.
        max_download_bytes: Largest accepted download (and local file) in bytes.
        connect_timeout: Seconds allowed for one TCP connect.
        read_timeout: Seconds allowed for one socket read, send or the TLS handshake.
        total_timeout: Seconds allowed for a whole download, all redirects and DNS included.
        max_redirects: Redirect hops followed; each is re-checked like the first URL.
        allow_private_addresses: Allow hosts resolving to loopback, private, link-local and
            other non-public addresses (off: SSRF protection).
        max_aspect_ratio: Images whose longer/shorter side ratio is >= this are rejected.
        allowed_formats: Pillow format names that may be decoded.
    """

    allowed_media_domains: tuple[str, ...] = ()
    allowed_local_media_path: str | None = None
    max_pixels: int = 4096 * 4096
    max_download_bytes: int = 20_000_000
    connect_timeout: float = 4.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    max_redirects: int = 3
    allow_private_addresses: bool = False
    max_aspect_ratio: float = 200
    allowed_formats: tuple[str, ...] = ("PNG", "JPEG", "GIF", "BMP", "WEBP")


def _error(message: str) -> InvalidParameterError:
    return InvalidParameterError(message, param=_PARAM, code=_ERROR_CODE)


def load_image(url: str, policy: ImagePolicy) -> np.ndarray:
    """Load the image an ``image_url.url`` string refers to.

    Blocking (downloads, file reads, decoding): call it from a worker thread.

    Args:
        url: A base64 data URL (or anything containing ``base64,``), an http(s) URL, or a
            local file path.
        policy: What may be fetched and decoded.

    Returns:
        A C-contiguous, writeable uint8 array of shape ``[1, H, W, 3]`` in RGB order.

    Raises:
        InvalidParameterError: the image is refused or cannot be loaded (``param="messages"``).
    """
    if not isinstance(url, str):
        raise _error(MSG_PARSE)
    if "base64," in url:
        return _decode(_decode_base64(url), policy, MSG_PARSE)
    match = _SCHEME_RE.match(url)
    if match is not None:
        scheme = match.group(1).lower()
        if scheme == "data":
            raise _error(MSG_DATA_URL_NOT_BASE64)
        if scheme not in ("http", "https"):
            raise _error(MSG_SCHEME)
        data = _download(url, policy)
        return _decode(data, policy, f"{MSG_DOWNLOAD}: the content is not a supported image")
    return _decode(_read_local(url, policy), policy, MSG_FILE_PARSE)


# --------------------------------------------------------------------------- base64


def _decode_base64(url: str) -> bytes:
    payload = _B64_WHITESPACE_RE.sub("", url.split("base64,", 1)[1])
    remainder = len(payload) % 4
    if remainder == 1:
        raise _error(MSG_INVALID_BASE64)
    if remainder:
        payload += "=" * (4 - remainder)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _error(MSG_INVALID_BASE64) from None


# --------------------------------------------------------------------------- decoding


def _decode(data: bytes, policy: ImagePolicy, failure: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data), formats=list(policy.allowed_formats)) as image:
            width, height = image.size
            _check_geometry(width, height, policy)
            rgb = _to_rgb(image)
        array = np.array(rgb, dtype=np.uint8)
    except InvalidParameterError:
        raise
    except Image.DecompressionBombError:
        raise _error(f"Image exceeds the limit of {policy.max_pixels} pixels") from None
    except Exception as exc:
        raise _error(failure) from exc
    if array.shape != (height, width, 3):
        raise _error(failure)
    return np.ascontiguousarray(array[None])


def _check_geometry(width: int, height: int, policy: ImagePolicy) -> None:
    if width <= 0 or height <= 0:
        raise ValueError("empty image")
    if width * height > policy.max_pixels:
        raise _error(
            f"Image of {width}x{height} pixels exceeds the limit of {policy.max_pixels} pixels"
        )
    if max(width, height) >= policy.max_aspect_ratio * min(width, height):
        raise _error(f"Image aspect ratio must be smaller than {policy.max_aspect_ratio:g}")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I;16"):
        # Pillow clips 16-bit samples to 255; scale them like 8-bit decoders do.
        wide = np.asarray(image, dtype=np.uint16)
        return Image.fromarray((wide >> 8).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


# --------------------------------------------------------------------------- local files


def _read_local(path: str, policy: ImagePolicy) -> bytes:
    if policy.allowed_local_media_path is None:
        raise _error(MSG_LOCAL_OFF)
    if ".." in path.replace("\\", "/").split("/"):
        shown = path if len(path) <= _MAX_ECHOED_PATH else path[:_MAX_ECHOED_PATH] + "..."
        raise _error(f"Path {shown} escape with .. is forbidden.")
    if "\0" in path or not path:
        raise _error(MSG_FILE_PARSE)
    try:
        root = os.path.realpath(policy.allowed_local_media_path)
        target = os.path.realpath(path)
    except (OSError, ValueError):
        raise _error(MSG_FILE_PARSE) from None
    if not _is_within(target, root):
        raise _error(MSG_NOT_SUBPATH)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)
    except (OSError, ValueError):
        raise _error(MSG_FILE_PARSE) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > policy.max_download_bytes:
            raise _error(MSG_FILE_PARSE)
        opened = f"/proc/self/fd/{fd}"
        if os.path.exists(opened) and not _is_within(os.path.realpath(opened), root):
            # A path component was swapped for a symlink between the check and the open.
            raise _error(MSG_NOT_SUBPATH)
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(policy.max_download_bytes + 1)
    except OSError:
        raise _error(MSG_FILE_PARSE) from None
    finally:
        os.close(fd)
    if len(data) > policy.max_download_bytes:
        raise _error(MSG_FILE_PARSE)
    return data


def _is_within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([root, path]) == root
    except ValueError:
        return False


# --------------------------------------------------------------------------- downloads


class _Target(NamedTuple):
    scheme: str
    host: str
    port: int
    request_path: str


def _download(url: str, policy: ImagePolicy) -> bytes:
    deadline = time.monotonic() + policy.total_timeout
    for _ in range(policy.max_redirects + 1):
        target = _parse_target(url, policy)
        addresses = _resolve(target.host, target.port, deadline)
        if not policy.allow_private_addresses and any(_is_blocked(a[4][0]) for a in addresses):
            raise _error(MSG_PRIVATE)
        status, location, body = _fetch(target, addresses, policy, deadline)
        if status in _REDIRECT_STATUSES and location:
            url = urljoin(url, location)
            continue
        if not 200 <= status < 300:
            raise _error(f"{MSG_DOWNLOAD}: the server answered with status {status}")
        return body
    raise _error(f"{MSG_DOWNLOAD}: too many redirects")


def _parse_target(url: str, policy: ImagePolicy) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise _error(f"{MSG_DOWNLOAD}: invalid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _error(MSG_SCHEME)
    if not host:
        raise _error(f"{MSG_DOWNLOAD}: invalid URL")
    host = _ascii_host(host)
    if host is None or not _host_allowed(host, policy.allowed_media_domains):
        raise _error(MSG_DOMAIN)
    if parts.username is not None or parts.password is not None:
        raise _error(f"{MSG_DOWNLOAD}: URLs with credentials are not supported")
    if any(ch in url for ch in " \t\r\n\0"):
        raise _error(f"{MSG_DOWNLOAD}: invalid URL")
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    default_port = 443 if scheme == "https" else 80
    return _Target(scheme, host, port if port is not None else default_port, path)


def _ascii_host(host: str) -> str | None:
    host = host.lower().rstrip(".")
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _host_allowed(host: str, domains: tuple[str, ...]) -> bool:
    if "all" in domains:
        return True
    for domain in domains:
        allowed = _ascii_host(domain.strip().strip("[]"))
        if allowed is not None and allowed == host:
            return True
    return False


def _resolve(host: str, port: int, deadline: float) -> list[tuple]:
    """Resolve ``host`` once; numeric forms (incl. ``2130706433``, ``0x7f000001``) need no DNS."""
    kwargs = {"type": socket.SOCK_STREAM, "proto": socket.IPPROTO_TCP}
    try:
        return _unique(socket.getaddrinfo(host, port, flags=socket.AI_NUMERICHOST, **kwargs))
    except (OSError, UnicodeError):
        pass
    outcome: dict[str, object] = {}

    def lookup() -> None:
        try:
            outcome["result"] = socket.getaddrinfo(host, port, **kwargs)
        except Exception as exc:  # reported below without its text
            outcome["error"] = exc

    # getaddrinfo has no timeout: run it aside and stop waiting at the deadline.
    worker = threading.Thread(target=lookup, name="image-url-resolve", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise _error(f"{MSG_DOWNLOAD}: timed out")
    result = outcome.get("result")
    if not result:
        raise _error(f"{MSG_DOWNLOAD}: the host name could not be resolved")
    return _unique(result)  # type: ignore[arg-type]


def _unique(infos: list[tuple]) -> list[tuple]:
    seen: set = set()
    unique = []
    for info in infos:
        if info[4] not in seen:
            seen.add(info[4])
            unique.append(info)
    return unique


def _is_blocked(address: str) -> bool:
    """Return True unless ``address`` is a public unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None or ip.teredo is not None:
            return True
        if ip in _NAT64:
            return _is_blocked(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        if ip.sixtofour is not None:
            return _is_blocked(str(ip.sixtofour))
        if ip in _IPV4_COMPATIBLE:
            return True
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
    )


def _fetch(
    target: _Target, addresses: list[tuple], policy: ImagePolicy, deadline: float
) -> tuple[int, str | None, bytes]:
    """One GET to an already checked address: ``(status, Location, body)``."""
    sock = _connect(addresses, policy, deadline)
    conn = http.client.HTTPConnection(target.host, target.port)
    try:
        if target.scheme == "https":
            sock.settimeout(_remaining(deadline, policy.read_timeout))
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=target.host)
        conn.sock = _DeadlineSocket(sock, deadline, policy.read_timeout)  # type: ignore[assignment]
        conn.putrequest("GET", target.request_path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", _host_header(target))
        conn.putheader("Accept", "image/*")
        conn.putheader("Accept-Encoding", "identity")
        conn.putheader("Connection", "close")
        conn.endheaders()
        response = conn.getresponse()
        status = response.status
        if status in _REDIRECT_STATUSES or not 200 <= status < 300:
            return status, response.getheader("Location"), b""
        return status, None, _read_body(response, policy.max_download_bytes)
    except InvalidParameterError:
        raise
    except TimeoutError:
        raise _error(f"{MSG_DOWNLOAD}: timed out") from None
    except ssl.SSLError:
        raise _error(f"{MSG_DOWNLOAD}: TLS handshake or certificate verification failed") from None
    except (OSError, http.client.HTTPException, ValueError, UnicodeError):
        raise _error(MSG_DOWNLOAD) from None
    finally:
        conn.close()
        sock.close()


def _connect(addresses: list[tuple], policy: ImagePolicy, deadline: float) -> socket.socket:
    for family, kind, proto, _, sockaddr in addresses:
        if time.monotonic() >= deadline:
            break
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_remaining(deadline, policy.connect_timeout))
            sock.connect(sockaddr)
            return sock
        except OSError:
            sock.close()
    raise _error(f"{MSG_DOWNLOAD}: could not connect")


def _host_header(target: _Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default_port = 443 if target.scheme == "https" else 80
    return host if target.port == default_port else f"{host}:{target.port}"


def _read_body(response: http.client.HTTPResponse, limit: int) -> bytes:
    declared = response.getheader("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _error(f"{MSG_DOWNLOAD}: the image exceeds {limit} bytes")
    chunks = []
    total = 0
    while total <= limit:
        chunk = response.read(min(_READ_CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise _error(f"{MSG_DOWNLOAD}: the image exceeds {limit} bytes")
    return b"".join(chunks)


def _remaining(deadline: float, per_operation: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return min(per_operation, left)


class _DeadlineSocket:
    """The part of a socket ``http.client`` uses, with every read and send bounded by a deadline."""

    def __init__(self, sock: socket.socket, deadline: float, per_operation: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._per_operation = per_operation

    def settimeout_for_next(self) -> None:
        self._sock.settimeout(_remaining(self._deadline, self._per_operation))

    def sendall(self, data: bytes) -> None:
        self.settimeout_for_next()
        self._sock.sendall(data)  # total duration bounded by the timeout since Python 3.5

    def recv_into(self, buffer: memoryview) -> int:
        self.settimeout_for_next()
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", *_args: object, **_kwargs: object) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        """Do nothing: the response may still be reading; ``_fetch`` closes the socket."""


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self._sock.recv_into(buffer)
