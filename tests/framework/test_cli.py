"""`ovgraph validate` and `ovgraph draw` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.framework._plugin_install import install_example_plugin

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "testdata" / "ovms-graphs"


def _ovgraph(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ovgraph.cli", *args], capture_output=True, text=True,
        cwd=REPO, timeout=120, check=False, env={**os.environ, **(env or {})},
    )


def test_validate_accepts_valid_graphs() -> None:
    result = _ovgraph(
        "validate", "graphs/qwen2vl-tiny/graph.pbtxt",
        str(CORPUS / "src__test__llm__visual_language_model__vlm_cb_regular.pbtxt"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == (
        "graphs/qwen2vl-tiny/graph.pbtxt: OK\n"
        f"{CORPUS / 'src__test__llm__visual_language_model__vlm_cb_regular.pbtxt'}: OK\n"
    )


def test_validate_reports_path_line_message() -> None:
    bad = CORPUS / "src__test__mediapipe__graphdummynonexistentcalculator.pbtxt"
    result = _ovgraph("validate", "graphs/qwen2vl-tiny/graph.pbtxt", str(bad))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "graphs/qwen2vl-tiny/graph.pbtxt: OK"
    lines = lines[1:]
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


def test_help_lists_every_subcommand() -> None:
    result = _ovgraph("--help")
    assert result.returncode == 0
    for command in ("serve", "validate", "draw", "expand", "calculators", "export"):
        assert f"    {command} " in result.stdout, command
    assert "--max_num_seqs" not in result.stdout  # serve's own flags: `ovgraph serve --help`
    assert "--max_num_seqs" in _ovgraph("serve", "--help").stdout


def test_contributed_subcommands_say_what_they_do() -> None:
    # A command from the ovgraph.commands entry point is described by its module's docstring.
    out = " ".join(_ovgraph("--help").stdout.split())
    assert "export OVMS's export_model.py for LLM/VLM graphs." in out
    assert "(from calculators)" not in out


def test_draw_reports_invalid_graphs_like_validate(tmp_path: Path) -> None:
    graph = tmp_path / "graph.pbtxt"
    graph.write_text('input_stream: "in"\nnode {\n  calculator: "PassThrougCalculator"\n'
                     '  input_stream: "in"\n  output_stream: "out"\n}\n')
    result = _ovgraph("draw", str(graph))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"{graph}:3: ")
    assert 'Did you mean "PassThroughCalculator"?' in result.stderr
    graph.write_text("node {\n  calculator:\n")
    result = _ovgraph("draw", str(graph))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{graph}:")
    assert "Traceback" not in result.stderr


def test_draw_expanded_and_expand() -> None:
    result = _ovgraph("draw", "--expand", "graphs/qwen2vl-tiny/graph.pbtxt")
    assert result.returncode == 0, result.stderr
    assert "DetokenizerCalculator" in result.stdout
    assert 'headlabel="LLM_NODE_RESOURCES"' not in result.stdout  # expanded: not used inside
    result = _ovgraph("expand", "graphs/qwen2vl-tiny/graph.pbtxt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\nnode {") == 6


def test_calculators_lists_plugins_with_their_package(tmp_path: Path) -> None:
    site = install_example_plugin(tmp_path)
    result = _ovgraph("calculators", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("ShoutCalculator  [ovgraph-example-plugin 0.1.0]")
    assert lines[start + 2: start + 4] == [
        "  in       TEXT: TextChunk", "  out      TEXT: TextChunk",
    ]
    assert "PassThroughCalculator  [ovgraph 0.1.0]" in lines
