"""A plugin calculator added to the LLM pipeline and served, as the README's plugin section does.

The example distribution (``tests/plugins/ovgraph_example_plugin``) is installed into a private
directory; ``expand_path`` (``ovgraph expand``) writes the six-node graph of the shapes model;
``ShoutCalculator`` goes between the detokenizer and the response encoder; a real
``ovgraph serve`` with the plugin on its ``PYTHONPATH`` answers the README's request through the
``openai`` client, upper-cased, unary and streamed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from ovgraph.graph_tools import expand_path, validate_paths
from ovgraph.testing import ServeProcess
from tests.framework._plugin_install import install_example_plugin

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "graphs" / "qwen2vl-shapes"
RED_CIRCLE = (  # the README's picture: a red circle, 64x64 PNG
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAIAAAAlC+aJAAAA10lEQVR42u2Zyw7DIAwEw4"
    "r//2V6b1opxC8Q42vC7g7xwZHbGOPauXRtXgAAAAAAAAAAAAAnA/QQ1db+PvIefntS7vs7TiQ9L/rPI2YM1aR3OesDYE"
    "5gVFBxerOO6tPb1LREeoOmVkn/VlkLpX+lf9osFH398y5MozsB5PTPpBctBAAAAAAAwNPKXAc+9qKFNgPI6aIZlwNbKP"
    "ojTOorwSNUWWlOQZpK9nNXU4mro44KvV0UVHt/dv7u2QNTf/1rbWi+Mu26I6uYW5lGAQAAAAAAAACAkwE+oQw3h6OEw4"
    "sAAAAASUVORK5CYII="
)
SHOUT_NODE = """
node {
  name: "shout"
  calculator: "ShoutCalculator"
  input_stream: "TEXT:llmexecutor__text"
  output_stream: "TEXT:shouted"
}
"""

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not (MODEL_DIR / "openvino_language_model.xml").exists(),
                       reason="shapes model not built"),
]


def shouting_graph(expanded: str, models_path: Path) -> str:
    """The README's edit: the response encoder reads the shouted text instead."""
    text, count = re.subn(
        r'(calculator: "OpenAIResponseCalculator"\n  input_stream: )"TEXT:llmexecutor__text"',
        r'\1"TEXT:shouted"', expanded,
    )
    assert count == 1
    return text.replace('models_path: "./"', f'models_path: "{models_path}"') + SHOUT_NODE


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_example_plugin(tmp_path_factory.mktemp("plugin"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, plugin_site: Path) -> Iterator[ServeProcess]:
    code, expanded = expand_path(str(MODEL_DIR / "graph.pbtxt"))
    assert code == 0, expanded
    folder = tmp_path_factory.mktemp("shout_graph")
    graph = folder / "graph.pbtxt"
    graph.write_text(shouting_graph(expanded, MODEL_DIR))
    proc = ServeProcess(["--model_path", str(folder), "--model_name", "shapes"],
                        env={"PYTHONPATH": str(plugin_site)}, cwd=REPO, log_dir=folder)
    try:
        proc.wait_ready(180)
        yield proc
    finally:
        proc.stop()


def _messages() -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "text", "text": "Describe the picture."},
        {"type": "image_url", "image_url": {"url": RED_CIRCLE}},
    ]}]


def test_expanded_graph_validates_as_written() -> None:
    code, expanded = expand_path(str(MODEL_DIR / "graph.pbtxt"))
    assert code == 0
    names = re.findall(r'^  calculator: "(\w+)"', expanded, re.MULTILINE)
    assert names == [
        "OpenAIRequestCalculator", "ImageDecodeCalculator", "ChatTemplateCalculator",
        "VLMGenerationCalculator", "DetokenizerCalculator", "OpenAIResponseCalculator",
    ]
    assert expanded.count("[type.googleapis.com/mediapipe.LLMCalculatorOptions]") == 6
    assert "# OVMS_GRAPH_QUEUE_MAX_SIZE: AUTO" in expanded


def test_plugin_graph_validates_with_the_plugin(tmp_path: Path, plugin_site: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ovgraph.framework import registry

    _, expanded = expand_path(str(MODEL_DIR / "graph.pbtxt"))
    graph = tmp_path / "graph.pbtxt"
    graph.write_text(shouting_graph(expanded, MODEL_DIR))
    monkeypatch.syspath_prepend(str(plugin_site))
    registry.refresh()
    try:
        assert validate_paths([str(graph)]) == (0, [])
    finally:
        monkeypatch.undo()
        registry.unregister("ShoutCalculator")
        registry.refresh()


def test_served_plugin_changes_unary_and_streamed_answers(server: ServeProcess) -> None:
    client = openai.OpenAI(base_url=server.url + "/v3", api_key="unused")
    unary = client.chat.completions.create(
        model="shapes", messages=_messages(), max_completion_tokens=20, temperature=0,
    )
    assert unary.choices[0].message.content == "A RED CIRCLE."
    stream = client.chat.completions.create(
        model="shapes", messages=_messages(), max_completion_tokens=20, temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 1  # really streamed, chunk by chunk
    assert "".join(pieces) == "A RED CIRCLE."
