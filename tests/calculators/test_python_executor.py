"""Python nodes: pyovms Tensor, PythonExecutorCalculator, PyTensorOvTensorConverterCalculator.

Handler scripts are written to tmp_path by each test. Handler modules are cached by file stem for
the whole process (as in OVMS), so tests give their handlers unique stems unless a real OVMS
graph fixes the name.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from calculators.python_executor import Tensor
from calculators.python_executor.handler import install_pyovms
from calculators.python_executor.python_executor_calculator import EXECUTION_FAILED
from calculators.python_executor.tensor import as_tensor, decode_bytes, encode_bytes, to_numpy
from ovgraph.errors import CalculatorError, ContractError, RequestError
from ovgraph.frontends.errors import describe
from ovgraph.serving import kserve
from ovgraph.serving.graph_definition import AVAILABLE, GraphDefinition
from ovgraph.serving.kserve import tensor_from_values
from ovgraph.testing import run_calculator, run_graph, serve_kserve

GRAPHS = Path(__file__).resolve().parents[1] / "testdata" / "ovms-graphs"
TWO_OUTPUTS = GRAPHS / "src__test__mediapipe__python__two_python_outputs_graph.pbtxt"
SERVABLE_STREAM = (
    GRAPHS / "demos__python_demos__llm_text_generation__servable_stream__graph.pbtxt@v2024.1.pbtxt"
)


# ---------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def write_handler(directory: Path, stem: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.py"
    path.write_text(textwrap.dedent(body))
    return path


def load(text: str, base: Path) -> GraphDefinition:
    definition = GraphDefinition("python", text=text, base_path=base)
    definition.load()
    return definition


def load_ok(text: str, base: Path) -> GraphDefinition:
    definition = load(text, base)
    assert definition.state == AVAILABLE, definition.error
    return definition


def run(definition: GraphDefinition, inputs, **kwargs):
    return run_graph(definition.validated, inputs, resources=definition.resources, **kwargs)


def node(name: str, handler: str, inputs: list[str], outputs: list[str], extra: str = "") -> str:
    streams = "".join(f'  input_stream: "{s}"\n' for s in inputs)
    streams += "".join(f'  output_stream: "{s}"\n' for s in outputs)
    return (
        "node {\n"
        f'  name: "{name}"\n'
        '  calculator: "PythonExecutorCalculator"\n'
        '  input_side_packet: "PYTHON_NODE_RESOURCES:py"\n'
        f"{streams}{extra}"
        "  node_options: {\n"
        "    [type.googleapis.com/mediapipe.PythonExecutorCalculatorOptions]: {\n"
        f'      handler_path: "{handler}"\n'
        "    }\n"
        "  }\n"
        "}\n"
    )


def simple_graph(handler: str, name: str = "pyNode") -> str:
    return 'input_stream: "in"\noutput_stream: "out"\n' + node(
        name, handler, ["INPUT:in"], ["OUTPUT:out"]
    )


def int_tensor(name: str, values: list[int]) -> Tensor:
    return Tensor(name, np.array(values, dtype=np.int32))


ECHO = """
from pyovms import Tensor

class OvmsPythonModel:
    def execute(self, inputs):
        return [Tensor("out", inputs[0].data)]
