"""OpenVINOModelServerSessionCalculator: a compiled OpenVINO model as the SESSION side packet."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ovgraph.errors import GraphConfigError
from ovgraph.framework.calculator import Calculator, CalculatorContext, NodeSpec, OutputSidePacket
from ovgraph.framework.textformat import option_type

__all__ = ["ModelSession", "OpenVINOModelServerSessionCalculator", "resolve_model_file"]

logger = logging.getLogger(__name__)

SessionOptions = option_type("mediapipe.OpenVINOModelServerSessionCalculatorOptions")
_MODEL_SUFFIXES = (".xml", ".onnx")


@dataclass
class ModelSession:
    """A compiled model shared by every run of a graph; each node makes its own infer request."""

    servable_name: str
    version: str
    compiled: Any

    def input_names(self) -> list[str]:
        """Every name of every model input."""
        return [n for port in self.compiled.inputs for n in port.get_names()]

    def output_names(self) -> list[str]:
        """Every name of every model output."""
        return [n for port in self.compiled.outputs for n in port.get_names()]


def _config_base_path(config_path: Path, servable_name: str) -> Path | None:
    """The ``base_path`` of ``servable_name`` in a config.json ``model_config_list``."""
    try:
        data = json.loads(config_path.read_text())
    except OSError as exc:
        raise GraphConfigError(f"Config file could not be read: {exc.strerror}") from exc
    except ValueError as exc:
        raise GraphConfigError(f"Config file is not valid JSON: {exc}") from exc
    for item in data.get("model_config_list") or [] if isinstance(data, dict) else []:
        config = item.get("config") if isinstance(item, dict) else None
        if isinstance(config, dict) and config.get("name") == servable_name:
            base = Path(config.get("base_path") or servable_name).expanduser()
            return base if base.is_absolute() else config_path.parent / base
    return None


def resolve_model_file(
    servable_name: str,
    servable_version: str = "",
    *,
    graph_dir: Path,
    config_path: Path | None = None,
) -> tuple[Path, str]:
    """Find the model file of a servable; return ``(file, version)``.

    The servable's folder is the ``base_path`` of its ``model_config_list`` entry in
    ``config_path`` (relative paths against the config file's folder); without a config, or
    when the config does not list the name, it is ``<graph folder>/<servable_name>``. Inside
    the folder the OVMS versioned layout applies: version ``servable_version``, else the
    highest numeric sub-folder (a folder without version sub-folders is used as is). The model
    file is ``model.xml``, else the only ``*.xml`` or ``*.onnx`` file.

    Raises:
        GraphConfigError: the servable, version or model file cannot be found.
    """
    base = _config_base_path(config_path, servable_name) if config_path is not None else None
    if base is None:
        base = graph_dir / servable_name
    if not base.is_dir():
        logger.error("Servable %s: model folder %s does not exist", servable_name, base)
        raise GraphConfigError(f'Servable "{servable_name}" was not found')
    versions = sorted(
        (int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True
    )
    version = ""
    folder = base
    if servable_version:
        if not servable_version.isdigit() or int(servable_version) not in versions:
            raise GraphConfigError(
                f'Servable "{servable_name}" has no version {servable_version}'
            )
        version = str(int(servable_version))
        folder = base / servable_version
    elif versions:
        version = str(versions[0])
        folder = base / version
    preferred = folder / "model.xml"
    if preferred.is_file():
        return preferred, version or "1"
    candidates = sorted(p for p in folder.iterdir() if p.suffix in _MODEL_SUFFIXES)
    if len(candidates) != 1:
        what = "no model file" if not candidates else "several model files"
        raise GraphConfigError(f'Servable "{servable_name}" version folder has {what}')
    return candidates[0], version or "1"


class OpenVINOModelServerSessionCalculator(Calculator):
    """Compiles the model ``servable_name`` once per graph and outputs it as side packet SESSION.

    The model is found by ``resolve_model_file``: the ``base_path`` of the servable's entry in
    the server's config.json (option ``server_config``, relative to the graph folder, else the
    server setting ``config_path``), else the folder ``<graph folder>/<servable_name>``; OVMS's
    versioned layout inside it.

    node {
      calculator: "OpenVINOModelServerSessionCalculator"
      output_side_packet: "SESSION:add"
      node_options: {
        [type.googleapis.com / mediapipe.OpenVINOModelServerSessionCalculatorOptions]: {
          servable_name: "add"
          servable_version: "1"
        }
      }
    }
    """

    Options: ClassVar[Any] = SessionOptions
    SESSION = OutputSidePacket("SESSION", ModelSession)

    @classmethod
    def create_node_resources(cls, spec: NodeSpec, settings: Mapping[str, Any]) -> Any:
        """Find and compile the model (OVMS node initializer)."""
        import openvino as ov

        options = spec.options
        graph_dir = Path(spec.base_path or ".")
        config_path = None
        if options.server_config:
            config_path = graph_dir / Path(options.server_config).expanduser()
        elif settings.get("config_path"):
            config_path = Path(str(settings["config_path"])).expanduser().resolve()
        if options.service_url:
            raise GraphConfigError(
                f'Node "{spec.name}": remote servables (service_url) are not supported'
            )
        path, version = resolve_model_file(
            options.servable_name, options.servable_version,
            graph_dir=graph_dir, config_path=config_path,
        )
        device = str(settings.get("target_device") or "CPU")
        compiled = ov.Core().compile_model(str(path), device)
        logger.info("Servable %s version %s compiled on %s", options.servable_name, version, device)
        return ModelSession(options.servable_name, version, compiled)

    def open(self, cc: CalculatorContext) -> None:
        """Publish the compiled model."""
        self.SESSION.set(cc, cc.resources)
