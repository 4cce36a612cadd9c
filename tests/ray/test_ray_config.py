"""``build_app`` arguments and ``ovgraph ray-config`` files, checked against Ray's own schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ovgraph.cli import main
from tests.conftest import TINY_MODEL

pytest.importorskip("ray", reason="needs the ray extra: pip install -e '.[ray]'")

from ray.serve.schema import ServeDeploySchema

from ovgraph.ray_serve.deployment import (
    build_app,
    deployment_options,
    serve_config,
)

pytestmark = pytest.mark.ray


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"num_replicas": "2"}, {"num_replicas": 2}),
        # any autoscaling key turns autoscaling on (and num_replicas off)
        ({"num_replicas": "2", "max_replicas": "3", "target_ongoing_requests": "1"},
         {"autoscaling_config": {"max_replicas": 3, "target_ongoing_requests": 1.0}}),
        ({"num_cpus": "0.5", "max_ongoing_requests": "4"},
         {"ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 4}),
        ({"graceful_shutdown_timeout_s": "7"}, {"graceful_shutdown_timeout_s": 7.0}),
    ],
)
def test_deployment_options(args: dict[str, str], expected: dict[str, object]) -> None:
    options = deployment_options(args)
    for key, value in expected.items():
        assert options[key] == value
    if "autoscaling_config" in expected:
        assert "num_replicas" not in options


def test_serve_flags_are_ovgraphs() -> None:
    config = serve_config(["--model_path", str(TINY_MODEL), "--metrics_enable",
                           "--max_queued_requests", "7"])
    assert config.model_path == str(TINY_MODEL)
    assert config.http.metrics_enable and config.max_queued_requests == 7
    with pytest.raises(ValueError, match="Unknown ovgraph serve arguments: --nope 1"):
        serve_config(["--nope", "1"])
    with pytest.raises(ValueError, match="invalid choice"):
        serve_config(["--task", "dance"])


def test_build_app_maps_arguments() -> None:
    app = build_app({"num_replicas": "2", "model_path": str(TINY_MODEL),
                     "metrics_enable": "true", "max_queued_requests": "9", "drain_timeout": "4"})
    deployment = app._bound_deployment
    assert deployment.num_replicas == 2
    assert deployment.max_queued_requests == 9  # Ray's router queue is ovgraph's limit
    assert deployment._deployment_config.graceful_shutdown_timeout_s == 4.0
    flags = deployment.init_args[0]
    assert flags[flags.index("--model_path") + 1] == str(TINY_MODEL)
    assert "--metrics_enable" in flags
    with pytest.raises(ValueError, match="--bogus"):
        build_app({"bogus": "1"})  # at deploy time, not in every replica


def _repository(tmp_path: Path) -> Path:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [], "mediapipe_config_list": [
        {"name": "tiny", "base_path": str(TINY_MODEL)},
        {"name": "org/other model", "base_path": str(TINY_MODEL)},
    ]}))
    return config


def test_ray_config_one_application(tmp_path: Path) -> None:
    out = tmp_path / "serve.yaml"
    config = _repository(tmp_path)
    assert main(["ray-config", "--config_path", str(config), "--num_replicas", "3",
                 "--num_cpus", "2", "-o", str(out)]) == 0
    document = yaml.safe_load(out.read_text())
    schema = ServeDeploySchema.model_validate(document)
    (app,) = schema.applications
    assert app.route_prefix == "/" and app.import_path == "ovgraph.ray_serve:build_app"
    assert app.args == {"config_path": str(config.resolve())}
    (deployment,) = app.deployments
    assert deployment.name == "ovgraph" and deployment.num_replicas == 3
    assert deployment.ray_actor_options.num_cpus == 2
    assert "add_GRPCInferenceServiceServicer_to_server" in \
        schema.grpc_options.grpc_servicer_functions[0]
    build_app(app.args)  # the arguments it wrote are ones build_app takes


def test_ray_config_per_model_with_autoscaling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) \
        -> None:
    config = _repository(tmp_path)
    assert main(["ray-config", "--config_path", str(config), "--per_model",
                 "--max_replicas", "4"]) == 0
    schema = ServeDeploySchema.model_validate(yaml.safe_load(capsys.readouterr().out))
    apps = {a.name: a for a in schema.applications}
    assert set(apps) == {"tiny", "org/other model"}
    assert apps["tiny"].route_prefix == "/tiny"
    assert apps["org/other model"].route_prefix == "/org-other-model"
    assert apps["org/other model"].args["model_name"] == "org/other model"
    scaling = apps["tiny"].deployments[0].autoscaling_config
    assert scaling["max_replicas"] == 4 and scaling["min_replicas"] == 1


def test_ray_config_refuses_an_unreadable_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ray-config", "--config_path", str(tmp_path / "missing.json")]) == 2
    assert "could not be read" in capsys.readouterr().err