"""


# ---------------------------------------------------------------------------- Tensor


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        (np.bool_, "BOOL"), (np.uint8, "UINT8"), (np.uint16, "UINT16"), (np.uint32, "UINT32"),
        (np.uint64, "UINT64"), (np.int8, "INT8"), (np.int16, "INT16"), (np.int32, "INT32"),
        (np.int64, "INT64"), (np.longlong, "INT64"), (np.float16, "FP16"), (np.float32, "FP32"),
        (np.float64, "FP64"),
    ],
)
def test_tensor_datatype_follows_buffer_format(dtype, datatype):
    array = np.arange(6).astype(dtype).reshape(2, 3)
    tensor = Tensor("t", array)
    assert tensor.datatype == datatype
    assert tensor.shape == (2, 3)
    assert tensor.size == array.nbytes
    assert isinstance(tensor.data, memoryview)
    back = np.asarray(tensor)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_tensor_over_bytes_is_uint8_and_keeps_the_buffer():
    tensor = Tensor("text", b"hello")
    assert (tensor.name, tensor.datatype, tensor.shape, tensor.size) == ("text", "UINT8", (5,), 5)
    assert bytes(tensor) == b"hello"
    source = bytearray(b"abc")
    shared = Tensor("t", source)
    source[0] = ord("z")
    assert bytes(shared) == b"zbc"  # no copy


def test_tensor_unknown_format_keeps_format_as_datatype():
    tensor = Tensor("c", np.zeros(2, dtype=np.complex64))
    assert tensor.datatype == "Zf"


def test_tensor_explicit_shape_and_datatype_describe_without_reinterpreting():
    raw = np.array([1.5, 2.5], dtype=np.float32).tobytes()
    tensor = Tensor("t", raw, shape=(2, 1), datatype="FP32")
    assert tensor.datatype == "FP32"
    assert tensor.shape == (2, 1)
    assert tensor.data.format == "B"  # as in OVMS: the buffer is the user's
    np.testing.assert_array_equal(np.asarray(tensor), [[1.5], [2.5]])


def test_tensor_from_raw_uses_the_datatype_format():
    raw = np.array([[1, 2], [3, 4]], dtype=np.float16).tobytes()
    tensor = Tensor.from_raw("t", raw, [2, 2], "FP16")
    assert tensor.data.format == "e"
    assert tensor.data.shape == (2, 2)
    assert tensor.shape == (2, 2)
    with pytest.raises(ValueError, match="needs 8 bytes, got 6"):
        Tensor.from_raw("t", raw[:6], [2, 2], "FP16")


def test_tensor_from_raw_unknown_datatype_is_one_dimensional_bytes():
    raw = encode_bytes([b"ab", b"cde"])
    tensor = Tensor.from_raw("s", raw, [2], "BYTES")
    assert tensor.data.format == "B"
    assert tensor.data.shape == (len(raw),)
    assert tensor.shape == (2,)
    assert tensor.bytes_list() == [b"ab", b"cde"]


def test_bytes_encoding_is_length_prefixed():
    raw = encode_bytes([b"hi", b""])
    assert raw == b"\x02\x00\x00\x00hi\x00\x00\x00\x00"
    assert decode_bytes(raw) == [b"hi", b""]
    with pytest.raises(ValueError, match="length prefix"):
        decode_bytes(b"\x02\x00")
    with pytest.raises(ValueError, match="longer"):
        decode_bytes(b"\x05\x00\x00\x00ab")
    tensor = Tensor.from_bytes_list("s", ["x", b"yz"])
    assert (tensor.datatype, tensor.shape) == ("BYTES", (2,))
    assert list(to_numpy(tensor)) == [b"x", b"yz"]


def test_tensor_non_contiguous_input_is_copied_contiguous():
    array = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]
    tensor = Tensor("t", array)
    assert tensor.data.c_contiguous
    np.testing.assert_array_equal(np.asarray(tensor), array)


def test_tensor_rejects_objects_without_buffer():
    with pytest.raises(TypeError, match="buffer protocol"):
        Tensor("t", [1, 2, 3])


def test_tensor_from_another_tensor_shares_data():
    first = Tensor("a", np.array([1, 2], dtype=np.int64))
    second = Tensor("b", first)
    assert (second.name, second.datatype, second.shape) == ("b", "INT64", (2,))
    np.testing.assert_array_equal(np.asarray(second), [1, 2])


def test_as_tensor_converts_kserve_openvino_and_numpy_payloads():
    kserve = tensor_from_values("in", "INT16", [2], [7, -3])
    converted = as_tensor(kserve, "stream")
    assert (converted.name, converted.datatype, converted.shape) == ("in", "INT16", (2,))
    np.testing.assert_array_equal(np.asarray(converted), [7, -3])
    strings = as_tensor(tensor_from_values("s", "BYTES", [2], ["a", "bc"]), "stream")
    assert (strings.datatype, strings.bytes_list()) == ("BYTES", [b"a", b"bc"])
    ov_tensor = as_tensor(ov.Tensor(np.ones((1, 2), dtype=np.float32)), "x")
    assert (ov_tensor.name, ov_tensor.datatype, ov_tensor.shape) == ("x", "FP32", (1, 2))
    assert as_tensor(np.array(["q"]), "n").bytes_list() == [b"q"]
    with pytest.raises(TypeError, match="cannot use a dict"):
        as_tensor({}, "x")


def test_pyovms_module_is_installed():
    install_pyovms()
    import pyovms

    assert pyovms.Tensor is Tensor
    assert sys.modules["pyovms"] is pyovms


# ---------------------------------------------------------------------------- real OVMS graph

SYMMETRIC_INCREMENT = """
import numpy as np
from pyovms import Tensor

