"""ovgraph on Ray Serve: replicas, autoscaling and failover (the ``[ray]`` extra).

``serve run ovgraph.ray_serve:build_app num_replicas=2`` serves the embedded default model with
the REST routes of ``ovgraph serve``; ``ovgraph ray-config`` writes a Serve config file for a
repository. See :mod:`ovgraph.ray_serve.deployment` for the arguments and who queues.
Ray is imported only when ``build_app`` or ``OvgraphReplica`` is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OvgraphReplica", "build_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ovgraph.ray_serve import deployment

        return getattr(deployment, name)
    raise AttributeError(f"module 'ovgraph.ray_serve' has no attribute {name!r}")
