"""``ServeConfig``: the server's configuration, typed, built once, each default in one place.

The command line (``ovgraph serve``) builds it with :meth:`ServeConfig.from_args`; code and tests
build it directly (``ServeConfig(rest_port=0, model_path=...)``) and hand it to
:func:`ovgraph.server.run_server` or :class:`ovgraph.server.Server`. Sections go to their owners:
:attr:`ServeConfig.http` to the REST frontend, :meth:`ServeConfig.node_settings` to the node
initializers of the graphs (``create_node_resources``), the limits to the data plane.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_GRPC_WORKERS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_REST_PORT",
    "HttpConfig",
    "ServeConfig",
]

DEFAULT_REST_PORT = 8000  # when neither a REST nor a gRPC port is given
DEFAULT_GRPC_WORKERS = 32  # each open ModelStreamInfer call holds one
DEFAULT_MAX_QUEUED = 256
DEFAULT_REQUEST_TIMEOUT = 600.0  # seconds a request may wait for its (next) output
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_DRAIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class HttpConfig:
    """What the REST frontend needs besides the data plane (CORS, metrics route)."""

    allowed_origins: str = "*"
    allowed_methods: str = "*"
    allowed_headers: str = "*"
    allow_credentials: bool = False
    metrics_enable: bool = False
    #: ``--metrics_list``: comma-separated metric families to expose (OVMS semantics).
    metrics_list: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The handlers' settings mapping."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``ovgraph serve`` needs (OVMS's flag names).

    Attributes:
        node_options: flags owned by calculator packages (e.g. the LLM flags), handed to node
            initializers as they are; see :meth:`node_settings`.
    """

    rest_port: int = 0
    rest_bind_address: str = "0.0.0.0"
    port: int = 0
    grpc_bind_address: str = "0.0.0.0"
    grpc_max_threads: int = DEFAULT_GRPC_WORKERS
    model_name: str | None = None
    model_path: str | None = None
    config_path: str | None = None
    task: str | None = None
    log_level: str = "INFO"
    file_system_poll_wait_seconds: int = 1
    api_key_file: str = ""
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    max_queued_requests: int = DEFAULT_MAX_QUEUED
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_body_size: int = DEFAULT_MAX_BODY_BYTES
    http: HttpConfig = field(default_factory=HttpConfig)
    node_options: dict[str, Any] = field(default_factory=dict)

    @property
    def effective_rest_port(self) -> int:
        """The REST port (``DEFAULT_REST_PORT`` when neither port was given)."""
        if not self.rest_port and not self.port:
            return DEFAULT_REST_PORT
        return self.rest_port

    def node_settings(self) -> dict[str, Any]:
        """The settings node initializers receive.

        The package-owned flags plus the server's own that graphs may read (``config_path``,
        ``api_key_file``, limits).
        """
        settings = dict(self.node_options)
        settings.update(
            api_key_file=self.api_key_file,
            max_queued_requests=self.max_queued_requests,
            request_timeout=self.request_timeout,
            grpc_max_threads=self.grpc_max_threads,
            metrics_enable=self.http.metrics_enable,
        )
        if self.config_path:
            settings["config_path"] = str(Path(self.config_path).resolve())
        return settings

    def grpc_settings(self) -> dict[str, Any]:
        """The gRPC frontend's settings."""
        return {
            "grpc_max_threads": self.grpc_max_threads,
            "max_queued_requests": self.max_queued_requests,
            "request_timeout": self.request_timeout,
            "api_key_file": self.api_key_file,
        }

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeConfig:
        """Build the configuration from parsed ``ovgraph serve`` flags.

        Flags that are not fields of the server's own configuration (those contributed by
        calculator packages) land in ``node_options``.
        """
        values = dict(vars(args))
        http_names = {f.name for f in dataclasses.fields(HttpConfig)}
        own = {f.name for f in dataclasses.fields(cls)} - {"http", "node_options"}
        http = HttpConfig(**{
            k: _default_if_none(HttpConfig, k, values[k]) for k in http_names if k in values
        })
        kwargs = {k: _default_if_none(cls, k, values[k]) for k in own if k in values}
        skip = own | http_names | {"command"}
        node_options = {k: v for k, v in values.items() if k not in skip}
        return cls(http=http, node_options=node_options, **kwargs)


def _default_if_none(kind: type, name: str, value: Any) -> Any:
    if value is not None:
        return value
    for item in dataclasses.fields(kind):
        if item.name == name and item.default is not dataclasses.MISSING:
            return item.default
    return value
