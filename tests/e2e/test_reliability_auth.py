"""API key and CORS over real HTTP and gRPC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import openai
import pytest

from ovgraph.frontends.grpc.auth import make_auth_interceptor
from tests.conftest import ServerProcess
from tests.e2e._reliability import MODEL, assert_clean, chat, request

pytestmark = pytest.mark.e2e
KEY = "s3cret-Key_123"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    key_file = tmp_path_factory.mktemp("key") / "api_key"
    key_file.write_text(f"  {KEY}  \nsecond line ignored\n")
    proc = ServerProcess([
        "--api_key_file", str(key_file), "--allowed_origins", "https://app.example",
        "--allowed_methods", "POST, GET", "--log_level", "DEBUG",
    ], env={"API_KEY": "not-this-one"}).wait_ready()
    yield proc
    proc.stop()


def _chat_status(server: ServerProcess, path: str, auth: str | None) -> tuple[int, dict, bytes]:
    headers = {"Authorization": auth} if auth is not None else {}
    return request(server.url + path, chat(max_tokens=2), headers=headers)


@pytest.mark.parametrize(
    "auth",
    [None, "", "Bearer", "Bearer ", "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY.upper()}",
     f"Bearer {KEY}x", "Bearer not-this-one", "Bearer None"],
)
@pytest.mark.parametrize("path", ["/v3/chat/completions", "/v1/chat/completions",
                                  "/v3/v1/chat/completions", "/v3/completions"])
def test_model_routes_need_the_key(keyed: ServerProcess, path: str, auth: str | None) -> None:
    status, headers, raw = _chat_status(keyed, path, auth)
    assert status == 401
    assert_clean(raw)
    error = json.loads(raw)["error"]
    assert error["type"] == "authentication_error"
    assert error["message"] == "Unauthorized request due to invalid or missing api-key"
    assert headers["www-authenticate"].startswith("Bearer")
    assert headers["access-control-allow-origin"] == "https://app.example"


@pytest.mark.parametrize("path", ["/v3/chat/completions", "/v1/chat/completions"])
def test_correct_key_accepted(keyed: ServerProcess, path: str) -> None:
    for auth in (f"Bearer {KEY}", f"bearer {KEY}"):
        status, _, raw = _chat_status(keyed, path, auth)
        assert status == 200, raw[:200]
        assert json.loads(raw)["usage"]["completion_tokens"] == 2


def test_kserve_infer_and_reload_need_the_key(keyed: ServerProcess) -> None:
    for path in (f"/v2/models/{MODEL}/infer", f"/v2/models/{MODEL}/versions/1/infer",
                 "/v1/config/reload"):
        status, _, raw = request(keyed.url + path, {"inputs": []})
        assert status == 401, path
        error = json.loads(raw)["error"]
        if path.startswith("/v2/"):  # KServe's error shape
            assert error == "Unauthorized request due to invalid or missing api-key"
        else:
            assert error["type"] == "authentication_error"


def test_probes_and_listings_need_no_key(keyed: ServerProcess) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready",
                 "/v1/config", "/v3/models"):
        status, _, _ = request(keyed.url + path)
        assert status == 200, path


def test_openai_client_with_and_without_key(keyed: ServerProcess) -> None:
    good = openai.OpenAI(base_url=keyed.url + "/v3", api_key=KEY, max_retries=0)
    answer = good.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert answer.usage.completion_tokens == 2
    bad = openai.OpenAI(base_url=keyed.url + "/v3", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 401


def test_preflight_needs_no_key(keyed: ServerProcess) -> None:
    status, headers, _ = request(
        keyed.url + "/v3/chat/completions", method="OPTIONS",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert status == 204
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-allow-methods"] == "POST, GET"
    assert "access-control-allow-credentials" not in headers


def test_key_never_logged(keyed: ServerProcess) -> None:
    _chat_status(keyed, "/v3/chat/completions", f"Bearer {KEY}")
    _chat_status(keyed, "/v3/chat/completions", "Bearer wrong-key-attempt")
    logs = keyed.logs()
    assert "POST /v3/chat/completions" in logs  # the access log is on
    assert KEY not in logs
    assert "wrong-key-attempt" not in logs


def test_env_key(tmp_path: Path) -> None:
    proc = ServerProcess([], env={"API_KEY": "from-env"}).wait_ready()
    try:
        assert request(proc.url + "/v3/chat/completions", chat(max_tokens=1))[0] == 401
        status, _, _ = request(proc.url + "/v3/chat/completions", chat(max_tokens=1),
                               headers={"Authorization": "Bearer from-env"})
        assert status == 200
    finally:
        proc.stop()


def test_no_key_configured_accepts_any_header(server: ServerProcess) -> None:
    for auth in ("Bearer None", "Basic abc", "whatever"):
        status, _, _ = request(server.url + "/v3/chat/completions", chat(max_tokens=1),
                               headers={"Authorization": auth})
        assert status == 200, auth
    status, headers, _ = request(server.url + "/v3/models")
    assert headers["access-control-allow-origin"] == "*"


# --------------------------------------------------------------------------- gRPC


def _grpc_server(key: str | None) -> tuple[grpc.Server, int]:
    def infer(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"ran:" + request

    def live(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"live"

    def stream(requests, context):
        for item in requests:
            yield b"ran:" + item

    handlers = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
            "ServerLive": grpc.unary_unary_rpc_method_handler(live),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), interceptors=[make_auth_interceptor(key)]
    )
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def test_grpc_interceptor() -> None:
    server, port = _grpc_server(KEY)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
            stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
            for metadata in ((), (("authorization", "Bearer wrong"),),
                             (("authorization", KEY),)):
                with pytest.raises(grpc.RpcError) as info:
                    infer(b"x", metadata=metadata, timeout=5)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert KEY not in info.value.details()
            with pytest.raises(grpc.RpcError) as info:
                list(stream(iter([b"x"]), timeout=5))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            good = (("authorization", f"Bearer {KEY}"),)
            assert infer(b"x", metadata=good, timeout=5) == b"ran:x"
            assert list(stream(iter([b"y"]), metadata=good, timeout=5)) == [b"ran:y"]
            assert live(b"", timeout=5) == b"live"
    finally:
        server.stop(0)


def test_grpc_interceptor_without_key_passes_everything() -> None:
    server, port = _grpc_server(None)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            assert infer(b"x", metadata=(("authorization", "Bearer None"),), timeout=5) == b"ran:x"
    finally:
        server.stop(0)
