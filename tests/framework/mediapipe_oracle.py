"""Real MediaPipe 0.10.21 as a differential oracle for the graph runtime.

MediaPipe runs in its own venv, ``<repo>/.venv-mediapipe`` (gitignored), created on demand with
``python3 -m venv`` and ``pip install mediapipe==0.10.21`` (the last release whose wheel carries
the ``CalculatorGraph`` bindings) and reused when present. Each case runs in a fresh subprocess of
that venv's interpreter (``_mp_runner.py``) with a 20 s timeout, because some misuse aborts or
hangs the interpreter.

Case (JSON object)::

    {"config": "<pbtxt>",
     "side_packets": {"name": {"type": "int" | "str" | "uint64" | "bool", "value": ...}},
     "inputs": [["stream", timestamp, {"type": ..., "value": ...}], ...],
     "close": true,          # close the graph (else wait until idle)
     "observe": ["out"],     # graph streams to observe (default: the graph output streams)
     "observe_bounds": false}  # also report empty timestamp-bound packets

Result (JSON object)::

    {"outputs": {"stream": [[timestamp, value or null for an empty packet], ...]},
     "error": null | {"phase": "init" | "run" | "crash" | "timeout", "message": "...",
                      "type": "RuntimeError" | "ValueError" | ...},
     "returncode": 0}

``init`` = building the graph, observing and ``start_run``; ``run`` = adding packets, closing and
waiting; ``crash`` = the interpreter died (message = the end of its stderr); ``timeout`` = killed
after 20 s (returncode -9).

**Cache.** Results are cached in ``tests/testdata/mediapipe_oracle_cache.json``, keyed by the
sha256 of the canonical case JSON, and committed, so that a machine without the MediaPipe venv
(CI included) still compares against what real MediaPipe did. Every entry was produced by running
real MediaPipe 0.10.21. A cached result is used whenever present; set ``OVGRAPH_MP_RERECORD=1`` to
run MediaPipe anyway (and overwrite the entries), or delete the file to re-record everything.
``python tests/framework/mediapipe_oracle.py --record`` rewrites the cache from scratch with exactly
the cases of ``mediapipe_cases.py``.

When a case is not cached and the venv cannot be created, :class:`OracleUnavailable` is raised (the
tests skip with its reason); under ``CI=true`` the failure is raised as an error instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MEDIAPIPE_VERSION = "0.10.21"
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_DIR = REPO_ROOT / ".venv-mediapipe"
RUNNER = Path(__file__).with_name("_mp_runner.py")
CACHE_PATH = REPO_ROOT / "tests" / "testdata" / "mediapipe_oracle_cache.json"
CASE_TIMEOUT_S = 20.0
INSTALL_TIMEOUT_S = 900.0
_REPO_TAG = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]
_LOCK_PATH = Path(tempfile.gettempdir()) / f"ovgraph-mediapipe-{_REPO_TAG}.lock"


class OracleUnavailable(RuntimeError):
    """MediaPipe cannot be run here and the case has no cached result."""


def case_key(case: dict[str, Any]) -> str:
    """Return the cache key of ``case``: sha256 of its canonical JSON."""
    text = json.dumps(case, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rerecord_requested() -> bool:
    """Return True when ``OVGRAPH_MP_RERECORD=1`` asks to run MediaPipe despite the cache."""
    return os.environ.get("OVGRAPH_MP_RERECORD", "") == "1"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise venv creation and cache writes across concurrent test processes."""
    with open(_LOCK_PATH, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def _venv_works(python: Path) -> bool:
    if not python.exists():
        return False
    probe = "from mediapipe.python._framework_bindings import calculator_graph"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, timeout=120, check=False)
    return done.returncode == 0


def ensure_venv() -> Path:
    """Return the MediaPipe venv's interpreter, creating the venv on first use.

    Raises:
        OracleUnavailable: the venv could not be created or MediaPipe could not be installed.
    """
    python = _venv_python()
    with _locked():
        if _venv_works(python):
            return python
        steps = [
            [sys.executable, "-m", "venv", str(VENV_DIR)],
            [str(python), "-m", "pip", "install", "-q", f"mediapipe=={MEDIAPIPE_VERSION}"],
        ]
        for step in steps:
            try:
                done = subprocess.run(
                    step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise OracleUnavailable(f"cannot set up MediaPipe venv: {exc}") from exc
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip()[-600:]
                raise OracleUnavailable(
                    f"cannot set up MediaPipe venv ({' '.join(step[-2:])}): {tail}"
                )
        if not _venv_works(python):
            raise OracleUnavailable("mediapipe installed but its CalculatorGraph does not import")
        return python


def run_live(case: dict[str, Any], python: Path | None = None) -> dict[str, Any]:
    """Run ``case`` on real MediaPipe in a subprocess and return its result (no cache)."""
    python = python or ensure_venv()
    try:
        done = subprocess.run(
            [str(python), str(RUNNER)],
            input=json.dumps(case),
            capture_output=True,
            text=True,
            timeout=CASE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {
            "outputs": {},
            "error": {"phase": "timeout", "message": f"no result within {CASE_TIMEOUT_S:g} s"},
            "returncode": -9,
        }
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        result = {
            "outputs": {},
            "error": {"phase": "crash", "message": done.stderr.strip()[-2000:]},
        }
    result["returncode"] = done.returncode
    return result


def load_cache() -> dict[str, Any]:
    """Return the cache file's entries (``{key: {"name": ..., "result": ...}}``)."""
    try:
        return json.loads(CACHE_PATH.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _write_cache(entries: dict[str, Any]) -> None:
    CACHE_PATH.parent.mkdir(parents=True, exist_ok=True)
    tmp = CACHE_PATH.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(CACHE_PATH)


def store(key: str, name: str, result: dict[str, Any]) -> None:
    """Add or replace one cache entry."""
    with _locked():
        entries = load_cache()
        entries[key] = {"name": name, "result": result}
        _write_cache(entries)


def cached_result(case: dict[str, Any]) -> dict[str, Any] | None:
    """Return the cached result of ``case``, or None."""
    entry = load_cache().get(case_key(case))
    return None if entry is None else entry["result"]


def oracle(case: dict[str, Any], name: str = "") -> dict[str, Any]:
    """Return MediaPipe's result for ``case``: from the cache, else by running it (then cached).

    Raises:
        OracleUnavailable: not cached and MediaPipe cannot be run here (outside CI).
    """
    key = case_key(case)
    if not rerecord_requested():
        entry = load_cache().get(key)
        if entry is not None:
            return entry["result"]
    try:
        python = ensure_venv()
    except OracleUnavailable:
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError("MediaPipe venv is required in CI but could not be set up") from None
        raise
    result = run_live(case, python)
    store(key, name, result)
    return result


def record_all() -> int:
    """Re-run every case of ``mediapipe_cases`` on MediaPipe and rewrite the cache; return count."""
    sys.path.insert(0, str(Path(__file__).parent))
    from mediapipe_cases import CASES

    python = ensure_venv()
    entries = {}
    for case in CASES:
        result = run_live(case.payload, python)
        entries[case_key(case.payload)] = {"name": case.name, "result": result}
        print(f"{case.name}: {json.dumps(result)[:160]}")
    with _locked():
        _write_cache(entries)
    return len(entries)


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: mediapipe_oracle.py --record")
    print(f"recorded {record_all()} cases into {CACHE_PATH.relative_to(REPO_ROOT)}")
