"""Validation of OpenAI ``/chat/completions`` and ``/completions`` request bodies.

Checks run in OVMS' order and fail with OVMS' messages (``ovms-api.md`` §2-§3), so a client sees
the same text it would get from OpenVINO Model Server. Numbers are classified the way rapidjson
classifies them: ``true`` is not a number, ``5.0`` is not an integer, an integer outside the
signed 32-bit range is not a "valid number" for float fields. Deliberate additions (``ovms-api.md``
§4.4, ``reliability.md`` rows 9, 14, 15):

* ``stream_options.continuous_usage_stats`` (boolean) is accepted and honoured as vLLM does it:
  with ``include_usage`` every chunk carries the running usage (guidellm sends it; OVMS refuses);
* ``input_audio`` parts are refused by servables without audio input (OVMS drops them silently);
* ``chat_template_kwargs`` keys the server itself gives the template (``messages``, ``tools``,
  the special tokens) are refused (OVMS documents them as an error);
* caps on ``n``, on images per request and on the length of each stop string;
* the model's own vision tokens (e.g. ``<|image_pad|>``) are rejected in message text like
  ``<ov_genai_image_`` is;
* NaN and infinities are rejected wherever a number is expected;
* ``content`` of a type other than string, array or null is rejected (OVMS drops it silently);
* vLLM's ``min_tokens`` and ``stop_token_ids`` are honoured (genai's ``min_new_tokens`` and
  ``stop_token_ids``; OVMS ignores them);
* the fields OVMS documents as unsupported (``logit_bias``, ``functions``, vLLM's
  ``prompt_logprobs``, …) and OpenAI's for what this server cannot do (audio
  output, web search, stored completions; `UNSUPPORTED_FIELDS`) are refused when set to a value
  that would matter (OVMS ignores them);
* ``n`` above 1 without ``best_of`` asks for n samples (OVMS needs ``best_of``);
* ``parallel_tool_calls: false`` keeps the first tool call only; ``reasoning_effort`` reaches
  the template (`with_reasoning_effort`).

Nothing here imports openvino; images are only collected (their URLs), never decoded.
"""

from __future__ import annotations

import copy
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from calculators.llm.request_structure import (
    GUIDED_FIELDS,
    REFUSED_GUIDED_FIELDS,
    parse_guided_decoding,
    parse_response_format,
    parse_tools,
    with_reasoning_effort,
)
from ovgraph.errors import InvalidParameterError

__all__ = [
    "DEFAULT_RESTRICTED_TOKENS",
    "METADATA_FIELDS",
    "UNSUPPORTED_FIELDS",
    "ChatRequest",
    "RequestLimits",
    "parse_chat_request",
]

IMAGE_TAG_PREFIX = "<ov_genai_image_"
RESTRICTED_TAG_MESSAGE = "Message contains restricted <ov_genai_image> tag"
DEFAULT_RESTRICTED_TOKENS = ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>")

_UINT32_MAX = 2**32 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1

# Fields each endpoint reads; anything else at the top level is reported in ``ignored_fields``.
_COMMON_FIELDS = frozenset(
    {
        "model", "stream", "stream_options", "max_tokens", "ignore_eos", "frequency_penalty",
        "presence_penalty", "repetition_penalty", "length_penalty", "temperature", "top_p",
        "min_p", "top_k", "seed", "stop", "include_stop_str_in_output", "best_of", "n",
        "num_assistant_tokens", "assistant_confidence_threshold", "max_ngram_size",
        "skip_special_tokens", "logprobs", "min_tokens", "stop_token_ids",
    }
)  # fmt: skip
_CHAT_FIELDS = _COMMON_FIELDS | {
    "messages", "tools", "tool_choice", "max_completion_tokens", "response_format",
    "chat_template_kwargs", "parallel_tool_calls", "reasoning_effort",
}  # fmt: skip
_COMPLETIONS_FIELDS = _COMMON_FIELDS | {"prompt", "echo"}

