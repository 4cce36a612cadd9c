"""``ovgraph validate`` / ``ovgraph draw`` back ends: validate_paths and to_dot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ovgraph.framework import registry
from ovgraph.framework.textformat import read_graph_file
from ovgraph.framework.validation import did_you_mean
from ovgraph.graph_tools import to_dot, validate_paths

CORPUS = Path(__file__).resolve().parents[1] / "testdata" / "ovms-graphs"
CORPUS_FILES = sorted(CORPUS.glob("*.pbtxt"))
_LISTED = " (`ovgraph calculators` lists the registered ones)"


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_valid_file_gives_exit_code_zero(tmp_path: Path) -> None:
    path = _write(tmp_path, "ok.pbtxt", 'input_stream: "in"\noutput_stream: "out"\n'
                  'node { calculator: "PassThroughCalculator" input_stream: "in" '
                  'output_stream: "out" }\n')
    assert validate_paths([path]) == (0, [])


def test_every_error_is_one_located_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.pbtxt", """input_stream: "in"
node { calculator: "NoSuchCalculator" input_stream: "in" output_stream: "a" }
node {
  calculator: "PassThroughCalculator"
  input_stream: "nowhere"
  output_stream: "b"
}
""")
    code, lines = validate_paths([path])
    assert code == 1
    assert lines == [
        f"{path}:2: ValidatedGraphConfig Initialization failed. No registered object with name: "
        'NoSuchCalculator; Unable to find Calculator "NoSuchCalculator"' + _LISTED,
        f'{path}:5: ; Input Stream "nowhere" for node with sorted index 1 name '
        "PassThroughCalculator does not have a corresponding output stream.",
    ]


def test_parse_errors_are_reported_with_their_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "syntax.pbtxt", 'input_stream: "in"\nnode {\n  bogus_field: 1\n}\n')
    code, lines = validate_paths([path])
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:3: Error parsing text-format")
    assert "bogus_field" in lines[0]


def test_missing_file_and_several_paths(tmp_path: Path) -> None:
    good = _write(tmp_path, "ok.pbtxt", 'input_stream: "in"\n')
    missing = str(tmp_path / "nope.pbtxt")
    code, lines = validate_paths([good, missing])
    assert code == 1
    assert lines == [f"{missing}:0: Graph file does not exist"]


def test_multi_line_messages_become_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "tags.pbtxt", 'input_stream: "in"\nnode { calculator: '
                  '"PassThroughCalculator" input_stream: "A:B:C:in" output_stream: "out" }\n')
    code, lines = validate_paths([path])
    assert code == 1
    assert all("\n" not in line for line in lines)
    assert any("Unable to initialize TagMaps" in line and "TAG:index:name is invalid" in line
               for line in lines)


def _unknown_calculator_lines(path: Path) -> list[str]:
    parsed = read_graph_file(path)
    known = set(registry.known_names())
    return [
        f"{path}:{fields['calculator'][0]}: ValidatedGraphConfig Initialization failed. No "
        f'registered object with name: {node.calculator}; Unable to find Calculator '
        f'"{node.calculator}"{did_you_mean(node.calculator, known) or _LISTED}'
        for node, fields in zip(parsed.config.node, parsed.field_lines)
        if node.calculator not in known
    ]


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name for p in CORPUS_FILES])
def test_corpus_validates_or_names_exactly_its_unknown_calculators(path: Path) -> None:
    expected = _unknown_calculator_lines(path)
    code, lines = validate_paths([str(path)])
    # A graph whose calculators all exist is valid; otherwise the only errors are its unknown
    # calculators, each at its calculator field's line (no follow-up wiring errors).
    assert lines == expected
    assert code == (1 if expected else 0)


def test_corpus_covers_llm_and_negative_graphs() -> None:
    names = {p.name for p in CORPUS_FILES}
    assert "src__test__llm__visual_language_model__vlm_cb_regular.pbtxt" in names
    code, lines = validate_paths([str(CORPUS / "src__test__llm__lm_cb_regular.pbtxt")])
    assert (code, lines) == (0, [])
    negative = CORPUS / "src__test__mediapipe__graphdummynonexistentcalculator.pbtxt"
    code, lines = validate_paths([str(negative)])
    assert code == 1
    assert lines == [
        f"{negative}:4: ValidatedGraphConfig Initialization failed. No registered object with "
        "name: OpenVINOModelServerSessionCalculatorWRONGNAME; Unable to find Calculator "
        '"OpenVINOModelServerSessionCalculatorWRONGNAME" Did you mean '
        '"OpenVINOModelServerSessionCalculator"?'
    ]


# --------------------------------------------------------------------------- to_dot


def _edges(dot: str) -> list[tuple[str, str, str, bool]]:
    result = []
    pattern = r'^\s*"?([^"\s]+)"? -> "?([^"\s]+)"? \[label="([^"]*)"(, style=dashed)?\];'
    for match in re.finditer(pattern, dot, re.MULTILINE):
        result.append((match.group(1), match.group(2), match.group(3), bool(match.group(4))))
    return result


def test_dot_of_the_ovms_vlm_graph() -> None:
    text = (CORPUS / "src__test__llm__visual_language_model__vlm_cb_regular.pbtxt").read_text()
    dot = to_dot(text, name="vlm_cb")
    assert dot.startswith('digraph "vlm_cb" {')
    assert dot.rstrip().endswith("}")
    assert 'node0 [label="llmNode1\\nHttpLLMCalculator"];' in dot
    assert '"input:input" [shape=plaintext, label="input"];' in dot
    assert '"output:output" [shape=plaintext, label="output"];' in dot
    assert set(_edges(dot)) == {
        ("input:input", "node0", "input", False),
        ("node0", "node0", "loopback", True),  # the LOOPBACK back edge, dashed
        ("node0", "output:output", "output", False),
    }


def test_dot_of_a_chain_with_fan_out_and_unnamed_nodes() -> None:
    text = """
    input_stream: "in"
    output_stream: "out"
    output_stream: "copy"
    node { calculator: "PassThroughCalculator" input_stream: "in" output_stream: "mid" }
    node { name: "second" calculator: "PassThroughCalculator" input_stream: "mid"
           output_stream: "out" }
    node { calculator: "PassThroughCalculator" input_stream: "in" output_stream: "copy" }
    """
    dot = to_dot(text)
    assert dot.startswith('digraph "graph" {')
    assert 'node0 [label="PassThroughCalculator_1\\nPassThroughCalculator"];' in dot
    assert 'node1 [label="second\\nPassThroughCalculator"];' in dot
    assert set(_edges(dot)) == {
        ("input:in", "node0", "in", False),
        ("node0", "node1", "mid", False),
        ("input:in", "node2", "in", False),
        ("node1", "output:out", "out", False),
        ("node2", "output:copy", "copy", False),
    }


def test_dot_node_named_like_its_calculator_has_one_line_label() -> None:
    dot = to_dot('node { calculator: "Solo" output_stream: "o" }')
    assert 'node0 [label="Solo"];' in dot


def test_dot_marks_streams_without_producer_and_escapes_quotes() -> None:
    text = 'node { name: "say \\"hi\\"" calculator: "X" input_stream: "ghost" output_stream: "o" }'
    dot = to_dot(text, name='my "graph"')
    assert dot.startswith('digraph "my \\"graph\\"" {')
    assert 'label="say \\"hi\\"\\nX"' in dot
    assert '"missing:ghost" [shape=plaintext, fontcolor=red, label="ghost (no producer)"];' in dot
    assert ("missing:ghost", "node0", "ghost", False) in _edges(dot)


def test_dot_of_every_corpus_graph_is_balanced() -> None:
    for path in CORPUS_FILES:
        dot = to_dot(path.read_text(), name=path.stem)
        assert dot.count("{") == dot.count("}"), path.name
        parsed = read_graph_file(path)
        assert dot.count(" -> ") >= sum(len(n.input_stream) for n in parsed.config.node)
