"""ChatTemplateCalculator: chat template, token count, length checks, generation config."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from calculators.llm.common import (
    GenerationInput,
    LLMNodeCalculator,
    LLMResources,
    RequestContext,
)
from calculators.llm.errors import translate_error
from calculators.llm.output_parser import GraphParsers, graph_parsers
from calculators.llm.request_validation import ChatRequest, check_prompt_size
from calculators.llm.structured_output import structured_output_fields
from ovgraph.errors import InvalidParameterError
from ovgraph.framework.calculator import CalculatorContext, Input, NodeSpec, Output

_IMAGE_TAG = "<ov_genai_image_"
#: genai's ``top_k`` for "no limit" (``SIZE_MAX``); the request says ``top_k: -1``.
NO_TOP_K = 2**64 - 1


class ChatTemplateCalculator(LLMNodeCalculator):
    """Applies the model's chat template, counts prompt tokens, builds the generation config.

    node {
      calculator: "ChatTemplateCalculator"
      input_stream: "REQUEST:decoded"
      output_stream: "PROMPT:prompt"
      node_options: {
        [type.googleapis.com/mediapipe.LLMCalculatorOptions]: { models_path: "./" }
      }
    }
    """

    IN = Input("REQUEST", RequestContext)
    OUT = Output("PROMPT", GenerationInput)

    @classmethod
    def create_node_resources(cls, spec: NodeSpec, settings: Mapping[str, Any]) -> Any:
        """Refuse unsupported template options; load the servable; check the parser names.

        An unknown tool or reasoning parser name fails the graph's load.
        """
        check_chat_template_mode(spec.options)
        resources = super().create_node_resources(spec, settings)
        graph_parsers(spec.options, resources.servable.tokenizer.chat_template)
        return resources

    def process(self, cc: CalculatorContext) -> None:
        """Template, count, check against the context length, configure sampling."""
        context: RequestContext = self.IN(cc).get()
        resources: LLMResources = cc.resources
        servable = resources.servable
        request = context.request
        if servable.pipeline_type in ("LM", "VLM"):
            _refuse_for_serial_pipelines(request)
        if request.echo and servable.pipeline_type != "LM_CB":
            raise InvalidParameterError(
                f"echo is not supported by the {servable.pipeline_type} pipeline; serve a "
                "text-only model as LM_CB",
                param="echo",
            )
        if request.echo and request.logprobs and servable.key.enable_prefix_caching:
            # genai computes prompt logprobs only for the tokens it runs, not for a prefix it
            # restores from the cache: the answer would lack them (or carry wrong ones).
            raise InvalidParameterError(
                "echo with logprobs needs a servable with enable_prefix_caching: false "
                "(openvino-genai has no logprobs for a cached prompt prefix)",
                param="echo",
            )
        check_prompt_size(request, servable.max_length)  # before any copy of the text
        parsers = graph_parsers(cc.options, servable.tokenizer.chat_template)
        prompt = render_prompt(servable.tokenizer, request)
        if parsers.reasoning_parser is not None and request.endpoint != "completions":
            context.implicit_reasoning = parsers.reasoning_parser.ends_prompt(prompt)
        prompt_tokens = _count_tokens(servable, prompt, context)
        limit = servable.max_length
        if limit is not None:
            if prompt_tokens > limit:
                raise InvalidParameterError(
                    f"Number of prompt tokens: {prompt_tokens} exceeds model max length: {limit}",
                    param="messages", code="context_length_exceeded",
                )
            if request.max_tokens is not None and prompt_tokens + request.max_tokens > limit:
                raise InvalidParameterError(
                    f"Number of prompt tokens: {prompt_tokens} + max tokens value: "
                    f"{request.max_tokens} exceeds model max length: {limit}",
                    param="max_tokens", code="context_length_exceeded",
                )
        config = build_generation_config(servable.default_config, request, prompt_tokens, limit)
        apply_assisted_decoding(config, request, servable.decoding_method)
        context.prompt, context.prompt_tokens = prompt, prompt_tokens
        apply_structured_output(config, request, parsers)
        self.OUT(cc).send(GenerationInput(context, prompt, config, prompt_tokens))


def render_prompt(tokenizer: Any, request: ChatRequest) -> str:
    """The prompt text: the chat template over the messages, or a completion's prompt."""
    if request.endpoint == "completions":
        return request.prompt or ""
    history = [template_message(m) for m in request.messages]
    extra = dict(request.chat_template_kwargs or {})
    add_generation_prompt = bool(extra.pop("add_generation_prompt", True))
    try:
        return str(
            tokenizer.apply_chat_template(
                history, add_generation_prompt=add_generation_prompt,
                tools=request.tools or None, extra_context=extra or None,
            )
        )
    except Exception as exc:
        raise translate_error(exc) from exc


