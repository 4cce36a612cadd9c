"""KServe v2 REST: ``GET /v2``, ``GET /v2/models/{name}``, ``POST /v2/models/{name}/infer``.

JSON tensors (``{"name", "shape", "datatype", "data"}``, data flat or nested; BYTES as strings)
are decoded here and served by ``ovgraph.serving.kserve`` through the data plane, as the gRPC
frontend is (admission, deadline, cancellation). The binary tensor data extension
(``Inference-Header-Content-Length``, ``binary_data_size``) is refused with a message naming it.
Errors use KServe's shape, ``{"error": "<message>"}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from ovgraph.errors import InvalidParameterError, OvGraphError, RequestError
from ovgraph.frontends.rest.handlers import BaseHandler, BodyHandler
from ovgraph.serving import kserve
from ovgraph.serving.dataplane import Execution
from ovgraph.serving.json_body import parse_json
from ovgraph.serving.kserve import InferRequest, InferResponse, Tensor

__all__ = [
    "BINARY_EXTENSION_REFUSED",
    "InferHandler",
    "ModelMetadataHandler",
    "ServerMetadataHandler",
    "request_from_json",
    "response_to_json",
]


BINARY_EXTENSION_REFUSED = (
    "The binary tensor data extension (Inference-Header-Content-Length, binary_data_size) is "
    "not supported; send tensors as JSON data (tritonclient.http: binary_data=False)"
)


def _flatten(data: Any) -> Iterator[Any]:
    stack = [iter([data])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            yield item
        else:
            stack.pop()


def _tensor_from_json(item: Any) -> Tensor:
    if not isinstance(item, dict):
        raise RequestError("Every item of inputs must be an object")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str):
        raise RequestError("Every input needs a string name")
    if not isinstance(datatype, str):
        raise InvalidParameterError(f'Input "{name}" needs a string datatype', param=name)
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InvalidParameterError(f'Input "{name}" needs a shape of integers', param=name)
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidParameterError(f'Parameters of input "{name}" must be an object', param=name)
    if "binary_data_size" in parameters:
        raise InvalidParameterError(BINARY_EXTENSION_REFUSED, param=name)
    data = item.get("data")
    if not isinstance(data, list):
        raise InvalidParameterError(f'Input "{name}" needs a data array', param=name)
    return kserve.tensor_from_values(name, datatype, shape, list(_flatten(data)), parameters)


def request_from_json(name: str, version: str, body: bytes | dict[str, Any]) -> InferRequest:
    """Decode a KServe JSON inference request body (bytes, or already parsed)."""
    parsed = parse_json(body) if isinstance(body, bytes) else body
    if not isinstance(parsed, dict):
        raise RequestError("JSON body must be an object")
    inputs = parsed.get("inputs")
    if not isinstance(inputs, list):
        raise RequestError("inputs must be an array")
    parameters = parsed.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError("parameters must be an object")
    request_id = parsed.get("id", "")
    return InferRequest(
        model_name=name,
        model_version=version,
        id=request_id if isinstance(request_id, str) else str(request_id),
        parameters=parameters,
        inputs=[_tensor_from_json(item) for item in inputs],
        raw=parsed,
    )


def _json_data(tensor: Tensor) -> list[Any]:
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        return [bytes(v).decode("utf-8", errors="replace") for v in flat]
    return list(flat.tolist())


def response_to_json(response: InferResponse | Any) -> Any:
    """Encode a response as KServe JSON (a ``RESPONSE`` passthrough dict is sent as is)."""
    if isinstance(response, dict):
        return response
    if not isinstance(response, InferResponse):
        raise OvGraphError(
            f"RESPONSE stream carried {type(response).__name__}, not an inference response"
        )
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "parameters": response.parameters,
        "outputs": [
            {
                "name": t.name,
                "datatype": t.datatype,
                "shape": [int(d) for d in t.shape],
                "data": _json_data(t),
            }
            for t in response.outputs
        ],
    }


class ServerMetadataHandler(BaseHandler):
    """``GET /v2``: server name, version and extensions."""

    def get(self) -> None:
        """Report the server metadata."""
        self.write_json(kserve.server_metadata())


class ModelMetadataHandler(BaseHandler):
    """``GET /v2/models/{name}[/versions/{v}]``: a graph's input and output names."""

    def get(self, name: str, version: str | None = None) -> None:
        """Report the model metadata."""
        try:
            meta = kserve.model_metadata(self.repository, name, version or "")
        except OvGraphError as exc:
            self.write_exception(exc)
            return
        self.write_json(meta)


class InferHandler(BodyHandler):
    """``POST /v2/models/{name}[/versions/{v}]/infer``: one request through a new graph run.

    The body is bounded by ``--max_body_size`` (413) and parsed off the IO loop.
    """

    execution: Execution | None = None

    async def post(self, name: str, version: str | None = None) -> None:
        """Decode, run through the data plane, encode."""
        if self._too_large:
            self.write_exception(self._too_large_error())
            return
        plane = self.state.plane
        try:
            if "Inference-Header-Content-Length" in self.request.headers:
                raise RequestError(BINARY_EXTENSION_REFUSED)
            definition = plane.servable(name)
            parsed, _ = await self.body_json()
            request = request_from_json(name, version or "", parsed)
            packets = await asyncio.get_running_loop().run_in_executor(
                None, kserve.input_packets, definition, request
            )
        except OvGraphError as exc:
            self.write_exception(exc)
            return
        async with plane.execution(definition, headers=self.request.headers) as execution:
            self.execution = execution
            try:
                response = await kserve.infer(execution, request, packets)
                body = response_to_json(response)
            except Exception as exc:
                if not self._finished:
                    self.write_exception(exc)
                return
        self.write_json(body)

    def on_connection_close(self) -> None:
        """The client went away: stop the run."""
        if self.execution is not None:
            self.execution.cancel()
