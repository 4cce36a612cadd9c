"""Build and install ``tests/plugins/ovgraph_example_plugin`` into a private directory.

pip installs it non-editable, without dependencies (and offline with the build backend already
here), into a ``--target`` directory, so the project's venv is never modified. Put the directory
on ``sys.path`` (in-process) or ``PYTHONPATH`` (a server subprocess) to make its entry points
visible.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

PLUGIN_SOURCE = Path(__file__).resolve().parents[1] / "plugins" / "ovgraph_example_plugin"


def _can_build_wheels_here() -> bool:
    """Whether the installed setuptools builds wheels (>= 70.1, or older with ``wheel``).

    A fresh venv of Python 3.11 has setuptools 65 without ``wheel``: building without isolation
    then fails with "invalid command 'bdist_wheel'", so pip must fetch the backend itself.
    """
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    version = importlib.metadata.version("setuptools").split(".")
    try:
        major, minor = int(version[0]), int(version[1])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (70, 1)


def install_example_plugin(work: Path) -> Path:
    """Install the example plugin under ``work``; return the directory it went into."""
    source = work / "src"
    # Build from a copy: pip builds in-tree and must not leave build/ or *.egg-info behind.
    shutil.copytree(PLUGIN_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = work / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
               str(target)]
    if _can_build_wheels_here():
        # The build backend is already here: build offline with it.
        command += ["--no-build-isolation", "--no-index"]
    done = subprocess.run(
        [*command, str(source)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert list(target.glob("ovgraph_example_plugin-0.1.0.dist-info"))
    return target
