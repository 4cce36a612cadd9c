"""Calculator plugins: a separately installed distribution registers through entry points.

The example distribution in ``tests/plugins/ovgraph_example_plugin`` is built and installed with
pip (non-editable, no dependencies, no build isolation) into a temporary ``--target`` directory
that is put on ``sys.path`` for the test and removed afterwards, so the project's venv is never
modified.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovgraph.errors import CalculatorNotFoundError
from ovgraph.framework import registry
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import validate
from ovgraph.testing import run_graph
from tests.framework._plugin_install import install_example_plugin

PLUGIN_MODULE = "ovgraph_example_plugin.upper_case"

UPPER_GRAPH = """
input_stream: "TEXT:in"
output_stream: "TEXT:out"
node {
  calculator: "UpperCaseCalculator"
  input_stream: "TEXT:in"
  output_stream: "TEXT:out"
}
"""

PASS_GRAPH = """
input_stream: "in"
output_stream: "out"
node { calculator: "PassThroughCalculator" input_stream: "in" output_stream: "out" }
"""

BROKEN_GRAPH = """
input_stream: "in"
output_stream: "out"
node { calculator: "BrokenCalculator" input_stream: "in" output_stream: "out" }
"""


def _forget_plugin_modules() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in ("ovgraph_example_plugin",
                                                                "broken_plugin_mod")]:
        del sys.modules[name]


def _write_broken_plugin(target: Path) -> None:
    """Install (by hand) a distribution whose calculator module fails to import."""
    (target / "broken_plugin_mod.py").write_text(
        'raise ImportError("libfoo.so: cannot open shared object file")\n'
    )
    dist_info = target / "broken_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[ovgraph.calculators]\nBrokenCalculator = broken_plugin_mod:BrokenCalculator\n"
    )


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Build and install the example plugin into a private directory on sys.path."""
    target = install_example_plugin(tmp_path_factory.mktemp("plugin"))
    _write_broken_plugin(target)
    sys.path.insert(0, str(target))
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        _forget_plugin_modules()
        registry.unregister("UpperCaseCalculator")
        registry.refresh()


@pytest.fixture
def fresh_registry(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with the plugin installed but never imported."""
    monkeypatch.delenv("OVGRAPH_PLUGINS", raising=False)
    _forget_plugin_modules()
    registry.unregister("UpperCaseCalculator")
    registry.refresh()
    yield
    _forget_plugin_modules()
    registry.unregister("UpperCaseCalculator")
    registry.refresh()


@pytest.mark.usefixtures("fresh_registry")
def test_installed_plugin_runs_and_is_imported_lazily() -> None:
    assert "UpperCaseCalculator" in registry.known_names()
    # Knowing the name (and validating graphs without it) imports nothing.
    assert validate(parse_graph_config(PASS_GRAPH)) == []
    assert PLUGIN_MODULE not in sys.modules
    out = run_graph(UPPER_GRAPH, [("in", 0, "hello"), ("in", 1, "Graph")])
    assert out == {"out": [(0, "HELLO"), (1, "GRAPH")]}
    assert PLUGIN_MODULE in sys.modules
    assert registry.lookup("UpperCaseCalculator").__module__ == PLUGIN_MODULE


@pytest.mark.usefixtures("fresh_registry")
def test_plugin_docstring_shows_a_node() -> None:
    cls = registry.lookup("UpperCaseCalculator")
    assert 'calculator: "UpperCaseCalculator"' in cls.__doc__
    assert "node {" in cls.__doc__


@pytest.mark.parametrize(
    "allow",
    [
        "ovgraph-example-plugin",  # distribution name as published
        "ovgraph_example_plugin",  # same name, not normalised
        "UpperCaseCalculator",  # entry-point name
        "other-plugin, ovgraph-example-plugin",  # list with spaces
    ],
)
@pytest.mark.usefixtures("fresh_registry")
def test_allow_list_admits_the_plugin(allow: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVGRAPH_PLUGINS", allow)
    registry.refresh()
    assert "UpperCaseCalculator" in registry.known_names()
    assert run_graph(UPPER_GRAPH, [("in", 0, "a")]) == {"out": [(0, "A")]}


@pytest.mark.usefixtures("fresh_registry")
def test_allow_list_filters_other_plugins_but_keeps_built_ins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OVGRAPH_PLUGINS", "some-other-plugin")
    registry.refresh()
    names = registry.known_names()
    assert "UpperCaseCalculator" not in names
    assert "BrokenCalculator" not in names
    assert "PassThroughCalculator" in names  # built-ins always load
    with pytest.raises(CalculatorNotFoundError, match='Unable to find Calculator "UpperCase'):
        run_graph(UPPER_GRAPH, [("in", 0, "a")])
    assert PLUGIN_MODULE not in sys.modules
    assert run_graph(PASS_GRAPH, [("in", 0, "a")]) == {"out": [(0, "a")]}


@pytest.mark.usefixtures("fresh_registry")
def test_plugin_import_failure_is_reported_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(CalculatorNotFoundError) as info:
        run_graph(BROKEN_GRAPH, [("in", 0, "a")])
    message = str(info.value)
    assert 'Unable to find Calculator "BrokenCalculator"' in message
    assert "failed to import" in message
    assert "ImportError: libfoo.so: cannot open shared object file" in message
    assert any("BrokenCalculator" in r.getMessage() for r in caplog.records)
    # Other graphs of the same process still load and run, plugin ones included.
    assert run_graph(PASS_GRAPH, [("in", 0, "a")]) == {"out": [(0, "a")]}
    assert run_graph(UPPER_GRAPH, [("in", 0, "b")]) == {"out": [(0, "B")]}
    errors = validate(parse_graph_config(BROKEN_GRAPH, path="broken.pbtxt"))
    assert len(errors) == 1 and isinstance(errors[0], CalculatorNotFoundError)


def test_public_api_exports_what_plugins_use() -> None:
    import calculators.llm.common as common
    import calculators.llm.packets as packets
    import ovgraph.api as api

    # httpx's rule: a sorted __all__, every name defined.
    assert api.__all__ == sorted(api.__all__, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(api, name) for name in api.__all__)
    assert {"Calculator", "CalculatorContext", "Input", "Output", "SidePacket",
            "register_calculator", "RequestError", "StopProcessing"} <= set(api.__all__)
    assert api.Calculator.__module__ == "ovgraph.framework.calculator"
    # The LLM packet types live in the stable module; the internal one re-exports them.
    for name in ("RequestContext", "GenerationInput", "TokenChunk", "TextChunk"):
        assert getattr(common, name) is getattr(packets, name)
        assert getattr(packets, name).__module__ == "calculators.llm.packets"
    assert "import openvino_genai" not in Path(packets.__file__).read_text()