#: Fields OVMS documents as unsupported (from OpenAI's and vLLM's APIs): refused when their value
#: would change the answer, since it cannot; a neutral value (null, empty, the default) passes.
UNSUPPORTED_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "logit_bias": (bool, "logit_bias is not supported"),
    "top_logprobs": (
        lambda v: v not in (None, 0),
        "top_logprobs is not supported: openvino_genai reports the chosen token's logprob only",
    ),
    "functions": (bool, "functions is not supported; use tools"),
    "function_call": (
        lambda v: v not in (None, "none"), "function_call is not supported; use tool_choice"
    ),
    "use_beam_search": (
        lambda v: v is True, "use_beam_search is not supported; set best_of for beam search"
    ),
    "early_stopping": (lambda v: v not in (None, False), "early_stopping is not supported"),
    "prompt_logprobs": (lambda v: v is not None, "prompt_logprobs is not supported"),
    "detokenize": (lambda v: v is False, "detokenize: false is not supported"),
    "spaces_between_special_tokens": (
        lambda v: v is False, "spaces_between_special_tokens: false is not supported"
    ),
    "logits_processors": (bool, "logits_processors is not supported"),
    "suffix": (bool, "suffix is not supported"),
    "truncate_prompt_tokens": (lambda v: v is not None, "truncate_prompt_tokens is not supported"),
    # OpenAI fields for what this server cannot do
    "modalities": (
        lambda v: v not in (None, ["text"]), "modalities other than [\"text\"] are not supported"
    ),
    "audio": (lambda v: v is not None, "audio output is not supported"),
    "web_search_options": (lambda v: v is not None, "web_search_options is not supported"),
    "store": (lambda v: v not in (None, False), "store is not supported: answers are not stored"),
    "verbosity": (lambda v: v not in (None, "medium"), "verbosity is not supported"),
}
#: Accepted, with no effect on the answer by definition: ids and labels for the client's own
#: monitoring (``user``, ``safety_identifier``, ``metadata``), routing and billing hints
#: (``prompt_cache_key``, ``service_tier``), ``prediction``, which may only make an answer
#: faster, never different, and vLLM's ``guided_decoding_backend`` (which library enforces a
#: grammar: xgrammar here).
METADATA_FIELDS = frozenset(
    {"user", "safety_identifier", "metadata", "prompt_cache_key", "service_tier", "prediction",
     "guided_decoding_backend"}
)
_MESSAGE_STRING_KEYS = ("role", "content", "tool_call_id", "name", "reasoning_content")
#: Template variables the server sets itself; a request may not override them.
RESERVED_TEMPLATE_KWARGS = ("messages", "tools", "bos_token", "eos_token", "pad_token")
NO_AUDIO_MESSAGE = "This servable does not support audio input, but input_audio has been provided"


@dataclass(frozen=True)
class RequestLimits:
    """Server-side limits applied while parsing a request.

    Attributes:
        max_tokens_limit: graph option ``max_tokens_limit``; ``max_tokens`` must be strictly below
            it, ``max_completion_tokens`` at most equal; it is the default ``max_tokens``.
        best_of_limit: graph option ``best_of_limit``; ``best_of`` must be strictly below it.
        max_stop_strings: most entries in a ``stop`` array.
        max_stop_len: most characters in one stop string.
        max_n: most choices (``n``) per request.
        max_images: most ``image_url`` parts in one conversation.
        restricted_tokens: model special tokens that must not appear in message text.
        accepts_audio: whether ``input_audio`` parts may be sent (no pipeline here takes audio).
    """

    max_tokens_limit: int | None = None
    best_of_limit: int = 20
    max_stop_strings: int = 16
    max_stop_len: int = 1024
    max_n: int = 16
    max_images: int = 16
    restricted_tokens: tuple[str, ...] = DEFAULT_RESTRICTED_TOKENS
    accepts_audio: bool = False


