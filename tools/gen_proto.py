"""Generate the Python protobuf modules in ovgraph/_proto from the sources in proto/.

Usage (from anywhere):

    python tools/gen_proto.py           # regenerate ovgraph/_proto
    python tools/gen_proto.py --check   # exit 1 if ovgraph/_proto is not what proto/ generates

Runs grpcio-tools' protoc (`python -m grpc_tools.protoc -I proto`) over every .proto file,
writing `*_pb2.py` for all of them and `*_pb2_grpc.py` for the files that define services
(kserve/). The protoc is that of grpcio-tools 1.64.1 (protoc 26.1, "Protobuf Python Version:
5.26.1"): its code carries no runtime version check and loads on every protobuf from 5.26.1 on,
so ovgraph installs beside clients that pin an older protobuf than the newest (tritonclient's
`protobuf<7`, for one). Newer protoc releases stamp a minimum runtime of their own version into
every module. That grpcio-tools lives in its own venv, `.venv-protoc` (gitignored), created on
first use, since it cannot share an environment with a protobuf 7 runtime; set
`OVGRAPH_PROTOC_PYTHON` to use another interpreter that has it. The generated code is then
adapted to live inside the ovgraph package:

- absolute imports of generated modules (`from mediapipe.framework import calculator_pb2`,
  `from kserve import grpc_predict_v2_pb2`) become `ovgraph._proto.…` imports, and so does the
  module name the message classes report;
- the KServe module registers its file in a private descriptor pool instead of the process-wide
  default pool, because tritonclient (and other KServe clients) register the same `inference.*`
  symbols from their own file, and two files defining one symbol cannot share a pool;
- every directory gets an `__init__.py`.

The output depends only on proto/ and the grpcio-tools version, so `--check` can compare it
byte for byte with the committed files.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "ovgraph" / "_proto"
PACKAGE = "ovgraph._proto"
# Proto directories whose files define gRPC services.
SERVICE_DIRS = ("kserve",)
# Proto files registered in a private descriptor pool (see module docstring).
PRIVATE_POOL_FILES = ("kserve/grpc_predict_v2.proto",)

# protoc 26.1: modules without a runtime version check, loadable on protobuf >= 5.26.1.
GRPCIO_TOOLS_VERSION = "1.64.1"
PROTOC_VENV = ROOT / ".venv-protoc"

ROOT_INIT = '"""Generated protobuf modules (tools/gen_proto.py from proto/); do not edit."""\n'


def proto_files() -> list[str]:
    """Return every .proto file under proto/, relative to it, in sorted order."""
    return sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))


def top_level_packages(files: list[str]) -> list[str]:
    """Return the first path component of every proto file (the generated top packages)."""
    return sorted({f.split("/", 1)[0] for f in files})


def _tools_version(python: str | Path) -> str | None:
    probe = "import importlib.metadata as m; print(m.version('grpcio-tools'))"
    try:
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                              timeout=120, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def protoc_python() -> str:
    """Return an interpreter whose grpcio-tools is GRPCIO_TOOLS_VERSION (made on first use)."""
    override = os.environ.get("OVGRAPH_PROTOC_PYTHON")
    if override:
        return override
    if _tools_version(sys.executable) == GRPCIO_TOOLS_VERSION:
        return sys.executable
    python = PROTOC_VENV / "bin" / "python"
    if _tools_version(python) != GRPCIO_TOOLS_VERSION:
        for step in (
            [sys.executable, "-m", "venv", str(PROTOC_VENV)],
            [str(python), "-m", "pip", "install", "-q", f"grpcio-tools=={GRPCIO_TOOLS_VERSION}"],
        ):
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.stderr.write(done.stdout + done.stderr)
                raise SystemExit(f"cannot set up {PROTOC_VENV.name}: {' '.join(step)}")
    return str(python)


def run_protoc(out_dir: Path, files: list[str]) -> None:
    """Run grpc_tools.protoc, writing generated modules into out_dir."""
    service_files = [f for f in files if f.split("/", 1)[0] in SERVICE_DIRS]
    base = [protoc_python(), "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}"]
    commands = [[*base, f"--python_out={out_dir}", *files]]
    if service_files:
        commands.append([*base, f"--grpc_python_out={out_dir}", *service_files])
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.stderr.write(result.stdout + result.stderr)
            raise SystemExit(f"protoc failed with exit code {result.returncode}")


def rewrite_module(text: str, packages: list[str], private_pool: bool) -> str:
    """Point generated imports at ovgraph._proto and optionally use a private pool."""
    alternatives = "|".join(re.escape(p) for p in packages)
    # `from mediapipe.framework import x_pb2 as …`, `from kserve import x_pb2 as …`,
    # `from mediapipe.framework.x_pb2 import *` (public imports).
    text = re.sub(
        rf"^from ({alternatives})((?:\.\w+)*) import ",
        rf"from {PACKAGE}.\1\2 import ",
        text,
        flags=re.MULTILINE,
    )
    text = re.sub(
        rf"^import ({alternatives})\.", rf"import {PACKAGE}.\1.", text, flags=re.MULTILINE
    )
    # The module name the message classes report (__module__, pickling).
    text = re.sub(
        rf"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')(({alternatives})\.)",
        rf"\1{PACKAGE}.\2",
        text,
    )
    if private_pool:
        default = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
        if default not in text:
            raise SystemExit("generated code changed: cannot install the private descriptor pool")
        text = text.replace(
            default,
            "# Private pool: KServe clients register the same `inference.*` symbols in the\n"
            "# default pool.\n"
            "_POOL = _descriptor_pool.DescriptorPool()\n"
            "DESCRIPTOR = _POOL.AddSerializedFile(",
        )
    return text


def generate(out_dir: Path) -> None:
    """Generate and adapt all modules into out_dir (which must be empty)."""
    files = proto_files()
    if not files:
        raise SystemExit(f"no .proto files under {PROTO_DIR}")
    packages = top_level_packages(files)
    run_protoc(out_dir, files)
    private = {f.removesuffix(".proto") + "_pb2.py" for f in PRIVATE_POOL_FILES}
    for path in sorted(out_dir.rglob("*.py")):
        rel = path.relative_to(out_dir).as_posix()
        text = path.read_text(encoding="utf-8")
        path.write_text(rewrite_module(text, packages, rel in private), encoding="utf-8")
    for directory in sorted({p.parent for p in out_dir.rglob("*.py")} | {out_dir}):
        current = directory
        while True:
            init = current / "__init__.py"
            if not init.exists():
                init.write_text(ROOT_INIT if current == out_dir else "", encoding="utf-8")
            if current == out_dir:
                break
            current = current.parent


def generated_files(directory: Path) -> set[str]:
    """Return the .py files below directory (relative paths), ignoring caches."""
    if not directory.is_dir():
        return set()
    return {
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*.py")
        if "__pycache__" not in p.parts
    }


def differences(expected_dir: Path, actual_dir: Path) -> list[str]:
    """Return human-readable differences between a fresh generation and the committed files."""
    expected = generated_files(expected_dir)
    actual = generated_files(actual_dir)
    problems = [f"missing: {name}" for name in sorted(expected - actual)]
    problems += [f"stale: {name}" for name in sorted(actual - expected)]
    for name in sorted(expected & actual):
        if not filecmp.cmp(expected_dir / name, actual_dir / name, shallow=False):
            problems.append(f"differs: {name}")
    return problems


def install(fresh_dir: Path) -> None:
    """Replace the generated .py files in OUT_DIR by those in fresh_dir."""
    for name in generated_files(OUT_DIR) - generated_files(fresh_dir):
        (OUT_DIR / name).unlink()
    for name in sorted(generated_files(fresh_dir)):
        target = OUT_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fresh_dir / name, target)
    # Drop directories left empty by removed protos.
    for directory in sorted((p for p in OUT_DIR.rglob("*") if p.is_dir()), reverse=True):
        if directory.name != "__pycache__" and not any(directory.iterdir()):
            directory.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if ovgraph/_proto differs from a fresh generation",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ovgraph-proto-") as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if args.check:
            problems = differences(fresh, OUT_DIR)
            if problems:
                print("ovgraph/_proto is out of date; run tools/gen_proto.py:", file=sys.stderr)
                for problem in problems:
                    print(f"  {problem}", file=sys.stderr)
                return 1
            print(f"ovgraph/_proto is up to date ({len(generated_files(fresh))} files)")
            return 0
        install(fresh)
        print(f"generated {len(generated_files(fresh))} files into {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
