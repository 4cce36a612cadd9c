"""The messages between the server and an engine process, and how values cross.

One Unix stream socket per engine carries pickled tuples (``multiprocessing.connection``
framing). Server → engine::

    ("submit", request_id, prompt, images, config)   images: uint8 arrays; config: wire dict
    ("cancel", request_id)
    ("stats", token)                                 answered by ("stats", token, dict): requests,
                                                     and for CB pipelines cache_usage,
                                                     max_cache_usage, avg_cache_usage (percent),
                                                     cache_size_bytes, scheduled_requests,
                                                     pipeline_requests
    ("shutdown",)                                    finish running requests, then exit

Engine → server::

    ("ready", info)                                  info: {"default_config": wire dict, "pid"}
    ("failed", message)                              the pipeline could not be loaded
    ("started", request_id)
    ("tokens", [(request_id, ids, logprobs | None), ...])   one message per step
    ("sequences", request_id, [(ids, logprobs | None, finish_reason, score), ...])
                                                     several sequences (n, best_of), at the end
    ("finish", request_id, reason, prompt_tokens, error | None)   error: ``error_to_wire``

``GenerationConfig`` is not picklable, so it crosses as a dict of its plain fields.
Images cross as numpy arrays: a 448x448 picture (588 KiB) is one ~0.3 ms write, far below a
vision-encoder call, so shared memory would buy nothing measurable (``tools/bench_engine_ipc.py``).
"""

from __future__ import annotations

from typing import Any

from ovgraph.errors import InvalidParameterError, RequestError

__all__ = [
    "CONFIG_FIELDS",
    "config_from_wire",
    "config_to_wire",
    "error_from_wire",
    "error_to_wire",
]

# The plain fields of ``openvino_genai.GenerationConfig`` that requests and models set.
CONFIG_FIELDS = (
    "apply_chat_template", "assistant_confidence_threshold", "diversity_penalty", "do_sample",
    "echo", "eos_token_id", "frequency_penalty", "ignore_eos", "include_stop_str_in_output",
    "length_penalty", "logprobs", "max_length", "max_new_tokens", "max_ngram_size",
    "min_new_tokens", "min_p", "no_repeat_ngram_size", "num_assistant_tokens",
    "num_beam_groups", "num_beams", "num_return_sequences", "presence_penalty",
    "repetition_penalty", "rng_seed", "stop_strings", "stop_token_ids", "temperature", "top_k",
    "top_p",
)  # fmt: skip
_STRUCTURED_FIELDS = ("json_schema", "regex", "grammar", "structural_tags_config")


def config_to_wire(config: Any) -> dict[str, Any]:
    """A ``GenerationConfig`` as a plain dict (only fields that differ from genai's defaults)."""
    import openvino_genai as ov_genai

    default = _default_config(ov_genai)
    wire: dict[str, Any] = {}
    for name in CONFIG_FIELDS:
        value = getattr(config, name)
        if isinstance(value, set):
            value = sorted(value)
        if value != _plain(getattr(default, name)):
            wire[name] = value
    structured = config.structured_output_config
    if structured is not None:
        wire["structured_output_config"] = {
            name: getattr(structured, name)
            for name in _STRUCTURED_FIELDS
            if getattr(structured, name, None) is not None
        }
    return wire


def config_from_wire(wire: dict[str, Any]) -> Any:
    """Rebuild the ``GenerationConfig`` that ``config_to_wire`` described."""
    import openvino_genai as ov_genai

    config = ov_genai.GenerationConfig()
    for name, value in wire.items():
        if name == "structured_output_config":
            config.structured_output_config = ov_genai.StructuredOutputConfig(**value)
        elif name in ("stop_strings", "stop_token_ids"):
            setattr(config, name, set(value))
        else:
            setattr(config, name, value)
    return config


_DEFAULT: Any = None


def _default_config(ov_genai: Any) -> Any:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ov_genai.GenerationConfig()
    return _DEFAULT


def _plain(value: Any) -> Any:
    return sorted(value) if isinstance(value, set) else value


def error_to_wire(error: BaseException) -> tuple[str, str, str | None, str | None]:
    """``(kind, message, param, code)``: a client fault stays one across the boundary."""
    if isinstance(error, RequestError):
        return ("request", error.message, getattr(error, "param", None), error.code)
    return ("server", str(error) or type(error).__name__, None, None)


def error_from_wire(wire: tuple[str, str, str | None, str | None]) -> Exception:
    """The error ``error_to_wire`` described."""
    kind, message, param, code = wire
    if kind == "request":
        if param is not None:
            return InvalidParameterError(message, param=param, code=code)
        return RequestError(message, code=code)
    return RuntimeError(message)
