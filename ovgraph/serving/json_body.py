r"""Request bodies as JSON: parsed safely, and big ones parsed away from the event loop.

:func:`parse_json` turns bytes into a value and refuses what later steps cannot handle, with a
``RequestError`` naming the place: invalid JSON, nesting deeper than ``MAX_JSON_DEPTH``, and
text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which JSON allows as an
escape but which no tokenizer or encoder accepts) → ``InvalidParameterError`` with
``param`` = the JSON path (``messages[0].content``).

:class:`JsonParser` parses bodies above ``threshold`` bytes (default 1 MiB) in a helper process:
``json.loads`` holds the GIL for its whole run (about 0.1 s per 10 MB), which would stall the
IO loop and every other request; in the helper only the hand-back of the parsed value (a
copy) costs the server process. One helper serves one body at a time; smaller bodies are parsed
in the calling thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import struct
import subprocess
import sys
import threading
from typing import Any

from ovgraph.errors import InvalidParameterError, RequestError

__all__ = [
    "DEFAULT_THRESHOLD",
    "MAX_JSON_DEPTH",
    "JsonParser",
    "check_text",
    "parse_json",
    "trim_heap",
]

logger = logging.getLogger("ovgraph")

MAX_JSON_DEPTH = 100
DEFAULT_THRESHOLD = 1024 * 1024
# A JSON text can only hold a lone surrogate as a \ud8xx-\udfxx escape, or as the UTF-8-like
# bytes ED A0..BF xx (which json.loads decodes with "surrogatepass"). Bodies holding none of
# these prefixes skip the walk over the parsed value; a substring search (memchr-fast, about
# 10 ms for 50 MB) is twenty times quicker here than one regular expression.
_MAYBE_SURROGATE = (b"\\ud", b"\\uD", b"\xed")
_SURROGATE = re.compile("[\ud800-\udfff]")
_HEADER = struct.Struct("<Q")


def check_text(value: Any, where: str = "") -> None:
    """Refuse any string in ``value`` (nested) that is not valid Unicode, naming its path.

    Raises:
        InvalidParameterError: a lone surrogate; ``param`` is its JSON path.
    """
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                raise InvalidParameterError(
                    f"{path or 'The body'} is not valid Unicode text (a lone surrogate)",
                    param=path or None,
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                    raise InvalidParameterError(
                        f"A key of {path or 'the body'} is not valid Unicode text",
                        param=path or None,
                    )
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))


def _depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def parse_json(body: bytes | bytearray | memoryview) -> Any:
    """Parse a JSON request body (see the module docstring).

    Raises:
        RequestError: not JSON, or nested too deep.
        InvalidParameterError: text that is not valid Unicode, with its path.
    """
    try:
        parsed = json.loads(body)
    except RecursionError:
        raise RequestError("JSON body exceeds maximum nesting depth") from None
    except (ValueError, UnicodeDecodeError):
        raise RequestError("Cannot parse JSON body") from None
    if not _depth_ok(parsed):
        raise RequestError("JSON body exceeds maximum nesting depth")
    if any(prefix in body for prefix in _MAYBE_SURROGATE):
        check_text(parsed)
    return parsed


_CHILD = r"""
import pickle, struct, sys
from ovgraph.serving.json_body import parse_json
header = struct.Struct("<Q")
read, write = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = read.read(8)
    if len(head) < 8:
        break
    body = read.read(header.unpack(head)[0])
    try:
        out = pickle.dumps((True, parse_json(body)), protocol=5)
    except Exception as exc:
        out = pickle.dumps((False, (str(exc), getattr(exc, "param", None))), protocol=5)
    del body
    write.write(header.pack(len(out)))
    write.write(out)
    write.flush()
    del out
"""


class JsonParser:
    """Parse request bodies; big ones in a helper process (see the module docstring).

    Args:
        threshold: bodies up to this many bytes are parsed in the calling thread.
    """

    def __init__(self, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None

    def parse(self, body: bytes | list[bytes]) -> Any:
        """Parse ``body`` (bytes, or the pieces of it); blocking, call it off the IO loop.

        Raises:
            RequestError: as :func:`parse_json`.
        """
        size = len(body) if isinstance(body, bytes) else sum(len(b) for b in body)
        if size <= self.threshold:
            return parse_json(body if isinstance(body, bytes) else b"".join(body))
        with self._lock:
            try:
                ok, value = self._exchange(body, size)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                logger.warning("JSON helper process failed (%s); parsing in process", exc)
                self.close()
                return parse_json(body if isinstance(body, bytes) else b"".join(body))
        if not ok:
            message, param = value
            if param is not None:
                raise InvalidParameterError(message, param=param)
            raise RequestError(message)
        return value

    def _exchange(self, body: bytes | list[bytes], size: int) -> tuple[bool, Any]:
        child = self._ensure_child()
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(_HEADER.pack(size))
        for piece in [body] if isinstance(body, bytes) else body:
            child.stdin.write(piece)
        child.stdin.flush()
        head = _read_exact(child.stdout, _HEADER.size)
        length = _HEADER.unpack(head)[0]
        data = _read_exact(child.stdout, length)
        return pickle.loads(data)  # type: ignore[no-any-return]  # our own helper's answer

    def _ensure_child(self) -> subprocess.Popen[bytes]:
        child = self._child
        if child is None or child.poll() is not None:
            child = subprocess.Popen(
                [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            )
            assert child.stdin is not None and child.stdout is not None
            for stream in (child.stdin, child.stdout):
                _widen_pipe(stream.fileno())
            self._child = child
        return child

    def close(self) -> None:
        """Stop the helper process (a later big body starts a new one)."""
        child, self._child = self._child, None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()


_PIPE_BYTES = 1024 * 1024
_F_SETPIPE_SZ = 1031  # Linux fcntl


def _widen_pipe(fd: int) -> None:
    """Give a pipe 1 MiB of buffer instead of 64 KiB (Linux).

    Big bodies then cross it in far fewer wake-ups (about twice as fast for 50 MB). Elsewhere,
    or if refused, the pipe stays as it is.
    """
    if not sys.platform.startswith("linux"):
        return
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_BYTES)


_trim_lock = threading.Lock()
_last_trim = [0.0]


def trim_heap(min_interval: float = 0.25) -> None:
    """Collect garbage and give freed heap pages back to the system, at most 4 times a second.

    The server calls this after answering a big body: its run's objects wait in reference
    cycles for Python's cycle collector (which a quiet server runs rarely), and the freed heap
    pieces stay with glibc until ``malloc_trim``; without both, each big request raised the
    resident memory a little more. A collection holds the GIL; ``run_server`` freezes the
    start-up objects (``gc.freeze``) so that it walks only what came after.
    """
    import time

    if not sys.platform.startswith("linux") or not _trim_lock.acquire(blocking=False):
        return
    try:
        now = time.monotonic()
        if now - _last_trim[0] < min_interval:
            return
        _last_trim[0] = now
        import ctypes
        import gc

        gc.collect()  # a finished run's packets sit in reference cycles until it passes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return
    finally:
        _trim_lock.release()


def _read_exact(stream: Any, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            raise EOFError("the JSON helper process closed its output")
        got += n
    return buffer
