"""The model repository: which graphs are served under which names (OVMS ``config.json``).

Sources, as in OVMS: one graph from ``--model_path``/``--model_name`` (a folder with
``graph.pbtxt`` or ``1/graph.pbtxt``, or a model folder plus ``--task``, whose graph is built in
memory by the task's template), or ``config.json`` with ``model_config_list`` and the legacy
``mediapipe_config_list``. ``reload`` applies a changed config.json: new graphs load (and are
published once loaded), removed ones are unpublished, changed ones load anew and replace the old
definition only if they load; a broken config keeps the current one serving. Runs in flight keep
the ``GraphDefinition`` they started with. ``start_watching(interval)`` polls config.json
(``--file_system_poll_wait_seconds``) and reloads when its content changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ovgraph.errors import GraphConfigError, ServableNotFoundError
from ovgraph.serving.graph_definition import GraphDefinition

__all__ = ["GraphEntry", "ModelRepository", "graph_file_in", "task_graph"]

logger = logging.getLogger("ovgraph.graph")
TASK_GROUP = "ovgraph.tasks"


def graph_file_in(folder: Path, graph_path: str = "graph.pbtxt") -> Path | None:
    """Return the graph file of a servable folder (``X/graph.pbtxt`` or ``X/1/graph.pbtxt``)."""
    for candidate in (folder / graph_path, folder / "1" / graph_path):
        if candidate.is_file():
            return candidate
    return None


def task_graph(task: str, model_dir: Path | str, settings: Mapping[str, Any]) -> str:
    """Build the graph text for ``--task`` from the plugin registered for that task.

    Tasks are entry points of the ``ovgraph.tasks`` group: ``name = "module:function"`` where
    ``function(model_dir, settings) -> str`` returns graph.pbtxt text. ``model_dir`` is written
    into the graph as given (``"./"`` for a graph stored next to its model).
    """
    for ep in metadata.entry_points(group=TASK_GROUP):
        if ep.name == task:
            builder: Callable[[Path | str, Mapping[str, Any]], str] = ep.load()
            return builder(model_dir, settings)
    known = sorted(ep.name for ep in metadata.entry_points(group=TASK_GROUP))
    raise GraphConfigError(f"Unknown task {task!r}; known tasks: {', '.join(known) or 'none'}")


@dataclass(frozen=True)
class GraphEntry:
    """Where one servable's graph comes from."""

    name: str
    graph_path: Path | None = None
    text: str | None = None
    base_path: Path | None = None

    def identity(self) -> tuple[Any, ...]:
        """What, when changed, makes a reload necessary."""
        checksum = _digest(self.graph_path) if self.graph_path is not None else None
        return (self.graph_path, self.text, self.base_path, checksum)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.md5(path.read_bytes()).hexdigest()
    except OSError:
        return None


def parse_config_file(path: Path) -> list[GraphEntry]:
    """Read ``config.json`` into graph entries (OVMS path rules).

    Raises:
        GraphConfigError: unreadable, not JSON, or not matching the schema.
    """
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise GraphConfigError(
            f"Config file {path.resolve()} could not be read: {exc.strerror}"
        ) from exc
    except ValueError as exc:
        raise GraphConfigError(f"Config file is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model_config_list"), list):
        raise GraphConfigError("Config file must contain a model_config_list array")
    root = path.parent
    entries: list[GraphEntry] = []
    for item in data["model_config_list"]:
        config = item.get("config") if isinstance(item, dict) else None
        if not isinstance(config, dict) or not isinstance(config.get("name"), str):
            raise GraphConfigError("Each model_config_list item needs config.name")
        entries.append(_entry(root, config))
    for config in data.get("mediapipe_config_list") or []:
        if not isinstance(config, dict) or not isinstance(config.get("name"), str):
            raise GraphConfigError("Each mediapipe_config_list item needs a name")
        entries.append(_entry(root, config))
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GraphConfigError(f"Servable names used twice: {', '.join(duplicates)}")
    return entries


def _entry(root: Path, config: dict[str, Any]) -> GraphEntry:
    name = config["name"]
    base = Path(config.get("base_path") or name)
    base = base if base.is_absolute() else root / base
    graph_name = config.get("graph_path") or "graph.pbtxt"
    graph = Path(graph_name) if Path(graph_name).is_absolute() else graph_file_in(base, graph_name)
    if graph is None:
        graph = base / graph_name
    return GraphEntry(name=name, graph_path=graph, base_path=graph.parent)


