"""A served graph: file, validation, node resources, state, runs (``MediapipeGraphDefinition``).

Load order follows OVMS: read the file → parse → pool directive → validate (unknown calculators
fail here) → node initializers (``create_node_resources``, e.g. loading the genai pipeline, once
per definition) → AVAILABLE. A failure leaves the definition in state ``LOADING`` with the error
kept for ``/v1/config`` and readiness probes; other graphs keep serving.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ovgraph import tracing
from ovgraph.errors import GraphConfigError, OvGraphError, ServableNotReadyError
from ovgraph.framework.graph import CalculatorGraph
from ovgraph.framework.tag_map import TagMapError, parse_spec
from ovgraph.framework.textformat import parse_graph_config
from ovgraph.framework.validation import ValidatedGraph

__all__ = ["GraphDefinition", "request_side_packets"]

logger = logging.getLogger("ovgraph.graph")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
_INPUT_NAMES = ("input",)
_OUTPUT_NAMES = ("output",)


class GraphDefinition:
    """One named graph of the model repository.

    Args:
        name: the servable name clients use (``model`` in OpenAI requests).
        graph_path: the graph.pbtxt file; or ``text`` for a graph built in memory.
        base_path: folder that relative paths in node options resolve against.
        settings: server settings handed to node initializers.
    """

    def __init__(
        self,
        name: str,
        *,
        graph_path: Path | None = None,
        text: str | None = None,
        base_path: Path | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.graph_path = graph_path
        self.text = text
        self.base_path = base_path or (graph_path.parent if graph_path else Path.cwd())
        self.settings = dict(settings or {})
        self.state = START
        self.error: str | None = None
        self.error_code = "OK"
        self.validated: ValidatedGraph | None = None
        self.resources: dict[str, Any] = {}
        self.input_stream = ""
        self.output_streams: list[str] = []
        self.checksum = ""
        self.queue_directive: str | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    def read_text(self) -> str:
        """Return the graph text (reading the file when there is one)."""
        if self.text is not None:
            return self.text
        assert self.graph_path is not None
        return self.graph_path.read_text()

    def load(self) -> None:
        """Parse, validate and initialize; never raises (the state says how it went)."""
        self.state = LOADING
        try:
            text = self.read_text()
            self.checksum = hashlib.md5(text.encode()).hexdigest()
            parsed = parse_graph_config(text, str(self.graph_path) if self.graph_path else None)
            self.queue_directive = parsed.queue_size_directive
            validated = ValidatedGraph(
                parsed, base_path=self.base_path,
                request_side_packets=request_side_packets(parsed.config),
            )
            resources = {}
            for spec, cls in zip(validated.nodes, validated.classes):
                try:
                    resource = cls.create_node_resources(spec, self.settings)
                except OvGraphError:
                    raise
                except Exception as exc:
                    raise GraphConfigError(
                        f'Node "{spec.name}" resource initialization failed: {exc}',
                        node=spec.name, line=spec.line,
                    ) from exc
                if resource is not None:
                    resources[spec.name] = resource
            self.input_stream = _pick(validated.graph_inputs.names(), _INPUT_NAMES)
            self.output_streams = validated.graph_outputs.names()
        except OSError as exc:
            where = f" {self.graph_path.resolve()}" if self.graph_path is not None else ""
            self._failed(f"Graph file{where} could not be read: {exc.strerror}")
            return
        except OvGraphError as exc:
            self._failed(str(exc))
            return
        except Exception as exc:  # keep the server up whatever a plugin does
            logger.exception("Loading graph %s failed", self.name)
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        self.validated = validated
        self.resources = resources
        self.error = None
        self.error_code = "OK"
        self.state = AVAILABLE
        logger.info("Graph %s is AVAILABLE", self.name)

    def _failed(self, message: str) -> None:
        self.error = message
        self.error_code = "FAILED_PRECONDITION"
        self.state = LOADING
        logger.error("Graph %s failed to load: %s", self.name, message)

    def unload(self) -> None:
        """Drop the graph: new runs are refused; runs in flight finish on their own."""
        self.state = END
        self.validated = None
        self.resources = {}

    # ------------------------------------------------------------------ runs

    @property
    def available(self) -> bool:
        """Whether new runs can start."""
        return self.state == AVAILABLE

    def new_run(self) -> CalculatorGraph:
        """Instantiate one run of the graph (cheap: validation and resources are shared)."""
        validated = self.validated
        if self.state != AVAILABLE or validated is None:
            reason = f": {self.error}" if self.error else ""
            raise ServableNotReadyError(f'Servable "{self.name}" is not ready{reason}')
        run = CalculatorGraph(validated, resources=self.resources)
        tracing.trace_run(run, self.name)
        return run

    def health(self) -> str | None:
        """Why a loaded graph cannot serve right now (a resource's ``health()``), or None.

        Node resources may report trouble that comes after loading, e.g. a model's engine
        process restarting; requests still wait for it, but readiness and ``/v1/config`` say so.
        """
        for resource in list(self.resources.values()):
            check = getattr(resource, "health", None)
            problem = check() if callable(check) else None
            if problem:
                return str(problem)
        return None

    @property
    def ready(self) -> bool:
        """AVAILABLE and every resource healthy (readiness probes)."""
        return self.available and self.health() is None

    def status(self) -> dict[str, Any]:
        """The ``/v1/config`` entry of this graph."""
        state, code, message = self.state, self.error_code, self.error or "OK"
        problem = self.health() if state == AVAILABLE else None
        if problem:
            state, code, message = LOADING, "UNAVAILABLE", problem
        return {
            "model_version_status": [
                {
                    "version": "1",
                    "state": state,
                    "status": {"error_code": code, "error_message": message},
                }
            ]
        }


def request_side_packets(config: Any) -> bool:
    """Whether requests can bring the graph's side packets.

    KServe requests turn their parameters into side packets (as OVMS does), so a graph fed
    tensors may need side packets it does not declare. A graph fed HTTP payloads (a
    ``…_PAYLOAD`` input: the OpenAI routes) gets none, so a required side packet that no node
    produces and the graph does not declare is a load error for it.
    """
    try:
        tags = [parse_spec(spec)[0] for spec in config.input_stream]
    except TagMapError:
        return True  # validation reports the spec
    return not any(tag.endswith("_PAYLOAD") for tag in tags)


def _pick(names: list[str], preferred: tuple[str, ...]) -> str:
    for name in preferred:
        if name in names:
            return name
    return names[0] if names else ""
