"""`ovgraph validate` and `ovgraph draw` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "testdata" / "ovms-graphs"


def _ovgraph(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ovgraph.cli", *args], capture_output=True, text=True,
        cwd=REPO, timeout=120, check=False,
    )


def test_validate_accepts_valid_graphs() -> None:
    result = _ovgraph(
        "validate", "graphs/qwen2vl-tiny/graph.pbtxt",
        str(CORPUS / "src__test__llm__visual_language_model__vlm_cb_regular.pbtxt"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_validate_reports_path_line_message() -> None:
    bad = CORPUS / "src__test__mediapipe__graphdummynonexistentcalculator.pbtxt"
    result = _ovgraph("validate", "graphs/qwen2vl-tiny/graph.pbtxt", str(bad))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    for line in lines:
        path, line_no, message = line.split(":", 2)
        assert path == str(bad)
        assert int(line_no) > 0
        assert "No registered object with name" in message


def test_validate_reports_parse_errors(tmp_path: Path) -> None:
    graph = tmp_path / "broken.pbtxt"
    graph.write_text(
        'input_stream: "in"\nnode {\n  calculator: "PassThroughCalculator"\n  bogus: 1\n}\n'
    )
    result = _ovgraph("validate", str(graph))
    assert result.returncode == 1
    assert result.stdout.startswith(f"{graph}:4:")
    assert "bogus" in result.stdout


def test_draw_prints_dot() -> None:
    result = _ovgraph("draw", "graphs/qwen2vl-tiny/graph.pbtxt")
    assert result.returncode == 0
    assert result.stdout.lstrip().startswith("digraph")
    assert "HttpLLMCalculator" in result.stdout
    assert "loopback" in result.stdout