@dataclass
class ChatRequest:
    """A validated request. ``None`` means "not set" (fall back to generation_config.json).

    ``messages`` hold ``role`` and ``content`` plus ``tool_calls``, ``tool_call_id``, ``name``
    and ``reasoning_content`` when present. ``content`` is always a string: array content is
    flattened with each image replaced by the line ``<ov_genai_image_N>``, N counting across the
    conversation, and null or empty content becomes ``""``. ``image_urls[N]`` is image N's URL.
    """

    endpoint: str
    model: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    image_urls: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    continuous_usage_stats: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    length_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    min_tokens: int | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    n: int | None = None
    best_of: int | None = None
    logprobs: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str = "none"
    #: most tool calls an answer carries (``parallel_tool_calls: false`` -> 1); None: no limit
    max_tool_calls: int | None = None
    response_format: dict[str, Any] | None = None
    #: the request field ``response_format`` came from (vLLM's ``guided_json``, …)
    format_param: str = "response_format"
    chat_template_kwargs: dict[str, Any] | None = None
    skip_special_tokens: bool = True
    num_assistant_tokens: int | None = None
    assistant_confidence_threshold: float | None = None
    max_ngram_size: int | None = None
    prompt: str | None = None
    echo: bool = False
    ignored_fields: list[str] = field(default_factory=list)
    #: ``/responses`` only: the request values its response repeats (``ResponsesEcho``).
    responses: Any = None


# --- rapidjson-compatible type predicates -----------------------------------------------------


def _is_int(v: Any) -> bool:
    """Return whether *v* is an integer JSON number (never a bool)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_uint(v: Any) -> bool:
    """Rapidjson ``IsUint``: an integer in [0, 2**32-1]."""
    return _is_int(v) and 0 <= v <= _UINT32_MAX


def _is_uint64(v: Any) -> bool:
    """Rapidjson ``IsUint64``: an integer in [0, 2**64-1]."""
    return _is_int(v) and 0 <= v <= _UINT64_MAX


def _is_int32(v: Any) -> bool:
    """Rapidjson ``IsInt``: an integer in the signed 32-bit range."""
    return _is_int(v) and _INT32_MIN <= v <= _INT32_MAX


def _is_any_integer(v: Any) -> bool:
    """Rapidjson ``IsInt || IsUint || IsInt64 || IsUint64``."""
    return _is_int(v) and _INT64_MIN <= v <= _UINT64_MAX


def _as_float(v: Any) -> float | None:
    """Return *v* as a finite float if rapidjson's ``IsDouble() || IsInt()`` holds, else None.

    rapidjson stores integer literals outside [-2**63, 2**64-1] as doubles, so they count as
    numbers here while e.g. ``3000000000`` (a uint, not an int) does not.
    """
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if not _is_int(v):
        return None
    if _is_int32(v):
        return float(v)
    if _is_any_integer(v):
        return None
    try:
        result = float(v)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def _f32(v: float) -> float:
    """Round to float32, as OVMS stores sampling parameters before its range checks."""
    try:
        return struct.unpack("f", struct.pack("f", v))[0]
    except OverflowError:
        return math.copysign(math.inf, v)


def _fail(message: str, param: str | None) -> InvalidParameterError:
    return InvalidParameterError(message, param=param)


def _present(body: dict[str, Any], key: str) -> bool:
    """OVMS' usual guard: the member exists and is not null."""
    return body.get(key) is not None


# --- parsing ----------------------------------------------------------------------------------


