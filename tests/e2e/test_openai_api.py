"""The default server driven by the official ``openai`` client and by raw HTTP."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from tests.conftest import ServerProcess, golden_array, png_data_url

MODEL = "qwen2vl-tiny"


def _image_message(text: str = "Describe the image.") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url",
                 "image_url": {"url": png_data_url(golden_array()), "detail": "low"}},
            ],
        }
    ]


def test_models_list(openai_client: openai.OpenAI) -> None:
    ids = [m.id for m in openai_client.models.list()]
    assert ids == [MODEL]


def test_unary_chat_with_image(openai_client: openai.OpenAI) -> None:
    response = openai_client.chat.completions.create(
        model=MODEL, messages=_image_message(), max_completion_tokens=12, temperature=0
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert response.usage.completion_tokens == 12
    assert response.usage.prompt_tokens > 64  # 64 image tokens for a 224x224 picture
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert response.id.startswith("chatcmpl-")


def test_streamed_chat_matches_unary(openai_client: openai.OpenAI) -> None:
    unary = openai_client.chat.completions.create(
        model=MODEL, messages=_image_message(), max_tokens=16, temperature=0
    )
    stream = openai_client.chat.completions.create(
        model=MODEL, messages=_image_message(), max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        elif chunk.usage is not None:
            usage = chunk.usage
    assert text == unary.choices[0].message.content
    assert finish == "length"
    assert usage is not None
    assert usage.completion_tokens == 16


def test_sse_layout_with_usage(server: ServerProcess) -> None:
    body = {
        "model": MODEL, "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4,
    }
    request = urllib.request.Request(
        server.url + "/v3/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    usage_chunk = json.loads(events[-2][6:])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 4
    role, *contents = [json.loads(e[6:]) for e in events[:-2]]
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert "usage" not in role  # OVMS's handshake chunk has no usage key
    assert all(c["object"] == "chat.completion.chunk" for c in [role, *contents])
    assert all("usage" in c and c["usage"] is None for c in contents)
    assert contents[-1]["choices"][0]["finish_reason"] == "length"


def test_ovms_demo_curl_payload(server: ServerProcess) -> None:
    # The request shape of the OVMS VLM demo: image as a data URL, max_completion_tokens.
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe what is on the picture."},
            {"type": "image_url", "image_url": {"url": png_data_url(golden_array(), "JPEG")}},
        ]}],
        "max_completion_tokens": 8,
    }
    status, answer = server.post("/v3/chat/completions", body)
    assert status == 200
    message = answer["choices"][0]["message"]
    assert message["refusal"] is None
    assert message["tool_calls"] == []
    assert answer["object"] == "chat.completion"
    assert answer["model"] == MODEL


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        # empty messages array
        ({"messages": []}, "Messages array cannot be empty", "messages"),
        # stream_options without stream
        ({"messages": [{"role": "user", "content": "x"}], "stream_options": {}},
         "stream_options provided, but stream not set to true", "stream_options"),
        # temperature out of range
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 3},
         "temperature out of range(0.0, 2.0)", "temperature"),
        # max_tokens zero
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
         "max_tokens value should be greater than 0", "max_tokens"),
        # image tag injection
        ({"messages": [{"role": "user", "content": "<ov_genai_image_0>"}]},
         "Message contains restricted <ov_genai_image> tag", "messages"),
        # invalid base64 image
        ({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]},
         "Invalid base64 string in request", "messages"),
    ],
)
def test_validation_errors_over_http(
    server: ServerProcess, body: dict, message: str, param: str
) -> None:
    status, answer = server.post("/v3/chat/completions", {"model": MODEL, **body})
    assert status == 400
    assert answer["error"]["message"] == message
    assert answer["error"]["param"].startswith(param)
    assert answer["error"]["type"] == "invalid_request_error"


def test_openai_client_sees_bad_request(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], top_p=5
        )
    assert "top_p out of range(0.0, 1.0)" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "Cannot parse JSON body"),  # malformed
        (b"[]", "JSON body must be an object"),  # not an object
        (b'{"messages": []}', "model field is missing"),  # no model
    ],
)
def test_http_level_errors(server: ServerProcess, raw: bytes, message: str) -> None:
    status, answer = server.post("/v3/chat/completions", raw)
    assert status == 400
    assert message in answer["error"]["message"]


def test_unknown_model_404(server: ServerProcess) -> None:
    status, answer = server.post("/v3/chat/completions", {"model": "nope", "messages": []})
    assert status == 404
    assert answer["error"]["message"] == (
        "Mediapipe graph definition with requested name is not found"
    )


def test_config_and_health(server: ServerProcess) -> None:
    status, raw = server.get("/v1/config")
    assert status == 200
    state = json.loads(raw)[MODEL]["model_version_status"][0]
    assert state["state"] == "AVAILABLE"
    assert server.get("/v2/health/live")[0] == 200
    assert server.get("/v2/health/ready")[0] == 200
    assert server.get(f"/v2/models/{MODEL}/ready")[0] == 200
    assert server.get("/v2/models/nope/ready")[0] == 404
    status, raw = server.get("/v3/models/" + MODEL)
    assert json.loads(raw)["id"] == MODEL


def test_vllm_probes_and_version(server: ServerProcess) -> None:
    import importlib.metadata

    assert server.get("/health")[0] == 200
    assert server.get("/ping")[0] == 200
    ping = urllib.request.Request(server.url + "/ping", data=b"", method="POST")
    with urllib.request.urlopen(ping, timeout=30) as r:
        assert r.status == 200
    status, raw = server.get("/version")
    assert status == 200
    assert json.loads(raw) == {"version": importlib.metadata.version("ovgraph")}


def test_server_keeps_serving_after_errors(server: ServerProcess) -> None:
    for _ in range(3):
        server.post("/v3/chat/completions", b"\xff\xfe garbage")
    status, answer = server.post(
        "/v3/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    assert status == 200
    assert answer["usage"]["completion_tokens"] == 3
