"""Loading Python node handlers: ``handler_path`` → module → one ``OvmsPythonModel`` per node.

Follows OVMS' Python node initializer:

- a relative ``handler_path`` is joined with the graph's base path;
- the handler's directory is appended to ``sys.path`` (so it can import sibling files) and the
  file is imported as a module named after its **file stem**; a second handler with the same stem
  reuses the first module, as Python's import cache does in OVMS (a warning is logged when the
  files differ). Unlike OVMS, a handler file edited since it was loaded is executed again when a
  graph using it is (re)loaded;
- ``pyovms`` is registered in ``sys.modules`` before any handler runs, so handlers can
  ``from pyovms import Tensor`` without an extra package;
- the module must define ``OvmsPythonModel`` with ``execute``; one instance is created per node,
  ``initialize(kwargs)`` is called if defined, and the instance serves every run of the graph
  definition.

``finalize()`` (optional) is called once the node's resources are released: when the graph is
unloaded or reloaded and no run still uses it, and at the latest at interpreter exit. Errors in it
are logged and ignored.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import types
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calculators.python_executor import tensor as tensor_mod
from ovgraph.errors import GraphConfigError
from ovgraph.framework.calculator import NodeSpec
from ovgraph.framework.tag_map import parse_spec

__all__ = ["PythonNodeResources", "install_pyovms", "load_node_resources"]

logger = logging.getLogger("ovgraph.calculator")

LOOPBACK = "LOOPBACK"

_import_lock = threading.Lock()
# stem -> (module, file path, mtime_ns): the modules loaded from handler files.
_modules: dict[str, tuple[types.ModuleType, Path, int]] = {}


def install_pyovms() -> types.ModuleType:
    """Register the ``pyovms`` module (``Tensor``) in ``sys.modules`` unless one exists."""
    existing = sys.modules.get("pyovms")
    if existing is not None:
        return existing
    module = types.ModuleType(
        "pyovms", "OVMS-compatible Python node API: ``Tensor``, provided by ovgraph."
    )
    module.Tensor = tensor_mod.Tensor  # type: ignore[attr-defined]
    module.__all__ = ["Tensor"]  # type: ignore[attr-defined]
    sys.modules["pyovms"] = module
    return module


@dataclass(eq=False)
class PythonNodeResources:
    """What every run of a Python node shares: the handler instance and output routing.

    Attributes:
        node_name: the node's name.
        handler_file: the handler's file name (no directory; safe to show).
        model: the ``OvmsPythonModel`` instance.
        output_tags: output stream name → tag (tensors are routed by name).
        has_loopback: whether the node declares ``LOOPBACK`` streams.
    """

    node_name: str
    handler_file: str
    model: Any
    output_tags: dict[str, str] = field(default_factory=dict)
    has_loopback: bool = False

    def __post_init__(self) -> None:
        self._finalizer = weakref.finalize(self, _finalize_model, self.model, self.node_name)

    def finalize(self) -> None:
        """Call the handler's ``finalize`` now (at most once)."""
        self._finalizer()


def _finalize_model(model: Any, node_name: str) -> None:
    method = getattr(model, "finalize", None)
    if method is None:
        return
    try:
        method()
    except Exception:
        logger.exception('Python node "%s": finalize failed', node_name)


def _config_error(spec: NodeSpec, message: str) -> GraphConfigError:
    return GraphConfigError(message, node=spec.name, line=spec.line)


def resolve_handler_path(spec: NodeSpec) -> Path:
    """Return the absolute handler path (relative paths join the graph's base path)."""
    path = Path(spec.options.handler_path)
    if not path.is_absolute():
        path = (spec.base_path or Path.cwd()) / path
    return path


def _import_handler(spec: NodeSpec, path: Path) -> types.ModuleType:
    stem = path.stem
    mtime = path.stat().st_mtime_ns
    with _import_lock:
        cached = _modules.get(stem)
        if cached is not None:
            module, loaded_from, loaded_mtime = cached
            if loaded_from != path:
                logger.warning(
                    'Python node "%s": handler %s has the same module name "%s" as %s, which '
                    "is already loaded; that module is used", spec.name, path, stem, loaded_from,
                )
                return module
            if loaded_mtime == mtime:
                return module
            logger.info('Python node "%s": handler %s changed, loading it again', spec.name, path)
        install_pyovms()
        directory = str(path.parent)
        if directory not in sys.path:
            sys.path.append(directory)
        module_spec = importlib.util.spec_from_file_location(stem, path)
        if module_spec is None or module_spec.loader is None:
            raise _config_error(spec, f'Python node "{spec.name}": cannot load {path.name}')
        module = importlib.util.module_from_spec(module_spec)
        # Register under the stem (as an import would) unless an unrelated module owns the name.
        previous = sys.modules.get(stem)
        owned = previous is None or (cached is not None and previous is cached[0])
        if owned:
            sys.modules[stem] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            if owned:
                if previous is None:
                    sys.modules.pop(stem, None)
                else:
                    sys.modules[stem] = previous
            raise
        _modules[stem] = (module, path, mtime)
        return module


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or 'I/O error'}"
    return f"{type(exc).__name__}: {exc}"


def load_node_resources(spec: NodeSpec) -> PythonNodeResources:
    """Import the node's handler, instantiate ``OvmsPythonModel`` and call ``initialize``.

    Raises:
        GraphConfigError: the file is missing, lacks ``OvmsPythonModel`` / ``execute``, or
            importing, instantiating or initializing it raised.
    """
    path = resolve_handler_path(spec)
    name = spec.name
    if not path.is_file():
        logger.error('Python node "%s": handler_path %s does not exist', name, path)
        raise _config_error(
            spec, f"Python node file does not exist: {path.resolve()} (handler_path "
            f'"{spec.options.handler_path}" of node "{name}"; PYTHON_NODE_FILE_DOES_NOT_EXIST)',
        )
    try:
        module = _import_handler(spec, path)
    except GraphConfigError:
        raise
    except Exception as exc:
        logger.exception('Python node "%s": importing %s failed', name, path)
        raise _config_error(
            spec, f'Error during python node initialization for node "{name}" ({path.name}): '
            f"{_describe(exc)}",
        ) from exc
    model_cls = getattr(module, "OvmsPythonModel", None)
    if model_cls is None:
        raise _config_error(
            spec, f"Error during python node initialization. No OvmsPythonModel class found in "
            f'{path.name} (node "{name}")',
        )
    if not callable(getattr(model_cls, "execute", None)):
        raise _config_error(
            spec, f"Error during python node initialization. OvmsPythonModel class defined in "
            f'{path.name} does not implement execute method (node "{name}")',
        )
    config = spec.config
    try:
        model = model_cls()
        initialize = getattr(model, "initialize", None)
        if initialize is not None:
            initialize({
                "input_names": [parse_spec(s)[2] for s in config.input_stream],
                "output_names": [parse_spec(s)[2] for s in config.output_stream],
                "node_name": config.name,
                "base_path": str(path.parent),
            })
    except Exception as exc:
        logger.exception('Python node "%s": initializing %s failed', name, path)
        raise _config_error(
            spec, f'Error during python node initialization for node "{name}" ({path.name}): '
            f"{_describe(exc)}",
        ) from exc
    return PythonNodeResources(
        node_name=name,
        handler_file=path.name,
        model=model,
        output_tags={e.name: e.tag for e in spec.outputs},
        has_loopback=spec.inputs.has(LOOPBACK),
    )
