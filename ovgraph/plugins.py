"""Entry-point groups through which packages extend the runtime (besides calculators).

- ``ovgraph.tasks``: ``name = "module:function"``, ``function(model_dir, settings) -> str``
  builds graph.pbtxt text for ``--task name`` (see ``ovgraph.serving.repository.task_graph``);
- ``ovgraph.serve_flags``: ``name = "module"``, a module with ``add_arguments(parser)`` that
  declares ``ovgraph serve`` flags and optionally ``apply(settings)``, run once at server start
  with the node settings;
- ``ovgraph.http_endpoints``: graph paths and their metrics labels
  (``ovgraph.frontends.rest.routes``);
- ``ovgraph.commands``: ``name = "module:main"``, a subcommand ``ovgraph name ...`` whose
  ``main(argv) -> int`` gets the remaining arguments (its help line: the module docstring's
  first line).

A contributor that fails to load is logged and skipped, so one broken package cannot stop the
server.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import logging
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "COMMANDS_GROUP",
    "SERVE_FLAGS_GROUP",
    "TASK_GROUP",
    "Command",
    "apply_serve_flags",
    "commands",
    "serve_flag_contributors",
    "task_names",
]

logger = logging.getLogger("ovgraph")
TASK_GROUP = "ovgraph.tasks"
SERVE_FLAGS_GROUP = "ovgraph.serve_flags"
COMMANDS_GROUP = "ovgraph.commands"


class Command:
    """A contributed subcommand, loaded only when it runs."""

    def __init__(self, entry_point: metadata.EntryPoint) -> None:
        self.entry_point = entry_point

    @property
    def help(self) -> str:
        """The first line of its module's docstring, read without importing the module."""
        module = self.entry_point.module
        with contextlib.suppress(Exception):  # a broken package still lists its command
            spec = importlib.util.find_spec(module)
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                source = Path(spec.origin).read_text(encoding="utf-8")
                doc = ast.get_docstring(ast.parse(source))
                if doc:
                    line = doc.strip().splitlines()[0].replace("``", "")
                    # "ovgraph NAME ...: what it does" -> "what it does"
                    head, sep, rest = line.partition(": ")
                    return rest if sep and head.startswith("ovgraph ") else line
        return f"(from {module.partition('.')[0]})"

    def run(self, argv: list[str]) -> int:
        """Run it with the arguments after its name; returns the exit code."""
        main = self.entry_point.load()
        return int(main(argv))


def commands() -> dict[str, Command]:
    """The ``ovgraph.commands`` subcommands by name."""
    return {ep.name: Command(ep) for ep in metadata.entry_points(group=COMMANDS_GROUP)}


def task_names() -> list[str]:
    """The registered ``--task`` names, sorted."""
    return sorted({ep.name for ep in metadata.entry_points(group=TASK_GROUP)})


def serve_flag_contributors() -> list[Any]:
    """The loaded ``ovgraph.serve_flags`` contributors, in name order."""
    found = []
    for ep in sorted(metadata.entry_points(group=SERVE_FLAGS_GROUP), key=lambda e: e.name):
        try:
            found.append(ep.load())
        except Exception:
            logger.exception("Serve flags of %s could not be loaded", ep.value)
    return found


def apply_serve_flags(settings: Mapping[str, Any]) -> None:
    """Run every contributor's ``apply(settings)`` (server start)."""
    for contributor in serve_flag_contributors():
        apply = getattr(contributor, "apply", None)
        if callable(apply):
            apply(settings)
