"""OpenAIRequestCalculator: HTTP payload in, validated chat request out."""

from __future__ import annotations

import logging
import re

from calculators.llm.chat_template_calculator import render_prompt
from calculators.llm.chunks import new_request_id
from calculators.llm.common import LLMNodeCalculator, LLMResources, RequestContext
from calculators.llm.request_validation import ChatRequest, RequestLimits, parse_chat_request
from calculators.llm.responses_encoding import new_response_id
from calculators.llm.responses_protocol import parse_responses_request
from calculators.llm.tokenize import is_tokenize_endpoint, parse_tokenize_request, tokenize_body
from calculators.llm.vllm_tokenize import (
    detokenize_body,
    is_detokenize_endpoint,
    is_vllm_tokenize,
    vllm_tokenize_body,
)
from ovgraph.errors import InvalidParameterError, RequestError
from ovgraph.framework.calculator import CalculatorContext, Input, Output
from ovgraph.serving.payload import HttpPayload

logger = logging.getLogger(__name__)

_CHAT = re.compile(r"/(v3/)?(v1/)?chat/completions$")
_COMPLETIONS = re.compile(r"/(v3/)?(v1/)?completions$")
_RESPONSES = re.compile(r"/(v3/)?(v1/)?responses$")
WRONG_ENDPOINT = (
    "Wrong endpoint. Allowed endpoints: /v[13]/chat/completions, /v[13]/completions, "
    "/v[13]/responses, /v[13]/tokenize"
)
VLM_NO_COMPLETIONS = (
    "VLM Servable does not support the /completions endpoint. Use /chat/completions or /responses."
)


class OpenAIRequestCalculator(LLMNodeCalculator):
    """Turns an HTTP payload into a validated ``ChatRequest`` (OVMS's rules and messages).

    A ``…/tokenize`` request is answered here: its JSON body goes out on ``DIRECT`` (to the
    response node) and nothing on ``REQUEST``.

    node {
      calculator: "OpenAIRequestCalculator"
      input_stream: "HTTP_REQUEST_PAYLOAD:input"
      output_stream: "REQUEST:request"
      output_stream: "DIRECT:direct"
      node_options: {
        [type.googleapis.com/mediapipe.LLMCalculatorOptions]: { models_path: "./" }
      }
    }
    """

    PAYLOAD = Input("HTTP_REQUEST_PAYLOAD", HttpPayload)
    REQUEST = Output("REQUEST", RequestContext)
    DIRECT = Output("DIRECT", bytes, optional=True)

    def open(self, cc: CalculatorContext) -> None:
        """Read the limits from the options."""
        options = cc.options
        self.limits = RequestLimits(
            max_tokens_limit=options.max_tokens_limit if options.HasField("max_tokens_limit")
            else None,
            best_of_limit=options.best_of_limit,
        )

    def process(self, cc: CalculatorContext) -> None:
        """Validate the request body for the endpoint the URI names."""
        payload: HttpPayload = self.PAYLOAD(cc).get()
        resources: LLMResources = cc.resources
        path = payload.uri.split("?", 1)[0].rstrip("/")
        body = payload.parsed_json
        if not isinstance(body, dict):
            raise RequestError("JSON body must be an object")
        if is_detokenize_endpoint(path):
            servable = resources.servable
            self.DIRECT(cc).send(detokenize_body(servable.tokenizer, body, servable.vocab_size))
            return
        if is_tokenize_endpoint(path):
            servable = resources.servable
            if is_vllm_tokenize(body):
                answer = vllm_tokenize_body(
                    servable.tokenizer, body, servable.max_length, render_prompt
                )
            else:
                answer = tokenize_body(servable.tokenizer, parse_tokenize_request(body))
            self.DIRECT(cc).send(answer)
            return
        if "stream" in body and not isinstance(body["stream"], bool):
            # OVMS's HTTP layer rule, judged here once for every route into the graph.
            raise InvalidParameterError("stream field is not a boolean", param="stream")
        if not path or _CHAT.search(path):  # no URI: KServe's BYTES payload, chat by default
            endpoint = "chat"
        elif _COMPLETIONS.search(path):
            if resources is not None and resources.servable.is_vlm:
                raise RequestError(VLM_NO_COMPLETIONS)
            endpoint = "completions"
        elif _RESPONSES.search(path):
            endpoint = "responses"
        else:
            raise RequestError(WRONG_ENDPOINT)
        request: ChatRequest = (
            parse_responses_request(body, self.limits) if endpoint == "responses"
            else parse_chat_request(body, endpoint=endpoint, limits=self.limits)
        )
        if request.ignored_fields:
            logger.info(
                "The following fields were present in the request but ignored: %s",
                ", ".join(sorted(request.ignored_fields)[:20]),
            )
        context = RequestContext(request=request, payload=payload)
        if endpoint == "completions":
            context.request_id = new_request_id("cmpl")
        elif endpoint == "responses":
            context.request_id = new_response_id()
        self.REQUEST(cc).send(context)
