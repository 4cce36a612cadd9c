"""Model preparation commands run before (or instead of) serving: pull, config management.

``handle_model_commands(args)`` returns an exit code when the flags asked for a command that
ends the process (``--pull``, ``--list_models``, ``--add_to_config``, ``--remove_from_config``),
or None to go on serving (after a pull without ``--pull``, with ``args`` pointing at the pulled
graph).

Pull mode follows OVMS: ``--source_model ORG/NAME`` is downloaded from ``HF_ENDPOINT`` (default
the Hugging Face hub, token from ``HF_TOKEN``) into ``<model_repository_path>/ORG/NAME``, then
``graph.pbtxt`` (``models_path: "./"``) is written next to the model. The download goes into a
hidden sibling folder (``.NAME.partial``) that is moved into place only once complete, so an
interrupted pull never leaves a folder that would be served; running the pull again resumes,
reusing the files already complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from ovgraph.errors import OvGraphError

__all__ = [
    "add_to_config",
    "handle_model_commands",
    "list_models",
    "pull_model",
    "remove_from_config",
    "write_graph",
]

GRAPH_FILE = "graph.pbtxt"
_MODEL_FILES = ("openvino_model.xml", "openvino_language_model.xml")


# ---------------------------------------------------------------------------- config.json


def config_file(path: str | Path) -> Path:
    """``--config_path`` as a file: a directory means ``<dir>/config.json``."""
    p = Path(path)
    return p / "config.json" if p.is_dir() or not p.suffix else p


def read_config(path: Path) -> dict[str, Any]:
    """Read ``config.json`` (an empty config when the file does not exist yet)."""
    if not path.exists():
        return {"model_config_list": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OvGraphError(f"Config file {path} could not be read: {exc}") from exc
    if not isinstance(data, dict):
        raise OvGraphError(f"Config file {path} must hold a JSON object")
    data.setdefault("model_config_list", [])
    if not isinstance(data["model_config_list"], list):
        raise OvGraphError(f"Config file {path}: model_config_list must be an array")
    return data


def write_config(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``config.json`` atomically (a watcher never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=4) + "\n")
    os.replace(tmp, path)


def _config_base_path(config: Path, model_dir: Path) -> str:
    """``base_path`` as stored: relative to the config file's folder when below it."""
    model_dir = model_dir.resolve()
    try:
        return model_dir.relative_to(config.resolve().parent).as_posix()
    except ValueError:
        return model_dir.as_posix()


def add_to_config(config: Path, name: str, model_dir: Path) -> str:
    """Register ``model_dir`` as servable ``name`` in ``config`` (created when missing).

    As OVMS's export does, entries of the legacy ``mediapipe_config_list`` move into
    ``model_config_list``; an existing entry of the same name gets the new base path.

    Returns:
        ``"added"`` or ``"updated"``.
    """
    data = read_config(config)
    models: list[Any] = data["model_config_list"]
    for legacy in data.pop("mediapipe_config_list", None) or []:
        if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
            moved = {k: v for k, v in legacy.items() if k in ("name", "base_path", "graph_path")}
            moved.setdefault("base_path", legacy["name"])
            models.append({"config": moved})
    base_path = _config_base_path(config, model_dir)
    result = "added"
    for item in models:
        entry = item.get("config") if isinstance(item, dict) else None
        if isinstance(entry, dict) and entry.get("name") == name:
            entry["base_path"] = base_path
            entry.pop("graph_path", None)
            result = "updated"
    if result == "added":
        models.append({"config": {"name": name, "base_path": base_path}})
    write_config(config, data)
    return result


def remove_from_config(config: Path, name: str) -> None:
    """Remove servable ``name`` from ``config``.

    Raises:
        OvGraphError: no config file, or no servable of that name in it.
    """
    if not config.exists():
        raise OvGraphError(f"Config file {config} does not exist")
    data = read_config(config)
    found = False
    for key in ("model_config_list", "mediapipe_config_list"):
        items = data.get(key)
        if not isinstance(items, list):
            continue
        kept = []
        for item in items:
            entry = item.get("config", item) if isinstance(item, dict) else None
            if isinstance(entry, dict) and entry.get("name") == name:
                found = True
            else:
                kept.append(item)
        data[key] = kept
    if not found:
        raise OvGraphError(f"Servable {name!r} is not in {config}")
    write_config(config, data)


