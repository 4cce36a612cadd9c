"""``ovgraph export text_generation``: OVMS's ``export_model.py`` for LLM/VLM graphs.

Contributed to the ``ovgraph`` command line through the ``ovgraph.commands`` entry point.

Converts a Hugging Face model (a local folder or a hub id) to OpenVINO IR with optimum-intel,
writes ``graph.pbtxt`` next to it (``models_path: "./"``, the layout OVMS's export and pull
write) and registers the folder in ``config.json``. A source folder that already holds an
OpenVINO model is copied instead of converted. Arguments and defaults are those of
``export_model.py text_generation``.

The conversion runs ``optimum-cli export openvino`` with the export environment's Python (torch,
transformers, optimum-intel), which the serving environment does not need: ``--exporter_python``
or ``OVGRAPH_EXPORT_PYTHON`` names it (default: the running interpreter). The result is built in
a hidden sibling folder and moved into place only when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from calculators.llm.graph_template import text_generation_graph
from ovgraph.errors import OvGraphError
from ovgraph.model_prep import (
    add_to_config,
    is_openvino_model,
    replace_dir,
    write_graph,
)

__all__ = ["build_parser", "export_text_generation", "main"]

PIPELINE_TYPES = ("LM", "LM_CB", "VLM", "VLM_CB", "AUTO")
_VLM_TASK = "image-text-to-text"
_LM_TASK = "text-generation-with-past"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Imports the exporter stack and asks optimum-intel which export tasks it knows for a model
# type (printed as JSON; an empty list for an unknown type). Exit code 3: the stack is missing.
_TASKS_PROBE = """
import json, sys
try:
    import torch, transformers, optimum.intel
    import optimum.exporters.openvino.model_configs  # registers the OpenVINO export configs
    from optimum.exporters.tasks import TasksManager
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(3)
tasks = []
names = [sys.argv[1], sys.argv[1].replace("_", "-")] if len(sys.argv) > 1 else []
for name in names:
    try:
        tasks = list(TasksManager.get_supported_tasks_for_model_type(
            name, exporter="openvino", library_name="transformers"))
        break
    except KeyError:
        pass
print(json.dumps(tasks))
"""


@contextmanager
def step(label: str) -> Iterator[None]:
    """Print a step and, when it ends, how long it took."""
    start = time.perf_counter()
    print(f"[export] {label} ...", flush=True)
    yield
    print(f"[export] {label}: done in {time.perf_counter() - start:.1f} s", flush=True)


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``export_model.py`` (common ones plus ``text_generation``)."""
    parser = argparse.ArgumentParser(
        prog="ovgraph export", description="Export a model and write its graph for serving"
    )
    sub = parser.add_subparsers(dest="task", required=True)
    p = sub.add_parser("text_generation", help="LLM/VLM chat completions graph")
    p.add_argument("--model_repository_path", default="models")
    p.add_argument("--source_model", required=True,
                   help="a local Hugging Face model folder or a hub id ORG/NAME")
    p.add_argument("--model_name", default=None,
                   help="servable name (default: source_model; a local folder's name)")
    p.add_argument("--weight-format", dest="weight_format", default="int8",
                   choices=["fp32", "fp16", "int8", "int4"])
    p.add_argument("--config_file_path", default="config.json")
    p.add_argument("--overwrite_models", action="store_true")
    p.add_argument("--target_device", default="CPU")
    p.add_argument("--ov_cache_dir", default=None)
    p.add_argument("--extra_quantization_params", default=None,
                   help="extra optimum-cli options, e.g. '--sym --ratio 1.0 --group-size -1'")
    p.add_argument("--pipeline_type", default=None, choices=PIPELINE_TYPES)
    p.add_argument("--kv_cache_precision", default=None, choices=["u8"])
    p.add_argument("--enable_prefix_caching", type=_bool, default=True)
    p.add_argument("--disable_dynamic_split_fuse", dest="dynamic_split_fuse",
                   action="store_false")
    p.add_argument("--max_num_batched_tokens", type=int, default=None)
    p.add_argument("--max_num_seqs", type=int, default=None)
    p.add_argument("--cache_size", type=int, default=0)
    p.add_argument("--max_prompt_len", type=int, default=None)
    p.add_argument("--reasoning_parser", default=None,
                   choices=["qwen3", "gptoss", "lfm2", "gemma4"])
    p.add_argument("--tool_parser", default=None,
                   choices=["llama3", "phi4", "hermes3", "mistral", "qwen3coder", "gptoss",
                            "devstral", "lfm2", "gemma4"])
    p.add_argument("--enable_tool_guided_generation", action="store_true")
    p.add_argument("--exporter_python", default=os.environ.get("OVGRAPH_EXPORT_PYTHON"),
                   help="Python of the export environment (default: $OVGRAPH_EXPORT_PYTHON, "
                        "else this interpreter)")
    return parser