def parse_chat_request(
    body: dict[str, Any], *, endpoint: str, limits: RequestLimits
) -> ChatRequest:
    """Validate *body* and return the parsed request.

    Args:
        body: the decoded JSON body.
        endpoint: ``"chat"`` or ``"completions"``.
        limits: server-side limits.

    Returns:
        The parsed request with defaults applied.

    Raises:
        InvalidParameterError: the first problem found, with OVMS' message and ``param`` set.
        ValueError: *endpoint* is neither ``"chat"`` nor ``"completions"``.
    """
    if endpoint not in ("chat", "completions"):
        raise ValueError(f"unknown endpoint {endpoint!r}")
    if not isinstance(body, dict):
        raise _fail("Received json is not an object", None)
    req = ChatRequest(endpoint=endpoint, model="")
    _parse_common(body, req, limits)
    if endpoint == "chat":
        _parse_chat(body, req, limits)
        known = _CHAT_FIELDS
    else:
        _parse_completions(body, req)
        known = _COMPLETIONS_FIELDS
    if req.min_tokens is not None and req.min_tokens > (req.max_tokens or _UINT32_MAX):
        raise _fail("min_tokens must be less than or equal to max_tokens", "min_tokens")
    _refuse_unsupported(body)
    guided = parse_guided_decoding(body)
    if guided is not None:
        req.response_format, req.format_param = guided
    known = (
        known | METADATA_FIELDS | UNSUPPORTED_FIELDS.keys() | set(GUIDED_FIELDS)
        | REFUSED_GUIDED_FIELDS.keys()
    )
    req.ignored_fields = [key for key in body if key not in known]
    return req


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, (matters, message) in UNSUPPORTED_FIELDS.items():
        if name in body and matters(body[name]):
            raise _fail(message, name)


def _parse_common(body: dict[str, Any], req: ChatRequest, limits: RequestLimits) -> None:
    """OVMS ``parseCommonPart``: every check in its order."""
    req.stream = _parse_bool(body, "stream", "Stream is not bool") or False

    if _present(body, "stream_options"):
        _parse_stream_options(body["stream_options"], req)

    if "model" not in body:
        raise _fail("model missing in request", "model")
    if not isinstance(body["model"], str):
        raise _fail("model is not a string", "model")
    req.model = body["model"]

    req.ignore_eos = _parse_bool(body, "ignore_eos") or False

    # max_tokens: no null exemption in OVMS (null is "not an unsigned integer").
    limit = limits.max_tokens_limit
    if "max_tokens" in body:
        value = _parse_uint32(body["max_tokens"], "max_tokens")
        if limit is not None and not value < limit:
            raise _fail(f"max_tokens exceeds limit provided in graph config: {limit}", "max_tokens")
        req.max_tokens = value
    elif limit is not None:
        req.max_tokens = limit

    req.frequency_penalty = _parse_number(body, "frequency_penalty", (-2.0, 2.0), "(-2.0, 2.0)")
    req.presence_penalty = _parse_number(body, "presence_penalty", (-2.0, 2.0), "(-2.0, 2.0)")
    req.repetition_penalty = _parse_number(body, "repetition_penalty")
    req.length_penalty = _parse_number(body, "length_penalty")
    req.temperature = _parse_number(body, "temperature", (0.0, 2.0), "(0.0, 2.0)")
    req.top_p = _parse_number(body, "top_p", (0.0, 1.0), "(0.0, 1.0)")
    if _present(body, "min_p"):
        min_p = _as_float(body["min_p"])
        if min_p is None:
            raise _fail("min_p is not a valid number", "min_p")
        if not 0.0 <= _f32(min_p) < 1.0:
            raise _fail("min_p out of range [0.0, 1.0)", "min_p")
        req.min_p = min_p

    if _present(body, "top_k"):
        top_k = body["top_k"]
        if not _is_int32(top_k):
            raise _fail("top_k is not an integer", "top_k")
        if top_k < -1 or top_k == 0:
            raise _fail("top_k must be -1 (all tokens) or a positive integer", "top_k")
        req.top_k = top_k

    if _present(body, "seed"):
        seed = body["seed"]
        if not _is_any_integer(seed):
            raise _fail("seed is not an integer", "seed")
        if not 0 <= seed <= _UINT32_MAX:
            raise _fail("seed out of range [0, 4294967295]", "seed")
        req.seed = seed

    if _present(body, "stop"):
        req.stop = _parse_stop(body["stop"], limits)
    if _present(body, "stop_token_ids"):
        req.stop_token_ids = _parse_stop_token_ids(body["stop_token_ids"], limits)
    if _present(body, "min_tokens"):
        req.min_tokens = _parse_uint32(body["min_tokens"], "min_tokens")

    include_stop = _parse_bool(body, "include_stop_str_in_output")
    if include_stop is False and req.stream:
        raise _fail(
            "include_stop_str_in_output cannot be set to false if streaming is used",
            "include_stop_str_in_output",
        )
    req.include_stop_str_in_output = req.stream if include_stop is None else include_stop

    _parse_best_of_and_n(body, req, limits)

    # Read unchecked by OVMS (speculative pipelines only); type-checked here.
    if _present(body, "num_assistant_tokens"):
        req.num_assistant_tokens = _parse_uint32(
            body["num_assistant_tokens"], "num_assistant_tokens"
        )
    req.assistant_confidence_threshold = _parse_number(body, "assistant_confidence_threshold")
    if _present(body, "max_ngram_size"):
        req.max_ngram_size = _parse_uint32(body["max_ngram_size"], "max_ngram_size")

    skip = _parse_bool(body, "skip_special_tokens", "skip_special_tokens is not a bool")
    req.skip_special_tokens = True if skip is None else skip


