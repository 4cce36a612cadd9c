"""OpenAIResponseCalculator: text chunks to the unary JSON body or SSE events, as OVMS lays them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from calculators.llm import chunks
from calculators.llm.common import LLMNodeCalculator, LLMResources, RequestContext, TextChunk
from calculators.llm.output_parser import OutputParser, graph_parsers
from calculators.llm.responses_encoding import ResponsesStream, response_body
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

    With the graph's tool or reasoning parser (``tool_parser``, ``reasoning_parser``, or detected
    from the chat template), chat answers carry ``tool_calls`` (``finish_reason: "tool_calls"``)
    and ``reasoning_content``, and streams send them as deltas; ``skip_special_tokens: false``
    turns the parsers off. ``/responses`` requests get the Responses API's object or events.

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
        self.parser: OutputParser | None = None
        self.parser_ready = False
        self.stream: ResponsesStream | None = None

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
        request = chunk.context.request
        self.ids.extend(chunk.ids)
        self.completion_tokens += len(chunk.ids)
        if not self.parser_ready:
            self.parser_ready = True
            self.parser = self._make_parser(cc, chunk.context)
        if request.endpoint == "responses":
            self._responses(cc, chunk)
        elif not request.stream:
            self.parts.append(chunk.text)
            self.token_logprobs.extend(chunk.token_logprobs or ())
            if chunk.finished:
                self.OUT(cc).send(self._verbose(cc, chunk, self._unary_body(cc, chunk)))
        else:
            events = self._stream_events(cc, chunk)
            if events:
                self.sent_any = True
                self.OUT(cc).send(HttpStreamChunk(b"".join(events)))

    # ------------------------------------------------------------------ unary

    def _unary_body(self, cc: CalculatorContext, chunk: TextChunk) -> bytes:
        """The whole answer: every choice, with logprobs and parsed tool calls when asked."""
        ctx = chunk.context
        request = ctx.request
        completions = request.endpoint == "completions"

        def encode_logprobs(tokens: list[chunks.TokenLogprob]) -> dict[str, Any]:
            if completions:
                return chunks.completion_logprobs(tokens, echo=request.echo)
            return chunks.chat_logprobs(tokens)

        answers = [("".join(self.parts), chunk.finish_reason or "stop", self.token_logprobs)]
        for other in chunk.others:  # n > 1: the further beams, best first
            answers.append((other.text, other.finish_reason, other.token_logprobs or []))
        choices: list[chunks.Choice] = []
        parsed: list[tuple[str | None, list[dict[str, Any]]]] = []
        for index, (text, reason, logprobs) in enumerate(answers):
            encoded = encode_logprobs(logprobs) if request.logprobs else None
            if self.parser is None:
                choices.append((text, reason, encoded))
                continue
            parser = self.parser if index == 0 else self._make_parser(cc, ctx)
            assert parser is not None
            message = parser.finish(text)
            if message.tool_calls and reason == "stop":
                reason = "tool_calls"
            choices.append((message.content, reason, encoded))
            parsed.append((message.reasoning, [call.to_openai() for call in message.tool_calls]))
        usage = chunk.usage or chunks.Usage(0, 0)
        args = (request.model, ctx.request_id, ctx.created, choices, usage)
        if completions:
            return chunks.completion_body(*args)
        return chunks.unary_chat_body(*args, parsed=parsed or None)

    # ------------------------------------------------------------------ streams

    def _stream_events(self, cc: CalculatorContext, chunk: TextChunk) -> list[bytes]:
        ctx = chunk.context
        request = ctx.request
        args = (request.model, ctx.request_id, ctx.created)
        completions = request.endpoint == "completions"
        usage = self._running_usage(chunk)
        events: list[bytes] = []
        if not completions and not self.sent_any:
            events.append(
                chunks.sse_role_chunk(
                    *args, usage=chunks.Usage(ctx.prompt_tokens, 0) if usage is not None else None
                )
            )
        reason = (chunk.finish_reason or "stop") if chunk.finished else None
        if self.parser is not None:
            deltas = self.parser.feed(chunk.text, final=chunk.finished)
            if reason == "stop" and self.parser.called_tools:
                reason = "tool_calls"
            if deltas or chunk.finished:
                for i, delta in enumerate(deltas or [{}]):
                    last = i == max(len(deltas), 1) - 1
                    event = chunks.sse_delta_chunk(
                        *args, delta, reason if last else None, request.include_usage,
                        usage=usage,
                    )
                    events.append(self._verbose(cc, chunk, event) if last else event)
        elif chunk.text or chunk.finished:
            encode_chunk = chunks.sse_text_chunk if completions else chunks.sse_content_chunk
            event = encode_chunk(
                *args, chunk.text, reason, request.include_usage, usage=usage
            )
            events.append(self._verbose(cc, chunk, event))
        if chunk.finished:
            if request.include_usage and chunk.usage is not None:
                events.append(chunks.sse_usage_chunk(*args, chunk.usage, completions=completions))
            events.append(chunks.SSE_DONE)
        return events

    def _running_usage(self, chunk: TextChunk) -> chunks.Usage | None:
        """Usage so far, for ``continuous_usage_stats`` (with ``include_usage``) only."""
        request = chunk.context.request
        if not (request.include_usage and request.continuous_usage_stats):
            return None
        if chunk.finished and chunk.usage is not None:
            return chunk.usage
        return chunks.Usage(chunk.context.prompt_tokens, self.completion_tokens)

    def _verbose(self, cc: CalculatorContext, chunk: TextChunk, body: bytes) -> bytes:
        """With ``--verbose_response``, the last body or chunk shows the prompt and raw output."""
        resources: LLMResources = cc.resources
        if not (chunk.finished and resources.verbose_response):
            return body
        raw = resources.servable.tokenizer.decode(self.ids, skip_special_tokens=False)
        return chunks.with_verbose(body, chunk.context.prompt, str(raw))

    # ------------------------------------------------------------------ parsers, /responses

    @staticmethod
    def _make_parser(cc: CalculatorContext, ctx: RequestContext) -> OutputParser | None:
        request = ctx.request
        if request.endpoint == "completions":
            return None
        if not request.skip_special_tokens:  # raw text: no parsing
            return OutputParser(None, None, None) if request.endpoint == "responses" else None
        resources: LLMResources = cc.resources
        parsers = graph_parsers(cc.options, resources.servable.tokenizer.chat_template)
        parser = OutputParser(
            parsers.tool_parser, parsers.reasoning_parser, request.tools, ctx.implicit_reasoning,
            max_calls=request.max_tool_calls,
        )
        return parser if parser.active or request.endpoint == "responses" else None

    def _responses(self, cc: CalculatorContext, chunk: TextChunk) -> None:
        """``/responses``: the response object, or its events when streaming."""
        assert self.parser is not None
        ctx = chunk.context
        request = ctx.request
        reason = (chunk.finish_reason or "stop") if chunk.finished else None
        usage = chunk.usage or chunks.Usage(0, 0)
        if not request.stream:
            self.parts.append(chunk.text)
            if chunk.finished:
                message = self.parser.finish("".join(self.parts))
                self.OUT(cc).send(
                    response_body(
                        request.responses, request.model, ctx.request_id, ctx.created, message,
                        reason or "stop", usage,
                    )
                )
            return
        if self.stream is None:
            self.stream = ResponsesStream(
                request.responses, request.model, ctx.request_id, ctx.created
            )
            events = self.stream.start()
        else:
            events = b""
        events += self.stream.deltas(self.parser.feed(chunk.text, final=chunk.finished))
        if chunk.finished:
            events += self.stream.finish(reason or "stop", usage)
        if events:
            self.OUT(cc).send(HttpStreamChunk(events))
