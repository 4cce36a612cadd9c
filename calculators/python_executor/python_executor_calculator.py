"""PythonExecutorCalculator: runs a user's ``OvmsPythonModel`` (OVMS Python nodes).

The handler file, its loading and ``initialize`` / ``finalize`` are described in ``handler.py``;
this module is the per-run side: calling ``execute`` and routing its tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from calculators.python_executor.handler import (
    LOOPBACK,
    PythonNodeResources,
    load_node_resources,
)
from calculators.python_executor.tensor import Tensor, as_tensor
from ovgraph.errors import ContractError, OvGraphError
from ovgraph.framework import timestamp as ts_mod
from ovgraph.framework.calculator import Calculator, CalculatorContext, NodeSpec, SidePacket
from ovgraph.framework.textformat import option_type

PythonExecutorCalculatorOptions = option_type("mediapipe.PythonExecutorCalculatorOptions")

__all__ = ["EXECUTION_FAILED", "NodeBusyError", "PythonExecutorCalculator"]

logger = logging.getLogger("ovgraph.calculator")

EXECUTION_FAILED = "Error occurred during graph execution"
RESOURCES_TAG = "PYTHON_NODE_RESOURCES"


class NodeBusyError(OvGraphError):
    """New data reached a Python node that is still streaming a generator's results."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"


