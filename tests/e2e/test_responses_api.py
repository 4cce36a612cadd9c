"""The Responses API (``/v3/responses``, ``/v1/responses``) through the ``openai`` client."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import openai
import pytest

from tests.agentic_model import MODEL, make_agentic_model
from tests.conftest import ServerProcess, golden_array, png_data_url
from tests.e2e.test_agentic import REPORT_SHAPE, Shape

IMAGE_INPUT = [{
    "role": "user",
    "content": [
        {"type": "input_text", "text": "Describe the picture."},
        {"type": "input_image", "image_url": png_data_url(golden_array())},
    ],
}]
FLAT_TOOL = {"type": "function", **REPORT_SHAPE["function"]}


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = make_agentic_model(
        tmp_path_factory.mktemp("responses") / MODEL,
        ', tool_parser: "hermes3", reasoning_parser: "qwen3"',
    )
    proc = ServerProcess(["--model_path", str(folder), "--model_name", MODEL]).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module", params=["/v3", "/v1"])
def client(agent_server: ServerProcess, request: pytest.FixtureRequest) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=agent_server.url + request.param, api_key="unused", max_retries=0
    )


def test_string_input(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="What is OpenVINO?", max_output_tokens=8, temperature=0
    )
    assert response.object == "response"
    assert response.id.startswith("resp-")
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text  # the SDK's join of the output_text parts
    assert response.output[-1].type == "message"
    assert response.usage.output_tokens == 8
    assert response.usage.total_tokens == response.usage.input_tokens + 8
    assert response.max_output_tokens == 8


def test_image_input_and_instructions(client: openai.OpenAI) -> None:
    plain = client.responses.create(model=MODEL, input=IMAGE_INPUT, max_output_tokens=4)
    instructed = client.responses.create(
        model=MODEL, input=IMAGE_INPUT, max_output_tokens=4, instructions="Answer briefly."
    )
    assert plain.usage.input_tokens > 64  # the picture's tokens are in the prompt
    assert instructed.usage.input_tokens > plain.usage.input_tokens
    assert instructed.instructions == "Answer briefly."


def test_matches_chat_completions(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=10,
        temperature=0,
    )
    response = client.responses.create(
        model=MODEL, input="Hello", max_output_tokens=10, temperature=0
    )
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens


def test_function_call_items_and_history(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="Report the shape in the picture.", tools=[FLAT_TOOL],
        tool_choice={"type": "function", "name": "report_shape"}, max_output_tokens=120,
        temperature=0,
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "report_shape"
    assert set(json.loads(calls[0].arguments)) == {"shape", "color"}
    assert response.status == "completed"
    assert response.tools[0].name == "report_shape"
    follow_up = client.responses.create(
        model=MODEL, max_output_tokens=4, tools=[FLAT_TOOL],
        input=[
            {"role": "user", "content": "Report the shape in the picture."},
            {"type": "function_call", "call_id": calls[0].call_id, "name": "report_shape",
             "arguments": calls[0].arguments},
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "ok"},
        ],
    )
    assert follow_up.usage.input_tokens > response.usage.input_tokens  # call + result rendered


def test_one_call_and_metadata_are_honoured(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="Report the shape in the picture.", tools=[FLAT_TOOL],
        tool_choice="required", max_output_tokens=120, temperature=0,
        parallel_tool_calls=False, metadata={"ticket": "42"},
    )
    assert [item.type for item in response.output] == ["function_call"]
    assert response.status == "completed"  # ended after the call, not at max_output_tokens
    assert response.parallel_tool_calls is False
    assert response.metadata == {"ticket": "42"}


def test_text_format_json_schema(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"color": {"enum": ["red", "blue"]}},
              "required": ["color"], "additionalProperties": False}
    response = client.responses.create(
        model=MODEL, input="Which colour?", max_output_tokens=40, temperature=0,
        text={"format": {"type": "json_schema", "name": "c", "schema": schema, "strict": True}},
    )
    assert json.loads(response.output_text)["color"] in ("red", "blue")
    assert response.text.format.type == "json_schema"


def test_reasoning_item(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="Think first.", max_output_tokens=10, temperature=0,
        reasoning={"effort": "low"},
    )
    assert response.output[0].type == "reasoning"
    assert response.output[0].summary[0].text


def test_skip_special_tokens_false_is_raw_text(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="Think first.", max_output_tokens=6, reasoning={"effort": "low"},
        extra_body={"skip_special_tokens": False},
    )
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text


def test_streamed_reasoning_summary(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL, "input": "Think first.", "max_output_tokens": 10,
              "temperature": 0, "reasoning": {"effort": "low"}}
    unary = client.responses.create(**kwargs)
    events = list(client.responses.create(stream=True, **kwargs))
    kinds = [e.type for e in events]
    assert kinds[2:4] == ["response.output_item.added", "response.reasoning_summary_part.added"]
    text = "".join(
        e.delta for e in events if e.type == "response.reasoning_summary_text.delta"
    )
    assert text == unary.output[0].summary[0].text
    assert events[-1].response.output[0].type == "reasoning"


def test_stream_event_sequence(client: openai.OpenAI) -> None:
    unary = client.responses.create(
        model=MODEL, input="Hello", max_output_tokens=10, temperature=0
    )
    events = list(client.responses.create(
        model=MODEL, input="Hello", max_output_tokens=10, temperature=0, stream=True
    ))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.incomplete"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == unary.output_text
    final = events[-1].response
    assert final.output_text == text
    assert final.usage.output_tokens == 10


def test_streamed_function_call(client: openai.OpenAI) -> None:
    events = list(client.responses.create(
        model=MODEL, input="Report the shape.", tools=[FLAT_TOOL], max_output_tokens=120,
        tool_choice={"type": "function", "name": "report_shape"}, temperature=0, stream=True,
    ))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "report_shape"
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert set(json.loads(done.arguments)) == {"shape", "color"}
    assert kinds[-1] == "response.completed"


def test_parse_and_stream_helpers_with_a_pydantic_model(client: openai.OpenAI) -> None:
    parsed = client.responses.parse(
        model=MODEL, input="Report the shape.", text_format=Shape, max_output_tokens=40,
        temperature=0,
    )
    assert isinstance(parsed.output_parsed, Shape)
    with client.responses.stream(
        model=MODEL, input="Report the shape.", text_format=Shape, max_output_tokens=40,
        temperature=0,
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()  # needs response.completed
    assert final.output_parsed == parsed.output_parsed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"stream_options": {"include_usage": True}}, "stream_options is not supported"),
        ({"previous_response_id": "resp-1"}, "responses are not stored"),
        ({"max_output_tokens": 0}, "max_output_tokens value should be greater than 0"),
        ({"input": []}, "input array must not be empty"),
        ({"input": [{"type": "web_search_call"}]}, "'web_search_call' is not supported"),
        ({"tools": [{"type": "web_search"}]}, "Only function tools are supported"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type must be one of"),
        ({"store": True}, "store is not supported: responses are not stored"),
        ({"include": ["message.output_text.logprobs"]}, "include is not supported"),
        ({"truncation": "auto"}, 'truncation: only "disabled" is supported'),
    ],
)
def test_bad_requests(agent_server: ServerProcess, extra: dict, message: str) -> None:
    status, body = agent_server.post("/v3/responses", {"model": MODEL, "input": "x", **extra})
    assert status == 400
    assert message in body["error"]["message"]


def test_responses_is_no_longer_a_wrong_endpoint(agent_server: ServerProcess) -> None:
    status, body = agent_server.post("/v3/nothing", {"model": MODEL, "input": "x"})
    assert status == 400 and "Wrong endpoint" in body["error"]["message"]
    request = urllib.request.Request(
        agent_server.url + "/v3/responses",
        data=json.dumps({"model": MODEL, "input": "x", "max_output_tokens": 2}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        assert json.loads(r.read())["object"] == "response"
