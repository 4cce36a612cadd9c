"""The embedded default model ``ovgraph serve`` runs without model arguments.

``qwen2vl-shapes`` (see the README's Models section) is contributed through the
``ovgraph.default_model`` entry point. It is found in the source tree (``graphs/``) or, in an
installed wheel, in ``<prefix>/share/ovgraph/graphs/`` where the wheel puts it as data files.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

__all__ = ["NAME", "model_dir"]

NAME = "qwen2vl-shapes"


def _candidates() -> list[Path]:
    source_tree = Path(__file__).resolve().parents[2] / "graphs"
    data = Path(sysconfig.get_path("data")) / "share" / "ovgraph" / "graphs"
    return [source_tree / NAME, data / NAME, Path(sys.prefix) / "share/ovgraph/graphs" / NAME]


def model_dir() -> Path:
    """The folder of the default model (the first that holds a graph)."""
    for folder in _candidates():
        if (folder / "graph.pbtxt").is_file():
            return folder
    return _candidates()[0]