def _refuse_for_serial_pipelines(request: ChatRequest) -> None:
    """The one-request-at-a-time LM / VLM pipelines stream token ids without log probabilities.

    (``n`` / ``best_of`` above 1 are refused by their engine.)
    """
    if request.logprobs:
        raise InvalidParameterError(
            "logprobs are not supported by the LM and VLM pipelines; serve the model as LM_CB "
            "or VLM_CB",
            param="logprobs",
        )


def check_chat_template_mode(options: Any) -> None:
    """``chat_template_mode``: MINJA (genai's renderer) is what this node does; JINJA is refused.

    OVMS's JINJA mode renders with Python Jinja2, which this server does not ship.

    Raises:
        ValueError: the options ask for JINJA.
    """
    if not options.HasField("chat_template_mode"):
        return
    mode = options.DESCRIPTOR.fields_by_name["chat_template_mode"].enum_type.values_by_number[
        options.chat_template_mode
    ].name
    if mode != "MINJA":
        raise ValueError(
            f"chat_template_mode: {mode} is not supported: chat templates are rendered by "
            "openvino_genai (MINJA); remove the option or set it to MINJA"
        )


def template_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as chat templates expect it.

    ``tool_calls`` (when not empty), ``tool_call_id``, ``name`` and ``reasoning_content`` are
    kept; a tool call's ``arguments`` JSON string becomes an object, as OVMS's chat template
    adapter and vLLM do (Llama and Qwen templates write ``arguments | tojson``).
    """
    out: dict[str, Any] = {"role": message["role"], "content": message["content"]}
    for key in ("tool_call_id", "name", "reasoning_content"):
        if key in message:
            out[key] = message[key]
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [_template_call(call) for call in calls]
    return out


def _template_call(call: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(call)
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            function["arguments"] = parsed
    result["function"] = function
    return result


def apply_structured_output(config: Any, request: ChatRequest, parsers: GraphParsers) -> None:
    """Set ``config.structured_output_config`` for ``response_format`` or a forced tool call.

    Raises:
        InvalidParameterError: ``tool_choice`` forces a call but the graph has no tool parser
            (the call could be neither forced nor returned).
    """
    import openvino_genai as ov_genai

    forced = request.tool_choice not in ("none", "auto")
    if request.tools and forced and parsers.tool_parser is None:
        raise InvalidParameterError(
            f"tool_choice '{request.tool_choice}' needs a tool parser; this model is served "
            "without one (set the graph's tool_parser or --tool_parser)",
            param="tool_choice",
        )

    fields = structured_output_fields(
        request.response_format, request.tools, request.tool_choice, parsers.tool_parser,
        parsers.guided_tools, one_call=request.max_tool_calls == 1,
        format_param=request.format_param,
    )
    if fields:
        config.structured_output_config = ov_genai.StructuredOutputConfig(**fields)


def _count_tokens(servable: Any, prompt: str, context: RequestContext) -> int:
    text = prompt
    if context.images:
        for index in range(len(context.images)):
            text = text.replace(f"{_IMAGE_TAG}{index}>", "")
    ids = servable.tokenizer.encode(text, add_special_tokens=False).input_ids
    count = int(ids.get_shape()[-1])
    for height, width in context.image_sizes:
        count += servable.count_image_tokens(height, width)
    return count


def build_generation_config(
    default: Any, request: ChatRequest, prompt_tokens: int, max_length: int | None
) -> Any:
    """Request parameters over the model's ``generation_config.json`` over built-in defaults."""
    import openvino_genai as ov_genai

    config = ov_genai.GenerationConfig()
    config.update_generation_config(**_defaults(default))
    config.apply_chat_template = False
    if request.max_tokens is not None:
        config.max_new_tokens = request.max_tokens
    elif max_length is not None:
        config.max_new_tokens = max(1, max_length - prompt_tokens)
    if request.temperature is not None:
        config.temperature = request.temperature
        config.do_sample = request.temperature > 0
    if config.do_sample and request.top_k is None and default.top_k > 10**6:
        config.top_k = 40
    for name in ("top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
                 "repetition_penalty", "length_penalty"):
        value = getattr(request, name)
        if value is not None:
            setattr(config, name, NO_TOP_K if name == "top_k" and value == -1 else value)
    if request.stop:
        config.stop_strings = set(request.stop)
    if request.stop_token_ids:  # in addition to the model's own (EOS)
        config.stop_token_ids = set(config.stop_token_ids) | set(request.stop_token_ids)
    if request.min_tokens:
        config.min_new_tokens = request.min_tokens
    config.include_stop_str_in_output = request.include_stop_str_in_output
    config.ignore_eos = request.ignore_eos
    if request.best_of is not None and request.best_of > 1:
        config.num_beams = request.best_of
        config.do_sample = False
        config.num_return_sequences = request.n or 1
    elif request.n is not None and request.n > 1:
        if not config.do_sample:
            raise InvalidParameterError(
                "n above 1 needs sampling (temperature above 0) or best_of of at least n "
                "(beam search)", param="n",
            )
        config.num_return_sequences = request.n
    if request.logprobs:
        config.logprobs = 1
    # The answer starts with the prompt's tokens and their logprobs (genai's ``echo``). For
    # ``max_tokens: 0`` one token is generated and dropped: genai's echo-only path returns only
    # the prompt tokens after a prefix-cache hit, not the whole prompt.
    config.echo = request.echo
    if request.echo and request.max_tokens == 0:
        config.max_new_tokens = 1
    _seed(config, request.seed)
    return config


