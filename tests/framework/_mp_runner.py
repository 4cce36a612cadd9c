"""Run one differential case on real MediaPipe 0.10.21 and print the result as JSON.

Executed by the interpreter of the MediaPipe venv (``.venv-mediapipe``), never imported by the
test-suite: it reads one case as JSON on stdin and writes one JSON object on stdout. See
``mediapipe_oracle.py`` for the case and result formats.

Phases: ``init`` covers building the graph, registering observers and ``start_run`` (the graph
has not received a packet yet); ``run`` covers adding packets, closing and waiting.

The process ends with ``os._exit`` so that the C++ graph destructor (which may wait for a
stalled graph) cannot hang it.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from google.protobuf import text_format
from mediapipe.framework import calculator_pb2
from mediapipe.python import packet_creator, packet_getter
from mediapipe.python._framework_bindings import calculator_graph, timestamp

_CREATORS = {
    "int": packet_creator.create_int,
    "str": packet_creator.create_string,
    "uint64": packet_creator.create_uint64,
    "bool": packet_creator.create_bool,
}
_GETTERS = {
    "int": packet_getter.get_int,
    "string": packet_getter.get_str,
    "uint64_t": packet_getter.get_uint,
    "bool": packet_getter.get_bool,
}
_SPECIAL = {
    timestamp.Timestamp.PRESTREAM.value: timestamp.Timestamp.PRESTREAM,
    timestamp.Timestamp.POSTSTREAM.value: timestamp.Timestamp.POSTSTREAM,
}


def _packet(spec: dict):
    return _CREATORS[spec["type"]](spec["value"])


def _timestamp(value: int):
    # Timestamp(<special value>) aborts the interpreter; the named constants must be used.
    return _SPECIAL.get(value) or timestamp.Timestamp(value)


def _cpp_type(packet) -> str:
    text = repr(packet)
    marker = "C++ type: "
    return text[text.index(marker) + len(marker) : -1] if marker in text else "?"


def _decode(packet):
    if packet.is_empty():
        return None
    cpp_type = _cpp_type(packet)
    getter = _GETTERS.get(cpp_type)
    if getter is None:
        return {"cpp_type": cpp_type}
    return getter(packet)


def _graph_outputs(config_text: str) -> list[str]:
    config = text_format.Parse(config_text, calculator_pb2.CalculatorGraphConfig())
    return [spec.rsplit(":", 1)[-1] for spec in config.output_stream]


def run(case: dict) -> dict:
    """Run ``case`` and return the result object."""
    outputs: dict[str, list] = {}
    lock = threading.Lock()
    result: dict = {"outputs": outputs, "error": None}
    phase = "init"

    def observer(stream_name, packet):
        # An exception escaping an observer aborts the process: swallow everything.
        try:
            item = [packet.timestamp.value, _decode(packet)]
        except Exception as exc:
            item = [None, {"decode_error": str(exc)}]
        with lock:
            outputs.setdefault(stream_name, []).append(item)

    try:
        graph = calculator_graph.CalculatorGraph(graph_config=case["config"])
        observe = case.get("observe")
        if observe is None:
            observe = _graph_outputs(case["config"])
        for name in observe:
            outputs[name] = []
            graph.observe_output_stream(
                name, observer, observe_timestamp_bounds=bool(case.get("observe_bounds"))
            )
        side_packets = {k: _packet(v) for k, v in (case.get("side_packets") or {}).items()}
        graph.start_run(input_side_packets=side_packets)
        phase = "run"
        for stream, ts, value in case.get("inputs", []):
            graph.add_packet_to_input_stream(
                stream=stream, packet=_packet(value), timestamp=_timestamp(ts)
            )
        if case.get("close", True):
            graph.close()
        else:
            graph.wait_until_idle()
    except Exception as exc:
        result["error"] = {"phase": phase, "message": str(exc), "type": type(exc).__name__}
    with lock:
        result["outputs"] = {k: list(v) for k, v in outputs.items()}
    return result


def main() -> None:
    """Read a case on stdin, print its result on stdout and exit without graph teardown."""
    case = json.load(sys.stdin)
    result = run(case)
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
