"""Request validation: OVMS messages, their order, and the normalised request."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from calculators.llm.request_validation import (
    ChatRequest,
    RequestLimits,
    parse_chat_request,
)
from ovgraph.errors import InvalidParameterError, RequestError

DROP = object()
NO_LIMITS = RequestLimits()
LIMIT_100 = RequestLimits(max_tokens_limit=100)
USER_HI = [{"role": "user", "content": "hi"}]


def chat(**fields: object) -> dict:
    body: dict = {"model": "vlm", "messages": copy.deepcopy(USER_HI)}
    for key, value in fields.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def completion(**fields: object) -> dict:
    body: dict = {"model": "vlm", "prompt": "hi"}
    for key, value in fields.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def msgs(*content_parts: object, role: str = "user") -> list:
    return [{"role": role, "content": list(content_parts)}]


def img(url: str = "data:image/png;base64,AAAA") -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def txt(text: str) -> dict:
    return {"type": "text", "text": text}


def parse(body: object, endpoint: str = "chat", limits: RequestLimits = NO_LIMITS) -> ChatRequest:
    return parse_chat_request(body, endpoint=endpoint, limits=limits)  # type: ignore[arg-type]


INVALID = [
    # --- body and stream (parseCommonPart start) ---
    # a JSON array instead of an object
    pytest.param([], "chat", NO_LIMITS, "Received json is not an object", None, id="body-array"),
    # stream must be a JSON boolean, a string is not
    pytest.param(chat(stream="true"), "chat", NO_LIMITS, "Stream is not bool", "stream",
                 id="stream-string"),
    # 1 is an int in Python but not a bool in JSON
    pytest.param(chat(stream=1), "chat", NO_LIMITS, "Stream is not bool", "stream",
                 id="stream-int"),
    # --- stream_options ---
    # stream_options without stream
    pytest.param(chat(stream_options={"include_usage": True}), "chat", NO_LIMITS,
                 "stream_options provided, but stream not set to true", "stream_options",
                 id="stream-options-no-stream"),
    # stream_options with stream: false
    pytest.param(chat(stream=False, stream_options={}), "chat", NO_LIMITS,
                 "stream_options provided, but stream not set to true", "stream_options",
                 id="stream-options-stream-false"),
    # stream_options that is not an object
    pytest.param(chat(stream=True, stream_options="usage"), "chat", NO_LIMITS,
                 "stream_options is not an object", "stream_options", id="stream-options-string"),
    # include_usage must be a boolean
    pytest.param(chat(stream=True, stream_options={"include_usage": "yes"}), "chat", NO_LIMITS,
                 "stream_options.include_usage is not a boolean", "stream_options.include_usage",
                 id="include-usage-string"),
    # continuous_usage_stats (our superset) must be a boolean
    pytest.param(chat(stream=True, stream_options={"continuous_usage_stats": 1}), "chat",
                 NO_LIMITS, "stream_options.continuous_usage_stats is not a boolean",
                 "stream_options.continuous_usage_stats", id="continuous-usage-int"),
    # any other key keeps OVMS' message
    pytest.param(chat(stream=True, stream_options={"include_usage": True, "x": 1}), "chat",
                 NO_LIMITS,
                 "Found unexpected stream options. Properties accepted in stream_options: "
                 "include_usage", "stream_options", id="stream-options-unknown-key"),
    # --- model ---
    # model absent
    pytest.param(chat(model=DROP), "chat", NO_LIMITS, "model missing in request", "model",
                 id="model-missing"),
    # model not a string
    pytest.param(chat(model=5), "chat", NO_LIMITS, "model is not a string", "model",
                 id="model-int"),
    # model null is present but not a string
    pytest.param(chat(model=None), "chat", NO_LIMITS, "model is not a string", "model",
                 id="model-null"),
    # --- ignore_eos ---
    # ignore_eos must be a boolean
    pytest.param(chat(ignore_eos="true"), "chat", NO_LIMITS,
                 "ignore_eos accepts values true or false", "ignore_eos", id="ignore-eos-string"),
    # --- max_tokens ---
    # true is not an unsigned integer (bool is an int subclass in Python)
    pytest.param(chat(max_tokens=True), "chat", NO_LIMITS, "max_tokens is not an unsigned integer",
                 "max_tokens", id="max-tokens-true"),
    # 5.0 is a double in JSON, not an unsigned integer
    pytest.param(chat(max_tokens=5.0), "chat", NO_LIMITS, "max_tokens is not an unsigned integer",
                 "max_tokens", id="max-tokens-float"),
    # negative
    pytest.param(chat(max_tokens=-1), "chat", NO_LIMITS, "max_tokens is not an unsigned integer",
                 "max_tokens", id="max-tokens-negative"),
    # string
    pytest.param(chat(max_tokens="5"), "chat", NO_LIMITS, "max_tokens is not an unsigned integer",
                 "max_tokens", id="max-tokens-string"),
    # null is not exempt for max_tokens in OVMS
    pytest.param(chat(max_tokens=None), "chat", NO_LIMITS,
                 "max_tokens is not an unsigned integer", "max_tokens", id="max-tokens-null"),
    # above uint32 but within uint64
    pytest.param(chat(max_tokens=2**32), "chat", NO_LIMITS,
                 "max_tokens value can't be greater than 4294967295", "max_tokens",
                 id="max-tokens-uint64"),
    # above uint64 is a double for rapidjson
    pytest.param(chat(max_tokens=2**64), "chat", NO_LIMITS,
                 "max_tokens is not an unsigned integer", "max_tokens", id="max-tokens-huge"),
    # 1e400 parses to infinity in Python
    pytest.param(chat(max_tokens=float("inf")), "chat", NO_LIMITS,
                 "max_tokens is not an unsigned integer", "max_tokens", id="max-tokens-inf"),
    # equal to the limit is rejected (strictly below required)
    pytest.param(chat(max_tokens=100), "chat", LIMIT_100,
                 "max_tokens exceeds limit provided in graph config: 100", "max_tokens",
                 id="max-tokens-equal-limit"),
    # 0 is rejected after the chat part
    pytest.param(chat(max_tokens=0), "chat", NO_LIMITS, "max_tokens value should be greater than 0",
                 "max_tokens", id="max-tokens-zero"),
    # --- max_completion_tokens ---
    # bool
    pytest.param(chat(max_completion_tokens=True), "chat", NO_LIMITS,
                 "max_completion_tokens is not an unsigned integer", "max_completion_tokens",
                 id="max-completion-tokens-true"),
    # float
    pytest.param(chat(max_completion_tokens=5.5), "chat", NO_LIMITS,
                 "max_completion_tokens is not an unsigned integer", "max_completion_tokens",
                 id="max-completion-tokens-float"),
    # above uint32
    pytest.param(chat(max_completion_tokens=2**32), "chat", NO_LIMITS,
                 "max_completion_tokens value can't be greater than 4294967295",
                 "max_completion_tokens", id="max-completion-tokens-uint64"),
    # above the limit
    pytest.param(chat(max_completion_tokens=101), "chat", LIMIT_100,
                 "max_completion_tokens exceeds limit provided in graph config: 100",
                 "max_completion_tokens", id="max-completion-tokens-over-limit"),
    # 0 gives the max_tokens message, param names the field that was sent
    pytest.param(chat(max_completion_tokens=0), "chat", NO_LIMITS,
                 "max_tokens value should be greater than 0", "max_completion_tokens",
                 id="max-completion-tokens-zero"),
    # --- float fields ---
    # frequency_penalty as a string
    pytest.param(chat(frequency_penalty="1"), "chat", NO_LIMITS,
                 "frequency_penalty is not a valid number", "frequency_penalty", id="freq-string"),
    # frequency_penalty true
    pytest.param(chat(frequency_penalty=True), "chat", NO_LIMITS,
                 "frequency_penalty is not a valid number", "frequency_penalty", id="freq-bool"),
    # frequency_penalty NaN (Python's json accepts NaN)
    pytest.param(chat(frequency_penalty=float("nan")), "chat", NO_LIMITS,
                 "frequency_penalty is not a valid number", "frequency_penalty", id="freq-nan"),
    # an integer outside int32 is neither IsInt nor IsDouble for rapidjson
    pytest.param(chat(frequency_penalty=3_000_000_000), "chat", NO_LIMITS,
                 "frequency_penalty is not a valid number", "frequency_penalty", id="freq-uint"),
    # above 2
    pytest.param(chat(frequency_penalty=2.5), "chat", NO_LIMITS,
                 "frequency_penalty out of range(-2.0, 2.0)", "frequency_penalty", id="freq-high"),
    # below -2 (int)
    pytest.param(chat(frequency_penalty=-3), "chat", NO_LIMITS,
                 "frequency_penalty out of range(-2.0, 2.0)", "frequency_penalty", id="freq-low"),
    # presence_penalty above 2
    pytest.param(chat(presence_penalty=2.01), "chat", NO_LIMITS,
                 "presence_penalty out of range(-2.0, 2.0)", "presence_penalty", id="pres-high"),
    # presence_penalty as a list
    pytest.param(chat(presence_penalty=[1]), "chat", NO_LIMITS,
                 "presence_penalty is not a valid number", "presence_penalty", id="pres-list"),
    # repetition_penalty has no range, but infinity is not a number
    pytest.param(chat(repetition_penalty=float("inf")), "chat", NO_LIMITS,
                 "repetition_penalty is not a valid number", "repetition_penalty", id="rep-inf"),
    # repetition_penalty as a string
    pytest.param(chat(repetition_penalty="1.1"), "chat", NO_LIMITS,
                 "repetition_penalty is not a valid number", "repetition_penalty", id="rep-str"),
    # length_penalty as a string
    pytest.param(chat(length_penalty="x"), "chat", NO_LIMITS,
                 "length_penalty is not a valid number", "length_penalty", id="len-str"),
    # temperature as a string
    pytest.param(chat(temperature="hot"), "chat", NO_LIMITS, "temperature is not a valid number",
                 "temperature", id="temp-string"),
    # temperature negative
    pytest.param(chat(temperature=-0.1), "chat", NO_LIMITS, "temperature out of range(0.0, 2.0)",
                 "temperature", id="temp-negative"),
    # temperature above 2
    pytest.param(chat(temperature=2.1), "chat", NO_LIMITS, "temperature out of range(0.0, 2.0)",
                 "temperature", id="temp-high"),
    # temperature -inf
    pytest.param(chat(temperature=float("-inf")), "chat", NO_LIMITS,
                 "temperature is not a valid number", "temperature", id="temp-neg-inf"),
    # top_p above 1
    pytest.param(chat(top_p=1.5), "chat", NO_LIMITS, "top_p out of range(0.0, 1.0)", "top_p",
                 id="top-p-high"),
    # top_p negative
    pytest.param(chat(top_p=-0.1), "chat", NO_LIMITS, "top_p out of range(0.0, 1.0)", "top_p",
                 id="top-p-negative"),
    # top_p bool
    pytest.param(chat(top_p=False), "chat", NO_LIMITS, "top_p is not a valid number", "top_p",
                 id="top-p-bool"),
    # min_p equal to 1 (half-open range)
    pytest.param(chat(min_p=1.0), "chat", NO_LIMITS, "min_p out of range [0.0, 1.0)", "min_p",
                 id="min-p-one"),
    # min_p just below 1 rounds to 1.0 as float32, as in OVMS
    pytest.param(chat(min_p=0.99999999), "chat", NO_LIMITS, "min_p out of range [0.0, 1.0)",
                 "min_p", id="min-p-float32-rounding"),
    # min_p negative
    pytest.param(chat(min_p=-0.1), "chat", NO_LIMITS, "min_p out of range [0.0, 1.0)", "min_p",
                 id="min-p-negative"),
    # min_p string
    pytest.param(chat(min_p="0.1"), "chat", NO_LIMITS, "min_p is not a valid number", "min_p",
                 id="min-p-string"),
    # --- top_k ---
    # 0 is neither -1 nor positive
    pytest.param(chat(top_k=0), "chat", NO_LIMITS,
                 "top_k must be -1 (all tokens) or a positive integer", "top_k", id="top-k-zero"),
    # below -1
    pytest.param(chat(top_k=-2), "chat", NO_LIMITS,
                 "top_k must be -1 (all tokens) or a positive integer", "top_k",
                 id="top-k-minus-two"),
    # a float
    pytest.param(chat(top_k=1.5), "chat", NO_LIMITS, "top_k is not an integer", "top_k",
                 id="top-k-float"),
    # 40.0 is still a double
    pytest.param(chat(top_k=40.0), "chat", NO_LIMITS, "top_k is not an integer", "top_k",
                 id="top-k-integral-float"),
    # a bool
    pytest.param(chat(top_k=True), "chat", NO_LIMITS, "top_k is not an integer", "top_k",
                 id="top-k-bool"),
    # outside int32
    pytest.param(chat(top_k=2**31), "chat", NO_LIMITS, "top_k is not an integer", "top_k",
                 id="top-k-int64"),
    # --- seed ---
    # a string
    pytest.param(chat(seed="1"), "chat", NO_LIMITS, "seed is not an integer", "seed",
                 id="seed-string"),
    # a float
    pytest.param(chat(seed=1.0), "chat", NO_LIMITS, "seed is not an integer", "seed",
                 id="seed-float"),
    # a bool
    pytest.param(chat(seed=True), "chat", NO_LIMITS, "seed is not an integer", "seed",
                 id="seed-bool"),
    # negative
    pytest.param(chat(seed=-1), "chat", NO_LIMITS, "seed out of range [0, 4294967295]", "seed",
                 id="seed-negative"),
    # above uint32
    pytest.param(chat(seed=2**32), "chat", NO_LIMITS, "seed out of range [0, 4294967295]", "seed",
                 id="seed-over-uint32"),
    # above uint64 is a double for rapidjson
    pytest.param(chat(seed=2**64), "chat", NO_LIMITS, "seed is not an integer", "seed",
                 id="seed-over-uint64"),
    # --- stop ---
    # a number
    pytest.param(chat(stop=5), "chat", NO_LIMITS, "stop is not a string or array of strings",
                 "stop", id="stop-int"),
    # an object
    pytest.param(chat(stop={"a": 1}), "chat", NO_LIMITS,
                 "stop is not a string or array of strings", "stop", id="stop-object"),
    # an array holding a number
    pytest.param(chat(stop=["a", 1]), "chat", NO_LIMITS, "stop array contains non string element",
                 "stop", id="stop-non-string-element"),
    # more than 16 strings
    pytest.param(chat(stop=[str(i) for i in range(17)]), "chat", NO_LIMITS,
                 "stop array must have no more than 16 strings", "stop", id="stop-17"),
    # the count limit is configurable and named in the message
    pytest.param(chat(stop=["a", "b", "c"]), "chat", RequestLimits(max_stop_strings=2),
                 "stop array must have no more than 2 strings", "stop", id="stop-over-config"),
    # a stop string longer than our limit
    pytest.param(chat(stop="x" * 1025), "chat", NO_LIMITS,
                 "stop string exceeds the limit of 1024 characters", "stop", id="stop-too-long"),
    # --- include_stop_str_in_output ---
    # not a boolean
    pytest.param(chat(include_stop_str_in_output="no"), "chat", NO_LIMITS,
                 "include_stop_str_in_output accepts values true or false",
                 "include_stop_str_in_output", id="include-stop-string"),
    # false while streaming
    pytest.param(chat(stream=True, include_stop_str_in_output=False), "chat", NO_LIMITS,
                 "include_stop_str_in_output cannot be set to false if streaming is used",
                 "include_stop_str_in_output", id="include-stop-false-streaming"),
    # --- best_of ---
    # a float
    pytest.param(chat(best_of=2.0), "chat", NO_LIMITS, "best_of is not an unsigned integer",
                 "best_of", id="best-of-float"),
    # negative
    pytest.param(chat(best_of=-1), "chat", NO_LIMITS, "best_of is not an unsigned integer",
                 "best_of", id="best-of-negative"),
    # zero
    pytest.param(chat(best_of=0), "chat", NO_LIMITS, "best_of value should be greater than 0",
                 "best_of", id="best-of-zero"),
    # equal to best_of_limit (must be strictly below)
    pytest.param(chat(best_of=20), "chat", NO_LIMITS,
                 "best_of exceeds limit provided in graph config: 20", "best_of",
                 id="best-of-equal-limit"),
    # configurable limit
    pytest.param(chat(best_of=5), "chat", RequestLimits(best_of_limit=4),
                 "best_of exceeds limit provided in graph config: 4", "best_of",
                 id="best-of-over-config"),
    # streaming
    pytest.param(chat(stream=True, best_of=2), "chat", NO_LIMITS,
                 "best_of cannot be used in streaming mode", "best_of", id="best-of-streaming"),
    # --- n ---
    # a string
    pytest.param(chat(n="2"), "chat", NO_LIMITS, "n is not an unsigned integer", "n",
                 id="n-string"),
    # zero
    pytest.param(chat(n=0), "chat", NO_LIMITS, "n value should be greater than 0", "n",
                 id="n-zero"),
    # n > 1 without best_of asks for samples: not in a stream
    pytest.param(chat(n=2, stream=True), "chat", NO_LIMITS,
                 "n above 1 cannot be used in streaming mode", "n", id="n-samples-streamed"),
    # n above best_of
    pytest.param(chat(n=3, best_of=2), "chat", NO_LIMITS, "n value cannot be greater than best_of",
                 "n", id="n-over-best-of"),
    # huge n answered cheaply by the cap
    pytest.param(chat(n=4_000_000_000), "chat", NO_LIMITS,
                 "n exceeds the limit of 16 choices per request", "n", id="n-huge"),
    # our cap: OVMS would accept n=17 with best_of=17
    pytest.param(chat(n=17, best_of=17), "chat", NO_LIMITS,
                 "n exceeds the limit of 16 choices per request", "n", id="n-over-max-n"),
    # the cap is configurable and named
    pytest.param(chat(n=3, best_of=3), "chat", RequestLimits(max_n=2),
                 "n exceeds the limit of 2 choices per request", "n", id="n-over-config"),
    # --- assisted decoding parameters (type-checked here; OVMS reads them unchecked) ---
    # num_assistant_tokens as a string
    pytest.param(chat(num_assistant_tokens="5"), "chat", NO_LIMITS,
                 "num_assistant_tokens is not an unsigned integer", "num_assistant_tokens",
                 id="num-assistant-tokens-string"),
    # assistant_confidence_threshold as a string
    pytest.param(chat(assistant_confidence_threshold="x"), "chat", NO_LIMITS,
                 "assistant_confidence_threshold is not a valid number",
                 "assistant_confidence_threshold", id="assistant-threshold-string"),
    # max_ngram_size negative
    pytest.param(chat(max_ngram_size=-1), "chat", NO_LIMITS,
                 "max_ngram_size is not an unsigned integer", "max_ngram_size",
                 id="max-ngram-negative"),
    # --- skip_special_tokens ---
    # not a boolean
    pytest.param(chat(skip_special_tokens="no"), "chat", NO_LIMITS,
                 "skip_special_tokens is not a bool", "skip_special_tokens",
                 id="skip-special-string"),
    # --- messages ---
    # absent
    pytest.param(chat(messages=DROP), "chat", NO_LIMITS, "Messages missing in request", "messages",
                 id="messages-missing"),
    # a string
    pytest.param(chat(messages="hi"), "chat", NO_LIMITS, "Messages are not an array", "messages",
                 id="messages-string"),
    # null
    pytest.param(chat(messages=None), "chat", NO_LIMITS, "Messages are not an array", "messages",
                 id="messages-null"),
    # empty
    pytest.param(chat(messages=[]), "chat", NO_LIMITS, "Messages array cannot be empty",
                 "messages", id="messages-empty"),
    # an element that is not an object
    pytest.param(chat(messages=["hi"]), "chat", NO_LIMITS, "Message is not a JSON object",
                 "messages[0]", id="message-string"),
    # an empty object has no role
    pytest.param(chat(messages=[{}]), "chat", NO_LIMITS, "Every message must have 'role' field",
                 "messages[0].role", id="message-empty-object"),
    # role that is not a string counts as missing
    pytest.param(chat(messages=[{"role": 1, "content": "x"}]), "chat", NO_LIMITS,
                 "Every message must have 'role' field", "messages[0].role", id="role-int"),
    # the second message lacks a role
    pytest.param(chat(messages=[{"role": "user", "content": "a"}, {"content": "b"}]), "chat",
                 NO_LIMITS, "Every message must have 'role' field", "messages[1].role",
                 id="second-message-no-role"),
    # content of another type (OVMS silently drops it; we reject)
    pytest.param(chat(messages=[{"role": "user", "content": 5}]), "chat", NO_LIMITS,
                 "Invalid message structure - content must be a string, an array or null",
                 "messages[0].content", id="content-int"),
    # content object instead of an array of parts
    pytest.param(chat(messages=[{"role": "user", "content": txt("hi")}]), "chat", NO_LIMITS,
                 "Invalid message structure - content must be a string, an array or null",
                 "messages[0].content", id="content-object"),
    # --- content parts ---
    # a part that is not an object
    pytest.param(chat(messages=msgs("hi")), "chat", NO_LIMITS,
                 "Invalid message structure - content array should contain objects",
                 "messages[0].content", id="part-string"),
    # a part without type
    pytest.param(chat(messages=msgs({"text": "hi"})), "chat", NO_LIMITS,
                 "Invalid message structure - content object type missing", "messages[0].content",
                 id="part-no-type"),
    # type not a string
    pytest.param(chat(messages=msgs({"type": 1})), "chat", NO_LIMITS,
                 "Invalid message structure - content object type missing", "messages[0].content",
                 id="part-type-int"),
    # text part without text
    pytest.param(chat(messages=msgs({"type": "text"})), "chat", NO_LIMITS,
                 "Invalid message structure - content text missing", "messages[0].content",
                 id="text-missing"),
    # text part with a non-string text
    pytest.param(chat(messages=msgs({"type": "text", "text": 5})), "chat", NO_LIMITS,
                 "Invalid message structure - content text missing", "messages[0].content",
                 id="text-int"),
    # image_url part without image_url
    pytest.param(chat(messages=msgs({"type": "image_url"})), "chat", NO_LIMITS,
                 "Invalid message structure - content image_url missing", "messages[0].content",
                 id="image-url-missing"),
    # image_url given as a string instead of {"url": ...}
    pytest.param(chat(messages=msgs({"type": "image_url", "image_url": "http://x/a.png"})), "chat",
                 NO_LIMITS, "Invalid message structure - content image_url missing",
                 "messages[0].content", id="image-url-string"),
    # image_url without url
    pytest.param(chat(messages=msgs({"type": "image_url", "image_url": {"detail": "low"}})),
                 "chat", NO_LIMITS,
                 "Invalid message structure - image_url does not have url field",
                 "messages[0].content", id="image-url-no-url"),
    # image_url.url not a string
    pytest.param(chat(messages=msgs({"type": "image_url", "image_url": {"url": 1}})), "chat",
                 NO_LIMITS, "Invalid message structure - image_url does not have url field",
                 "messages[0].content", id="image-url-url-int"),
    # input_audio part without input_audio
    pytest.param(chat(messages=msgs({"type": "input_audio"})), "chat", NO_LIMITS,
                 "Invalid message structure - input_audio object missing", "messages[0].content",
                 id="input-audio-missing"),
    # input_audio without data
    pytest.param(chat(messages=msgs({"type": "input_audio", "input_audio": {"format": "wav"}})),
                 "chat", NO_LIMITS,
                 "Invalid message structure - input_audio does not have a valid data field",
                 "messages[0].content", id="input-audio-no-data"),
    # an unknown part type
    pytest.param(chat(messages=msgs({"type": "video_url"})), "chat", NO_LIMITS,
                 "Unsupported content type", "messages[0].content", id="part-unknown-type"),
    # --- tool_calls inside messages ---
    # a tool_call that is not an object
    pytest.param(chat(messages=[{"role": "assistant", "tool_calls": ["f"]}]), "chat", NO_LIMITS,
                 "Each tool_call must be an object", "messages[0].tool_calls",
                 id="tool-call-string"),
    # a tool_call without function
    pytest.param(chat(messages=[{"role": "assistant", "tool_calls": [{"id": "1"}]}]), "chat",
                 NO_LIMITS, "Each tool_call must have a 'function' object",
                 "messages[0].tool_calls", id="tool-call-no-function"),
    # function not an object
    pytest.param(chat(messages=[{"role": "assistant", "tool_calls": [{"function": "f"}]}]),
                 "chat", NO_LIMITS, "Each tool_call must have a 'function' object",
                 "messages[0].tool_calls", id="tool-call-function-string"),
    # --- tool_choice ---
    # unknown string
    pytest.param(chat(tool_choice="sometimes"), "chat", NO_LIMITS,
                 "tool_choice should be either 'none' or 'auto' or 'required'", "tool_choice",
                 id="tool-choice-unknown"),
    # a number
    pytest.param(chat(tool_choice=1), "chat", NO_LIMITS,
                 "tool_choice is not a valid JSON object or string", "tool_choice",
                 id="tool-choice-int"),
    # nested form without a string name
    pytest.param(chat(tool_choice={"type": "function", "function": {"name": 5}}), "chat",
                 NO_LIMITS, "tool_choice.function.name is not a valid string", "tool_choice",
                 id="tool-choice-function-name-int"),
    # flat form without name
    pytest.param(chat(tool_choice={"type": "function"}), "chat", NO_LIMITS,
                 "tool_choice.name is not a valid string", "tool_choice", id="tool-choice-no-name"),
    # neither a function object nor type function
    pytest.param(chat(tool_choice={"type": "code"}), "chat", NO_LIMITS,
                 "tool_choice.function is not a valid JSON object", "tool_choice",
                 id="tool-choice-other-type"),
    # --- tools ---
    # not an array
    pytest.param(chat(tools={"type": "function"}), "chat", NO_LIMITS, "Tools are not an array",
                 "tools", id="tools-object"),
    # an element that is not an object
    pytest.param(chat(tools=["f"]), "chat", NO_LIMITS, "Tool is not a JSON object", "tools",
                 id="tool-string"),
    # function not an object
    pytest.param(chat(tools=[{"type": "function", "function": "f"}]), "chat", NO_LIMITS,
                 "Function is not a valid JSON object", "tools", id="tool-function-string"),
    # nested function without name
    pytest.param(chat(tools=[{"type": "function", "function": {"parameters": {}}}]), "chat",
                 NO_LIMITS, "Function object does not contain a valid name field", "tools",
                 id="tool-function-no-name"),
    # flat tool without type
    pytest.param(chat(tools=[{"name": "f"}]), "chat", NO_LIMITS, "Tool type is missing or invalid",
                 "tools", id="tool-flat-no-type"),
    # flat tool of another type
    pytest.param(chat(tools=[{"type": "retrieval", "name": "f"}]), "chat", NO_LIMITS,
                 "Only function tools are supported", "tools", id="tool-flat-other-type"),
    # flat tool without name
    pytest.param(chat(tools=[{"type": "function"}]), "chat", NO_LIMITS,
                 "Function object does not contain a valid name field", "tools",
                 id="tool-flat-no-name"),
    # parameters not an object
    pytest.param(chat(tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
                 "chat", NO_LIMITS, "Function parameters are not a valid JSON object", "tools",
                 id="tool-parameters-string"),
    # --- logprobs (chat) ---
    # not a boolean
    pytest.param(chat(logprobs=1), "chat", NO_LIMITS, "logprobs accepts values true or false",
                 "logprobs", id="logprobs-int"),
    # with streaming
    pytest.param(chat(stream=True, logprobs=True), "chat", NO_LIMITS,
                 "logprobs are not supported in streaming mode.", "logprobs",
                 id="logprobs-streaming"),
    # --- response_format, chat_template_kwargs ---
    # response_format not an object
    pytest.param(chat(response_format="json"), "chat", NO_LIMITS,
                 "response_format is not an object", "response_format", id="response-format-str"),
    # chat_template_kwargs not an object
    pytest.param(chat(chat_template_kwargs=["x"]), "chat", NO_LIMITS,
                 "chat_template_kwargs must be an object", "chat_template_kwargs",
                 id="chat-template-kwargs-list"),
    # --- restricted tags and vision tokens ---
    # the genai image tag in string content
    pytest.param(chat(messages=[{"role": "user", "content": "see <ov_genai_image_0>"}]), "chat",
                 NO_LIMITS, "Message contains restricted <ov_genai_image> tag",
                 "messages[0].content", id="image-tag-in-string"),
    # the tag prefix alone in a text part
    pytest.param(chat(messages=msgs(img(), txt("<ov_genai_image_"))), "chat", NO_LIMITS,
                 "Message contains restricted <ov_genai_image> tag", "messages[0].content",
                 id="image-tag-in-text-part"),
    # the tag in a system message
    pytest.param(chat(messages=[{"role": "system", "content": "<ov_genai_image_9>"}, *USER_HI]),
                 "chat", NO_LIMITS, "Message contains restricted <ov_genai_image> tag",
                 "messages[0].content", id="image-tag-in-system"),
    # Qwen2-VL image pad token
    pytest.param(chat(messages=[{"role": "user", "content": "x<|image_pad|>"}]), "chat",
                 NO_LIMITS, "Message contains restricted <ov_genai_image> tag",
                 "messages[0].content", id="image-pad-token"),
    # vision start token in a text part of the second message
    pytest.param(chat(messages=[*USER_HI, *msgs(txt("<|vision_start|>"))]), "chat", NO_LIMITS,
                 "Message contains restricted <ov_genai_image> tag", "messages[1].content",
                 id="vision-start-token"),
    # vision end token
    pytest.param(chat(messages=[{"role": "user", "content": "<|vision_end|>"}]), "chat",
                 NO_LIMITS, "Message contains restricted <ov_genai_image> tag",
                 "messages[0].content", id="vision-end-token"),
    # video pad token in assistant history
    pytest.param(chat(messages=[{"role": "assistant", "content": "<|video_pad|>"}, *USER_HI]),
                 "chat", NO_LIMITS, "Message contains restricted <ov_genai_image> tag",
                 "messages[0].content", id="video-pad-token"),
    # configured tokens replace the defaults
    pytest.param(chat(messages=[{"role": "user", "content": "<image>"}]), "chat",
                 RequestLimits(restricted_tokens=("<image>",)),
                 "Message contains restricted <ov_genai_image> tag", "messages[0].content",
                 id="configured-token"),
    # --- image count (ours) ---
    # 17 images in one message
    pytest.param(chat(messages=msgs(*[img() for _ in range(17)])), "chat", NO_LIMITS,
                 "Number of images in request: 17 exceeds the limit of 16", "messages",
                 id="images-over-default"),
    # images counted across messages
    pytest.param(chat(messages=[*msgs(img()), *msgs(img(), role="assistant")]), "chat",
                 RequestLimits(max_images=1),
                 "Number of images in request: 2 exceeds the limit of 1", "messages",
                 id="images-across-messages"),
    # --- /completions ---
    # prompt absent
    pytest.param(completion(prompt=DROP), "completions", NO_LIMITS, "prompt is missing", "prompt",
                 id="prompt-missing"),
    # prompt empty
    pytest.param(completion(prompt=""), "completions", NO_LIMITS, "prompt is missing", "prompt",
                 id="prompt-empty"),
    # prompt not a string
    pytest.param(completion(prompt=["a"]), "completions", NO_LIMITS, "prompt is not a string",
                 "prompt", id="prompt-list"),
    # prompt null
    pytest.param(completion(prompt=None), "completions", NO_LIMITS, "prompt is not a string",
                 "prompt", id="prompt-null"),
    # logprobs true is not an integer
    pytest.param(completion(logprobs=True), "completions", NO_LIMITS,
                 "logprobs accepts integer values", "logprobs", id="completions-logprobs-bool"),
    # logprobs 2
    pytest.param(completion(logprobs=2), "completions", NO_LIMITS,
                 "accepted logprobs value is currently 1 only", "logprobs",
                 id="completions-logprobs-2"),
    # logprobs 0
    pytest.param(completion(logprobs=0), "completions", NO_LIMITS,
                 "accepted logprobs value is currently 1 only", "logprobs",
                 id="completions-logprobs-0"),
    # logprobs with streaming
    pytest.param(completion(logprobs=1, stream=True), "completions", NO_LIMITS,
                 "logprobs are not supported in streaming mode.", "logprobs",
                 id="completions-logprobs-streaming"),
    # echo not a boolean
    pytest.param(completion(echo="yes"), "completions", NO_LIMITS,
                 "echo accepts values true or false", "echo", id="echo-string"),
    # max_tokens 0 without echo
    pytest.param(completion(max_tokens=0), "completions", NO_LIMITS,
                 "max_tokens value should be greater than 0 unless echo is set", "max_tokens",
                 id="completions-max-tokens-zero"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "endpoint", "limits", "message", "param"), INVALID)
def test_invalid_request_message_and_param(
    body: object, endpoint: str, limits: RequestLimits, message: str, param: str | None
) -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse(body, endpoint, limits)
    assert info.value.message == message
    assert str(info.value) == message
    assert info.value.param == param
    assert isinstance(info.value, RequestError)
    assert info.value.http_status == 400


ORDER = [
    # stream is checked before model
    pytest.param({"stream": "x"}, "Stream is not bool", id="stream-before-model"),
    # stream_options before model
    pytest.param({"stream_options": {}}, "stream_options provided, but stream not set to true",
                 id="stream-options-before-model"),
    # the common part (max_tokens) comes before messages
    pytest.param({"model": "m", "max_tokens": -1}, "max_tokens is not an unsigned integer",
                 id="max-tokens-before-messages"),
    # n comes before messages
    pytest.param({"model": "m", "n": 0}, "n value should be greater than 0",
                 id="n-before-messages"),
    # max_tokens 0 is checked only after messages
    pytest.param({"model": "m", "max_tokens": 0, "messages": []},
                 "Messages array cannot be empty", id="messages-before-max-tokens-zero"),
    # a bad part is reported before the missing role of the same message
    pytest.param({"model": "m", "messages": [{"content": [{"type": "video"}]}]},
                 "Unsupported content type", id="part-before-role"),
    # tool_choice before tools
    pytest.param({"model": "m", "messages": USER_HI, "tool_choice": 1, "tools": 1},
                 "tool_choice is not a valid JSON object or string", id="tool-choice-before-tools"),
    # tools before logprobs
    pytest.param({"model": "m", "messages": USER_HI, "tools": 1, "logprobs": 1},
                 "Tools are not an array", id="tools-before-logprobs"),
    # response_format before the restricted-tag guard
    pytest.param({"model": "m", "messages": [{"role": "user", "content": "<|image_pad|>"}],
                  "response_format": 1}, "response_format is not an object",
                 id="response-format-before-guard"),
    # the guard before chat_template_kwargs
    pytest.param({"model": "m", "messages": [{"role": "user", "content": "<|image_pad|>"}],
                  "chat_template_kwargs": 1}, "Message contains restricted <ov_genai_image> tag",
                 id="guard-before-chat-template-kwargs"),
    # best_of before n
    pytest.param({"model": "m", "n": "x", "best_of": 0}, "best_of value should be greater than 0",
                 id="best-of-before-n"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), ORDER)
def test_validation_order_follows_ovms(body: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse(body)
    assert info.value.message == message


def test_unknown_endpoint_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        parse(chat(), endpoint="responses")


# --- valid requests ---------------------------------------------------------------------------


def test_minimal_request_defaults() -> None:
    req = parse(chat())
    assert req.model == "vlm"
    assert req.endpoint == "chat"
    assert req.messages == [{"role": "user", "content": "hi"}]
    assert req.image_urls == []
    assert not req.stream
    assert not req.include_usage
    assert req.max_tokens is None
    assert req.temperature is None
    assert req.top_k is None
    assert req.seed is None
    assert req.n is None
    assert req.best_of is None
    assert req.stop == []
    assert req.include_stop_str_in_output is False
    assert req.skip_special_tokens is True
    assert req.tools is None
    assert req.tool_choice == "none"
    assert req.ignored_fields == []


def test_image_tags_number_across_messages_in_order() -> None:
    body = chat(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [txt("first"), img("data:a;base64,AA"), txt("second")]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [img("http://h/b.png"), img("/local/c.png"), txt("q")]},
        ]
    )
    req = parse(body)
    assert req.image_urls == ["data:a;base64,AA", "http://h/b.png", "/local/c.png"]
    assert [m["content"] for m in req.messages] == [
        "be brief",
        "first<ov_genai_image_0>\nsecond",
        "ok",
        "<ov_genai_image_1>\n<ov_genai_image_2>\nq",
    ]
    # the request body itself is left untouched
    assert body["messages"][1]["content"][1] == img("data:a;base64,AA")


def test_consecutive_text_parts_join_with_newline() -> None:
    req = parse(chat(messages=msgs(txt("a"), txt("b"), img(), txt("c"))))
    assert req.messages[0]["content"] == "a\nb<ov_genai_image_0>\nc"


@pytest.mark.parametrize(
    ("message", "content"),
    [
        # role only: content defaults to ""
        pytest.param({"role": "user"}, "", id="role-only"),
        # explicit null content
        pytest.param({"role": "assistant", "content": None}, "", id="null"),
        # empty parts array
        pytest.param({"role": "user", "content": []}, "", id="empty-array"),
        # plain string
        pytest.param({"role": "user", "content": "plain"}, "plain", id="string"),
    ],
)
def test_content_forms_normalise_to_string(message: dict, content: str) -> None:
    req = parse(chat(messages=[message]))
    assert req.messages == [{"role": message["role"], "content": content}]


def test_input_audio_is_refused_without_audio_support() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "x"}}
    body = chat(messages=[*USER_HI, *msgs(txt("listen"), audio)])
    with pytest.raises(InvalidParameterError) as info:
        parse(body)
    assert str(info.value) == (
        "This servable does not support audio input, but input_audio has been provided"
    )
    assert info.value.param == "messages[1].content"
    # a servable with audio input keeps the text (the audio is its own business)
    req = parse(body, limits=RequestLimits(accepts_audio=True))
    assert req.messages[1]["content"] == "listen"


@pytest.mark.parametrize("key", ["messages", "tools", "bos_token", "eos_token", "pad_token"])
def test_reserved_chat_template_kwargs_are_refused(key: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse(chat(chat_template_kwargs={key: [], "enable_thinking": False}))
    assert f"chat_template_kwargs cannot contain '{key}'" in str(info.value)
    assert info.value.param == f"chat_template_kwargs.{key}"


def test_other_chat_template_kwargs_pass() -> None:
    req = parse(chat(chat_template_kwargs={"enable_thinking": False}))
    assert req.chat_template_kwargs == {"enable_thinking": False}


def test_unknown_role_and_message_extras() -> None:
    req = parse(
        chat(
            messages=[
                {"role": "narrator", "content": "x", "weird": 1},
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "think",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
                },
                {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
            ]
        )
    )
    assert req.messages[0] == {"role": "narrator", "content": "x"}
    assert req.messages[1] == {
        "role": "assistant",
        "content": "",
        "reasoning_content": "think",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    assert req.messages[2] == {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"}


def test_tool_call_arguments_fill_does_not_mutate_body() -> None:
    body = chat(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}])
    parse(body)
    assert "arguments" not in body["messages"][0]["tool_calls"][0]["function"]


def test_include_stop_str_default_false_unary_true_streaming() -> None:
    assert parse(chat()).include_stop_str_in_output is False
    assert parse(chat(stream=True)).include_stop_str_in_output is True
    assert parse(chat(include_stop_str_in_output=True)).include_stop_str_in_output is True
    assert parse(chat(stream=True, include_stop_str_in_output=None)).include_stop_str_in_output


def test_max_tokens_default_is_limit() -> None:
    assert parse(chat(), limits=LIMIT_100).max_tokens == 100
    assert parse(chat()).max_tokens is None


def test_max_tokens_strictly_below_limit_but_max_completion_tokens_up_to_limit() -> None:
    assert parse(chat(max_tokens=99), limits=LIMIT_100).max_tokens == 99
    assert parse(chat(max_completion_tokens=100), limits=LIMIT_100).max_tokens == 100
    with pytest.raises(InvalidParameterError):
        parse(chat(max_tokens=100), limits=LIMIT_100)


def test_max_completion_tokens_overrides_max_tokens() -> None:
    assert parse(chat(max_tokens=5, max_completion_tokens=7)).max_tokens == 7
    # null max_completion_tokens is ignored
    assert parse(chat(max_tokens=5, max_completion_tokens=None)).max_tokens == 5
    assert parse(chat(max_tokens=4294967295)).max_tokens == 4294967295


def test_best_of_and_n() -> None:
    req = parse(chat(n=3, best_of=3))
    assert (req.n, req.best_of) == (3, 3)
    req = parse(chat(n=1))
    assert (req.n, req.best_of) == (1, None)
    req = parse(chat(best_of=19))
    assert req.best_of == 19
    # null means unset
    req = parse(chat(n=None, best_of=None))
    assert (req.n, req.best_of) == (None, None)


def test_stream_only_options() -> None:
    req = parse(chat(stream=True, stream_options={"include_usage": True}))
    assert req.stream
    assert req.include_usage
    assert not req.continuous_usage_stats
    req = parse(
        chat(stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True})
    )
    assert req.include_usage
    assert req.continuous_usage_stats
    # null stream_options is fine without stream; null stream means false
    req = parse(chat(stream=None, stream_options=None))
    assert not req.stream
    assert not req.include_usage
    # empty stream_options with stream
    assert parse(chat(stream=True, stream_options={})).include_usage is False


def test_numeric_boundaries_accepted() -> None:
    req = parse(
        chat(
            temperature=0,
            top_p=1,
            min_p=0,
            top_k=-1,
            seed=4294967295,
            frequency_penalty=-2,
            presence_penalty=2.0,
            repetition_penalty=1e10,
            length_penalty=-1.5,
        )
    )
    assert req.temperature == 0.0
    assert isinstance(req.temperature, float)
    assert req.top_p == 1.0
    assert req.min_p == 0.0
    assert req.top_k == -1
    assert req.seed == 4294967295
    assert req.frequency_penalty == -2.0
    assert req.presence_penalty == 2.0
    assert req.repetition_penalty == 1e10
    assert req.length_penalty == -1.5
    assert parse(chat(temperature=2, seed=0, top_k=2**31 - 1)).temperature == 2.0


def test_null_parameters_mean_unset() -> None:
    req = parse(
        chat(
            temperature=None, top_p=None, top_k=None, seed=None, stop=None, ignore_eos=None,
            logprobs=None, tools=None, tool_choice=None, response_format=None,
            chat_template_kwargs=None, skip_special_tokens=None,
        )
    )  # fmt: skip
    assert req.temperature is None
    assert req.top_k is None
    assert req.seed is None
    assert req.stop == []
    assert req.ignore_eos is False
    assert req.logprobs is False
    assert req.tool_choice == "none"
    assert req.response_format is None
    assert req.skip_special_tokens is True


def test_stop_forms() -> None:
    assert parse(chat(stop="END")).stop == ["END"]
    assert parse(chat(stop=["a", "b", "a", ""])).stop == ["a", "b"]
    assert parse(chat(stop=[])).stop == []
    assert parse(chat(stop=[str(i) for i in range(16)])).stop == [str(i) for i in range(16)]
    assert parse(chat(stop="x" * 1024)).stop == ["x" * 1024]


def test_tools_and_tool_choice() -> None:
    f = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    g = {"type": "function", "name": "g", "parameters": "not checked when filtered out"}
    req = parse(chat(tools=[f]))
    assert (req.tools, req.tool_choice) == ([f], "auto")
    req = parse(chat(tools=[f], tool_choice="required"))
    assert (req.tools, req.tool_choice) == ([f], "required")
    # a named choice keeps only that tool; the other one is not validated further
    req = parse(chat(tools=[f, g], tool_choice={"type": "function", "function": {"name": "f"}}))
    assert (req.tools, req.tool_choice) == ([f], "f")
    req = parse(chat(tools=[f], tool_choice={"type": "function", "name": "f"}))
    assert req.tool_choice == "f"
    # "none" drops tools without validating them
    req = parse(chat(tools="garbage", tool_choice="none"))
    assert (req.tools, req.tool_choice) == (None, "none")
    # no tools means effective "none"
    assert parse(chat(tool_choice="required")).tool_choice == "none"


def test_passthrough_objects() -> None:
    schema = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    req = parse(chat(response_format=schema, chat_template_kwargs={"enable_thinking": False}))
    assert req.response_format == schema
    assert req.chat_template_kwargs == {"enable_thinking": False}


def test_flags() -> None:
    req = parse(chat(ignore_eos=True, skip_special_tokens=False, logprobs=True))
    assert req.ignore_eos is True
    assert req.skip_special_tokens is False
    assert req.logprobs is True


def test_restricted_tokens_can_be_disabled() -> None:
    limits = RequestLimits(restricted_tokens=())
    req = parse(chat(messages=[{"role": "user", "content": "<|image_pad|>"}]), limits=limits)
    assert req.messages[0]["content"] == "<|image_pad|>"
    # the genai tag stays forbidden
    with pytest.raises(InvalidParameterError):
        parse(chat(messages=[{"role": "user", "content": "<ov_genai_image_1>"}]), limits=limits)


def test_images_at_limit_accepted() -> None:
    req = parse(chat(messages=msgs(*[img(f"u{i}") for i in range(16)])))
    assert req.image_urls == [f"u{i}" for i in range(16)]
    assert req.messages[0]["content"].count("<ov_genai_image_") == 16
    assert "<ov_genai_image_15>\n" in req.messages[0]["content"]


def test_unknown_fields_are_reported_not_rejected() -> None:
    req = parse(chat(user="u", service_tier="x", logit_bias={}, prompt="p", foo=None))
    # user and service_tier are metadata and an empty logit_bias is neutral: none is reported
    assert req.ignored_fields == ["prompt", "foo"]
    req = parse(completion(messages=[], tools=1, max_completion_tokens="x"), "completions")
    assert req.ignored_fields == ["messages", "tools", "max_completion_tokens"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        # OpenAI fields OVMS does not support
        ("logit_bias", {"50": 10}, "logit_bias is not supported"),
        ("top_logprobs", 2,
         "top_logprobs is not supported: openvino_genai reports the chosen token's logprob only"),
        ("functions", [{"name": "f"}], "functions is not supported; use tools"),
        ("function_call", "auto", "function_call is not supported; use tool_choice"),
        # vLLM extensions OVMS does not support
        ("use_beam_search", True, "use_beam_search is not supported; set best_of for beam search"),
        ("prompt_logprobs", 1, "prompt_logprobs is not supported"),
        ("detokenize", False, "detokenize: false is not supported"),
        ("truncate_prompt_tokens", 10, "truncate_prompt_tokens is not supported"),
        # OpenAI completions insertion
        ("suffix", "end", "suffix is not supported"),
        # OpenAI fields for what the server cannot do
        ("modalities", ["text", "audio"], 'modalities other than ["text"] are not supported'),
        ("audio", {"voice": "alloy", "format": "wav"}, "audio output is not supported"),
        ("web_search_options", {}, "web_search_options is not supported"),
        ("store", True, "store is not supported: answers are not stored"),
        ("verbosity", "low", "verbosity is not supported"),
    ],
)
def test_unsupported_fields_with_an_effect_are_refused(
    field: str, value: object, message: str
) -> None:
    bodies = {"chat": chat(**{field: value}), "completions": completion(**{field: value})}
    for endpoint, body in bodies.items():
        with pytest.raises(InvalidParameterError) as info:
            parse(body, endpoint)
        assert (str(info.value), info.value.param) == (message, field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logit_bias", None),  # null
        ("stop_token_ids", []),  # empty
        ("min_tokens", 0),  # the default
        ("detokenize", True),  # the default
        ("use_beam_search", False),  # off
        ("modalities", ["text"]),  # what every answer is
        ("store", False),  # the default
        ("verbosity", "medium"),  # the default
        # metadata: no effect on the answer by definition
        ("metadata", {"k": "v"}),
        ("safety_identifier", "u-1"),
        ("prompt_cache_key", "k"),
        ("service_tier", "auto"),
        ("prediction", {"type": "content", "content": "A red circle."}),
    ],
)
def test_unsupported_fields_with_neutral_values_pass(field: str, value: object) -> None:
    assert parse(chat(**{field: value})).ignored_fields == []


def test_completions_request() -> None:
    req = parse(completion(echo=True, max_tokens=0, logprobs=1), "completions")
    assert (req.prompt, req.echo, req.max_tokens, req.logprobs) == ("hi", True, 0, True)
    assert req.messages == []
    assert req.image_urls == []
    req = parse(completion(logprobs=None), "completions", LIMIT_100)
    assert req.logprobs is False
    assert req.max_tokens == 100


def test_module_does_not_import_openvino() -> None:
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys; import calculators.llm.request_validation, calculators.llm.chunks; "
        "sys.exit(any(m.split('.')[0] in ('openvino', 'openvino_genai') for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=root, check=False)
    assert result.returncode == 0


def test_include_obfuscation() -> None:
    assert parse(chat(stream=True, stream_options={"include_obfuscation": False})).stream
    with pytest.raises(InvalidParameterError) as info:
        parse(chat(stream=True, stream_options={"include_obfuscation": True}))
    assert info.value.param == "stream_options.include_obfuscation"


def test_parallel_tool_calls_false_allows_one_call() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert parse(chat(tools=tools)).max_tool_calls is None
    assert parse(chat(tools=tools, parallel_tool_calls=True)).max_tool_calls is None
    assert parse(chat(tools=tools, parallel_tool_calls=False)).max_tool_calls == 1
    with pytest.raises(InvalidParameterError) as info:
        parse(chat(tools=tools, parallel_tool_calls="no"))
    assert info.value.param == "parallel_tool_calls"


@pytest.mark.parametrize(
    ("effort", "kwargs", "expected"),
    [
        ("high", None, {"enable_thinking": True, "reasoning_effort": "high"}),
        ("none", None, {"enable_thinking": False, "reasoning_effort": "none"}),
        # what the request sets itself wins
        ("low", {"enable_thinking": False}, {"enable_thinking": False, "reasoning_effort": "low"}),
    ],
)
def test_reasoning_effort_reaches_the_template(
    effort: str, kwargs: dict | None, expected: dict
) -> None:
    body = chat(reasoning_effort=effort)
    if kwargs is not None:
        body["chat_template_kwargs"] = kwargs
    assert parse(body).chat_template_kwargs == expected


def test_unknown_reasoning_effort_is_refused() -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse(chat(reasoning_effort="max"))
    assert info.value.param == "reasoning_effort"
    assert "none, minimal, low, medium, high, xhigh" in str(info.value)


def _fn(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {}}}


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "allowed_tools", "allowed_tools": {
            "mode": "required", "tools": [{"type": "function", "function": {"name": "b"}}]}},
        # the Responses API's flat form
        {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]},
    ],
)
def test_allowed_tools_keep_the_named_functions(choice: dict) -> None:
    req = parse(chat(tools=[_fn("a"), _fn("b")], tool_choice=choice))
    assert [t["function"]["name"] for t in req.tools] == ["b"]
    assert req.tool_choice == "required"


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({"type": "allowed_tools", "allowed_tools": {"mode": "none", "tools": []}},
         "mode should be either 'auto' or 'required'"),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"x": 1}]}},
         "needs a list of functions with names"),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": "a"}},
         "needs a list of functions with names"),
        ({"type": "allowed_tools", "allowed_tools": {
            "mode": "auto", "tools": [{"type": "function", "function": {"name": "zz"}}]}},
         "allowed_tools names no function in tools"),
    ],
)
def test_bad_allowed_tools(choice: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse(chat(tools=[_fn("a")], tool_choice=choice))
    assert message in str(info.value) and info.value.param == "tool_choice"


def test_min_tokens_and_stop_token_ids() -> None:
    req = parse(chat(min_tokens=3, stop_token_ids=[7, 5, 7], max_tokens=10))
    assert (req.min_tokens, req.stop_token_ids) == (3, [5, 7])
    # max_completion_tokens bounds min_tokens too
    req = parse(chat(min_tokens=4, max_completion_tokens=4))
    assert req.min_tokens == 4


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"min_tokens": 11, "max_tokens": 10}, "min_tokens", "less than or equal to max_tokens"),
        ({"min_tokens": 5, "max_completion_tokens": 4}, "min_tokens", "less than or equal"),
        ({"min_tokens": -1}, "min_tokens", "not an unsigned integer"),
        ({"stop_token_ids": 5}, "stop_token_ids", "not an array"),
        ({"stop_token_ids": [-1]}, "stop_token_ids", "non-negative integers"),
        ({"stop_token_ids": [True]}, "stop_token_ids", "non-negative integers"),
        ({"stop_token_ids": list(range(17))}, "stop_token_ids", "limit of 16"),
    ],
)
def test_min_tokens_and_stop_token_ids_errors(extra: dict, param: str, message: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse(chat(**extra))
    assert info.value.param == param and message in str(info.value)