def _parse_stream_options(options: Any, req: ChatRequest) -> None:
    if not req.stream:
        raise _fail("stream_options provided, but stream not set to true", "stream_options")
    if not isinstance(options, dict):
        raise _fail("stream_options is not an object", "stream_options")
    found = 0
    if "include_usage" in options:
        if not isinstance(options["include_usage"], bool):
            raise _fail(
                "stream_options.include_usage is not a boolean", "stream_options.include_usage"
            )
        req.include_usage = options["include_usage"]
        found += 1
    if "continuous_usage_stats" in options:
        if not isinstance(options["continuous_usage_stats"], bool):
            raise _fail(
                "stream_options.continuous_usage_stats is not a boolean",
                "stream_options.continuous_usage_stats",
            )
        req.continuous_usage_stats = options["continuous_usage_stats"]
        found += 1
    if "include_obfuscation" in options:  # OpenAI's padding of stream events; none here
        if options["include_obfuscation"] is not False:
            raise _fail(
                "stream_options.include_obfuscation is not supported (set it to false)",
                "stream_options.include_obfuscation",
            )
        found += 1
    if len(options) > found:
        raise _fail(
            "Found unexpected stream options. Properties accepted in stream_options: include_usage",
            "stream_options",
        )


def _parse_bool(body: dict[str, Any], name: str, message: str | None = None) -> bool | None:
    """An optional boolean; None when absent or null."""
    if not _present(body, name):
        return None
    if not isinstance(body[name], bool):
        raise _fail(message or f"{name} accepts values true or false", name)
    return body[name]


def _parse_uint32(value: Any, name: str) -> int:
    """The uint32 check OVMS applies to ``max_tokens`` and ``max_completion_tokens``."""
    if not _is_uint(value):
        if _is_uint64(value):
            raise _fail(f"{name} value can't be greater than 4294967295", name)
        raise _fail(f"{name} is not an unsigned integer", name)
    return value


def _parse_number(
    body: dict[str, Any],
    name: str,
    bounds: tuple[float, float] | None = None,
    bounds_text: str = "",
) -> float | None:
    """A float field: ``<name> is not a valid number`` / ``<name> out of range<bounds_text>``."""
    if not _present(body, name):
        return None
    value = _as_float(body[name])
    if value is None:
        raise _fail(f"{name} is not a valid number", name)
    if bounds is not None:
        stored = _f32(value)
        if stored < bounds[0] or stored > bounds[1]:
            raise _fail(f"{name} out of range{bounds_text}", name)
    return value


def _parse_stop(stop: Any, limits: RequestLimits) -> list[str]:
    if isinstance(stop, str):
        items = [stop]
    elif isinstance(stop, list):
        if len(stop) > limits.max_stop_strings:
            raise _fail(
                f"stop array must have no more than {limits.max_stop_strings} strings", "stop"
            )
        for element in stop:
            if not isinstance(element, str):
                raise _fail("stop array contains non string element", "stop")
        items = stop
    else:
        raise _fail("stop is not a string or array of strings", "stop")
    result: list[str] = []
    for item in items:
        if len(item) > limits.max_stop_len:
            raise _fail(
                f"stop string exceeds the limit of {limits.max_stop_len} characters", "stop"
            )
        # OVMS keeps a set; an empty string can never end generation meaningfully.
        if item and item not in result:
            result.append(item)
    return result


