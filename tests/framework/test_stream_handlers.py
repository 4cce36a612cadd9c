"""Input stream handlers: readiness rules, and the OVMS LOOPBACK topology end to end."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ovgraph._proto.mediapipe.framework.stream_handler import (
    fixed_size_input_stream_handler_pb2 as fixed_pb2,
)
from ovgraph._proto.mediapipe.framework.stream_handler import (
    sync_set_input_stream_handler_pb2 as sync_pb2,
)
from ovgraph.framework import registry
from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.calculator import Calculator, CalculatorContext, Input, Output
from ovgraph.framework.packet import Packet
from ovgraph.framework.stream_handlers import (
    CLOSE,
    HANDLERS,
    InputStream,
    InputStreamHandler,
    make_handler,
    sync_sets_from_options,
)
from ovgraph.framework.tag_map import TagMap, TagMapError
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph
from ovgraph.testing import run_graph

# --------------------------------------------------------------------------- unit level


class Harness:
    """A handler over streams named after the specs, fed by hand."""

    def __init__(
        self, name: str, specs: list[str], options: Any = None, process_bounds: bool = False
    ) -> None:
        self.tag_map = TagMap(specs)
        self.streams = [InputStream(e.name) for e in self.tag_map]
        self.by_name = {s.name: s for s in self.streams}
        self.handler: InputStreamHandler = make_handler(
            name, self.streams, self.tag_map, options, process_bounds
        )

    def push(self, name: str, ts: int, payload: Any = "x") -> None:
        stream = self.by_name[name]
        stream.queue.append(Packet(payload, ts))
        stream.bound = ts_mod.next_allowed_in_stream(ts)
        self.handler.on_push(stream)

    def bound(self, name: str, bound: int) -> None:
        self.by_name[name].bound = bound

    def done(self, name: str) -> None:
        self.by_name[name].bound = ts_mod.DONE

    def next(self) -> Any:
        """Return (ts, [payload or None per stream]), CLOSE or None."""
        result = self.handler.next_input_set()
        if result is None or result is CLOSE:
            return result
        ts, packets = result
        return ts, [None if p.is_empty else p.payload for p in packets]

    def drain(self) -> list[Any]:
        out = []
        while (item := self.next()) is not None:
            out.append(item)
            if item is CLOSE:
                break
        return out


def test_registered_handler_names() -> None:
    assert set(HANDLERS) == {
        "DefaultInputStreamHandler",
        "ImmediateInputStreamHandler",
        "SyncSetInputStreamHandler",
        "FixedSizeInputStreamHandler",
    }


def test_default_waits_for_the_bound_of_every_empty_stream() -> None:
    h = Harness("DefaultInputStreamHandler", ["a", "b"])
    h.push("a", 0, "a0")
    assert h.next() is None  # b may still send a packet at 0
    h.bound("b", 0)
    assert h.next() is None  # bound 0: a packet at 0 is still possible
    h.bound("b", 1)
    assert h.next() == (0, ["a0", None])  # b settled past 0: deliver a alone


def test_default_delivers_equal_timestamps_together_in_order() -> None:
    h = Harness("DefaultInputStreamHandler", ["a", "b"])
    for t in (1, 2, 3):
        h.push("a", t, f"a{t}")
    h.push("b", 2, "b2")
    h.push("b", 3, "b3")
    h.done("a")
    h.done("b")
    assert h.drain() == [(1, ["a1", None]), (2, ["a2", "b2"]), (3, ["a3", "b3"]), CLOSE]


def test_default_missing_stream_gets_empty_packet_at_input_timestamp() -> None:
    h = Harness("DefaultInputStreamHandler", ["a", "b"])
    h.push("a", 5)
    h.push("b", 7)
    ts, packets = h.handler.next_input_set()
    assert ts == 5
    assert packets[1].is_empty
    assert packets[1].timestamp < 7  # an empty packet, never b's packet at 7


def test_default_bound_only_progress_and_close() -> None:
    h = Harness("DefaultInputStreamHandler", ["a", "b"])
    h.done("a")
    assert h.next() is None  # b not done yet
    h.push("b", 3, "b3")
    assert h.next() == (3, [None, "b3"])
    h.done("b")
    assert h.next() is CLOSE


def test_default_single_stream_fast_path() -> None:
    h = Harness("DefaultInputStreamHandler", ["in"])
    assert h.next() is None
    h.push("in", ts_mod.PRE_STREAM, "header")
    h.done("in")
    assert h.drain() == [(ts_mod.PRE_STREAM, ["header"]), CLOSE]


def test_default_with_process_bounds_reports_settled_timestamps_once() -> None:
    h = Harness("DefaultInputStreamHandler", ["a", "b"], process_bounds=True)
    h.bound("a", 4)
    h.bound("b", 10)
    assert h.next() == (3, [None, None])  # settled up to min bound - 1
    assert h.next() is None  # nothing new
    h.bound("a", 6)
    assert h.next() == (5, [None, None])


def test_immediate_fires_on_any_stream_without_sync() -> None:
    h = Harness("ImmediateInputStreamHandler", ["a", "b"])
    h.push("a", 5, "a5")
    assert h.next() == (5, ["a5", None])  # b never sent anything: no waiting
    h.push("b", 3, "b3")
    assert h.next() == (3, [None, "b3"])  # earlier than the previous call: allowed
    assert h.next() is None
    h.done("a")
    h.done("b")
    assert h.next() is CLOSE


def test_immediate_processes_done_at_max_with_timestamp_bounds() -> None:
    h = Harness("ImmediateInputStreamHandler", ["a"], process_bounds=True)
    h.push("a", 1, "a1")
    assert h.next() == (1, ["a1"])
    h.done("a")
    assert h.next() == (ts_mod.MAX, [None])  # "stream is done" call before Close
    assert h.next() is CLOSE


def _sync_options(*sets: list[str]) -> Any:
    options = sync_pb2.SyncSetInputStreamHandlerOptions()
    for tag_indexes in sets:
        options.sync_set.add().tag_index.extend(tag_indexes)
    return options


def test_sync_set_sets_fire_independently() -> None:
    specs = ["REQUEST:req", "LOOPBACK:loop"]
    h = Harness("SyncSetInputStreamHandler", specs, _sync_options(["LOOPBACK:0"]))
    h.push("req", 0, "r0")
    # LOOPBACK's bound is still PreStream, yet the REQUEST set is ready on its own.
    assert h.next() == (0, [None, "r0"])  # ids sorted by tag: LOOPBACK=0, REQUEST=1
    h.push("loop", 0, True)
    assert h.next() == (0, [True, None])
    h.push("loop", 1, True)
    assert h.next() == (1, [True, None])
    assert h.next() is None
    h.done("req")
    h.done("loop")
    assert h.next() is CLOSE


def test_sync_set_synchronises_within_a_set() -> None:
    specs = ["A:a", "B:b", "C:c"]
    h = Harness("SyncSetInputStreamHandler", specs, _sync_options(["A", "B"]))
    h.push("a", 2, "a2")
    assert h.next() is None  # A waits for B (same set); C has nothing
    h.push("b", 2, "b2")
    assert h.next() == (2, ["a2", "b2", None])
    h.push("c", 1, "c1")
    assert h.next() == (1, [None, None, "c1"])  # implicit set of the remaining stream


def test_sync_sets_from_options_errors() -> None:
    tag_map = TagMap(["REQUEST:req", "LOOPBACK:loop"])
    assert sync_sets_from_options(tag_map, _sync_options(["LOOPBACK:0"])) == [[0], [1]]
    with pytest.raises(TagMapError, match='"LOOPBACK:1" is not an input stream'):
        sync_sets_from_options(tag_map, _sync_options(["LOOPBACK:1"]))
    with pytest.raises(TagMapError, match="more than one sync set"):
        sync_sets_from_options(tag_map, _sync_options(["LOOPBACK"], ["LOOPBACK:0"]))
    with pytest.raises(TagMapError, match="TAG:index is invalid"):
        sync_sets_from_options(tag_map, _sync_options(["loopback"]))


def _fixed(trigger: int | None = None, target: int | None = None, fixed_min: bool = False) -> Any:
    options = fixed_pb2.FixedSizeInputStreamHandlerOptions()
    if trigger is not None:
        options.trigger_queue_size = trigger
    if target is not None:
        options.target_queue_size = target
    if fixed_min:
        options.fixed_min_size = True
    return options


def test_fixed_size_default_options_keep_newest_packet() -> None:
    h = Harness("FixedSizeInputStreamHandler", ["a", "b"])
    for t in range(6):
        h.push("a", t, t)
    assert [p.timestamp for p in h.by_name["a"].queue] == [5]
    h.push("b", 5, 50)
    assert h.next() == (5, [5, 50])


def test_fixed_size_trims_to_target_when_trigger_is_reached() -> None:
    h = Harness("FixedSizeInputStreamHandler", ["a", "b"], _fixed(3, 2))
    for t in range(6):
        h.push("a", t, t)
    assert [p.timestamp for p in h.by_name["a"].queue] == [4, 5]
    h.push("b", 5, 50)
    h.done("a")
    h.done("b")
    assert h.drain() == [(4, [4, None]), (5, [5, 50]), CLOSE]


def test_fixed_size_without_drops_behaves_like_default() -> None:
    h = Harness("FixedSizeInputStreamHandler", ["a"], _fixed(10, 5))
    for t in range(4):
        h.push("a", t, t)
    h.done("a")
    assert h.drain() == [(t, [t]) for t in range(4)] + [CLOSE]


def test_fixed_min_size_waits_until_every_queue_reaches_trigger() -> None:
    h = Harness("FixedSizeInputStreamHandler", ["a", "b"], _fixed(2, 1, fixed_min=True))
    for t in range(4):
        h.push("a", t, t)
    assert len(h.by_name["a"].queue) == 4  # b is short: nothing is cut
    h.push("b", 2, 20)
    h.push("b", 3, 30)
    assert [p.timestamp for p in h.by_name["a"].queue] == [3]
    assert [p.timestamp for p in h.by_name["b"].queue] == [3]


# --------------------------------------------------------------------------- OVMS LOOPBACK topology


class LoopGenerator(Calculator):
    """Test double of an OVMS generative node: N chunks for a request of N, via LOOPBACK."""

    REQUEST = Input("REQUEST", int, optional=True)
    LOOPBACK = Input("LOOPBACK", bool, optional=True)
    RESPONSE = Output("RESPONSE", str)
    LOOPBACK_OUT = Output("LOOPBACK", bool, optional=True)

    def open(self, cc: CalculatorContext) -> None:
        self.left = 0
        self.sent = 0

    def process(self, cc: CalculatorContext) -> None:
        request = self.REQUEST(cc)
        loop = self.LOOPBACK(cc)
        kind = "request" if not request.is_empty else "loop" if not loop.is_empty else "empty"
        cc.resources.append((kind, cc.input_timestamp))
        if not request.is_empty:
            self.left = request.get()
            ts = cc.input_timestamp
        elif not loop.is_empty:
            ts = cc.input_timestamp + 1
        else:
            return
        self.left -= 1
        self.RESPONSE(cc).add(f"chunk{self.sent}", ts)
        self.sent += 1
        if self.left > 0:
            self.LOOPBACK_OUT(cc).add(True, ts)


def _loop_graph(handler: str | None) -> str:
    handler_text = ""
    if handler == "SyncSet":
        handler_text = """
  input_stream_handler {
    input_stream_handler: "SyncSetInputStreamHandler",
    options {
      [mediapipe.SyncSetInputStreamHandlerOptions.ext] { sync_set { tag_index: "LOOPBACK:0" } }
    }
  }"""
    elif handler == "Immediate":
        handler_text = (
            '\n  input_stream_handler { input_stream_handler: "ImmediateInputStreamHandler" }'
        )
    return f"""