class OvmsPythonModel:
    def initialize(self, kwargs):
        self.output_name = kwargs["output_names"][0]

    def execute(self, inputs):
        return [Tensor(self.output_name, np.asarray(inputs[0]) + 1)]
"""

GOOD_FINALIZE_REMOVE_FILE = """
import os
from pyovms import Tensor

class OvmsPythonModel:
    def initialize(self, kwargs):
        self.marker = os.path.join(kwargs["base_path"], "finalize_marker")
        self.output_name = kwargs["output_names"][0]

    def execute(self, inputs):
        return [Tensor(self.output_name, inputs[0])]

    def finalize(self):
        os.remove(self.marker)
"""

BAD_EXECUTE_WRONG_RETURN_VALUE = """
from pyovms import Tensor

class OvmsPythonModel:
    def execute(self, inputs):
        return Tensor("out", inputs[0])
"""


def two_outputs_graph(scripts: Path) -> str:
    text = TWO_OUTPUTS.read_text()
    return re.sub(
        r'handler_path: "/ovms/src/test/mediapipe/python/scripts/([a-z_]+\.py)"',
        lambda m: f'handler_path: "{scripts / m.group(1)}"', text,
    )


def write_two_outputs_scripts(scripts: Path) -> None:
    write_handler(scripts, "bad_execute_wrong_return_value", BAD_EXECUTE_WRONG_RETURN_VALUE)
    write_handler(scripts, "symmetric_increment", SYMMETRIC_INCREMENT)
    write_handler(scripts, "good_finalize_remove_file", GOOD_FINALIZE_REMOVE_FILE)
    (scripts / "finalize_marker").write_text("x")


def test_two_python_outputs_graph_wrong_return_value_fails_cleanly(tmp_path):
    scripts = tmp_path / "scripts"
    write_two_outputs_scripts(scripts)
    definition = load_ok(two_outputs_graph(scripts), tmp_path)
    with pytest.raises(CalculatorError) as info:
        run(definition, [("in", 0, int_tensor("in", [1, 2]))])
    assert info.value.node == "pythonNode1"
    assert str(info.value) == (
        'Calculator::Process() for node "pythonNode1" failed: '
        f"{EXECUTION_FAILED}: execute returned Tensor, expected a list or a generator"
    )


def test_two_python_outputs_graph_routes_by_tensor_name(tmp_path):
    scripts = tmp_path / "scripts"
    write_two_outputs_scripts(scripts)
    stem = unique("echo")
    write_handler(scripts, stem, ECHO)
    text = two_outputs_graph(scripts).replace(
        str(scripts / "bad_execute_wrong_return_value.py"), f"scripts/{stem}.py"
    )
    definition = load_ok(text, tmp_path)
    out = run(definition, [("in", 5, int_tensor("in", [1, 2, 3]))])
    assert [ts for ts, _ in out["out"]] == [5]
    assert [ts for ts, _ in out["out2"]] == [5]
    first, second = out["out"][0][1], out["out2"][0][1]
    assert isinstance(first, Tensor) and isinstance(second, Tensor)
    assert (second.name, second.datatype, second.shape) == ("out2", "INT32", (3,))
    np.testing.assert_array_equal(np.asarray(first), [1, 2, 3])
    np.testing.assert_array_equal(np.asarray(second), [2, 3, 4])

    # finalize runs once the definition's resources are released.
    marker = scripts / "finalize_marker"
    assert marker.exists()
    definition.unload()
    del out, first, second
    gc.collect()
    assert not marker.exists()


# ---------------------------------------------------------------------------- generators

STREAMER = """
from pyovms import Tensor

