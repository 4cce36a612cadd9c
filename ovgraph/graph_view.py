"""What a graph looks like, as JSON: nodes, streams, back edges, subgraphs, executors.

:func:`describe` is the one description behind ``GET /v1/graphs/{name}``, the ``/dashboard`` page
and ``ovgraph draw --format svg|html``; :func:`with_stats` adds the live counters of
``framework/stats.py``. Nodes are listed as they run: subgraphs expanded, each node naming the
subgraph nodes it came from.
"""

from __future__ import annotations

from typing import Any

from ovgraph.framework import executor
from ovgraph.framework.profiler import profiler_of
from ovgraph.framework.stats import stats_of
from ovgraph.framework.validation import ValidatedGraph

__all__ = ["describe", "with_stats"]


def describe(graph: ValidatedGraph, name: str) -> dict[str, Any]:
    """The structure of ``graph`` (JSON-ready).

    Keys: ``name``; ``nodes`` (``name``, ``calculator``, ``executor``, ``input_stream_handler``,
    ``subgraph``: enclosing subgraph nodes, outermost first); ``edges`` (``stream``, ``from`` and
    ``to`` node names, None for a graph input or output, ``back_edge``); ``inputs`` and
    ``outputs`` (graph stream names); ``subgraphs`` (``name``, ``calculator``, ``parent``);
    ``executors`` (name → thread limit, ``""`` the default).
    """
    nodes = graph.nodes
    groups = getattr(graph, "node_subgraphs", None) or [()] * len(nodes)
    edges: list[dict[str, Any]] = []
    for stream, consumers in graph.consumers.items():
        producer = graph.producers.get(stream)
        source = nodes[producer[0]].name if producer and producer[0] >= 0 else None
        for node_index, in_id in consumers:
            spec = nodes[node_index]
            edges.append({
                "stream": stream,
                "from": source,
                "to": spec.name,
                "back_edge": in_id in spec.back_edges,
            })
    for stream in graph.graph_outputs.names():
        producer = graph.producers.get(stream)
        source = nodes[producer[0]].name if producer and producer[0] >= 0 else None
        edges.append({"stream": stream, "from": source, "to": None, "back_edge": False})
    subgraphs = []
    parents: dict[str, str | None] = {}
    for path in groups:
        for depth, group in enumerate(path):
            parents.setdefault(group, path[depth - 1] if depth else None)
    for group, calculator in getattr(graph, "subgraphs", {}).items():
        subgraphs.append({"name": group, "calculator": calculator, "parent": parents.get(group)})
    return {
        "name": name,
        "nodes": [
            {
                "name": spec.name,
                "calculator": spec.calculator,
                "executor": spec.executor,
                "input_stream_handler": spec.input_stream_handler,
                "subgraph": list(path),
            }
            for spec, path in zip(nodes, groups)
        ],
        "edges": edges,
        "inputs": graph.graph_inputs.names(),
        "outputs": graph.graph_outputs.names(),
        "subgraphs": subgraphs,
        "executors": {"": graph.num_threads or executor.default_num_threads(),
                      **graph.executors},
    }


def with_stats(graph: ValidatedGraph, name: str) -> dict[str, Any]:
    """:func:`describe` plus each node's counters, the run counters and the running runs.

    A graph whose ``profiler_config`` enables the profiler also shows its MediaPipe
    ``calculator_profiles``.
    """
    view = describe(graph, name)
    stats = stats_of(graph)
    snapshot = stats.snapshot()
    for node, counters in zip(view["nodes"], snapshot["nodes"]):
        node.update(counters)
    view["runs"] = snapshot["runs"]
    view["running"] = running_runs(graph)
    profiler = profiler_of(graph)
    if profiler is not None and profiler.profiling:
        view["calculator_profiles"] = profiler.calculator_profiles()
    return view


def running_runs(graph: ValidatedGraph) -> list[dict[str, Any]]:
    """The runs in progress: id, age in ms, the nodes inside a call now."""
    import time

    now = time.perf_counter_ns()
    runs = []
    for run in sorted(stats_of(graph).live_runs(), key=lambda r: r.run_id):
        runs.append({
            "run_id": run.run_id,
            "age_ms": round((now - run.stats_started_ns) / 1e6, 1),
            "nodes_running": [n.name for n in run.stat_nodes() if n.running],
        })
    return runs