#: The per-request fields each assisted decoding method takes (OVMS's names and meaning).
_ASSISTED_FIELDS = {
    "speculative": ("num_assistant_tokens", "assistant_confidence_threshold"),
    "eagle3": ("num_assistant_tokens", "assistant_confidence_threshold"),
    "prompt_lookup": ("num_assistant_tokens", "max_ngram_size"),
    "standard": (),
}
_ASSISTED_NEEDS = {
    "num_assistant_tokens": "speculative decoding (a draft model) or prompt lookup",
    "assistant_confidence_threshold": "speculative decoding (a draft model: draft_models_path)",
    "max_ngram_size": 'prompt lookup (plugin_config {"prompt_lookup": true})',
}


def apply_assisted_decoding(config: Any, request: ChatRequest, method: str) -> None:
    """``num_assistant_tokens``, ``assistant_confidence_threshold``, ``max_ngram_size``.

    Set on the request's config when the servable's decoding method uses them (a value of 0
    means "not set", as in OVMS); refused, naming the field, when it does not.
    """
    given = {
        name: value
        for name in ("num_assistant_tokens", "assistant_confidence_threshold", "max_ngram_size")
        if (value := getattr(request, name)) not in (None, 0)
    }
    taken = _ASSISTED_FIELDS.get(method, ())
    for name in given:
        if name not in taken:
            raise InvalidParameterError(f"{name} needs {_ASSISTED_NEEDS[name]}", param=name)
    if "num_assistant_tokens" in given and "assistant_confidence_threshold" in given:
        raise InvalidParameterError(
            "num_assistant_tokens and assistant_confidence_threshold are mutually exclusive",
            param="assistant_confidence_threshold",
        )
    for name, value in given.items():
        setattr(config, name, value)


def _seed(config: Any, seed: int | None) -> None:
    """An explicit ``seed`` is kept; sampling without one draws a fresh seed, as OVMS does.

    ``rng_seed`` from ``generation_config.json`` is not honoured (OVMS neither): only a seed in
    the request makes sampling reproducible.
    """
    if seed is not None:
        config.rng_seed = seed
    elif config.do_sample:
        config.rng_seed = secrets.randbelow(2**32 - 1) + 1


def _defaults(default: Any) -> dict[str, Any]:
    """The model's defaults that requests may override."""
    values: dict[str, Any] = {}
    for name in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty",
                 "eos_token_id", "stop_token_ids", "min_p"):
        value = getattr(default, name, None)
        if value is None or (isinstance(value, int) and value >= 2**31):  # "unset" sentinels
            continue
        values[name] = value
    return values