class OvmsPythonModel:
    def execute(self, inputs):
        words = bytes(inputs[0]).decode().split()
        for word in words:
            yield [Tensor("completion", word.encode())]
        yield [Tensor("end_signal", b"done"), Tensor("token_count", str(len(words)).encode())]
"""


def test_generator_streams_over_loopback_in_order(tmp_path):
    stem = unique("streamer")
    write_handler(tmp_path, stem, STREAMER)
    text = SERVABLE_STREAM.read_text().replace("/workspace/model.py", f"{stem}.py")
    definition = load_ok(text, tmp_path)
    out = run(definition, [
        ("pre_prompt", 10, Tensor("pre_prompt", b"one two three")),
        ("pre_prompt", 100, Tensor("pre_prompt", b"four five")),
    ])
    words = [(ts, bytes(t)) for ts, t in out["completion"]]
    assert words == [
        (10, b"one"), (11, b"two"), (12, b"three"), (100, b"four"), (101, b"five"),
    ]
    assert [(ts, bytes(t)) for ts, t in out["end_signal"]] == [(13, b"done"), (102, b"done")]
    assert [(ts, bytes(t)) for ts, t in out["token_count"]] == [(13, b"3"), (102, b"2")]


def test_generator_without_loopback_fails(tmp_path):
    stem = unique("yields")
    write_handler(tmp_path, stem, """
        from pyovms import Tensor

        class OvmsPythonModel:
            def execute(self, inputs):
                yield [Tensor("out", b"x")]
    """)
    definition = load_ok(simple_graph(f"{stem}.py"), tmp_path)
    with pytest.raises(CalculatorError, match=re.escape(
        f"{EXECUTION_FAILED}: Execute yielded, but LOOPBACK is not defined in the node"
    )):
        run(definition, [("in", 0, Tensor("in", b"a"))])


def test_new_data_while_generating_is_rejected(tmp_path):
    stem = unique("long_gen")
    write_handler(tmp_path, stem, """
        from pyovms import Tensor

        class OvmsPythonModel:
            def execute(self, inputs):
                for i in range(10):
                    yield [Tensor("out", bytes([i]))]
    """)
    # LOOPBACK fed from outside (no back edge): the second input arrives mid-stream.
    text = (
        'input_stream: "in"\ninput_stream: "lb_in"\noutput_stream: "out"\n'
        'output_stream: "lb_out"\n'
        + node("busy", f"{stem}.py", ["INPUT:in", "LOOPBACK:lb_in"],
               ["OUTPUT:out", "LOOPBACK:lb_out"])
    )
    definition = load_ok(text, tmp_path)
    with pytest.raises(CalculatorError) as info:
        run(definition, [("in", 0, Tensor("in", b"a")), ("in", 1, Tensor("in", b"b"))])
    cause = info.value.cause
    assert cause.message == (
        "Node is already processing data. Create new stream for another request."
    )
    assert cause.grpc_code == "RESOURCE_EXHAUSTED"


# ---------------------------------------------------------------------------- errors


def test_missing_handler_file_names_the_resolved_path(tmp_path):
    definition = load(simple_graph("missing/nowhere_handler.py"), tmp_path)
    assert definition.state != AVAILABLE
    resolved = (tmp_path / "missing" / "nowhere_handler.py").resolve()
    assert definition.error.startswith(f"Python node file does not exist: {resolved} ")
    assert 'handler_path "missing/nowhere_handler.py" of node "pyNode"' in definition.error


def test_missing_graph_file_names_the_resolved_path(tmp_path):
    definition = GraphDefinition("gone", graph_path=tmp_path / "models" / "graph.pbtxt")
    definition.load()
    assert definition.state != AVAILABLE
    assert definition.error == (
        f"Graph file {(tmp_path / 'models' / 'graph.pbtxt').resolve()} could not be read: "
        "No such file or directory"
    )


def test_handler_without_ovms_python_model_fails_load(tmp_path):
    stem = unique("no_class")
    write_handler(tmp_path, stem, "class Something:\n    pass\n")
    definition = load(simple_graph(f"{stem}.py"), tmp_path)
    assert definition.state != AVAILABLE
    assert "No OvmsPythonModel class found" in definition.error


def test_handler_without_execute_fails_load(tmp_path):
    stem = unique("no_execute")
    write_handler(tmp_path, stem, "class OvmsPythonModel:\n    def initialize(self, kw):\n"
                                  "        pass\n")
    definition = load(simple_graph(f"{stem}.py"), tmp_path)
    assert definition.state != AVAILABLE
    assert "does not implement execute method" in definition.error


def test_failing_initialize_or_import_fails_load(tmp_path):
    bad_init = unique("bad_init")
    write_handler(tmp_path, bad_init, """
        class OvmsPythonModel:
            def initialize(self, kwargs):
                raise RuntimeError("no model here")

            def execute(self, inputs):
                return []
    """)
    definition = load(simple_graph(f"{bad_init}.py"), tmp_path)
    assert definition.state != AVAILABLE
    assert "RuntimeError: no model here" in definition.error
    bad_import = unique("bad_import")
    write_handler(tmp_path, bad_import, "import module_that_does_not_exist_xyz\n")
    definition = load(simple_graph(f"{bad_import}.py"), tmp_path)
    assert definition.state != AVAILABLE
    assert "ModuleNotFoundError" in definition.error
    assert bad_import not in sys.modules


def test_unknown_output_name_fails_run(tmp_path):
    stem = unique("wrong_name")
    write_handler(tmp_path, stem, """
        from pyovms import Tensor

        class OvmsPythonModel:
            def execute(self, inputs):
                return [Tensor("not_an_output", b"x")]
    """)
    definition = load_ok(simple_graph(f"{stem}.py"), tmp_path)
    with pytest.raises(CalculatorError, match='tensor "not_an_output", which names no output'):
        run(definition, [("in", 0, Tensor("in", b"a"))])


def test_exception_inside_execute_gives_clean_message_and_logs_traceback(tmp_path, caplog):
    stem = unique("raises")
    write_handler(tmp_path, stem, """
        class OvmsPythonModel:
            def execute(self, inputs):
                return [1 / 0]
    """)
    definition = load_ok(simple_graph(f"{stem}.py"), tmp_path)
    caplog.set_level(logging.ERROR, logger="ovgraph.calculator")
    with pytest.raises(CalculatorError) as info:
        run(definition, [("in", 0, Tensor("in", b"a"))])
    assert str(info.value) == f'Calculator::Process() for node "pyNode" failed: {EXECUTION_FAILED}'
    assert info.value.__cause__.__cause__ is None  # the Python error is not chained along
    client = describe(info.value)
    assert (client.http_status, client.message) == (500, EXECUTION_FAILED)
    assert "ZeroDivisionError" in caplog.text
    assert "Traceback" in caplog.text


def test_run_without_resources_fails_open(tmp_path):
    stem = unique("echo")
    write_handler(tmp_path, stem, ECHO)
    definition = load_ok(simple_graph(f"{stem}.py"), tmp_path)
    with pytest.raises(CalculatorError, match="Could not find initialized Python node named"):
        run_graph(definition.validated, [("in", 0, Tensor("in", b"a"))])


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        (["INPUT:in", "LOOPBACK:lb"], ["OUTPUT:out"],
         "If LOOPBACK is used, it must be defined on both input and output of the node"),
        (["INPUT:in"], ["OUTPUT:out", "LOOPBACK:lb"],
         "If LOOPBACK is used, it must be defined on both input and output of the node"),
    ],
)
def test_loopback_on_one_side_is_rejected(tmp_path, inputs, outputs, message):
    text = 'input_stream: "in"\noutput_stream: "out"\n' + node("n", "x.py", inputs, outputs)
    definition = load(text, tmp_path)
    assert definition.state != AVAILABLE
    assert message in definition.error


def test_node_name_is_required_and_unique(tmp_path):
    text = simple_graph("x.py").replace('  name: "pyNode"\n', "")
    definition = load(text, tmp_path)
    assert "Python node name is missing" in definition.error
    text = 'input_stream: "in"\noutput_stream: "a"\noutput_stream: "b"\n' + node(
        "dup", "x.py", ["INPUT:in"], ["OUTPUT:a"]) + node("dup", "x.py", ["INPUT:in"], ["OUTPUT:b"])
    definition = load(text, tmp_path)
    assert 'Python node name "dup" already exists' in definition.error


# ---------------------------------------------------------------------------- initialize, modules

RECORDER = """
from pyovms import Tensor

