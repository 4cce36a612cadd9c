"""ovgraph on a real Ray Serve cluster: two simulated nodes sealed in namespaces of their own.

The cluster (``ovgraph.ray_serve.local_cluster``) runs inside its own network and PID
namespaces with the dashboard off; the tests reach Ray's HTTP and gRPC proxies through two
loopback sockets handed in, with the real ``openai`` and ``tritonclient`` clients. One
application serves a repository of two graphs (the embedded default model and a tensor
pass-through) with two replicas, one per node. Every test runs behind both of Ray Serve's
ingress modes: HAProxy in front of replicas that serve HTTP and gRPC themselves, and Ray's
Python proxy actor.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install -e '.[ray]'")

from ovgraph.ray_serve.deployment import REPLICA_HEADER  # noqa: E402
from ovgraph.ray_serve.local_cluster import LocalCluster, can_isolate  # noqa: E402

pytestmark = [
    pytest.mark.ray,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not can_isolate(), reason="needs root, unshare and ip (namespaces)"),
]

MODEL = "qwen2vl-shapes"
PASSTHROUGH = 'input_stream: "in"\noutput_stream: "out"\n' \
    'node { calculator: "PassThroughCalculator" input_stream: "in" output_stream: "out" }\n'


def _red_circle_messages() -> list[dict[str, Any]]:
    import re

    url = re.search(r'"url": "(data:image/png;base64,[A-Za-z0-9+/=]+)"',
                    (REPO / "README.md").read_text())
    assert url is not None
    return [{"role": "user", "content": [
        {"type": "text", "text": "Describe the picture."},
        {"type": "image_url", "image_url": {"url": url.group(1)}},
    ]}]


def _chat_body() -> bytes:
    return json.dumps({"model": MODEL, "messages": _red_circle_messages(),
                       "max_completion_tokens": 20}).encode()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-repo")
    (root / "passthrough").mkdir()
    (root / "passthrough" / "graph.pbtxt").write_text(PASSTHROUGH)
    config = root / "config.json"
    config.write_text(json.dumps({"model_config_list": [], "mediapipe_config_list": [
        {"name": MODEL, "base_path": str(REPO / "graphs" / MODEL)},
        {"name": "passthrough", "base_path": "passthrough"},
    ]}))
    return config


@pytest.fixture(scope="module", params=["haproxy", "proxy"])
def cluster(
    request: pytest.FixtureRequest, repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """The cluster behind each of Ray Serve's ingress modes (every test runs on both)."""
    log = tmp_path_factory.mktemp("ray-log") / "cluster.log"
    with LocalCluster(
        nodes=2, cpus_per_node=2, log_path=log, ingress=request.param,
        app_args={"num_replicas": 2, "config_path": str(repository)},
    ) as c:
        yield c


def _post(url: str, body: bytes, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


class Load:
    """``workers`` threads posting the red-circle chat without retries; counts the outcomes."""

    def __init__(self, url: str, workers: int = 4) -> None:
        self.url = url + "/v3/chat/completions"
        self.outcomes: Counter[int] = Counter()
        self.replicas: Counter[str] = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def _run(self) -> None:
        body = _chat_body()
        while not self.stop.is_set():
            try:
                status, headers, data = _post(self.url, body)
                ok = status == 200 and b"A red circle." in data
                code = 200 if ok else (status if status != 200 else -1)
            except OSError:
                code, headers = 0, {}
            with self.lock:
                self.outcomes[code] += 1
                self.replicas[headers.get(REPLICA_HEADER, "")] += 1

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.outcomes.values())


def _wait(what: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.5)
    raise AssertionError(message)


def _grpc_live(target: str, app: str) -> bool:
    """Whether ``app`` answers ServerLive over gRPC, on a connection of its own."""
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    client = tg.InferenceServerClient(target)
    try:
        return bool(client.is_server_live(headers={"application": app}))
    except InferenceServerException:
        return False
    finally:
        client.close()


def _running(cluster: LocalCluster, app: str = "ovgraph") -> int:
    status = cluster.command("status")
    return int(status["apps"].get(app, {}).get("replicas", {}).get("RUNNING", 0))