input_stream: "REQUEST:input"
output_stream: "RESPONSE:output"
node {{
  name: "llmNode1"
  calculator: "LoopGenerator"
  input_stream: "LOOPBACK:loopback"
  input_stream: "REQUEST:input"
  output_stream: "LOOPBACK:loopback"
  output_stream: "RESPONSE:output"
  input_stream_info: {{ tag_index: 'LOOPBACK:0', back_edge: true }}{handler_text}
}}
"""


@pytest.fixture
def loop_generator():
    with registry.override("LoopGenerator", LoopGenerator):
        yield


@pytest.mark.usefixtures("loop_generator")
def test_ovms_loopback_with_sync_set_fires_once_per_loopback_packet() -> None:
    calls: list[tuple[str, int]] = []
    out = run_graph(
        _loop_graph("SyncSet"), [("input", 0, 3)], resources={"llmNode1": calls}
    )
    assert out == {"output": [(0, "chunk0"), (1, "chunk1"), (2, "chunk2")]}
    # One call for the request, then exactly one per LOOPBACK packet (sent at 0 and 1).
    assert calls == [("request", 0), ("loop", 0), ("loop", 1)]


@pytest.mark.usefixtures("loop_generator")
def test_ovms_loopback_serves_consecutive_requests() -> None:
    calls: list[tuple[str, int]] = []
    out = run_graph(
        _loop_graph("SyncSet"),
        [("input", 0, 2), ("input", 10, 1)],
        resources={"llmNode1": calls},
    )
    assert out == {"output": [(0, "chunk0"), (1, "chunk1"), (10, "chunk2")]}
    assert [c for c in calls if c[0] != "empty"] == [("request", 0), ("loop", 0), ("request", 10)]


@pytest.mark.usefixtures("loop_generator")
def test_ovms_loopback_with_immediate_handler_fires() -> None:
    calls: list[tuple[str, int]] = []
    out = run_graph(_loop_graph("Immediate"), [("input", 0, 2)], resources={"llmNode1": calls})
    assert out == {"output": [(0, "chunk0"), (1, "chunk1")]}


@pytest.mark.usefixtures("loop_generator")
def test_ovms_loopback_with_default_handler_stalls_silently_and_warns(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="ovgraph.graph")
    validated = ValidatedGraph(parse_graph_config(_loop_graph(None)))
    assert any("llmNode1" in w and "never fire" in w for w in validated.warnings)
    assert any("never fire" in r.getMessage() for r in caplog.records)
    calls: list[tuple[str, int]] = []
    out = run_graph(validated, [("input", 0, 3)], resources={"llmNode1": calls})
    # As in MediaPipe: no output, no error, Process never called.
    assert out == {"output": []}
    assert calls == []


@pytest.mark.usefixtures("loop_generator")
def test_sync_set_loopback_graph_has_no_warning() -> None:
    validated = ValidatedGraph(parse_graph_config(_loop_graph("SyncSet")))
    assert validated.warnings == []
