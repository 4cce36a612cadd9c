"""The README's "Writing a plugin" section, followed to the letter by a new author.

Its code blocks (``shout/pyproject.toml``, ``shout/shout_plugin.py``) are copied out of
README.md into a fresh package; every step then runs as the README says, through the
``ovgraph`` command line: install, ``ovgraph calculators``, ``ovgraph expand``, the edit of step
4, ``ovgraph validate``, ``ovgraph draw``, ``ovgraph serve`` and the request of "Set-up".
``run_calculator`` is called as the section's last paragraph shows. If the README drifts from
what ovgraph does, this test fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ovgraph.testing import ServeProcess

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
MODEL_DIR = REPO / "graphs" / "qwen2vl-shapes"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not (MODEL_DIR / "openvino_language_model.xml").exists(),
                       reason="shapes model not built"),
]


def _section() -> str:
    start = README.index("### Writing a plugin")
    return README[start:README.index("\n## ", start)]


def _blocks(language: str) -> list[str]:
    """The section's fenced blocks of ``language``, list indentation removed."""
    found = re.findall(rf"\n( *)```{language}\n(.*?)\n\1```", _section(), re.DOTALL)
    return ["\n".join(line[len(indent):] for line in body.split("\n")) + "\n"
            for indent, body in found]


def _setup_request() -> dict:
    """The JSON body of the Set-up section's curl command."""
    return json.loads(re.search(r"-d '(\{.*?\})'\n", README, re.DOTALL).group(1))


def _ovgraph(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "ovgraph.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def test_the_readme_plugin_section_from_nothing_to_a_served_node(tmp_path: Path) -> None:
    # 1. The package, exactly as written in the README.
    (toml,) = _blocks("toml")
    (python,) = _blocks("python")
    package = tmp_path / "shout"
    package.mkdir()
    (package / "pyproject.toml").write_text(toml)
    (package / "shout_plugin.py").write_text(python)

    # 2. Installed beside ovgraph (into a private target, so the venv stays as it is).
    site = tmp_path / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
               str(site)]
    from tests.framework._plugin_install import _can_build_wheels_here

    if _can_build_wheels_here():
        command += ["--no-build-isolation", "--no-index"]
    done = subprocess.run([*command, str(package)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    listed = _ovgraph(site, "calculators", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (line,) = [line for line in listed.stdout.splitlines() if "ShoutCalculator" in line]
    assert "shout-plugin" in line
    block = listed.stdout[listed.stdout.index("ShoutCalculator"):]
    assert "TEXT: TextChunk" in block.split("\n\n")[0]

    # 3. The LLM graph written out node by node.
    expanded = _ovgraph(site, "expand", str(MODEL_DIR / "graph.pbtxt"), cwd=tmp_path)
    assert expanded.returncode == 0, expanded.stderr
    for node in ("request", "images", "template", "generation", "detokenizer", "response"):
        assert f'name: "llmexecutor__{node}"' in expanded.stdout

    # 4. The edit: models_path, the response node's TEXT input, the docstring's node.
    graph = expanded.stdout.replace('models_path: "./"', f'models_path: "{MODEL_DIR}"')
    response = graph.index('calculator: "OpenAIResponseCalculator"')
    end = graph.index("\n}", response)
    node = graph[response:end]
    assert node.count('input_stream: "TEXT:llmexecutor__text"') == 1
    graph = (graph[:response]
             + node.replace('"TEXT:llmexecutor__text"', '"TEXT:shouted"') + graph[end:])
    docstring_node = re.search(r"\n( *)(node \{.*?\n\1\})", python, re.DOTALL)
    assert docstring_node is not None
    graph += "\n" + docstring_node.group(2).replace("\n" + docstring_node.group(1), "\n") + "\n"
    (tmp_path / "mygraph").mkdir()
    (tmp_path / "mygraph" / "graph.pbtxt").write_text(graph)

    # 5. Validate (the README's output, word for word) and draw.
    checked = _ovgraph(site, "validate", "mygraph/graph.pbtxt", cwd=tmp_path)
    assert (checked.returncode, checked.stdout.strip()) == (0, "mygraph/graph.pbtxt: OK"), \
        checked.stderr
    drawn = _ovgraph(site, "draw", "mygraph/graph.pbtxt", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert "ShoutCalculator" in drawn.stdout

    # 6. Served; the Set-up request answers upper-cased, unary and streamed.
    server = ServeProcess(["--model_path", "mygraph", "--model_name", "shapes"],
                          {"PYTHONPATH": str(site)}, cwd=tmp_path, log_dir=tmp_path)
    try:
        server.wait_ready(180)
        import openai

        body = _setup_request()
        body["model"] = "shapes"
        client = openai.OpenAI(base_url=server.url + "/v3", api_key="unused", max_retries=0)
        unary = client.chat.completions.create(**body)
        assert unary.choices[0].message.content == "A RED CIRCLE."
        streamed = client.chat.completions.create(**body, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert text == "A RED CIRCLE."
    finally:
        server.stop()


def test_the_readme_run_calculator_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The section's in-process test call, with the README's calculator."""
    from calculators.llm.packets import TextChunk
    from ovgraph.framework import registry
    from ovgraph.testing import run_calculator

    (python,) = _blocks("python")
    (tmp_path / "shout_plugin.py").write_text(python)
    monkeypatch.syspath_prepend(str(tmp_path))
    import shout_plugin  # type: ignore[import-not-found]

    call = re.search(r"`ovgraph\.testing\.(run_calculator\(.*?\))`", _section(), re.DOTALL)
    assert call is not None
    chunk = TextChunk(context=None, text="a red circle.", finished=True)  # type: ignore[arg-type]
    with registry.override("ShoutCalculator", shout_plugin.ShoutCalculator):
        outputs = eval(call.group(1).replace("\n", " "),  # the README's call, as written
                       {"run_calculator": run_calculator, "chunk": chunk})
    assert [(t, c.text) for t, c in outputs["out"]] == [(0, "A RED CIRCLE.")]
