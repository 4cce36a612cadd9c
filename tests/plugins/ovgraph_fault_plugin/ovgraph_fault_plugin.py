"""Test calculators that misbehave on purpose (a plugin distribution for the fault tests).

``FaultyCalculator`` answers ``{"ok": true, "n": <count>}`` and raises when the request body has
``"fail": true``; ``SilentCalculator`` never answers and only returns once the run is cancelled.
"""

from __future__ import annotations

import json
import threading

from ovgraph.framework.calculator import Calculator, CalculatorContext, Input, Output

_served = 0


class FaultyCalculator(Calculator):
    """Raises on request; otherwise answers a small JSON body."""

    IN = Input("HTTP_REQUEST_PAYLOAD", object)
    OUT = Output("HTTP_RESPONSE_PAYLOAD", bytes)

    def process(self, cc: CalculatorContext) -> None:
        global _served
        payload = self.IN(cc).get()
        if payload.parsed_json.get("fail"):
            raise RuntimeError("boom in /srv/secret/module.py at <object at 0xdeadbeef>")
        _served += 1
        self.OUT(cc).send(json.dumps({"ok": True, "n": _served}).encode())


class SilentCalculator(Calculator):
    """Produces nothing; blocks until the run is cancelled."""

    IN = Input("HTTP_REQUEST_PAYLOAD", object)
    OUT = Output("HTTP_RESPONSE_PAYLOAD", bytes)

    def process(self, cc: CalculatorContext) -> None:
        woken = threading.Event()
        cc.on_cancel(woken.set)
        woken.wait(120)