def _parse_stop_token_ids(value: Any, limits: RequestLimits) -> list[int]:
    if not isinstance(value, list):
        raise _fail("stop_token_ids is not an array of token ids", "stop_token_ids")
    if len(value) > limits.max_stop_strings:
        raise _fail(
            f"stop_token_ids exceeds the limit of {limits.max_stop_strings} entries",
            "stop_token_ids",
        )
    if not all(_is_int(v) and 0 <= v <= _INT32_MAX for v in value):
        raise _fail("stop_token_ids must hold token ids (non-negative integers)", "stop_token_ids")
    return sorted(set(value))


def _parse_best_of_and_n(body: dict[str, Any], req: ChatRequest, limits: RequestLimits) -> None:
    if _present(body, "best_of"):
        best_of = body["best_of"]
        if not _is_uint(best_of):
            raise _fail("best_of is not an unsigned integer", "best_of")
        if best_of == 0:
            raise _fail("best_of value should be greater than 0", "best_of")
        if not best_of < limits.best_of_limit:
            raise _fail(
                f"best_of exceeds limit provided in graph config: {limits.best_of_limit}",
                "best_of",
            )
        if req.stream:
            raise _fail("best_of cannot be used in streaming mode", "best_of")
        req.best_of = best_of

    if _present(body, "n"):
        n = body["n"]
        if not _is_uint(n):
            raise _fail("n is not an unsigned integer", "n")
        if n == 0:
            raise _fail("n value should be greater than 0", "n")
        if req.best_of is not None and req.best_of < n:
            raise _fail("n value cannot be greater than best_of", "n")
        if n > limits.max_n:
            raise _fail(f"n exceeds the limit of {limits.max_n} choices per request", "n")
        # Beyond OVMS (which needs best_of >= n): n samples, checked against the sampling
        # settings when the generation config is built.
        if n > 1 and req.stream:
            raise _fail("n above 1 cannot be used in streaming mode", "n")
        req.n = n


def _parse_completions(body: dict[str, Any], req: ChatRequest) -> None:
    """OVMS ``parseCompletionsPart``."""
    if "prompt" in body:
        if not isinstance(body["prompt"], str):
            raise _fail("prompt is not a string", "prompt")
        req.prompt = body["prompt"]
    if not req.prompt:
        raise _fail("prompt is missing", "prompt")

    if "logprobs" in body and body["logprobs"] is not None:
        logprobs = body["logprobs"]
        if not _is_int32(logprobs):
            raise _fail("logprobs accepts integer values", "logprobs")
        if logprobs != 1:
            raise _fail("accepted logprobs value is currently 1 only", "logprobs")
        req.logprobs = True
    if req.logprobs and req.stream:
        raise _fail("logprobs are not supported in streaming mode.", "logprobs")

    req.echo = _parse_bool(body, "echo") or False
    if req.max_tokens == 0 and not req.echo:
        raise _fail("max_tokens value should be greater than 0 unless echo is set", "max_tokens")


