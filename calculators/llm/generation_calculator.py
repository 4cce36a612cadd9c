"""VLMGenerationCalculator: runs the prompt through the servable's engine, token by token."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from calculators.llm.chunks import Usage
from calculators.llm.common import GenerationInput, LLMNodeCalculator, LLMResources, TokenChunk
from calculators.llm.engine_client import GenerationJob
from calculators.llm.metrics import observe_finished_job
from ovgraph.errors import GraphCancelledError
from ovgraph.framework.calculator import CalculatorContext, Input, Output
from ovgraph.tracing import annotate

STREAM_INTERVAL = 0.02


class VLMGenerationCalculator(LLMNodeCalculator):
    """Generates tokens with ``VLMPipeline`` / ``ContinuousBatchingPipeline`` (or the LM ones).

    Unary requests emit one ``TOKENS`` packet when generation ends. Streaming requests emit the
    tokens available so far and a ``LOOPBACK`` packet; the back edge calls ``process`` again for
    the next batch, OVMS's LOOPBACK cycle. A cancelled run (client gone) cancels the job, which
    leaves the continuous batch at the next step.

    node {
      name: "generation"
      calculator: "VLMGenerationCalculator"
      input_stream: "PROMPT:prompt"
      input_stream: "LOOPBACK:loopback"
      input_stream_info: { tag_index: "LOOPBACK:0" back_edge: true }
      output_stream: "TOKENS:tokens"
      output_stream: "LOOPBACK:loopback"
      input_stream_handler {
        input_stream_handler: "SyncSetInputStreamHandler"
        options {
          [mediapipe.SyncSetInputStreamHandlerOptions.ext] { sync_set { tag_index: "LOOPBACK:0" } }
        }
      }
      node_options: {
        [type.googleapis.com/mediapipe.LLMCalculatorOptions]: { models_path: "./" }
      }
    }
    """

    PROMPT = Input("PROMPT", GenerationInput)
    LOOPBACK = Input("LOOPBACK", bool, optional=True)
    TOKENS = Output("TOKENS", TokenChunk)
    LOOPBACK_OUT = Output("LOOPBACK", bool, optional=True)

    INPUT_STREAM_HANDLER: ClassVar[str | None] = "ImmediateInputStreamHandler"

    def open(self, cc: CalculatorContext) -> None:
        """No job yet."""
        self.job: GenerationJob | None = None
        self.input: GenerationInput | None = None
        self.observed = False
        self.last_emit = 0.0

    def process(self, cc: CalculatorContext) -> None:
        """Start a job on a new prompt; on LOOPBACK, read the next tokens of the running job."""
        prompt_packet = self.PROMPT(cc)
        if not prompt_packet.is_empty:
            self._start(cc, prompt_packet.get())
        elif self.LOOPBACK(cc).is_empty or self.job is None:
            return
        job, gen_input = self.job, self.input
        assert job is not None and gen_input is not None
        request = gen_input.context.request
        echo_only = request.echo and request.max_tokens == 0
        if request.stream and not echo_only:
            ids, finished = self._read_batch(job)
        else:
            ids, finished = job.wait_all(), True
            if echo_only:
                ids = _prompt_only(job, gen_input, ids)
        if job.cancelled:
            raise GraphCancelledError("Generation cancelled")
        chunk = TokenChunk(gen_input.context, ids, finished)
        if gen_input.config.logprobs:
            chunk.logprobs = list(job.read_logprobs)
        if finished and job.sequences is not None:
            chunk.sequences = job.sequences
            chunk.ids = list(job.sequences[0][0]) if job.sequences else []
        if finished:
            if gen_input.config.echo:
                _drop_echo_from_count(job, gen_input)
            self._observe(job, gen_input)
            annotate(cc, _span_attributes(job, gen_input))
            chunk.finish_reason = job.finish_reason
            chunk.usage = Usage(job.prompt_tokens or gen_input.prompt_tokens, job.completion_tokens)
        # A LOOPBACK packet at T answers the packets sent at T: the next ones go out at T + 1.
        ts = cc.input_timestamp if not prompt_packet.is_empty else cc.input_timestamp + 1
        self.TOKENS(cc).add(chunk, ts)
        if not finished:
            self.LOOPBACK_OUT(cc).add(True, ts)

    def _read_batch(self, job: GenerationJob) -> tuple[list[int], bool]:
        """Wait for new tokens, then gather those of the next few milliseconds too.

        Streams emit at most one chunk per ``STREAM_INTERVAL`` seconds (the first at once), so
        a fast engine does not cost one graph step per token and stream.
        """
        ids, finished = job.read()
        now = time.monotonic()
        wait = self.last_emit + STREAM_INTERVAL - now
        if not finished and wait > 0 and not job.cancelled:
            time.sleep(wait)
            logprobs = job.read_logprobs
            more, finished = job.read(0)
            ids.extend(more)
            job.read_logprobs = logprobs + job.read_logprobs
        self.last_emit = time.monotonic()
        return ids, finished

    def _start(self, cc: CalculatorContext, gen_input: GenerationInput) -> None:
        resources: LLMResources = cc.resources
        job = GenerationJob(gen_input.prompt, gen_input.context.images, gen_input.config)
        self.job, self.input = job, gen_input
        cc.on_cancel(job.cancel)
        gen_input.context.payload.on_disconnect(job.cancel)
        resources.servable.submit(job, resources.assistant_defaults)

    def _observe(self, job: GenerationJob, gen_input: GenerationInput) -> None:
        if not self.observed:
            self.observed = True
            observe_finished_job(
                gen_input.context.request.model, job, job.prompt_tokens or gen_input.prompt_tokens
            )

    def close(self, cc: CalculatorContext) -> None:
        """Never leave a job running in the engine."""
        if self.job is not None and not self.job.finished:
            self.job.cancel()
        if self.job is not None and self.input is not None:
            self._observe(self.job, self.input)


def _prompt_only(job: GenerationJob, gen_input: GenerationInput, ids: list[int]) -> list[int]:
    """``echo`` with ``max_tokens: 0``: keep the prompt, drop the token generated after it."""
    keep = job.prompt_tokens or gen_input.prompt_tokens
    job.read_logprobs = job.read_logprobs[:keep]
    if job.sequences is not None:
        job.sequences = [
            (list(s_ids[:keep]), s_lp[:keep] if s_lp is not None else None, "length", score)
            for s_ids, s_lp, _, score in job.sequences
        ]
    job.completion_tokens = keep * (len(job.sequences) if job.sequences else 1)
    job.finish_reason = "length"
    return ids[:keep]


def _drop_echo_from_count(job: GenerationJob, gen_input: GenerationInput) -> None:
    """With ``echo`` every sequence starts with the prompt: those tokens were not generated."""
    sequences = len(job.sequences) if job.sequences else 1
    prompt = job.prompt_tokens or gen_input.prompt_tokens
    job.completion_tokens = max(0, job.completion_tokens - prompt * sequences)


def _span_attributes(job: GenerationJob, gen_input: GenerationInput) -> dict[str, Any]:
    """Token counts and time to first token for the request trace (OpenTelemetry GenAI names)."""
    attributes: dict[str, Any] = {
        "gen_ai.request.model": gen_input.context.request.model,
        "gen_ai.usage.input_tokens": job.prompt_tokens or gen_input.prompt_tokens,
        "gen_ai.usage.output_tokens": job.completion_tokens,
    }
    if job.first_token_at is not None:
        attributes["gen_ai.server.time_to_first_token"] = job.first_token_at - job.submitted_at
    return attributes