def test_red_circle_unary_and_streamed(cluster: LocalCluster) -> None:
    import openai

    client = openai.OpenAI(base_url=cluster.url + "/v3", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model=MODEL, messages=_red_circle_messages(), max_completion_tokens=20)
    assert answer.choices[0].message.content == "A red circle."
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=_red_circle_messages(), max_completion_tokens=20, stream=True))
    assert len(chunks) >= 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "A red circle."
    assert sorted(m.id for m in client.models.list().data) == ["passthrough", MODEL]


def _replicas_answering(cluster: LocalCluster, timeout: float = 90.0) -> Counter[str]:
    """Sequential chats until two replicas have answered (or ``timeout``); who answered.

    A replica Ray reports RUNNING joins HAProxy's backend only once HAProxy's own health
    checks pass, a few seconds later, so the first requests may all reach one replica.
    """
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    while len(seen) < 2 and time.monotonic() < deadline:
        status, headers, _ = _post(cluster.url + "/v3/chat/completions", _chat_body())
        assert status == 200
        seen[headers[REPLICA_HEADER]] += 1
    return seen


def test_both_replicas_serve(cluster: LocalCluster) -> None:
    seen = _replicas_answering(cluster)
    assert len(seen) == 2, seen
    print(f"resident memory by process (MiB): {cluster.command('memory')['rss_mib']}")


def test_rest_errors_and_probes_are_ovgraphs(cluster: LocalCluster) -> None:
    status, _, body = _post(cluster.url + "/v3/chat/completions", b"{nope")
    assert status == 400
    assert json.loads(body)["error"]["message"] == "Cannot parse JSON body"
    status, _, body = _post(cluster.url + "/v3/chat/completions", b'{"model": "nope"}')
    assert status == 404 and json.loads(body)["error"]["type"]
    with urllib.request.urlopen(cluster.url + "/v2/health/ready") as r:
        assert r.status == 200
    with urllib.request.urlopen(cluster.url + "/v1/config") as r:
        states = json.loads(r.read())
    assert states[MODEL]["model_version_status"][0]["state"] == "AVAILABLE"
    # KServe REST through the same proxy
    infer = {"inputs": [{"name": "in", "shape": [2], "datatype": "INT32", "data": [4, 5]}]}
    status, _, body = _post(cluster.url + "/v2/models/passthrough/infer",
                            json.dumps(infer).encode())
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == [4, 5]


