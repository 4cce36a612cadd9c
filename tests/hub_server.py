"""A local stand-in for the Hugging Face hub's HTTP API, on a loopback port.

It serves model repositories from folders, answering the requests ``huggingface_hub``'s
``snapshot_download`` makes:

- ``GET /api/models/{repo}[/revision/{rev}]``: repository info (``sha``, ``siblings``);
- ``GET /api/models/{repo}/tree/{rev}[?recursive=…]``: the file listing;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: a file, with ``ETag``, ``X-Repo-Commit``,
  ``Content-Length`` and ``Range`` support (``206`` + ``Content-Range``) for resuming.

Errors carry the hub's ``X-Error-Code`` (``RepoNotFound``, ``EntryNotFound``,
``RevisionNotFound``) so the client raises its specific exceptions. Faults for tests:
``drop_once`` (files whose first GET sends half the body and closes the connection),
``missing`` (files listed but answering 404), ``forbidden`` (files answering 403), ``token``
(when set, requests without ``Authorization: Bearer <token>`` get the hub's 401), and
``requests`` records every request as ``(method, path, Range header)``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["HubServer"]

_LFS_SUFFIXES = (".bin", ".safetensors")


class _Repo:
    def __init__(self, folder: Path, exclude: set[str]) -> None:
        self.files: dict[str, bytes] = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() not in exclude
        }
        digest = hashlib.sha1()
        for name, data in self.files.items():
            digest.update(name.encode() + hashlib.sha256(data).digest())
        self.sha = digest.hexdigest()

    def oid(self, name: str) -> str:
        data = self.files[name]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def etag(self, name: str) -> str:
        if name.endswith(_LFS_SUFFIXES):
            return hashlib.sha256(self.files[name]).hexdigest()
        return self.oid(name)

    def tree_entry(self, name: str) -> dict[str, Any]:
        data = self.files[name]
        entry: dict[str, Any] = {"type": "file", "path": name, "size": len(data),
                                 "oid": self.oid(name)}
        if name.endswith(_LFS_SUFFIXES):
            entry["lfs"] = {"oid": self.etag(name), "size": len(data), "pointerSize": 134}
        return entry


class HubServer:
    """The stand-in hub, serving until ``stop()``; ``url`` goes into ``HF_ENDPOINT``."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.drop_once: set[str] = set()
        self.missing: set[str] = set()
        self.forbidden: set[str] = set()
        self.token: str | None = None
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add_repo(self, repo_id: str, folder: Path, exclude: set[str] | None = None) -> None:
        """Serve ``folder`` as model repository ``repo_id`` (minus ``exclude`` names)."""
        self.repos[repo_id] = _Repo(folder, exclude or set())

    def start(self) -> HubServer:
        """Start answering in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def file_gets(self, name: str) -> list[str | None]:
        """Range headers of every GET of file ``name`` so far."""
        with self.lock:
            return [r for m, p, r in self.requests if m == "GET" and p.endswith("/" + name)]


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        # -------------------------------------------------------------- helpers

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  *, head: bool = False) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, data: Any) -> None:
            self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _error(self, status: int, code: str, *, head: bool = False) -> None:
            body = json.dumps({"error": code}).encode()
            self._send(status, body, {"X-Error-Code": code, "Content-Type": "application/json"},
                       head=head)

        def _repo(self, parts: list[str]) -> tuple[str, _Repo | None]:
            repo_id = "/".join(parts[:2])
            return repo_id, hub.repos.get(repo_id)

        # -------------------------------------------------------------- routes

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

        def _route(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            with hub.lock:
                hub.requests.append(("HEAD" if head else "GET", path, self.headers.get("Range")))
            parts = [p for p in path.split("/") if p]
            if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                self._send(401, b"", {"X-Error-Message": "Invalid username or password."},
                           head=head)
                return
            if parts[:2] == ["api", "models"]:
                self._api(parts[2:])
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(parts, head)
            else:
                self._error(404, "NotFound", head=head)

        def _api(self, parts: list[str]) -> None:
            repo_id, repo = self._repo(parts)
            if repo is None:
                self._error(404, "RepoNotFound")
                return
            rest = parts[2:]
            if rest and rest[0] in ("revision", "tree") and len(rest) > 1 and rest[1] not in (
                "main", repo.sha
            ):
                self._error(404, "RevisionNotFound")
                return
            if not rest or rest[0] == "revision":
                self._json({
                    "id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": False,
                    "siblings": [{"rfilename": name} for name in repo.files],
                })
            elif rest[0] == "tree":
                self._json([repo.tree_entry(name) for name in repo.files])
            else:
                self._error(404, "NotFound")

        def _resolve(self, parts: list[str], head: bool) -> None:
            _, repo = self._repo(parts)
            if repo is None:
                self._error(404, "RepoNotFound", head=head)
                return
            revision, name = parts[3], "/".join(parts[4:])
            if revision not in ("main", repo.sha):
                self._error(404, "RevisionNotFound", head=head)
                return
            common = {"X-Repo-Commit": repo.sha}
            if name in hub.forbidden:
                self._send(403, b"forbidden", common, head=head)
                return
            if name not in repo.files or name in hub.missing:
                self._send(404, b"", {**common, "X-Error-Code": "EntryNotFound"}, head=head)
                return
            data = repo.files[name]
            headers = {**common, "ETag": f'"{repo.etag(name)}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                first, _, last = rng[6:].partition("-")
                start = int(first or 0)
                end = int(last) if last else len(data) - 1
                body = data[start:end + 1]
                headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
                self._send(206, body, headers, head=head)
                return
            if head:
                self._send(200, data, headers, head=True)
                return
            with hub.lock:
                drop = name in hub.drop_once
                hub.drop_once.discard(name)
            if drop:
                self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(200, data, headers)

    return Handler