INSTANCES = []

class OvmsPythonModel:
    def initialize(self, kwargs):
        self.kwargs = kwargs
        self.calls = 0
        INSTANCES.append(self)

    def execute(self, inputs):
        self.calls += 1
        names = ",".join(t.name for t in inputs)
        return [Tensor(self.kwargs["output_names"][0], names.encode())]
"""


def test_initialize_kwargs_and_relative_handler_path(tmp_path):
    stem = unique("recorder")
    write_handler(tmp_path / "handlers", stem, RECORDER)
    text = (
        'input_stream: "b_in"\ninput_stream: "a_in"\noutput_stream: "out"\n'
        + node("recNode", f"handlers/{stem}.py", ["B:b_in", "A:a_in"], ["OUTPUT:out"])
    )
    definition = load_ok(text, tmp_path)
    model = definition.resources["recNode"].model
    assert model.kwargs == {
        "input_names": ["b_in", "a_in"],
        "output_names": ["out"],
        "node_name": "recNode",
        "base_path": str(tmp_path / "handlers"),
    }
    out = run(definition, [("b_in", 0, Tensor("b_in", b"1")), ("a_in", 0, Tensor("a_in", b"2"))])
    assert bytes(out["out"][0][1]) == b"a_in,b_in"  # sorted by tag, not by config order
    run(definition, [("b_in", 0, Tensor("b_in", b"1")), ("a_in", 0, Tensor("a_in", b"2"))])
    assert model.calls == 2  # one instance serves every run


def test_empty_inputs_are_left_out(tmp_path):
    stem = unique("recorder")
    write_handler(tmp_path, stem, RECORDER)
    text = (
        'input_stream: "a_in"\ninput_stream: "b_in"\noutput_stream: "out"\n'
        + node("recNode", f"{stem}.py", ["A:a_in", "B:b_in"], ["OUTPUT:out"],
               '  input_stream_handler { input_stream_handler: "ImmediateInputStreamHandler" }\n')
    )
    definition = load_ok(text, tmp_path)
    out = run(definition, [("b_in", 3, Tensor("b_in", b"1"))])
    assert [(ts, bytes(t)) for ts, t in out["out"]] == [(3, b"b_in")]


def test_same_stem_twice_is_one_module_with_one_instance_per_node(tmp_path):
    stem = unique("shared")
    write_handler(tmp_path / "one", stem, RECORDER)
    write_handler(tmp_path / "two", stem, "raise RuntimeError('second file must not run')\n")
    text = (
        'input_stream: "in"\noutput_stream: "a"\noutput_stream: "b"\n'
        + node("first", f"one/{stem}.py", ["INPUT:in"], ["OUTPUT:a"])
        + node("second", f"two/{stem}.py", ["INPUT:in"], ["OUTPUT:b"])
    )
    definition = load_ok(text, tmp_path)
    first = definition.resources["first"].model
    second = definition.resources["second"].model
    assert first is not second
    assert type(first) is type(second)
    assert sys.modules[stem].INSTANCES[-2:] == [first, second]
    assert second.kwargs["base_path"] == str(tmp_path / "two")


# ---------------------------------------------------------------------------- converter

TO_PY = """
calculator: "PyTensorOvTensorConverterCalculator"
input_stream: "OVTENSOR:logits"
output_stream: "OVMS_PY_TENSOR:logits_py"
node_options: {
  [type.googleapis.com/mediapipe.PyTensorOvTensorConverterCalculatorOptions]: {
    tag_to_output_tensor_names { key: "OVMS_PY_TENSOR" value: "logits_py" }
  }
}
"""

TO_OV = """
calculator: "PyTensorOvTensorConverterCalculator"
input_stream: "OVMS_PY_TENSOR:ids_py"
output_stream: "OVTENSOR:ids"
"""


def test_converter_ov_tensor_to_python_tensor():
    source = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = run_calculator(TO_PY, {"logits": [(4, ov.Tensor(source))]})
    ((ts, tensor),) = out["logits_py"]
    assert ts == 4
    assert (tensor.name, tensor.datatype, tensor.shape) == ("logits_py", "FP32", (2, 3))
    np.testing.assert_array_equal(np.asarray(tensor), source)


def test_converter_python_tensor_to_ov_tensor():
    tensor = Tensor.from_raw("ids", np.array([[1, 2, 3]], dtype=np.int64).tobytes(), [1, 3],
                             "INT64")
    out = run_calculator(TO_OV, {"ids_py": [(0, tensor)]})
    ((_, result),) = out["ids"]
    assert isinstance(result, ov.Tensor)
    assert str(result.element_type.get_type_name()) == "i64"
    np.testing.assert_array_equal(result.data, [[1, 2, 3]])


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (Tensor.from_bytes_list("s", [b"x"]), "Undefined precision in input python tensor: BYTES"),
        (Tensor("t", b"\x00" * 6, shape=(2,), datatype="FP32"),
         "python buffer size: 6; OV tensor size: 8; mismatch"),
    ],
)
def test_converter_rejects_bad_python_tensors(tensor, message):
    with pytest.raises(CalculatorError) as info:
        run_calculator(TO_OV, {"ids_py": [(0, tensor)]})
    assert isinstance(info.value.cause, RequestError)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('calculator: "PyTensorOvTensorConverterCalculator" input_stream: "OVTENSOR:a" '
         'output_stream: "OVMS_PY_TENSOR:b"', "tag_to_output_tensor_names must map"),
        ('calculator: "PyTensorOvTensorConverterCalculator" input_stream: "OVTENSOR:a" '
         'output_stream: "OVTENSOR:b"', "streams must be"),
    ],
)
def test_converter_contract(text, message):
    with pytest.raises(ContractError, match=message):
        run_calculator(text, {})


def test_edited_handler_is_loaded_again_on_reload(tmp_path):
    stem = unique("versioned")
    body = """
        from pyovms import Tensor

        class OvmsPythonModel:
            def execute(self, inputs):
                return [Tensor("out", b"VERSION")]
    """
    path = write_handler(tmp_path, stem, body.replace("VERSION", "v1"))
    first = load_ok(simple_graph(f"{stem}.py"), tmp_path)
    assert bytes(run(first, [("in", 0, Tensor("in", b"a"))])["out"][0][1]) == b"v1"
    write_handler(tmp_path, stem, body.replace("VERSION", "v2"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load_ok(simple_graph(f"{stem}.py"), tmp_path)
    assert bytes(run(second, [("in", 0, Tensor("in", b"a"))])["out"][0][1]) == b"v2"


# ---------------------------------------------------------------------------- KServe


def test_kserve_request_reaches_python_node_as_tensor(tmp_path):
    stem = unique("doubler")
    write_handler(tmp_path, stem, """
        import numpy as np
        from pyovms import Tensor

        class OvmsPythonModel:
            def execute(self, inputs):
                (tensor,) = inputs
                return [
                    Tensor("doubled", np.asarray(tensor) * 2),
                    Tensor("info", f"{tensor.name}:{tensor.datatype}:{tensor.shape}".encode()),
                ]
    """)
    text = (
        'input_stream: "OVMS_PY_TENSOR:values"\n'
        'output_stream: "OVMS_PY_TENSOR:doubled"\noutput_stream: "OVMS_PY_TENSOR_INFO:info"\n'
        + node("doubler", f"{stem}.py", ["INPUT:values"], ["OUTPUT:doubled", "INFO:info"])
    )
    definition = load_ok(text, tmp_path)
    request = kserve.InferRequest(
        "python", [kserve.tensor_from_values("values", "FP32", [1, 2], [1.5, -2.0])]
    )
    response = serve_kserve(definition, request, timeout=10)
    outputs = {o.name: o for o in response.outputs}
    assert (outputs["doubled"].datatype, outputs["doubled"].shape) == ("FP32", (1, 2))
    np.testing.assert_array_equal(outputs["doubled"].data, [[3.0, -4.0]])
    assert outputs["info"].data.tobytes() == b"values:FP32:(1, 2)"


# ---------------------------------------------------------------------------- BYTES as OVMS


BYTES_INFO = """
from pyovms import Tensor

