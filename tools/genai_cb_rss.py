"""RSS growth of a raw openvino-genai ContinuousBatchingPipeline, without ovgraph.

Runs batches of requests straight through ``ContinuousBatchingPipeline.add_request`` / ``step``
and prints the process RSS after each round, then the growth per request as the last line (JSON).
Use it next to ``tools/soak.py`` to tell ovgraph's own memory growth from the pipeline's.

    python tools/genai_cb_rss.py --model graphs/qwen2vl-tiny --rounds 4 --requests 800
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import openvino_genai as ov_genai


def rss_mib() -> float:
    """Resident set size of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="graphs/qwen2vl-tiny")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=800, help="requests per round")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--cache_size", type=int, default=1, help="KV cache GB (0 = dynamic)")
    parser.add_argument("--plugin_config", default="{}", help="device properties (JSON)")
    args = parser.parse_args()
    scheduler = ov_genai.SchedulerConfig()
    scheduler.cache_size = args.cache_size
    pipeline = ov_genai.ContinuousBatchingPipeline(
        args.model, scheduler, "CPU", json.loads(args.plugin_config)
    )
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = args.max_tokens
    config.ignore_eos = True
    prompt = pipeline.get_tokenizer().apply_chat_template(
        [{"role": "user", "content": "Hello there"}], add_generation_prompt=True
    )
    request_id = 0
    samples = []
    for round_index in range(args.rounds):
        for _ in range(args.requests // args.batch):
            handles = []
            for _ in range(args.batch):
                handles.append(pipeline.add_request(request_id, prompt, [], config))
                request_id += 1
            while pipeline.has_non_finished_requests():
                pipeline.step()
                for handle in handles:
                    if handle.can_read():
                        handle.read()
        samples.append(rss_mib())
        print(f"round {round_index}: {request_id} requests, RSS {samples[-1]:.1f} MiB", flush=True)
    per_request_kib = (samples[-1] - samples[0]) * 1024 / max(1, request_id - args.requests)
    print(json.dumps({"requests": request_id, "rss_mib": samples,
                      "growth_kib_per_request": round(per_request_kib, 1)}))


if __name__ == "__main__":
    main()