class _ExecutionError(OvGraphError):
    """A handler broke the node's rules; the client sees OVMS' message plus the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{EXECUTION_FAILED}: {reason}")


class PythonExecutorCalculator(Calculator):
    """Calls ``OvmsPythonModel.execute`` with the node's input tensors and routes its results.

    Streams are ``TAG:name`` with any tags. ``execute`` receives the non-empty inputs as a
    list of ``Tensor`` in sorted tag order (a KServe ``BYTES`` input sent as raw contents
    arrives unchanged, length-prefixed or not, as in OVMS); each ``Tensor`` it returns goes to
    the output stream whose **name** equals ``tensor.name``, at the input timestamp. If
    ``execute`` is a generator, the node must declare ``LOOPBACK`` on both sides (a back edge with a
    ``SyncSetInputStreamHandler``): the first list is sent at the input timestamp together with
    a ``LOOPBACK`` packet at the next timestamp, and every ``LOOPBACK`` packet brings the next
    list one timestamp later, until the generator is exhausted. Generative mode is meant for
    streaming (``ModelStreamInfer``); a unary request to such a node answers, as OVMS does, with
    the first list once the generator has run to its end.

    Handler exceptions are logged with their traceback; the run fails with OVMS' message
    ``Error occurred during graph execution``.

    The ``PYTHON_NODE_RESOURCES:py`` side packet of OVMS graphs is accepted and optional: the
    handler instance is built once per graph definition by ``create_node_resources`` and
    reaches every run as ``cc.resources``.

    node {
      name: "pythonNode"
      calculator: "PythonExecutorCalculator"
      input_side_packet: "PYTHON_NODE_RESOURCES:py"
      input_stream: "LOOPBACK:loopback"
      input_stream: "INPUT:pre_prompt"
      input_stream_info: { tag_index: "LOOPBACK:0" back_edge: true }
      input_stream_handler {
        input_stream_handler: "SyncSetInputStreamHandler"
        options {
          [mediapipe.SyncSetInputStreamHandlerOptions.ext] { sync_set { tag_index: "LOOPBACK:0" } }
        }
      }
      output_stream: "LOOPBACK:loopback"
      output_stream: "OUTPUT:completion"
      node_options: {
        [type.googleapis.com/mediapipe.PythonExecutorCalculatorOptions]: {
          handler_path: "model.py"
        }
      }
    }
    """

    Options: ClassVar[Any] = PythonExecutorCalculatorOptions
    DYNAMIC_PORTS: ClassVar[bool] = True
    RESOURCES = SidePacket(RESOURCES_TAG, optional=True)

    @classmethod
    def validate_contract(cls, spec: NodeSpec) -> None:
        """Name, handler_path, at least one stream per side, LOOPBACK on both sides or none."""
        prefix = "PythonExecutorCalculator:"
        config_name = spec.config.name if spec.config is not None else spec.name
        if not config_name:
            raise ContractError(f"{prefix} Python node name is missing (set the node's name).")
        if config_name != spec.name:
            raise ContractError(f'{prefix} Python node name "{config_name}" already exists.')
        if not spec.options.handler_path:
            raise ContractError(f"{prefix} option handler_path is required.")
        if not len(spec.inputs) or not len(spec.outputs):
            raise ContractError(f"{prefix} at least one input and one output stream are required.")
        if spec.inputs.has(LOOPBACK) != spec.outputs.has(LOOPBACK):
            raise ContractError(
                f"{prefix} If LOOPBACK is used, it must be defined on both input and output "
                "of the node"
            )
        tags = spec.input_side_packets.tags()
        if set(tags) - {RESOURCES_TAG} or tags.get(RESOURCES_TAG, 0) > 1:
            raise ContractError(
                f'{prefix} the only input side packet accepted is "{RESOURCES_TAG}:<name>".'
            )
        if len(spec.output_side_packets):
            raise ContractError(f"{prefix} output side packets are not supported.")

    @classmethod
    def create_node_resources(cls, spec: NodeSpec, settings: Mapping[str, Any]) -> Any:
        """Load the handler and create the node's ``OvmsPythonModel`` (once per definition)."""
        return load_node_resources(spec)

    def open(self, cc: CalculatorContext) -> None:
        """Pick up the shared handler instance and reset the streaming state."""
        resources = cc.resources
        if not isinstance(resources, PythonNodeResources):
            raise OvGraphError(
                f"Could not find initialized Python node named: {cc.node_name}"
            )
        self.res = resources
        spec = cc.spec
        self.output_ids = {
            e.name: i for i, e in enumerate(spec.outputs) if e.tag != LOOPBACK
        }
        self.loopback_out = spec.outputs.id_of(LOOPBACK)
        self.data_ids = [i for i, e in enumerate(spec.inputs) if e.tag != LOOPBACK]
        self.generator: Iterator[Any] | None = None
        self.output_ts = ts_mod.UNSET

    def process(self, cc: CalculatorContext) -> None:
        """Run ``execute`` on new inputs, or advance the running generator on LOOPBACK."""
        try:
            new_data = any(not cc.inputs[i].is_empty for i in self.data_ids)
            if self.generator is not None:
                if new_data:
                    raise NodeBusyError(
                        "Node is already processing data. Create new stream for another request."
                    )
                self._generate(cc)
                return
            if not new_data:
                return
            self.output_ts = cc.input_timestamp
            result = self.res.model.execute(self._inputs(cc))
            if isinstance(result, list):
                self._push(cc, result, advance=False)
            elif isinstance(result, Iterator):
                if self.loopback_out is None:
                    _close_quietly(result)
                    raise _ExecutionError(
                        "Execute yielded, but LOOPBACK is not defined in the node"
                    )
                self.generator = result
                self._generate(cc)
            else:
                raise _ExecutionError(
                    f"execute returned {type(result).__name__}, expected a list or a generator"
                )
        except OvGraphError as exc:
            logger.info('Python node "%s": %s', cc.node_name, exc)
            self._drop_generator()
            raise
        except Exception:
            logger.exception('Error occurred during node "%s" execution', cc.node_name)
            self._drop_generator()
            raise OvGraphError(EXECUTION_FAILED) from None

    def close(self, cc: CalculatorContext) -> None:
        """Close a generator left running (cancelled or failed run)."""
        self._drop_generator()

    # ------------------------------------------------------------------ internals

    def _inputs(self, cc: CalculatorContext) -> list[Tensor]:
        entries = cc.spec.inputs.entries
        tensors = []
        for i in self.data_ids:
            packet = cc.inputs[i]
            if packet.is_empty:
                continue
            try:
                tensors.append(as_tensor(packet.payload, entries[i].name))
            except TypeError as exc:
                raise _ExecutionError(
                    f'input stream "{entries[i].name}" does not carry a tensor ({exc})'
                ) from None
        return tensors

    def _generate(self, cc: CalculatorContext) -> None:
        assert self.generator is not None
        try:
            item = next(self.generator)
        except StopIteration:
            self.generator = None
            return
        if not isinstance(item, list):
            raise _ExecutionError(
                f"execute yielded {type(item).__name__}, expected a list of Tensors"
            )
        self._push(cc, item, advance=True)

    def _push(self, cc: CalculatorContext, tensors: list[Any], advance: bool) -> None:
        ts = self.output_ts
        for tensor in tensors:
            if not isinstance(tensor, Tensor):
                raise _ExecutionError(
                    f"execute returned a {type(tensor).__name__} in its list, expected "
                    "pyovms.Tensor"
                )
            out_id = self.output_ids.get(tensor.name)
            if out_id is None:
                raise _ExecutionError(
                    f'execute returned the tensor "{tensor.name}", which names no output stream '
                    "of the node"
                )
            cc.outputs[out_id].add(tensor, ts)
        if advance:
            assert self.loopback_out is not None
            self.output_ts = ts + 1
            cc.outputs[self.loopback_out].add(True, self.output_ts)

    def _drop_generator(self) -> None:
        generator, self.generator = getattr(self, "generator", None), None
        if generator is not None:
            _close_quietly(generator)


def _close_quietly(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        logger.exception("Closing a Python node generator failed")