class OvmsPythonModel:
    def execute(self, inputs):
        (tensor,) = inputs
        info = f"{tensor.datatype}:{tensor.shape}:{tensor.size}".encode()
        return [Tensor("echo", bytes(tensor)), Tensor("info", info)]
"""


def _bytes_graph(stem: str) -> str:
    return (
        'input_stream: "OVMS_PY_TENSOR:text"\n'
        'output_stream: "OVMS_PY_TENSOR:echo"\noutput_stream: "OVMS_PY_TENSOR_INFO:info"\n'
        + node("bytesNode", f"{stem}.py", ["INPUT:text"], ["OUTPUT:echo", "INFO:info"])
    )


@pytest.mark.parametrize(
    ("raw", "shape"),
    [
        (b"Make this text uppercase.", [25]),  # plain UTF-8, as OVMS's quickstart client sends
        (b"\x03\x00\x00\x00abc", [1]),  # KServe's length-prefixed element
        (b"\x03\x00\x00\x00ab", [7]),  # looks prefixed but is not: still as is
    ],
)
def test_raw_bytes_reach_the_handler_unchanged(tmp_path, raw, shape):
    stem = unique("bytes_info")
    write_handler(tmp_path, stem, BYTES_INFO)
    definition = load_ok(_bytes_graph(stem), tmp_path)
    request = kserve.InferRequest(
        "python", [kserve.tensor_from_raw("text", "BYTES", shape, raw)]
    )
    response = serve_kserve(definition, request, timeout=10)
    outputs = {o.name: o for o in response.outputs}
    assert outputs["echo"].data.tobytes() == raw
    assert outputs["info"].data.tobytes() == f"BYTES:{tuple(shape)}:{len(raw)}".encode()


def test_plain_bytes_on_a_tensor_stream_are_still_refused():
    text = (
        'input_stream: "TENSOR:in"\noutput_stream: "out"\n'
        'node { calculator: "PassThroughCalculator" input_stream: "TENSOR:in" '
        'output_stream: "TENSOR:out" }\n'
    )
    definition = GraphDefinition("plain", text=text)
    definition.load()
    request = kserve.InferRequest("plain", [kserve.tensor_from_raw("in", "BYTES", [2], b"ab")])
    with pytest.raises(RequestError, match='Invalid BYTES content of input "in"'):
        serve_kserve(definition, request, timeout=10)


LOOPBACK_EXTRA = """  input_stream_info: { tag_index: "LOOPBACK:0" back_edge: true }
  input_stream_handler {
    input_stream_handler: "SyncSetInputStreamHandler"
    options {
      [mediapipe.SyncSetInputStreamHandlerOptions.ext] { sync_set { tag_index: "LOOPBACK:0" } }
    }
  }
