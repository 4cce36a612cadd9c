"""``ovgraph validate`` / ``ovgraph draw`` back ends: validate_paths and to_dot."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from ovgraph.framework import registry
from ovgraph.framework.calculator import Calculator, Input, Output, SidePacket
from ovgraph.framework.textformat import read_graph_file
from ovgraph.framework.validation import did_you_mean
from ovgraph.graph_tools import (
    describe_calculators,
    draw_command,
    expand_command,
    to_dot,
    validate_command,
    validate_paths,
)

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "testdata" / "ovms-graphs"
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
        "PassThroughCalculator does not have a corresponding output stream. "
        "(known streams: a, b, in)",
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


def _attrs(dot: str) -> list[tuple[str, str, dict[str, str]]]:
    """Every edge as ``(source, target, attributes)``."""
    result = []
    for match in re.finditer(r'^\s*"([^"]+)" -> "([^"]+)" \[(.*)\];$', dot, re.MULTILINE):
        attrs = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\w+)', match.group(3)))
        result.append((match.group(1), match.group(2),
                       {k: v.strip('"') for k, v in attrs.items()}))
    return result


def _edges(dot: str) -> list[tuple[str, str, str, bool]]:
    """Stream edges as ``(source, target, label, dashed)`` (side packets left out)."""
    return [(a, b, attrs["label"], attrs.get("style") == "dashed")
            for a, b, attrs in _attrs(dot) if attrs.get("style") != "dotted"]


def test_dot_of_the_ovms_vlm_graph() -> None:
    text = (CORPUS / "src__test__llm__visual_language_model__vlm_cb_regular.pbtxt").read_text()
    dot = to_dot(text, name="vlm_cb")
    assert dot.startswith('digraph "vlm_cb" {')
    assert dot.rstrip().endswith("}")
    assert 'node0 [label="llmNode1\\nHttpLLMCalculator\\nSyncSetInputStreamHandler"];' in dot
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


def test_dot_shows_tags_side_packets_and_executors() -> None:
    text = (CORPUS / "src__test__llm__visual_language_model__vlm_cb_regular.pbtxt").read_text()
    edges = {(a, b, attrs.get("label")): attrs for a, b, attrs in _attrs(to_dot(text))}
    loop = edges[("node0", "node0", "loopback")]
    assert (loop["taillabel"], loop["headlabel"], loop["style"]) == (
        "LOOPBACK", "LOOPBACK", "dashed")
    side = edges[("side:llm", "node0", "llm")]  # the server's side packet, given at run start
    assert (side["headlabel"], side["style"]) == ("LLM_NODE_RESOURCES", "dotted")
    dot = to_dot("""
    executor { name: "heavy" type: "ThreadPoolExecutor" }
    input_stream: "in"
    input_side_packet: "conf"
    output_stream: "out"
    node { name: "a" calculator: "PassThroughCalculator" input_stream: "in"
           output_stream: "mid" input_side_packet: "conf" output_side_packet: "made" }
    node { name: "b" calculator: "PassThroughCalculator" input_stream: "mid"
           output_stream: "out" executor: "heavy" input_side_packet: "made" }
    """)
    assert '"side:conf" [shape=note, label="conf"];' in dot
    assert ("side:conf", "node0", "conf") in {(a, b, x["label"]) for a, b, x in _attrs(dot)}
    assert ("node0", "node1", "made") in {(a, b, x["label"]) for a, b, x in _attrs(dot)
                                          if x.get("style") == "dotted"}
    assert 'subgraph "cluster_executor_heavy" {' in dot
    assert 'label="executor: heavy"' in dot
    assert "    node1;" in dot


def test_dot_expands_subgraphs_on_request() -> None:
    text = (REPO / "graphs" / "qwen2vl-tiny" / "graph.pbtxt").read_text()
    assert "VLMGenerationCalculator" not in to_dot(text)
    dot = to_dot(text, expand=True)
    labels = re.findall(r'^  node\d+ \[label="([^"]+)"\];', dot, re.MULTILINE)
    assert [label.split("\\n")[1] for label in labels] == [
        "OpenAIRequestCalculator", "ImageDecodeCalculator", "ChatTemplateCalculator",
        "VLMGenerationCalculator", "DetokenizerCalculator", "OpenAIResponseCalculator",
    ]
    edges = {(a, b, x["label"], x.get("headlabel")) for a, b, x in _attrs(dot)}
    assert ("node4", "node5", "llmexecutor__text", "TEXT") in edges
    assert ("node3", "node3", "loopback", "LOOPBACK") in edges


def test_draw_command_validates_first(tmp_path: Path) -> None:
    bad = _write(tmp_path, "bad.pbtxt", 'input_stream: "in"\nnode {\n'
                 '  calculator: "PassThroughCalculator"\n  input_stream: "nowhere"\n'
                 '  output_stream: "out"\n}\n')
    out, err = io.StringIO(), io.StringIO()
    assert draw_command(bad, out, err) == 1
    assert out.getvalue() == ""
    assert err.getvalue().startswith(f'{bad}:4: ; Input Stream "nowhere"')
    syntax = _write(tmp_path, "syntax.pbtxt", "node {\n  calculator: \n")
    out, err = io.StringIO(), io.StringIO()
    assert draw_command(syntax, out, err) == 1
    assert err.getvalue().startswith(f"{syntax}:")
    assert "Traceback" not in err.getvalue()
    good = str(REPO / "graphs" / "qwen2vl-tiny" / "graph.pbtxt")
    out, err = io.StringIO(), io.StringIO()
    assert draw_command(good, out, err, expand=True) == 0
    assert out.getvalue().startswith('digraph "qwen2vl-tiny" {')
    assert "DetokenizerCalculator" in out.getvalue()


def test_validate_command_prints_ok(tmp_path: Path) -> None:
    good = str(REPO / "graphs" / "qwen2vl-tiny" / "graph.pbtxt")
    bad = _write(tmp_path, "bad.pbtxt", 'node { calculator: "Nope" }\n')
    out = io.StringIO()
    assert validate_command([good], out) == 0
    assert out.getvalue() == f"{good}: OK\n"
    out = io.StringIO()
    assert validate_command([good, bad], out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{good}: OK"
    assert lines[1].startswith(f"{bad}:1: ")


def test_expand_command_writes_a_graph_that_validates(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert expand_command(str(REPO / "graphs" / "qwen2vl-tiny" / "graph.pbtxt"), out, err) == 0
    assert err.getvalue() == ""
    expanded = _write(tmp_path, "graph.pbtxt", out.getvalue())
    assert validate_paths([expanded]) == (0, [])
    parsed = read_graph_file(expanded)
    assert [n.name for n in parsed.config.node] == [
        f"llmexecutor__{n}" for n in
        ("request", "images", "template", "generation", "detokenizer", "response")
    ]


def test_describe_calculators_lists_ports_and_packages() -> None:
    class Documented(Calculator):
        """Turns TEXT into a COUNT."""

        TEXT = Input("TEXT", str)
        COUNT = Output("COUNT", int)
        SEP = SidePacket("SEP", str, optional=True)

    with registry.override("DocumentedCalculator", Documented):
        lines = describe_calculators()
    text = "\n".join(lines)
    start = lines.index("DocumentedCalculator  [registered in-process]")
    assert lines[start + 1: start + 5] == [
        "  Turns TEXT into a COUNT.",
        "  in       TEXT: str",
        "  out      COUNT: int",
        "  side in  SEP: str (optional)",
    ]
    assert "DetokenizerCalculator  [ovgraph 0.1.0]" in lines
    assert "  in       TOKENS: TokenChunk" in lines
    assert "HttpLLMCalculator  [ovgraph 0.1.0]  subgraph" in lines
    assert "  options  mediapipe.LLMCalculatorOptions" in text