def test_grpc_kserve_through_rays_proxy(cluster: LocalCluster) -> None:
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    headers = {"application": "ovgraph"}
    client = tg.InferenceServerClient(cluster.grpc_target)
    try:
        assert client.is_server_live(headers=headers)
        assert client.is_server_ready(headers=headers)
        assert client.is_model_ready("passthrough", headers=headers)
        meta = client.get_model_metadata("passthrough", headers=headers)
        assert meta.name == "passthrough" and [i.name for i in meta.inputs] == ["in"]
        assert client.get_server_metadata(headers=headers).name
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        tensor = tg.InferInput("in", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("passthrough", [tensor], headers=headers)
        np.testing.assert_array_equal(result.as_numpy("out"), x)
        with pytest.raises(InferenceServerException) as err:
            client.infer("nope", [tensor], headers=headers)
        assert err.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()


def test_grpc_stream_through_rays_proxy(cluster: LocalCluster) -> None:
    """``ModelStreamInfer`` over Ray's (beta) bidirectional gRPC streams."""
    import queue

    import tritonclient.grpc as tg

    results: queue.Queue[Any] = queue.Queue()
    client = tg.InferenceServerClient(cluster.grpc_target)
    try:
        client.start_stream(callback=lambda result, error: results.put((result, error)),
                            headers={"application": "ovgraph"})
        for i in range(3):
            x = np.array([i, i + 1], dtype=np.int32)
            tensor = tg.InferInput("in", [2], "INT32")
            tensor.set_data_from_numpy(x)
            client.async_stream_infer("passthrough", [tensor], request_id=f"r{i}")
        got = [results.get(timeout=60) for _ in range(3)]
        client.stop_stream()
    finally:
        client.close()
    for i, (result, error) in enumerate(got):
        assert error is None, error
        np.testing.assert_array_equal(result.as_numpy("out"), [i, i + 1])


def test_kill_a_replica_under_load(cluster: LocalCluster) -> None:
    before = cluster.command("replica_pids")["pids"]
    assert len(before) == 2
    with Load(cluster.url) as load:
        _wait(lambda: load.total >= 40, 120, "no load")
        assert cluster.command("kill", pid=before[0])["ok"]
        killed_at = load.total
        # Long enough that the most the kill may fail, the 4 workers' requests the replica
        # held, stays under 1 % of the whole load.
        _wait(lambda: load.total >= killed_at + 420, 300, "the load stalled after the kill")
    outcomes = load.outcomes
    failed = load.total - outcomes[200]
    print(f"kill -9 of a replica under load: {dict(outcomes)} over {dict(load.replicas)}")
    assert failed <= 0.01 * load.total, outcomes
    # Ray starts a new replica; both serve again.
    _wait(lambda: _running(cluster) == 2, 180, "the replica did not come back")
    after = cluster.command("replica_pids")["pids"]
    assert before[0] not in after and len(after) == 2
    seen = _replicas_answering(cluster)
    assert len(seen) == 2, seen


def test_scale_up_from_one_to_two_under_load(cluster: LocalCluster, repository: Path) -> None:
    answer = cluster.command("deploy", app_args={
        "config_path": str(repository), "min_replicas": 1, "initial_replicas": 1,
        "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 1,
        "downscale_delay_s": 600,
    })
    assert answer["ok"], answer
    _wait(lambda: _running(cluster) == 1, 120, "did not settle at one replica")
    with Load(cluster.url, workers=4) as load:
        _wait(lambda: _running(cluster) == 2, 120, "did not scale up to two replicas")
        settled = load.total
        _wait(lambda: load.total >= settled + 20, 120, "no load after scaling")
    assert load.outcomes[200] == load.total, load.outcomes
    print(f"scaled 1 -> 2 under load: {dict(load.replicas)}")


def test_config_file_with_one_application_per_model(
    cluster: LocalCluster, repository: Path, tmp_path: Path
) -> None:
    import openai
    import tritonclient.grpc as tg

    from ovgraph.cli import main

    path = tmp_path / "serve.yaml"
    assert main(["ray-config", "--config_path", str(repository), "--per_model",
                 "--num_cpus", "0.5", "--http_host", "127.0.0.1", "-o", str(path)]) == 0
    answer = cluster.command("serve_run", path=str(path))
    assert answer["ok"], answer
    _wait(lambda: _running(cluster, MODEL) == 1 and _running(cluster, "passthrough") == 1,
          180, "the per-model applications did not start")
    client = openai.OpenAI(base_url=f"{cluster.url}/{MODEL}/v3", api_key="-", max_retries=0)
    answer = client.chat.completions.create(
        model=MODEL, messages=_red_circle_messages(), max_completion_tokens=20)
    assert answer.choices[0].message.content == "A red circle."
    assert [m.id for m in client.models.list().data] == [MODEL]  # this application's only
    # The new application's gRPC route may reach the ingress after it reports RUNNING (NOT_FOUND
    # "Application 'passthrough' not found" until then); every probe opens its own connection.
    try:
        _wait(lambda: _grpc_live(cluster.grpc_target, "passthrough"), 60,
              "no gRPC route to the application")
    except AssertionError:
        if cluster.ingress != "haproxy":
            raise
        # Seen in about half the full-suite runs: HAProxy's configuration holds the route and
        # its gRPC backend passes health checks, yet calls keep getting NOT_FOUND (README).
        pytest.xfail("Ray 2.60's HAProxy ingress answers NOT_FOUND for an application added "
                     "by a later `serve run`")
    grpc = tg.InferenceServerClient(cluster.grpc_target)
    try:
        x = np.array([1, 2, 3], dtype=np.int64)
        tensor = tg.InferInput("in", [3], "INT64")
        tensor.set_data_from_numpy(x)
        result = grpc.infer("passthrough", [tensor], headers={"application": "passthrough"})
        np.testing.assert_array_equal(result.as_numpy("out"), x)
    finally:
        grpc.close()
