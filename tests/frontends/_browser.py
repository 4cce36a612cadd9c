"""Headless Chromium driven over the DevTools protocol (tornado's websocket client, no extras).

Tests that need a real browser call :func:`chromium_or_skip`; without Debian's ``chromium``
they are skipped with a message saying how to get it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

import pytest

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def chromium_or_skip() -> str:
    """The browser executable, or skip the test with instructions."""
    override = os.environ.get("OVGRAPH_CHROMIUM")
    for name in ((override,) if override else _BROWSERS):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "no headless browser: install Debian's chromium (`apt-get install -y chromium`, as "
        ".ci/run does) or point OVGRAPH_CHROMIUM at a Chromium executable"
    )


class Browser:
    """One headless Chromium with one page; every call runs on its own event loop."""

    def __init__(self, executable: str, width: int = 1280, height: int = 1000) -> None:
        self._profile = tempfile.mkdtemp(prefix="ovgraph-chromium-")
        self.process = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={self._profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # its helper processes share our group id: stopped with it
        )
        port = self._devtools_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.loads(r.read())
        page = next(t for t in targets if t["type"] == "page")
        self._ws_url = page["webSocketDebuggerUrl"]
        self.loop = asyncio.new_event_loop()
        self._ws: Any = None
        self._next_id = 0
        self.console_errors: list[str] = []
        self.loop.run_until_complete(self._connect())

    def _devtools_port(self) -> int:
        assert self.process.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if match:
                return int(match.group(1))
            if not line and self.process.poll() is not None:
                break
        raise RuntimeError("Chromium did not start its DevTools endpoint")

    async def _connect(self) -> None:
        from tornado.websocket import websocket_connect

        self._ws = await websocket_connect(self._ws_url, max_message_size=64 * 1024 * 1024)
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            await self._send(method)

    def _event(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
            self.console_errors.append("console: " + " ".join(map(str, args)))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console_errors.append(f"exception: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.console_errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")

    async def _send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        await self._ws.write_message(json.dumps({"id": ident, "method": method,
                                                 "params": params}))
        while True:
            raw = await asyncio.wait_for(self._ws.read_message(), 30)
            if raw is None:
                raise RuntimeError("DevTools connection closed")
            message = json.loads(raw)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result."""
        return self.loop.run_until_complete(self._send(method, **params))

    def goto(self, url: str) -> None:
        """Open ``url`` in the page and wait until it has loaded."""
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && "
                      "document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("text"))
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll ``expression`` until it is truthy (a throwing one counts as false)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for: {expression}")
            self.loop.run_until_complete(asyncio.sleep(0.2))

    def screenshot(self) -> bytes:
        """A PNG of the whole page."""
        size = self.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        result = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                           clip={"x": 0, "y": 0, "width": size[0], "height": size[1],
                                 "scale": 1})
        return base64.b64decode(result["data"])

    def close(self) -> None:
        """Close the page's connection and stop the browser."""
        try:
            if self._ws is not None:
                self._ws.close()
            self.loop.run_until_complete(asyncio.sleep(0))
        finally:
            self.loop.close()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            # Chromium's helpers (renderer, crashpad) may outlive it and still write to the
            # profile: end the process group this browser started, then remove the profile.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            if self.process.stderr is not None:
                self.process.stderr.close()
            for _ in range(20):
                shutil.rmtree(self._profile, ignore_errors=True)
                if not os.path.exists(self._profile):
                    break
                time.sleep(0.1)