def _parse_chat(body: dict[str, Any], req: ChatRequest, limits: RequestLimits) -> None:
    """OVMS ``parseChatCompletionsPart`` followed by the VLM input checks."""
    raw_messages = _parse_messages(body)
    tools = parse_tools(body)
    req.tools, req.tool_choice, req.max_tool_calls = tools.tools, tools.choice, tools.max_calls

    req.logprobs = _parse_bool(body, "logprobs") or False
    if req.logprobs and req.stream:
        raise _fail("logprobs are not supported in streaming mode.", "logprobs")

    zero_param = "max_tokens"
    if _present(body, "max_completion_tokens"):
        value = _parse_uint32(body["max_completion_tokens"], "max_completion_tokens")
        limit = limits.max_tokens_limit
        if limit is not None and value > limit:
            raise _fail(
                f"max_completion_tokens exceeds limit provided in graph config: {limit}",
                "max_completion_tokens",
            )
        req.max_tokens = value
        zero_param = "max_completion_tokens"
    if req.max_tokens == 0:
        raise _fail("max_tokens value should be greater than 0", zero_param)

    if _present(body, "response_format"):
        req.response_format = parse_response_format(body["response_format"])

    _check_restricted_text(raw_messages, limits)
    if not limits.accepts_audio:
        _refuse_audio(raw_messages)
    req.messages, req.image_urls = _flatten_messages(raw_messages, limits)

    if _present(body, "chat_template_kwargs"):
        if not isinstance(body["chat_template_kwargs"], dict):
            raise _fail("chat_template_kwargs must be an object", "chat_template_kwargs")
        _refuse_reserved_kwargs(body["chat_template_kwargs"])
        req.chat_template_kwargs = body["chat_template_kwargs"]
    if _present(body, "reasoning_effort"):
        req.chat_template_kwargs = with_reasoning_effort(
            req.chat_template_kwargs, body["reasoning_effort"], "reasoning_effort"
        )


def _parse_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """OVMS ``parseMessages``; returns messages whose content is still a string or a part list."""
    if "messages" not in body:
        raise _fail("Messages missing in request", "messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _fail("Messages are not an array", "messages")
    if not messages:
        raise _fail("Messages array cannot be empty", "messages")
    parsed: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _fail("Message is not a JSON object", where)
        out: dict[str, Any] = {}
        for key, value in message.items():
            if key in _MESSAGE_STRING_KEYS and isinstance(value, str):
                out[key] = value
            elif key == "content" and value is None:
                out[key] = ""
            elif key == "tool_calls" and isinstance(value, list):
                out[key] = copy.deepcopy(value)
            elif key == "content" and isinstance(value, list):
                _check_content_parts(value, f"{where}.content")
                out[key] = value
            elif key == "content":
                raise _fail(
                    "Invalid message structure - content must be a string, an array or null",
                    f"{where}.content",
                )
        if "role" not in out:
            raise _fail("Every message must have 'role' field", f"{where}.role")
        out.setdefault("content", "")
        for call in out.get("tool_calls", ()):
            if not isinstance(call, dict):
                raise _fail("Each tool_call must be an object", f"{where}.tool_calls")
            function = call.get("function")
            if not isinstance(function, dict):
                raise _fail("Each tool_call must have a 'function' object", f"{where}.tool_calls")
            function.setdefault("arguments", "{}")
        parsed.append({"role": out.pop("role"), "content": out.pop("content"), **out})
    return parsed


def _check_content_parts(parts: list[Any], where: str) -> None:
    prefix = "Invalid message structure - "
    for part in parts:
        if not isinstance(part, dict):
            raise _fail(prefix + "content array should contain objects", where)
        kind = part.get("type")
        if not isinstance(kind, str):
            raise _fail(prefix + "content object type missing", where)
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _fail(prefix + "content text missing", where)
        elif kind == "image_url":
            image_url = part.get("image_url")
            if not isinstance(image_url, dict):
                raise _fail(prefix + "content image_url missing", where)
            if not isinstance(image_url.get("url"), str):
                raise _fail(prefix + "image_url does not have url field", where)
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict):
                raise _fail(prefix + "input_audio object missing", where)
            if not isinstance(audio.get("data"), str):
                raise _fail(prefix + "input_audio does not have a valid data field", where)
        else:
            raise _fail("Unsupported content type", where)


def _refuse_audio(messages: list[dict[str, Any]]) -> None:
    """An ``input_audio`` part would otherwise be dropped and the text answered alone."""
    for i, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, list) and any(p["type"] == "input_audio" for p in content):
            raise _fail(NO_AUDIO_MESSAGE, f"messages[{i}].content")


