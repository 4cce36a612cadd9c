"""Parsing graph.pbtxt files: the real OVMS corpus, locations, errors and option access."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from ovgraph._proto.mediapipe.calculators.ovms import openvinoinferencecalculator_pb2
from ovgraph._proto.mediapipe.calculators.tflite import ssd_anchors_calculator_pb2
from ovgraph._proto.mediapipe.calculators.util import (
    detections_to_render_data_calculator_pb2,
    non_max_suppression_calculator_pb2,
)
from ovgraph._proto.mediapipe.framework import calculator_pb2
from ovgraph._proto.mediapipe.framework.stream_handler import sync_set_input_stream_handler_pb2
from ovgraph._proto.ovms import llm_calculator_pb2, python_executor_calculator_options_pb2
from ovgraph.errors import ContractError, GraphConfigError
from ovgraph.framework.textformat import (
    ParsedGraphConfig,
    check_unique_node_options,
    node_options,
    option_type_names,
    options_class,
    parse_graph_config,
    read_graph_file,
    register_options_module,
)

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "testdata" / "ovms-graphs"
REFERENCE_CORPUS = REPO.parent / "shared" / "reference" / "ovms-graphs"
CORPUS_FILES = sorted(p.name for p in CORPUS.iterdir())

LLM = llm_calculator_pb2.LLMCalculatorOptions
SYNC_SET = sync_set_input_stream_handler_pb2.SyncSetInputStreamHandlerOptions
INFERENCE = openvinoinferencecalculator_pb2.OpenVINOInferenceCalculatorOptions
PYTHON = python_executor_calculator_options_pb2.PythonExecutorCalculatorOptions


def corpus(name: str) -> ParsedGraphConfig:
    return read_graph_file(CORPUS / name)


# --- the corpus ---------------------------------------------------------------------------------


def test_corpus_copy_matches_reference():
    if not REFERENCE_CORPUS.is_dir():
        pytest.skip(f"reference corpus not present at {REFERENCE_CORPUS}")
    reference = sorted(p.name for p in REFERENCE_CORPUS.iterdir())
    assert reference == CORPUS_FILES
    for name in reference:
        assert (CORPUS / name).read_bytes() == (REFERENCE_CORPUS / name).read_bytes(), name


def test_corpus_is_complete():
    assert len(CORPUS_FILES) == 14


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_every_corpus_file_parses(name):
    parsed = corpus(name)
    assert isinstance(parsed.config, calculator_pb2.CalculatorGraphConfig)
    assert parsed.path == str(CORPUS / name)
    assert len(parsed.config.node) >= 1
    assert len(parsed.node_lines) == len(parsed.config.node)
    lines = (CORPUS / name).read_text().split("\n")
    for line_number in parsed.node_lines:
        assert lines[line_number - 1].lstrip().startswith("node")
    for node in parsed.config.node:
        for type_name in option_type_names(node):
            cls = options_class(type_name)
            assert cls is not None, type_name
            assert node_options(node, cls) is not None


def test_llm_options_from_cli_style_graph():
    parsed = corpus("demos__continuous_batching__graph.pbtxt")
    node = parsed.config.node[0]
    assert node.name == "LLMExecutor"
    assert option_type_names(node) == ["mediapipe.LLMCalculatorOptions"]
    options = node_options(node, LLM)
    assert options.models_path == "./"
    assert options.cache_size == 0
    assert options.HasField("cache_size")
    assert options.enable_prefix_caching is False
    assert options.plugin_config == (
        '{"KV_CACHE_PRECISION": "u8", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"}'
    )
    # Unset fields keep the proto2 defaults.
    assert not options.HasField("pipeline_type")
    assert options.pipeline_type == LLM.AUTO == 5
    assert options.max_num_seqs == 256
    assert options.best_of_limit == 20
    assert options.dynamic_split_fuse is True
    # Streams, back edge and side packets.
    assert list(node.input_stream) == ["LOOPBACK:loopback", "HTTP_REQUEST_PAYLOAD:input"]
    assert list(node.input_side_packet) == ["LLM_NODE_RESOURCES:llm"]
    assert node.input_stream_info[0].tag_index == "LOOPBACK:0"
    assert node.input_stream_info[0].back_edge is True


def test_llm_pipeline_type_enum_by_name():
    legacy = node_options(
        corpus("src__test__llm__visual_language_model__vlm_legacy_regular.pbtxt").config.node[0],
        LLM,
    )
    assert legacy.pipeline_type == LLM.VLM == 1
    assert legacy.cache_size == 1
    assert legacy.models_path == "/ovms/src/test/llm_testing/OpenVINO/InternVL2-1B-int4-ov"
    cb = node_options(
        corpus("src__test__llm__visual_language_model__vlm_cb_regular.pbtxt").config.node[0], LLM
    )
    assert cb.pipeline_type == LLM.AUTO
    assert LLM.PipelineType.Name(LLM.OMNI) == "OMNI"
    assert LLM.PipelineType.Value("VLM_CB") == 3


def test_sync_set_handler_options():
    node = corpus("src__test__llm__lm_cb_regular.pbtxt").config.node[0]
    handler = node.input_stream_handler
    assert handler.input_stream_handler == "SyncSetInputStreamHandler"
    sync = handler.options.Extensions[SYNC_SET.ext]
    assert [list(s.tag_index) for s in sync.sync_set] == [["LOOPBACK:0"]]
    assert list(node.input_side_packet) == [
        "LLM_NODE_RESOURCES:llm",
        "LLM_NODE_EXECUTION_CONTEXTS:llm_ctx",
    ]


def test_object_detection_values():
    parsed = corpus("demos__mediapipe__object_detection__graph.pbtxt")
    config = parsed.config
    assert config.max_queue_size == 1
    nodes = {n.calculator: n for n in config.node}
    inference = node_options(nodes["OpenVINOInferenceCalculator"], INFERENCE)
    # List syntax with a space before the colon.
    assert list(inference.input_order_list) == ["normalized_input_image_tensor"]
    assert list(inference.output_order_list) == [
        "raw_outputs/box_encodings",
        "raw_outputs/class_predictions",
    ]
    anchors = node_options(
        nodes["SsdAnchorsCalculator"], ssd_anchors_calculator_pb2.SsdAnchorsCalculatorOptions
    )
    assert list(anchors.strides) == [16, 32, 64, 128, 256, 512]
    assert list(anchors.aspect_ratios) == pytest.approx([1.0, 2.0, 0.5, 3.0, 0.3333])
    assert anchors.reduce_boxes_in_lowest_layer is True
    nms_cls = non_max_suppression_calculator_pb2.NonMaxSuppressionCalculatorOptions
    nms = node_options(nodes["NonMaxSuppressionCalculator"], nms_cls)
    assert nms.overlap_type == nms_cls.INTERSECTION_OVER_UNION
    assert nms.max_num_detections == 5
    render = node_options(
        nodes["DetectionsToRenderDataCalculator"],
        detections_to_render_data_calculator_pb2.DetectionsToRenderDataCalculatorOptions,
    )
    assert (render.color.r, render.color.g, render.color.b) == (255, 0, 0)
    assert render.thickness == 4.0
    # Trailing comment after a value.
    session = node_options(
        nodes["OpenVINOModelServerSessionCalculator"],
        options_class("mediapipe.OpenVINOModelServerSessionCalculatorOptions"),
    )
    assert session.servable_name == "ssdlite_object_detection"
    assert session.log_level == "INFO"
    assert list(nodes["NonMaxSuppressionCalculator"].input_stream) == ["detections"]
    assert nodes["AnnotationOverlayCalculator"].node_options == []


def test_maps_and_python_options():
    parsed = corpus("demos__python_demos__clip_image_classification__servable__graph.pbtxt")
    nodes = list(parsed.config.node)
    inference = node_options(nodes[5], INFERENCE)
    assert dict(inference.tag_to_input_tensor_names) == {
        "OVTENSOR": "input_ids",
        "OVTENSOR1": "958",
        "OVTENSOR2": "86",
    }
    assert dict(inference.tag_to_output_tensor_names) == {"OVTENSOR": "out_0"}
    assert node_options(nodes[0], PYTHON).handler_path == "/workspace/preprocess.py"
    converter = node_options(
        nodes[6], options_class("mediapipe.PyTensorOvTensorConverterCalculatorOptions")
    )
    assert dict(converter.tag_to_output_tensor_names) == {"OVMS_PY_TENSOR": "logits_per_image_py"}
    # A node without options.
    assert nodes[1].calculator == "PyTensorOvTensorConverterCalculator"
    assert option_type_names(nodes[1]) == []
    assert node_options(nodes[1], PYTHON) is None


# --- locations and the pool directive -----------------------------------------------------------


def test_node_lines_of_corpus_files():
    assert corpus("demos__mediapipe__object_detection__graph.pbtxt").node_lines == [
        19,
        34,
        46,
        57,
        72,
        103,
        125,
        141,
        153,
        166,
    ]
    assert corpus("src__test__mediapipe__python__two_python_outputs_graph.pbtxt").node_lines == [
        5,
        17,
        29,
    ]
    assert corpus("src__test__llm__lm_cb_regular.pbtxt").node_lines == [3]


def test_node_lines_ignore_nested_and_commented_nodes():
    text = (
        "# node { a comment }\n"
        'input_stream: "node"\n'
        "node {\n"
        '  calculator: "A"\n'
        "  node_options: { [type.googleapis.com/mediapipe.PythonExecutorCalculatorOptions]:"
        ' { handler_path: "x" } }\n'
        "}\n"
        'node { calculator: "B" } node: { calculator: "C" }\n'
    )
    parsed = parse_graph_config(text)
    assert [n.calculator for n in parsed.config.node] == ["A", "B", "C"]
    assert parsed.node_lines == [3, 7, 7]
    assert parsed.path is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('# OVMS_GRAPH_QUEUE_MAX_SIZE: AUTO\ninput_stream: "a"\n', "AUTO"),
        ('input_stream: "a"\n  #OVMS_GRAPH_QUEUE_MAX_SIZE :4   \r\n', "4"),
        ("# OVMS_GRAPH_QUEUE_MAX_SIZE: 0\n", "0"),
        ("# OVMS_GRAPH_QUEUE_MAX_SIZE: -1\n", "-1"),
        ('input_stream: "a"\n', None),
        ("# OVMS_GRAPH_QUEUE_MAX_SIZE:\n", None),
        ("# OVMS_GRAPH_QUEUE_MAX_SIZE: 4 extra\n", None),
        ('input_stream: "a" # OVMS_GRAPH_QUEUE_MAX_SIZE: 4\n', None),
        ("# OVMS_GRAPH_QUEUE_MAX_SIZE: 2\n# OVMS_GRAPH_QUEUE_MAX_SIZE: 3\n", "2"),
    ],
)
def test_queue_size_directive(text, expected):
    assert parse_graph_config(text).queue_size_directive == expected


def test_corpus_has_no_queue_directive():
    assert corpus("demos__continuous_batching__graph.pbtxt").queue_size_directive is None


# --- errors -------------------------------------------------------------------------------------


def test_unknown_field_error_has_mediapipe_wording_and_line():
    text = 'input_stream: "in"\nnode {\n  calculator: "A"  bogus_field: 1\n}\n'
    with pytest.raises(GraphConfigError) as info:
        parse_graph_config(text, path="graphs/g.pbtxt")
    error = info.value
    assert str(error) == (
        "Error parsing text-format mediapipe.CalculatorGraphConfig: 3:20: Message type "
        '"mediapipe.CalculatorGraphConfig.Node" has no field named "bogus_field".'
    )
    assert error.line == 3
    assert error.path == "graphs/g.pbtxt"
    assert error.location() == "graphs/g.pbtxt:3"


def test_syntax_error_reports_line():
    text = 'input_stream: "in"\n\nnode {\n  calculator: "A"\n  input_stream "in"\n}\n'
    with pytest.raises(GraphConfigError) as info:
        parse_graph_config(text)
    assert info.value.line == 5
    assert str(info.value).startswith(
        "Error parsing text-format mediapipe.CalculatorGraphConfig: 5:"
    )


def test_unknown_any_type_is_located():
    text = (
        "node {\n"
        '  calculator: "A"\n'
        "  node_options: {\n"
        "    [type.googleapis.com / mediapipe.NoSuchOptions]: { a: 1 }\n"
        "  }\n"
        "}\n"
    )
    with pytest.raises(GraphConfigError) as info:
        parse_graph_config(text)
    assert str(info.value) == (
        "Error parsing text-format mediapipe.CalculatorGraphConfig: 4:5: Could not find type "
        '"type.googleapis.com/mediapipe.NoSuchOptions" stored in google.protobuf.Any.'
    )
    assert info.value.line == 4


def test_unknown_enum_value_is_an_error():
    text = (
        "node {\n  node_options: { [type.googleapis.com/mediapipe.LLMCalculatorOptions]: {\n"
        '    models_path: "./"\n    pipeline_type: NOPE\n  } }\n}\n'
    )
    with pytest.raises(GraphConfigError) as info:
        parse_graph_config(text)
    assert info.value.line == 4
    assert "PipelineType" in str(info.value)


def test_missing_required_option_field_in_any():
    text = (
        'node {\n  calculator: "HttpLLMCalculator"\n'
        "  node_options: {\n    [type.googleapis.com/mediapipe.LLMCalculatorOptions]: {\n"
        "      cache_size: 1\n    }\n  }\n}\n"
    )
    with pytest.raises(GraphConfigError) as info:
        parse_graph_config(text)
    assert str(info.value) == (
        "Error parsing text-format mediapipe.CalculatorGraphConfig: 4:5: Value of type "
        '"mediapipe.LLMCalculatorOptions" stored in google.protobuf.Any has missing required '
        "fields: models_path"
    )
    assert info.value.line == 4


def test_missing_required_option_field_in_extension():
    text = (
        'node { calculator: "A" }\n'
        "node {\n  options { [mediapipe.PythonExecutorCalculatorOptions.ext] { } }\n}\n"
    )
    with pytest.raises(GraphConfigError) as info:
        parse_graph_config(text)
    assert "Message missing required fields: node[1]" in str(info.value)
    assert "handler_path" in str(info.value)
    assert info.value.line == 2


def test_read_graph_file_errors_and_bom(tmp_path):
    missing = tmp_path / "missing.pbtxt"
    with pytest.raises(GraphConfigError) as info:
        read_graph_file(missing)
    assert info.value.path == str(missing)
    assert str(missing) not in str(info.value)
    with_bom = tmp_path / "bom.pbtxt"
    with_bom.write_bytes(b'\xef\xbb\xbfinput_stream: "in"\nnode { calculator: "A" }\n')
    parsed = read_graph_file(with_bom)
    assert list(parsed.config.input_stream) == ["in"]
    assert parsed.node_lines == [2]
    bad = tmp_path / "bad.pbtxt"
    bad.write_bytes(b'input_stream: "\xff"\n')
    with pytest.raises(GraphConfigError):
        read_graph_file(bad)


# --- node_options -------------------------------------------------------------------------------


def _node(text: str):
    return parse_graph_config(f"node {{\n{text}\n}}\n").config.node[0]


def test_node_options_duplicate_type_is_a_contract_error():
    node = _node(
        '  name: "py"\n'
        "  node_options: { [type.googleapis.com/mediapipe.PythonExecutorCalculatorOptions]:"
        ' { handler_path: "a.py" } }\n'
        "  node_options: { [type.googleapis.com/mediapipe.PythonExecutorCalculatorOptions]:"
        ' { handler_path: "b.py" } }'
    )
    message = (
        "Options type: 'mediapipe.PythonExecutorCalculatorOptions' specified more than once for "
        "a single calculator node config."
    )
    with pytest.raises(ContractError) as info:
        node_options(node, PYTHON)
    assert str(info.value) == message
    assert info.value.node == "py"
    with pytest.raises(ContractError):
        check_unique_node_options(node)
    assert option_type_names(node) == ["mediapipe.PythonExecutorCalculatorOptions"]


def test_options_extension_wins_over_node_options():
    node = _node(
        '  options { [mediapipe.PythonExecutorCalculatorOptions.ext] { handler_path: "ext.py" } }\n'
        "  node_options: { [type.googleapis.com/mediapipe.PythonExecutorCalculatorOptions]:"
        ' { handler_path: "any.py" } }\n'
        "  node_options: { [type.googleapis.com/mediapipe.LLMCalculatorOptions]:"
        ' { models_path: "m" } }'
    )
    assert node_options(node, PYTHON).handler_path == "ext.py"
    assert node_options(node, LLM).models_path == "m"
    assert node_options(node, SYNC_SET) is None
    assert option_type_names(node) == [
        "mediapipe.PythonExecutorCalculatorOptions",
        "mediapipe.LLMCalculatorOptions",
    ]
    check_unique_node_options(node)


def test_node_options_returns_a_copy():
    node = _node(
        '  options { [mediapipe.PythonExecutorCalculatorOptions.ext] { handler_path: "a.py" } }'
    )
    options = node_options(node, PYTHON)
    options.handler_path = "changed.py"
    assert node_options(node, PYTHON).handler_path == "a.py"


# --- registration and wire compatibility -------------------------------------------------------


def test_register_options_module():
    names = register_options_module("ovgraph._proto.ovms.llm_calculator_pb2")
    assert names == ["mediapipe.LLMCalculatorOptions"]
    assert options_class("mediapipe.LLMCalculatorOptions") is LLM
    assert options_class("mediapipe.NoSuchOptions") is None
    # The KServe module deliberately lives in a private pool: not usable for graph options.
    with pytest.raises(ValueError, match="default descriptor pool"):
        register_options_module("ovgraph._proto.kserve.grpc_predict_v2_pb2")
    with pytest.raises(ValueError, match="not a generated protobuf"):
        register_options_module("ovgraph.errors")


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_wire_round_trip(name):
    config = corpus(name).config
    data = config.SerializeToString()
    again = calculator_pb2.CalculatorGraphConfig()
    again.ParseFromString(data)
    assert again == config
    assert again.SerializeToString() == data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def test_extension_and_field_numbers_on_the_wire():
    node = _node('  options { [mediapipe.LLMCalculatorOptions.ext] { models_path: "m" } }')
    data = node.options.SerializeToString()
    # Extension 113473750, length-delimited; then field 1 (models_path) of the options.
    assert data.startswith(_varint(113473750 << 3 | 2) + _varint(3) + b"\x0a\x01m")
    handler = corpus("src__test__llm__lm_cb_regular.pbtxt").config.node[0].input_stream_handler
    assert _varint(155816273 << 3 | 2) in handler.options.SerializeToString()
    packed = corpus("src__test__llm__lm_cb_regular.pbtxt").config.node[0].node_options[0]
    assert packed.type_url == "type.googleapis.com/mediapipe.LLMCalculatorOptions"
    # cache_size (field 3) = 1 follows models_path (field 1) in the Any payload.
    assert packed.value.endswith(b"\x18\x01")


def test_kserve_module_coexists_with_tritonclient():
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    from ovgraph._proto.kserve import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc

    request = grpc_predict_v2_pb2.ModelInferRequest(model_name="graph", id="7")
    request.parameters["OVMS_MP_TIMESTAMP"].int64_param = 42
    request.inputs.add(name="in", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x03\x00\x00\x00abc")
    theirs = service_pb2.ModelInferRequest.FromString(request.SerializeToString())
    assert theirs.parameters["OVMS_MP_TIMESTAMP"].int64_param == 42
    assert theirs.inputs[0].name == "in"
    reply = service_pb2.ModelStreamInferResponse(error_message="boom")
    ours = grpc_predict_v2_pb2.ModelStreamInferResponse.FromString(reply.SerializeToString())
    assert ours.error_message == "boom"
    methods = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
    streaming = {m.name: (m.client_streaming, m.server_streaming) for m in methods}
    assert streaming == {
        "ServerLive": (False, False),
        "ServerReady": (False, False),
        "ModelReady": (False, False),
        "ServerMetadata": (False, False),
        "ModelMetadata": (False, False),
        "ModelInfer": (False, False),
        "ModelStreamInfer": (True, True),
    }
    assert hasattr(grpc_predict_v2_pb2_grpc, "add_GRPCInferenceServiceServicer_to_server")


def test_generated_modules_are_up_to_date():
    # gen_proto.py runs its pinned protoc from .venv-protoc, which it creates on first use.
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