# ---------------------------------------------------------------------------- checks


def _source(source_model: str) -> tuple[Path | None, str]:
    """Return ``(local folder or None, what to hand to optimum-cli)``."""
    path = Path(source_model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise OvGraphError(f"Source model {source_model} has no config.json: not a "
                               "Hugging Face model folder")
        return path.resolve(), str(path.resolve())
    looks_local = source_model.startswith((".", "/", "~")) or os.sep in source_model.strip("/")
    if path.exists() or (looks_local and not _HUB_ID.match(source_model)):
        raise OvGraphError(f"Source model {source_model} does not exist (not a folder)")
    if not _HUB_ID.match(source_model):
        raise OvGraphError(f"Source model {source_model!r} is neither a local folder nor a hub "
                           "id ORG/NAME")
    return None, source_model


def _model_config(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise OvGraphError(f"{folder}/config.json could not be read: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise OvGraphError(f"{folder}/config.json has no model_type")
    return data


def _probe_exporter(python: str, model_type: str | None) -> list[str]:
    """Check optimum-intel in ``python``; return its export tasks for ``model_type``."""
    cmd = [python, "-c", _TASKS_PROBE, *([model_type] if model_type else [])]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise OvGraphError(f"Exporter Python {python} cannot run: {exc.strerror}") from exc
    last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
    if result.returncode == 3:
        raise OvGraphError(
            f"optimum-intel is not usable in {python} ({last}). Install the export extra "
            "(pip install 'ovgraph[export]', torch first) in a separate environment and give "
            "its Python with --exporter_python or OVGRAPH_EXPORT_PYTHON"
        )
    if result.returncode != 0:
        raise OvGraphError(f"Could not query optimum-intel for {model_type}: {last}")
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def export_task(config: dict[str, Any], pipeline_type: str | None, supported: list[str]) -> str:
    """The optimum-cli ``--task`` for a model: VLM when it has a vision part, else LM.

    Raises:
        OvGraphError: the architecture cannot be exported for text generation.
    """
    model_type = config["model_type"]
    if not supported:
        raise OvGraphError(f"Unsupported architecture: model_type {model_type!r} is not known "
                           "to optimum-intel's OpenVINO exporter")
    if pipeline_type in ("VLM", "VLM_CB"):
        task = _VLM_TASK
    elif pipeline_type in ("LM", "LM_CB"):
        task = _LM_TASK
    else:
        has_vision = "vision_config" in config or _LM_TASK not in supported
        task = _VLM_TASK if has_vision and _VLM_TASK in supported else _LM_TASK
    if task not in supported:
        raise OvGraphError(f"Unsupported architecture: model_type {model_type!r} cannot be "
                           f"exported for {task} (supported: {', '.join(supported)})")
    return task


# ---------------------------------------------------------------------------- export


def graph_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The graph options ``export_model.py`` writes for these arguments."""
    return {
        "pipeline_type": args.pipeline_type,
        "target_device": args.target_device,
        "cache_size": args.cache_size,
        "max_num_seqs": args.max_num_seqs or 256,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "enable_prefix_caching": args.enable_prefix_caching,
        "dynamic_split_fuse": args.dynamic_split_fuse,
        "kv_cache_precision": args.kv_cache_precision,
        "max_prompt_len": args.max_prompt_len,
        "ov_cache_dir": args.ov_cache_dir,
        "tool_parser": args.tool_parser,
        "reasoning_parser": args.reasoning_parser,
        "enable_tool_guided_generation": True if args.enable_tool_guided_generation else None,
    }


def _convert(python: str, source: str, task: str, args: argparse.Namespace, out: Path) -> None:
    cmd = [
        python, "-m", "optimum.commands.optimum_cli", "export", "openvino",
        "--model", source, "--task", task, "--weight-format", args.weight_format,
        "--trust-remote-code",
    ]
    if args.target_device == "NPU" and args.weight_format == "int4":
        cmd += ["--sym", "--ratio", "1.0", "--group-size", "-1"]
    if args.extra_quantization_params:
        cmd += shlex.split(args.extra_quantization_params)
    cmd.append(str(out))
    print("[export] " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise OvGraphError(f"optimum-cli export failed with exit code {result.returncode}")


def _tokenizers(python: str, source: str, out: Path) -> None:
    """Convert the tokenizer when optimum-cli did not (OVMS's ``convert_tokenizer`` step)."""
    if (out / "openvino_tokenizer.xml").is_file() and (out / "openvino_detokenizer.xml").is_file():
        return
    with step("convert tokenizer"):
        code = "from openvino_tokenizers.cli import convert_hf_tokenizer; convert_hf_tokenizer()"
        cmd = [python, "-c", code, source, "--with-detokenizer", "--trust-remote-code",
               "-o", str(out)]
        if subprocess.run(cmd).returncode != 0:
            raise OvGraphError("Tokenizer conversion failed")


def export_text_generation(args: argparse.Namespace) -> Path:
    """Export, write the graph, register it; returns the model folder.

    Raises:
        OvGraphError: missing source, unsupported architecture, existing folder without
            ``--overwrite_models``, missing or failing exporter.
    """
    total = time.perf_counter()
    local, source = _source(args.source_model)
    name = args.model_name or (local.name if local is not None else args.source_model)
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise OvGraphError(f"--model_name {name!r} must be a relative name")
    repository = Path(args.model_repository_path)
    dest = repository / name
    if dest.exists() and any(dest.iterdir()) and not args.overwrite_models:
        raise OvGraphError(f"{dest} already exists; give --overwrite_models to replace it")
    python = args.exporter_python or sys.executable
    work = dest.with_name(f".{dest.name}.export-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        if local is not None and is_openvino_model(local):
            with step(f"copy OpenVINO model {local}"):
                shutil.copytree(local, work, ignore=shutil.ignore_patterns("graph.pbtxt", ".*"))
        else:
            with step("check the exporter and the architecture"):
                if local is not None:
                    config = _model_config(local)
                    supported = _probe_exporter(python, config["model_type"])
                    task = export_task(config, args.pipeline_type, supported)
                else:
                    _probe_exporter(python, None)
                    task = _VLM_TASK if args.pipeline_type in ("VLM", "VLM_CB") else _LM_TASK
                print(f"[export] optimum task: {task}", flush=True)
            with step(f"convert {args.source_model} ({args.weight_format})"):
                work.parent.mkdir(parents=True, exist_ok=True)
                _convert(python, source, task, args, work)
            _tokenizers(python, source, work)
            if local is not None and (local / "preprocessor_config.json").is_file():
                shutil.copyfile(local / "preprocessor_config.json",
                                work / "preprocessor_config.json")
        if not is_openvino_model(work):
            raise OvGraphError("The export produced no OpenVINO model")
        with step("write graph.pbtxt"):
            graph = write_graph(work, args.task, graph_settings(args), text_generation_graph)
        replace_dir(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Graph: {graph.name} created in: {dest}", flush=True)
    config_path = Path(args.config_file_path)
    result = add_to_config(config_path, name, dest)
    print(f"Servable {name} {result} in {config_path}", flush=True)
    print(f"[export] total: {time.perf_counter() - total:.1f} s", flush=True)
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ovgraph export`` and ``tools/export_model.py``."""
    args = build_parser().parse_args(argv)
    try:
        export_text_generation(args)
    except OvGraphError as exc:
        print(f"ovgraph export: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("ovgraph export: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