def _refuse_reserved_kwargs(kwargs: dict[str, Any]) -> None:
    """OVMS: values the template engine gets natively cannot come from ``chat_template_kwargs``."""
    for key in RESERVED_TEMPLATE_KWARGS:
        if key in kwargs:
            raise _fail(
                f"chat_template_kwargs cannot contain '{key}': the server provides it to the "
                "chat template",
                f"chat_template_kwargs.{key}",
            )


def _check_restricted_text(messages: list[dict[str, Any]], limits: RequestLimits) -> None:
    """The injection guard of OVMS' ``ImageDecodingProcessor``, extended to vision tokens."""
    forbidden = tuple(t for t in (IMAGE_TAG_PREFIX, *limits.restricted_tokens) if t)
    # One pass for the tokens' first characters ("<" for all of Qwen's) spares a long text one
    # pass per token when none of them can be in it.
    firsts = tuple({t[0] for t in forbidden})
    for i, message in enumerate(messages):
        content = message["content"]
        texts = [content] if isinstance(content, str) else [
            part["text"] for part in content if part["type"] == "text"
        ]  # fmt: skip
        for text in texts:
            if not any(c in text for c in firsts):
                continue
            if any(token in text for token in forbidden):
                raise _fail(RESTRICTED_TAG_MESSAGE, f"messages[{i}].content")


def _flatten_messages(
    messages: list[dict[str, Any]], limits: RequestLimits
) -> tuple[list[dict[str, Any]], list[str]]:
    """Replace array content by text with ``<ov_genai_image_N>`` tags; collect image URLs."""
    count = sum(
        1
        for message in messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    )
    if count > limits.max_images:
        raise _fail(
            f"Number of images in request: {count} exceeds the limit of {limits.max_images}",
            "messages",
        )
    urls: list[str] = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, list):
            continue
        pieces: list[str] = []
        previous_was_text = False
        for part in content:
            if part["type"] == "image_url":
                pieces.append(f"{IMAGE_TAG_PREFIX}{len(urls)}>\n")
                urls.append(part["image_url"]["url"])
                previous_was_text = False
            elif part["type"] == "text":
                if previous_was_text:
                    pieces.append("\n")
                pieces.append(part["text"])
                previous_was_text = True
        message["content"] = "".join(pieces)
    return messages, urls


# ---------------------------------------------------------------------------- prompt size bound

# No token of a real vocabulary is longer than this many characters (Qwen2's longest is 64), so
# a text of N characters is at least N / CHARS_PER_TOKEN_BOUND tokens long.
CHARS_PER_TOKEN_BOUND = 64


def prompt_chars(request: ChatRequest) -> int:
    """Characters of the text the prompt is made of (messages or ``prompt``), templates aside."""
    if request.endpoint == "completions":
        return len(request.prompt or "")
    total = 0
    for message in request.messages:
        for key in ("content", "reasoning_content", "name", "tool_call_id"):
            value = message.get(key)
            if isinstance(value, str):
                total += len(value)
    return total


def check_prompt_size(request: ChatRequest, max_length: int | None) -> None:
    """Refuse, before templating and tokenising, a prompt that cannot fit the context.

    A prompt of more than ``max_length * CHARS_PER_TOKEN_BOUND`` characters has more tokens than
    the model's context, whatever the tokenizer; refusing it here bounds the memory and time a
    request may cost before the exact token count (templating and tokenising a prompt of at
    most that many characters).

    Raises:
        InvalidParameterError: ``context_length_exceeded``, naming ``messages`` (or ``prompt``).
    """
    if max_length is None:
        return
    bound = max_length * CHARS_PER_TOKEN_BOUND
    chars = prompt_chars(request)
    if chars > bound:
        param = "prompt" if request.endpoint == "completions" else "messages"
        raise InvalidParameterError(
            f"Prompt of {chars} characters exceeds model max length: {max_length} tokens "
            f"(at most {bound} characters)", param=param, code="context_length_exceeded",
        )