def list_models(repository: Path) -> list[str]:
    """Servable folders below ``repository`` (``graph.pbtxt`` or ``1/graph.pbtxt``), sorted."""
    if not repository.is_dir():
        raise OvGraphError(f"Model repository {repository} does not exist")
    found = []
    for root, dirs, files in os.walk(repository):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(root)
        if GRAPH_FILE in files:
            rel = here.relative_to(repository)
            if rel.name == "1":
                rel = rel.parent
            if rel != Path("."):
                found.append(rel.as_posix())
            dirs[:] = []
    return sorted(set(found))


def config_servables(config: Path) -> list[str]:
    """Names of the servables ``config`` declares."""
    data = read_config(config)
    names = []
    for item in data.get("model_config_list") or []:
        entry = item.get("config") if isinstance(item, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            names.append(entry["name"])
    for entry in data.get("mediapipe_config_list") or []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            names.append(entry["name"])
    return names


# ---------------------------------------------------------------------------- graphs


GraphBuilder = Callable[[Path | str, Mapping[str, Any]], str]


def task_builder(task: str) -> GraphBuilder:
    """The graph builder registered for ``task`` (entry point group ``ovgraph.tasks``)."""
    found = [ep for ep in metadata.entry_points(group="ovgraph.tasks") if ep.name == task]
    if found:
        builder: GraphBuilder = found[0].load()
        return builder
    known = ", ".join(sorted(ep.name for ep in metadata.entry_points(group="ovgraph.tasks")))
    raise OvGraphError(f"Unknown task {task!r}; known tasks: {known or 'none'}")


def write_graph(
    model_dir: Path, task: str, settings: Mapping[str, Any], builder: GraphBuilder | None = None
) -> Path:
    """Write the task's ``graph.pbtxt`` (``models_path: "./"``) into ``model_dir``.

    ``builder`` (default: the one registered for ``task``) lets a package that owns the task
    write its graph without relying on installed entry points.
    """
    text = (builder or task_builder(task))("./", settings)
    path = model_dir / GRAPH_FILE
    tmp = model_dir / f".{GRAPH_FILE}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def replace_dir(src: Path, dest: Path) -> None:
    """Move the complete folder ``src`` to ``dest``, replacing what was there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_openvino_model(folder: Path) -> bool:
    """Whether ``folder`` holds an OpenVINO LLM/VLM export."""
    return any((folder / name).is_file() for name in _MODEL_FILES)


# ---------------------------------------------------------------------------- pull


def pull_model(
    source_model: str,
    repository: Path,
    *,
    task: str = "text_generation",
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    revision: str | None = None,
) -> Path:
    """Download ``source_model`` into ``repository/source_model`` and write its graph.

    Returns:
        The model folder.

    Raises:
        OvGraphError: repository or file missing on the hub, failed download (run again to
            resume), or a repository that holds no OpenVINO model.
    """
    if source_model.count("/") != 1 or source_model.startswith("/") or ".." in source_model:
        raise OvGraphError(f"--source_model must be a hub id ORG/NAME, got {source_model!r}")
    dest = repository / source_model
    if dest.exists() and not overwrite and is_openvino_model(dest):
        print(f"Model {source_model} already exists in {dest}; not downloading "
              "(--overwrite_models downloads it again)", flush=True)
        write_graph(dest, task, settings or {})
    elif dest.exists() and any(dest.iterdir()) and not overwrite:
        raise OvGraphError(f"{dest} exists but holds no OpenVINO model; give "
                           "--overwrite_models to replace it")
    else:
        partial = dest.with_name(f".{dest.name}.partial")
        start = time.perf_counter()
        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        print(f"Downloading {source_model} from {endpoint} ...", flush=True)
        _download(source_model, partial, endpoint, revision)
        shutil.rmtree(partial / ".cache", ignore_errors=True)
        if not is_openvino_model(partial):
            shutil.rmtree(partial, ignore_errors=True)
            raise OvGraphError(
                f"{source_model} holds no OpenVINO model ({' or '.join(_MODEL_FILES)}); "
                "convert a Hugging Face model with `ovgraph export text_generation`"
            )
        write_graph(partial, task, settings or {})
        replace_dir(partial, dest)
        print(f"Downloaded {source_model} in {time.perf_counter() - start:.1f} s", flush=True)
    print(f"Graph: {GRAPH_FILE} created in: {dest}", flush=True)
    return dest


def _download(repo_id: str, local_dir: Path, endpoint: str, revision: str | None) -> None:
    from huggingface_hub import snapshot_download

    token = os.environ.get("HF_TOKEN") or None
    try:
        snapshot_download(
            repo_id, local_dir=local_dir, endpoint=endpoint, token=token, revision=revision,
        )
    except Exception as exc:
        raise OvGraphError(_explain(exc, repo_id, endpoint, revision)) from exc


def _explain(exc: BaseException, repo_id: str, endpoint: str, revision: str | None) -> str:
    """One line saying why a download failed (huggingface_hub errors are verbose)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    resume = " (run the pull again to resume)"
    if isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, GatedRepoError):
        return f"Repository {repo_id} is gated: set HF_TOKEN to a token with access"
    if isinstance(exc, RepositoryNotFoundError):
        return (f"Repository {repo_id} was not found at {endpoint} (check the name; private "
                "repositories need HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return f"Revision {revision or 'main'} of {repo_id} was not found"
    if isinstance(exc, RemoteEntryNotFoundError):
        url = str(exc.response.url) if exc.response is not None else ""
        name = url.split("/resolve/", 1)[1].split("/", 1)[-1] if "/resolve/" in url else "a file"
        return f"Download of {repo_id} failed: {name} was not found on the hub{resume}"
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            return (f"Access to {repo_id} was refused ({status}): set HF_TOKEN to a token that "
                    f"can read it{resume}")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"Download of {repo_id} failed: {first}{resume}"
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return f"Download of {repo_id} failed: {type(exc).__name__}: {detail}{resume}"


# ---------------------------------------------------------------------------- CLI glue


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from ovgraph.config import ServeConfig

    return ServeConfig.from_args(args).node_settings()


def _model_dir(args: argparse.Namespace) -> Path:
    if args.model_path:
        return Path(args.model_path)
    if args.model_repository_path and args.model_name:
        return Path(args.model_repository_path) / args.model_name
    raise OvGraphError("give --model_path, or --model_repository_path with --model_name")


def _commands(args: argparse.Namespace) -> int | None:
    if args.list_models:
        if args.model_repository_path:
            names = list_models(Path(args.model_repository_path))
        elif args.config_path:
            names = config_servables(config_file(args.config_path))
        else:
            raise OvGraphError("--list_models needs --model_repository_path or --config_path")
        for name in names:
            print(name)
        return 0
    if args.add_to_config or args.remove_from_config:
        if not args.config_path:
            raise OvGraphError("--add_to_config/--remove_from_config need --config_path")
        if not args.model_name:
            raise OvGraphError("--add_to_config/--remove_from_config need --model_name")
        config = config_file(args.config_path)
        if args.remove_from_config:
            remove_from_config(config, args.model_name)
            print(f"Servable {args.model_name} removed from {config}")
            return 0
        model_dir = _model_dir(args)
        if not model_dir.is_dir():
            raise OvGraphError(f"Model path {model_dir} does not exist")
        from ovgraph.serving.repository import graph_file_in

        if graph_file_in(model_dir) is None:
            raise OvGraphError(f"{model_dir} has no {GRAPH_FILE}; pull or export the model first")
        result = add_to_config(config, args.model_name, model_dir)
        print(f"Servable {args.model_name} {result} in {config}")
        return 0
    if args.source_model:
        if not args.model_repository_path:
            raise OvGraphError("--source_model needs --model_repository_path "
                               "(or OVMS_MODEL_REPOSITORY_PATH)")
        task = args.task or "text_generation"
        dest = pull_model(
            args.source_model, Path(args.model_repository_path), task=task,
            settings=_settings(args), overwrite=args.overwrite_models,
        )
        if args.pull:
            return 0
        args.model_path = str(dest)
        args.model_name = args.model_name or args.source_model
        args.task = None
        args.source_model = None
        return None
    if args.pull:
        raise OvGraphError("--pull needs --source_model")
    return None


def handle_model_commands(args: argparse.Namespace) -> int | None:
    """Run the model-preparation command the flags name, if any."""
    try:
        return _commands(args)
    except OvGraphError as exc:
        print(f"ovgraph: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("ovgraph: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