class ModelRepository:
    """The served graphs by name, with their states; thread-safe."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = dict(settings or {})
        self.config_path: Path | None = None
        self._lock = threading.RLock()
        self._definitions: dict[str, GraphDefinition] = {}
        # What each graph was loaded from (GraphEntry.identity() then): a reload compares it.
        self._identities: dict[str, tuple[Any, ...]] = {}
        self._reload_lock = threading.Lock()
        # Graphs a reload replaced or removed, weakly: their runs in flight keep them alive.
        self._retired: dict[str, list[weakref.ref[Any]]] = {}
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------------ building

    def _definition(self, entry: GraphEntry) -> GraphDefinition:
        return GraphDefinition(
            entry.name, graph_path=entry.graph_path, text=entry.text,
            base_path=entry.base_path, settings=self.settings,
        )

    def add(self, entry: GraphEntry, *, load: bool = True) -> GraphDefinition:
        """Register (and by default load) one graph."""
        definition = self._definition(entry)
        with self._lock:
            self._definitions[entry.name] = definition
            self._identities[entry.name] = entry.identity()
        if load:
            definition.load()
        return definition

    def load_config(self, path: Path) -> None:
        """Serve every graph of ``config.json`` (raises ``GraphConfigError`` if it is broken)."""
        self.config_path = path
        for entry in parse_config_file(path):
            self.add(entry)

    def reload(self) -> dict[str, list[str]]:
        """Apply the current ``config.json``; returns the names added, removed and reloaded.

        A config that does not parse leaves everything as it was. Runs already in flight keep
        the graph they started with.
        """
        if self.config_path is None:
            return {"added": [], "removed": [], "reloaded": []}
        with self._reload_lock:
            return self._reload(self.config_path)

    def _reload(self, config_path: Path) -> dict[str, list[str]]:
        entries = {e.name: e for e in parse_config_file(config_path)}
        added, removed, reloaded = [], [], []
        with self._lock:
            current = dict(self._identities)
        for name in current:
            if name not in entries:
                # Unpublished only: a request that already holds the definition still starts
                # its run, and runs in flight finish; memory goes with the last reference.
                with self._lock:
                    self._retire(name, self._definitions.pop(name, None))
                    self._identities.pop(name, None)
                removed.append(name)
        for name, entry in entries.items():
            old = current.get(name)
            identity = entry.identity()
            if old is None:
                # Loaded before it is published: clients never see it half-loaded.
                fresh = self._definition(entry)
                fresh.load()
                with self._lock:
                    self._definitions[name] = fresh
                    self._identities[name] = identity
                added.append(name)
            elif old != identity or not self._definitions[name].available:
                fresh = self._definition(entry)
                fresh.load()
                if fresh.available or not self._definitions[name].available:
                    with self._lock:
                        self._retire(name, self._definitions[name])
                        self._definitions[name] = fresh
                        self._identities[name] = identity
                    reloaded.append(name)
                else:
                    logger.error("Reload of %s failed; keeping the loaded graph", name)
        if added or removed or reloaded:
            logger.info("Config reloaded: added %s, removed %s, reloaded %s",
                        added, removed, reloaded)
        return {"added": added, "removed": removed, "reloaded": reloaded}

    def _retire(self, name: str, definition: GraphDefinition | None) -> None:
        """Remember a replaced graph while runs may still hold it (call with the lock)."""
        if definition is not None and definition.validated is not None:
            alive = [ref for ref in self._retired.get(name, []) if ref() is not None]
            self._retired[name] = [*alive, weakref.ref(definition.validated)]

    def retired(self, name: str) -> list[Any]:
        """The ``ValidatedGraph``s of ``name`` that reloads replaced and runs still hold."""
        with self._lock:
            refs = list(self._retired.get(name, []))
        return [graph for ref in refs if (graph := ref()) is not None]

    # ------------------------------------------------------------------ watching

    def start_watching(self, interval: float) -> None:
        """Poll ``config.json`` every ``interval`` seconds and reload when it changes.

        A daemon thread; no-op without a config file or with ``interval <= 0`` (OVMS's
        ``--file_system_poll_wait_seconds 0`` turns polling off). A config that fails to
        parse is logged and the current graphs keep serving; the next change is tried again.
        """
        if self.config_path is None or interval <= 0 or self._watcher is not None:
            return
        self._watch_stop.clear()
        self._watcher = threading.Thread(
            target=self._watch, args=(self.config_path, float(interval)),
            name="ovgraph-config-watch", daemon=True,
        )
        self._watcher.start()

    def stop_watching(self) -> None:
        """Stop the polling thread (waits for a reload in progress)."""
        self._watch_stop.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join()

    def _watch(self, path: Path, interval: float) -> None:
        seen = _digest(path)
        while not self._watch_stop.wait(interval):
            current = _digest(path)
            if current == seen:
                continue
            seen = current
            logger.info("Config file changed; reloading")
            try:
                self.reload()
            except GraphConfigError as exc:
                logger.error("Config reload failed, keeping the served graphs: %s", exc)
            except Exception:  # the watcher must outlive any failure
                logger.exception("Config reload failed, keeping the served graphs")

    # ------------------------------------------------------------------ queries

    def get(self, name: str) -> GraphDefinition:
        """Return the graph named ``name``.

        Raises:
            ServableNotFoundError: no such servable.
        """
        with self._lock:
            definition = self._definitions.get(name)
        if definition is None:
            raise ServableNotFoundError(
                "Mediapipe graph definition with requested name is not found"
            )
        return definition

    def definitions(self) -> list[GraphDefinition]:
        """Every registered graph, in name order."""
        with self._lock:
            return [self._definitions[n] for n in sorted(self._definitions)]

    def all_available(self) -> bool:
        """Whether every registered graph is AVAILABLE (readiness)."""
        return all(d.ready for d in self.definitions())
