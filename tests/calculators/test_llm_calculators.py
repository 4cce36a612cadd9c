"""The VLM calculators' building blocks, on the real tiny model where a model is needed."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import openvino_genai as ov_genai
import pytest

from calculators.llm.chat_template_calculator import NO_TOP_K, build_generation_config
from calculators.llm.detokenizer_calculator import IncrementalDecoder
from calculators.llm.graph_template import text_generation_graph
from calculators.llm.request_validation import RequestLimits, parse_chat_request
from calculators.llm.servable import determine_pipeline_type, max_model_length, translate_error
from ovgraph.errors import ContractError, InvalidParameterError, RequestError
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def tokenizer() -> ov_genai.Tokenizer:
    return ov_genai.Tokenizer(str(TINY_MODEL))


@pytest.mark.parametrize(
    "text",
    [
        "plain ascii words",  # one byte per character
        "日本語のテキストと絵文字 🎉🚀 mixed",  # multi-byte characters split across tokens
        "def f(x):\n    return '\\n'.join(x)",  # code, escapes, newlines
    ],
)
def test_incremental_decoding_concatenates_to_full_decode(
    tokenizer: ov_genai.Tokenizer, text: str
) -> None:
    ids = [int(i) for i in tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.add([token]) for token in ids]
    deltas.append(decoder.flush())
    assert "".join(deltas) == tokenizer.decode(ids) == text
    assert not any(d.endswith("\ufffd") for d in deltas[:-1])  # no half characters leaked


def test_incremental_decoding_holds_back_partial_utf8(tokenizer: ov_genai.Tokenizer) -> None:
    ids = [int(i) for i in tokenizer.encode("🎉", add_special_tokens=False).input_ids.data[0]]
    assert len(ids) > 1  # the emoji needs several byte-level tokens
    decoder = IncrementalDecoder(tokenizer)
    assert decoder.add(ids[:1]) == ""
    assert decoder.add(ids[1:]) + decoder.flush() == "🎉"


def _copy_model(tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    target = tmp_path / "model"
    shutil.copytree(TINY_MODEL, target)
    for name in drop:
        (target / name).unlink()
    return target


def test_auto_pipeline_type_follows_ovms_rule(tmp_path: Path) -> None:
    assert determine_pipeline_type(TINY_MODEL, "AUTO", "CPU") == "VLM_CB"
    assert determine_pipeline_type(TINY_MODEL, "", "NPU") == "VLM"
    assert determine_pipeline_type(TINY_MODEL, "VLM", "CPU") == "VLM"
    text_only = _copy_model(tmp_path, ("openvino_vision_embeddings_model.bin",))
    assert determine_pipeline_type(text_only, "AUTO", "CPU") == "LM_CB"
    with pytest.raises(ValueError, match="needs a VLM model folder"):
        determine_pipeline_type(text_only, "VLM_CB", "CPU")
    with pytest.raises(ValueError, match="cannot serve a VLM model folder"):
        determine_pipeline_type(TINY_MODEL, "LM_CB", "CPU")


def test_max_model_length_reads_text_config(tmp_path: Path) -> None:
    assert max_model_length(TINY_MODEL) == 32768  # only inside text_config (transformers 5)
    folder = _copy_model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 77
    (folder / "config.json").write_text(json.dumps(config))
    assert max_model_length(folder) == 77
    (folder / "config.json").unlink()
    assert max_model_length(folder) is None


def test_generation_config_maps_request_fields() -> None:
    default = ov_genai.VLMPipeline(str(TINY_MODEL), "CPU").get_generation_config()
    request = parse_chat_request(
        {
            "model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.5,
            "top_p": 0.9, "top_k": 7, "seed": 11, "stop": ["a", "b"], "max_tokens": 9,
            "ignore_eos": True, "presence_penalty": 0.5,
        },
        endpoint="chat", limits=RequestLimits(),
    )
    config = build_generation_config(default, request, prompt_tokens=10, max_length=100)
    assert config.max_new_tokens == 9
    assert config.do_sample
    assert config.temperature == pytest.approx(0.5)
    assert config.top_p == pytest.approx(0.9)
    assert config.top_k == 7
    assert config.rng_seed == 11
    assert config.stop_strings == {"a", "b"}
    assert config.ignore_eos
    assert config.presence_penalty == pytest.approx(0.5)
    assert not config.apply_chat_template
    assert 4084 in config.stop_token_ids  # <|im_end|> from the model's generation config


def test_generation_config_default_max_tokens_fills_context() -> None:
    default = ov_genai.GenerationConfig()
    request = parse_chat_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        endpoint="chat", limits=RequestLimits(),
    )
    config = build_generation_config(default, request, prompt_tokens=30, max_length=100)
    assert config.max_new_tokens == 70
    assert not config.do_sample


def test_generation_config_top_k_and_seed() -> None:
    def config_for(**fields: object) -> ov_genai.GenerationConfig:
        request = parse_chat_request(
            {"model": "m", "messages": [{"role": "user", "content": "x"}], **fields},
            endpoint="chat", limits=RequestLimits(),
        )
        return build_generation_config(ov_genai.GenerationConfig(), request, 1, 100)

    assert config_for(top_k=-1, temperature=1.0).top_k == NO_TOP_K
    assert config_for(temperature=1.0).top_k == 40  # OVMS's sampling default
    seeds = {config_for(temperature=1.0).rng_seed for _ in range(4)}
    assert len(seeds) == 4
    assert 0 not in seeds
    assert config_for(temperature=1.0, seed=0).rng_seed == 0
    assert config_for(temperature=0).rng_seed == 0  # greedy: no seed needed


def test_scheduler_options_reach_genai() -> None:
    from calculators.llm.common import LLMCalculatorOptions
    from calculators.llm.servable import ServableKey, build_scheduler_config

    options = LLMCalculatorOptions(
        models_path=str(TINY_MODEL), cache_size=2, max_num_seqs=7, max_num_batched_tokens=333,
        dynamic_split_fuse=True, enable_prefix_caching=True, device="CPU",
        pipeline_type=LLMCalculatorOptions.VLM, plugin_config='{"NUM_STREAMS": 1}',
    )
    key = ServableKey.from_options(options, None)
    assert (key.pipeline_type, key.device) == ("VLM", "CPU")
    assert key.plugin_config == '{"NUM_STREAMS": 1}'
    scheduler = build_scheduler_config(key, max_length=100)
    assert scheduler.cache_size == 2
    assert scheduler.max_num_seqs == 7
    assert scheduler.max_num_batched_tokens == 333
    assert scheduler.dynamic_split_fuse
    assert scheduler.enable_prefix_caching
    options.dynamic_split_fuse = False  # without split-fuse a whole prompt must fit in a batch
    whole = build_scheduler_config(ServableKey.from_options(options, None), 1000)
    assert whole.max_num_batched_tokens == 1000


def test_genai_errors_are_translated() -> None:
    aspect = translate_error(RuntimeError("Absolute aspect ratio must be smaller than 200, got"))
    assert isinstance(aspect, InvalidParameterError)
    assert isinstance(translate_error(RuntimeError("Missing image/video with index 0")),
                      RequestError)
    internal = translate_error(
        RuntimeError("Check 'x' failed at /home/build/src/pipeline.cpp:12: boom")
    )
    assert not isinstance(internal, RequestError)
    assert "/home" not in str(internal)


def test_generated_graph_is_valid_and_expands(tmp_path: Path) -> None:
    text = text_generation_graph(
        Path("./"), {"pipeline_type": "VLM", "cache_size": 2, "max_num_seqs": 8}
    )
    assert text.startswith("# File created with: ovgraph\n# OVMS_GRAPH_QUEUE_MAX_SIZE: AUTO")
    parsed = parse_graph_config(text)
    assert parsed.queue_size_directive == "AUTO"
    validated = ValidatedGraph(parsed, base_path=TINY_MODEL)
    names = [n.name for n in validated.nodes]
    assert names == [
        "llmexecutor__request", "llmexecutor__images", "llmexecutor__template",
        "llmexecutor__generation", "llmexecutor__detokenizer", "llmexecutor__response",
    ]
    generation = validated.nodes[3]
    assert generation.options.cache_size == 2
    assert generation.options.max_num_seqs == 8
    assert generation.back_edges  # LOOPBACK stays a back edge after expansion
    assert validated.producers["loopback"][0] == 3  # the generation node closes the loop


def test_llm_node_without_options_is_rejected() -> None:
    text = (TINY_MODEL / "graph.pbtxt").read_text()
    start = text.index("node_options")
    end = text.index("input_stream_handler")
    with pytest.raises(ContractError, match="has no LLMCalculatorOptions"):
        ValidatedGraph(parse_graph_config(text[:start] + text[end:]))


def test_byte_level_table_matches_genai_decode(tokenizer: ov_genai.Tokenizer) -> None:
    from calculators.llm.detokenizer_calculator import ByteLevelStream, byte_level_table

    table = byte_level_table(TINY_MODEL, tokenizer)
    assert table is not None  # the tiny model is byte-level BPE: the fast path is taken
    rng = np.random.default_rng(7)
    for _ in range(200):
        ids = [int(i) for i in rng.integers(0, len(table.pieces), size=int(rng.integers(1, 40)))]
        for skip in (True, False):
            expected = tokenizer.decode(ids, skip_special_tokens=skip)
            assert table.decode(ids, skip) == expected
            stream = ByteLevelStream(table, skip)
            deltas = [stream.add([token]) for token in ids] + [stream.flush()]
            assert "".join(deltas) == expected


def test_byte_level_table_replaces_invalid_utf8_as_genai(tokenizer: ov_genai.Tokenizer) -> None:
    """Every lead byte, cut short or complete, at the end and mid-text: same U+FFFD as genai."""
    from calculators.llm.detokenizer_calculator import ByteLevelStream, byte_level_table

    table = byte_level_table(TINY_MODEL, tokenizer)
    assert table is not None
    single = {}
    for index, piece in enumerate(table.pieces):
        if len(piece) == 1 and index not in table.special:
            single.setdefault(piece[0], index)
    assert len(single) == 256
    cores = []
    for lead in range(0xC0, 0x100):
        cores.append(bytes([lead]))
        for second in (0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0x41):
            cores += [bytes([lead, second]), bytes([lead, second, 0x80]),
                      bytes([lead, second, 0x80, 0x80])]
    cases = [*cores, *(c + b"A" for c in cores), *(b"A" + c + "é".encode() for c in cores),
             b"\x80\x80", "😀".encode()[:3] + b"\xf5"]
    by_length: dict[int, list[bytes]] = {}
    for case in cases:
        by_length.setdefault(len(case), []).append(case)
    for batch in by_length.values():
        ids = [[single[b] for b in case] for case in batch]
        expected = tokenizer.decode(ids, skip_special_tokens=True)
        for row, text in zip(ids, expected):
            assert table.decode(row) == text, bytes(table.to_bytes(row, True))
            stream = ByteLevelStream(table)
            assert "".join([stream.add([i]) for i in row] + [stream.flush()]) == text


def test_embedded_default_model_takes_the_byte_level_path() -> None:
    from calculators.llm.detokenizer_calculator import byte_level_table

    shapes = TINY_MODEL.parent / "qwen2vl-shapes"
    # Its 599-token vocabulary makes random samples hit cut-short sequences such as F5 A6.
    assert byte_level_table(shapes, ov_genai.Tokenizer(str(shapes))) is not None


def test_byte_level_table_rejects_other_tokenizers() -> None:
    from calculators.llm.detokenizer_calculator import ByteLevelTable

    assert ByteLevelTable.from_tokenizer_json({"decoder": {"type": "WordPiece"}}) is None
    assert ByteLevelTable.from_tokenizer_json(
        {"decoder": {"type": "ByteLevel"}, "model": {"type": "Unigram"}}
    ) is None


def test_servable_is_released_with_the_last_graph() -> None:
    """Unloading the only graph that uses a model stops its engine and frees the pipeline."""
    import gc
    import weakref

    from ovgraph.serving.graph_definition import GraphDefinition

    # max_num_seqs 7 gives a servable key no other test shares.
    text = (TINY_MODEL / "graph.pbtxt").read_text().replace(
        'models_path: "./"', 'models_path: "./", max_num_seqs: 7'
    )
    first = GraphDefinition("release", text=text, base_path=TINY_MODEL)
    second = GraphDefinition("release2", text=text, base_path=TINY_MODEL)
    first.load()
    second.load()
    assert first.available and second.available, (first.error, second.error)
    servables = {id(r.servable): r.servable for r in first.resources.values()}
    assert len(servables) == 1  # every node of the graph shares one servable
    (servable,) = servables.values()
    assert all(r.servable is servable for r in second.resources.values())  # and graphs too
    (pid,) = servable.engine.pids()
    ref = weakref.ref(servable)
    del servable, servables

    first.unload()
    gc.collect()
    assert ref() is not None and _alive(pid)  # the second graph still uses it
    second.unload()
    gc.collect()
    assert ref() is None
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)  # the engine process ended with its last graph


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False
