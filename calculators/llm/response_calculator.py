"""OpenAIResponseCalculator: text chunks to the unary JSON body or SSE events, as OVMS lays them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from calculators.llm import chunks
from calculators.llm.common import LLMNodeCalculator, LLMResources, TextChunk
from ovgraph.framework.calculator import CalculatorContext, Input, NodeSpec, Output
from ovgraph.serving.payload import HttpStreamChunk


class OpenAIResponseCalculator(LLMNodeCalculator):
    """Encodes the answer: one JSON body (unary) or ``data: …`` events ending in ``[DONE]``.

    Streamed events go out as ``HttpStreamChunk`` packets, which tell the HTTP frontend to answer
    with a stream (``text/event-stream``) rather than one body.

    Streaming chat always opens with OVMS's role handshake (``{"role":"assistant",
    "content":null}``, as OVMS's continuous batching does), then content chunks with
    ``"usage": null`` and a final ``choices: []`` usage chunk when
    ``stream_options.include_usage`` is set; with ``continuous_usage_stats`` as well, every chunk
    carries the usage so far (vLLM's semantics). ``/completions`` streams ``text`` choices in
    ``text_completion`` chunks and sends no role handshake. A body on ``DIRECT`` (a tokenize
    answer from the request node) goes out as it is. With ``--verbose_response`` the body, or
    the chunk with the ``finish_reason``, ends with OVMS's ``"__verbose": {"prompt", "content"}``
    (templated prompt, raw output with special tokens). ``logprobs`` (unary) are written in
    OpenAI's shape: ``choices[].logprobs.content[]`` for chat, ``tokens`` / ``token_logprobs`` /
    ``top_logprobs`` / ``text_offset`` for ``/completions``.

    node {
      calculator: "OpenAIResponseCalculator"
      input_stream: "TEXT:text"
      input_stream: "DIRECT:direct"
      output_stream: "HTTP_RESPONSE_PAYLOAD:output"
      node_options: {
        [type.googleapis.com/mediapipe.LLMCalculatorOptions]: { models_path: "./" }
      }
    }
    """

    IN = Input("TEXT", TextChunk)
    DIRECT = Input("DIRECT", bytes, optional=True)
    OUT = Output("HTTP_RESPONSE_PAYLOAD", bytes)

    # A tokenize answer on DIRECT must not wait for TEXT, which never comes for it.
    INPUT_STREAM_HANDLER: ClassVar[str | None] = "ImmediateInputStreamHandler"

    @classmethod
    def create_node_resources(cls, spec: NodeSpec, settings: Mapping[str, Any]) -> Any:
        """The shared servable plus the server's ``--verbose_response`` flag."""
        resources: LLMResources = super().create_node_resources(spec, settings)
        resources.verbose_response = bool(settings.get("verbose_response"))
        return resources

    def open(self, cc: CalculatorContext) -> None:
        """Nothing sent yet."""
        self.parts: list[str] = []
        self.ids: list[int] = []
        self.token_logprobs: list[chunks.TokenLogprob] = []
        self.sent_any = False
        self.completion_tokens = 0

    def process(self, cc: CalculatorContext) -> None:
        """Emit the next SSE events, or the whole body once the answer is complete."""
        direct = self.DIRECT(cc)
        if not direct.is_empty:  # answered without generation (tokenize)
            self.OUT(cc).send(direct.get())
            return
        packet = self.IN(cc)
        if packet.is_empty:  # a bound update (the immediate handler reports those too)
            return
        chunk: TextChunk = packet.get()
        ctx = chunk.context
        request = ctx.request
        model = request.model
        self.ids.extend(chunk.ids)
        if not request.stream:
            self.parts.append(chunk.text)
            self.token_logprobs.extend(chunk.token_logprobs or ())
            if chunk.finished:
                usage = chunk.usage or chunks.Usage(0, 0)
                completions = request.endpoint == "completions"
                encode = chunks.completion_body if completions else chunks.unary_chat_body
                encode_logprobs = (
                    chunks.completion_logprobs if completions else chunks.chat_logprobs
                )
                logprobs = encode_logprobs(self.token_logprobs) if request.logprobs else None
                choices: list[chunks.Choice] = [
                    ("".join(self.parts), chunk.finish_reason or "stop", logprobs)
                ]
                for other in chunk.others:  # n > 1: the further beams, best first
                    choices.append((
                        other.text, other.finish_reason,
                        encode_logprobs(other.token_logprobs or []) if request.logprobs else None,
                    ))
                body = encode(model, ctx.request_id, ctx.created, choices, usage)
                self.OUT(cc).send(self._verbose(cc, chunk, body))
            return
        events: list[bytes] = []
        completions = request.endpoint == "completions"
        self.completion_tokens += len(chunk.ids)
        usage = self._running_usage(chunk)
        if not completions and not self.sent_any:
            events.append(
                chunks.sse_role_chunk(
                    model, ctx.request_id, ctx.created,
                    usage=chunks.Usage(ctx.prompt_tokens, 0) if usage is not None else None,
                )
            )
        if chunk.text or chunk.finished:
            encode_chunk = chunks.sse_text_chunk if completions else chunks.sse_content_chunk
            event = encode_chunk(
                model, ctx.request_id, ctx.created, chunk.text,
                (chunk.finish_reason or "stop") if chunk.finished else None,
                request.include_usage, usage=usage,
            )
            events.append(self._verbose(cc, chunk, event))
        if chunk.finished:
            if request.include_usage and chunk.usage is not None:
                events.append(
                    chunks.sse_usage_chunk(
                        model, ctx.request_id, ctx.created, chunk.usage, completions=completions
                    )
                )
            events.append(chunks.SSE_DONE)
        if events:
            self.sent_any = True
            self.OUT(cc).send(HttpStreamChunk(b"".join(events)))

    def _verbose(self, cc: CalculatorContext, chunk: TextChunk, body: bytes) -> bytes:
        """With ``--verbose_response``, the last body or chunk shows the prompt and raw output."""
        resources: LLMResources = cc.resources
        if not (chunk.finished and resources.verbose_response):
            return body
        raw = resources.servable.tokenizer.decode(self.ids, skip_special_tokens=False)
        return chunks.with_verbose(body, chunk.context.prompt, str(raw))

    def _running_usage(self, chunk: TextChunk) -> chunks.Usage | None:
        """Usage so far, for ``continuous_usage_stats`` (with ``include_usage``) only."""
        request = chunk.context.request
        if not (request.include_usage and request.continuous_usage_stats):
            return None
        if chunk.finished and chunk.usage is not None:
            return chunk.usage
        return chunks.Usage(chunk.context.prompt_tokens, self.completion_tokens)
