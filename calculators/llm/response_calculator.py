"""OpenAIResponseCalculator: text chunks to the unary JSON body or SSE events, as OVMS lays them."""

from __future__ import annotations

from typing import Any

from calculators.llm import chunks
from calculators.llm.common import LLMNodeCalculator, LLMResources, RequestContext, TextChunk
from calculators.llm.output_parser import OutputParser, graph_parsers
from calculators.llm.responses_encoding import ResponsesStream, response_body
from ovgraph.framework.calculator import CalculatorContext, Input, Output


class OpenAIResponseCalculator(LLMNodeCalculator):
    """Encodes the answer: one JSON body (unary) or ``data: …`` events ending in ``[DONE]``.

    Streaming sends OVMS's role handshake when the first step brings no text, ``"usage": null``
    on content chunks and a final ``choices: []`` usage chunk when
    ``stream_options.include_usage`` is set. ``/completions`` streams ``text`` choices in
    ``text_completion`` chunks and sends no role handshake. With the graph's tool or reasoning
    parser (``tool_parser``, ``reasoning_parser``, or detected from the chat template), chat
    answers carry ``tool_calls`` (``finish_reason: "tool_calls"``) and ``reasoning_content``,
    and streams send them as deltas; ``skip_special_tokens: false`` turns the parsers off.

    node {
      calculator: "OpenAIResponseCalculator"
      input_stream: "TEXT:text"
      output_stream: "HTTP_RESPONSE_PAYLOAD:output"
      node_options: {
        [type.googleapis.com/mediapipe.LLMCalculatorOptions]: { models_path: "./" }
      }
    }
    """

    IN = Input("TEXT", TextChunk)
    OUT = Output("HTTP_RESPONSE_PAYLOAD", bytes)

    def open(self, cc: CalculatorContext) -> None:
        """Nothing sent yet."""
        self.parts: list[str] = []
        self.sent_any = False
        self.parser: OutputParser | None = None
        self.parser_ready = False
        self.stream: ResponsesStream | None = None

    def process(self, cc: CalculatorContext) -> None:
        """Emit the next SSE events, or the whole body once the answer is complete."""
        chunk: TextChunk = self.IN(cc).get()
        ctx = chunk.context
        request = ctx.request
        model = request.model
        if not self.parser_ready:
            self.parser_ready = True
            self.parser = self._make_parser(cc, ctx)
        if request.endpoint == "responses":
            self._responses(cc, chunk)
            return
        if not request.stream:
            self.parts.append(chunk.text)
            if chunk.finished:
                usage = chunk.usage or chunks.Usage(0, 0)
                reason = chunk.finish_reason or "stop"
                if self.parser is not None:
                    self.OUT(cc).send(self._parsed_body(ctx, reason, usage))
                    return
                encode = (
                    chunks.completion_body if request.endpoint == "completions"
                    else chunks.unary_chat_body
                )
                choices = [("".join(self.parts), reason)]
                self.OUT(cc).send(encode(model, ctx.request_id, ctx.created, choices, usage))
            return
        if self.parser is not None:
            self._stream_parsed(cc, chunk)
            return
        events: list[bytes] = []
        completions = request.endpoint == "completions"
        if not completions and not chunk.text and not chunk.finished and not self.sent_any:
            events.append(chunks.sse_role_chunk(model, ctx.request_id, ctx.created))
        elif chunk.text or chunk.finished:
            encode_chunk = chunks.sse_text_chunk if completions else chunks.sse_content_chunk
            events.append(
                encode_chunk(
                    model, ctx.request_id, ctx.created, chunk.text,
                    (chunk.finish_reason or "stop") if chunk.finished else None,
                    request.include_usage,
                )
            )
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
            self.OUT(cc).send(b"".join(events))

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
            parsers.tool_parser, parsers.reasoning_parser, request.tools, ctx.implicit_reasoning
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
        if not self.sent_any:
            self.sent_any = True
            self.stream = ResponsesStream(
                request.responses, request.model, ctx.request_id, ctx.created
            )
            events = self.stream.start()
        else:
            events = b""
        assert self.stream is not None
        events += self.stream.deltas(self.parser.feed(chunk.text, final=chunk.finished))
        if chunk.finished:
            events += self.stream.finish(reason or "stop", usage)
        if events:
            self.OUT(cc).send(events)

    def _parsed_body(self, ctx: RequestContext, reason: str, usage: chunks.Usage) -> bytes:
        assert self.parser is not None
        message = self.parser.finish("".join(self.parts))
        if message.tool_calls and reason == "stop":
            reason = "tool_calls"
        calls: list[dict[str, Any]] = [call.to_openai() for call in message.tool_calls]
        return chunks.unary_chat_body(
            ctx.request.model, ctx.request_id, ctx.created, [(message.content, reason)], usage,
            parsed=[(message.reasoning, calls)],
        )

    def _stream_parsed(self, cc: CalculatorContext, chunk: TextChunk) -> None:
        """Send the parser's deltas; the last chunk carries the finish reason."""
        assert self.parser is not None
        ctx = chunk.context
        request = ctx.request
        args = (request.model, ctx.request_id, ctx.created)
        deltas = self.parser.feed(chunk.text, final=chunk.finished)
        events: list[bytes] = []
        if not deltas and not chunk.finished:
            if not self.sent_any:
                events.append(chunks.sse_role_chunk(*args))
        else:
            reason = None
            if chunk.finished:
                reason = chunk.finish_reason or "stop"
                if self.parser.called_tools and reason == "stop":
                    reason = "tool_calls"
            for i, delta in enumerate(deltas or [{}]):
                last = i == max(len(deltas), 1) - 1
                events.append(
                    chunks.sse_delta_chunk(
                        *args, delta, reason if last else None, request.include_usage
                    )
                )
        if chunk.finished:
            if request.include_usage and chunk.usage is not None:
                events.append(chunks.sse_usage_chunk(*args, chunk.usage))
            events.append(chunks.SSE_DONE)
        if events:
            self.sent_any = True
            self.OUT(cc).send(b"".join(events))