"""

GENERATOR_COUNTING = """
from pyovms import Tensor

CALLS = []

class OvmsPythonModel:
    def execute(self, inputs):
        for word in (b"one", b"two", b"three"):
            CALLS.append(word)
            yield [Tensor("out", word)]
"""


def test_generator_called_unary_answers_its_first_result_as_ovms(tmp_path):
    # OVMS's unary path waits until the graph is idle (the generator ran to its end through
    # LOOPBACK) and answers the first packet of each output; generative mode is meant for
    # ModelStreamInfer (docs/python_support/reference.md).
    stem = unique("gen_unary")
    write_handler(tmp_path, stem, GENERATOR_COUNTING)
    text = 'input_stream: "OVMS_PY_TENSOR:in"\noutput_stream: "OVMS_PY_TENSOR:out"\n' + node(
        "genNode", f"{stem}.py", ["INPUT:in", "LOOPBACK:lb_in"], ["OUTPUT:out", "LOOPBACK:lb_in"],
        extra=LOOPBACK_EXTRA,
    )
    definition = load_ok(text, tmp_path)
    request = kserve.InferRequest("python", [kserve.tensor_from_raw("in", "BYTES", [1], b"go")])
    response = serve_kserve(definition, request, timeout=10)
    assert [o.data.tobytes() for o in response.outputs] == [b"one"]
    assert sys.modules[stem].CALLS == [b"one", b"two", b"three"]
