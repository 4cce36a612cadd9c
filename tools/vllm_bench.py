"""OVMS's demo benchmark against ovgraph: vLLM v0.7.3 ``benchmarks/benchmark_serving.py``, offline.

Everything third-party lives in a work directory outside the repository (default
``~/.cache/ovgraph-bench``):

1. ``venv/`` with the script's dependencies (aiohttp datasets pandas numpy pillow tqdm
   transformers huggingface_hub); vllm itself is never installed.
2. ``vllm-0.7.3/benchmarks/`` unpacked from the vllm 0.7.3 source distribution on PyPI. pip
   finds the file (``pip download -vv --no-deps --no-binary :all: vllm==0.7.3`` names it before
   it fails building metadata, which would need torch); the tarball is then fetched as is.
3. ``lmarena-ai/vision-arena-bench-v0.1/train.parquet``: a local stand-in for the Hub dataset
   (a relative directory of that name wins over the Hub), with ``question_id``, ``turns`` and
   one synthetic JPEG per row in ``images``.

Then it starts ``ovgraph serve`` on the model (unless ``--port`` names a running server) and runs
the command from OVMS's VLM demos::

    python benchmark_serving.py --backend openai-chat --model <name> --tokenizer <model dir>
        --dataset-name hf --dataset-path lmarena-ai/vision-arena-bench-v0.1 --hf-split train
        --endpoint /v3/chat/completions --host 127.0.0.1 --port <p>
        --num-prompts N --max-concurrency C

and prints its report and a TTFT/TPOT summary.

    .venv/bin/python tools/vllm_bench.py --model models/medium-int8 --num-prompts 16
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ovgraph.testing import ServeProcess  # noqa: E402  (after the path insert)

VLLM_VERSION = "0.7.3"
DATASET = "lmarena-ai/vision-arena-bench-v0.1"
DEPENDENCIES = [
    "aiohttp", "datasets", "pandas", "numpy", "pillow", "tqdm", "transformers", "huggingface_hub",
]
_SDIST_LINK = re.compile(r"https://\S+/vllm-" + re.escape(VLLM_VERSION) + r"\.tar\.gz")

_DATASET_SCRIPT = textwrap.dedent(
    """
    import io, sys, random
    from pathlib import Path
    from PIL import Image, ImageDraw
    import datasets

    out, rows, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    questions = [
        "Describe this image in detail.", "What objects are in the picture?",
        "What colours dominate this image?", "Write a short caption for this picture.",
        "How many shapes can you see?", "Is there anything unusual in this image?",
    ]
    rng = random.Random(0)
    records = {"question_id": [], "turns": [], "images": []}
    for row in range(rows):
        image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(10):
            x0, y0 = rng.randrange(size - 30), rng.randrange(size - 30)
            x1, y1 = x0 + rng.randrange(20, size // 2), y0 + rng.randrange(20, size // 2)
            fill = tuple(rng.randrange(256) for _ in range(3))
            (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x1, y1], fill=fill)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        records["question_id"].append(f"q{row:04d}")
        records["turns"].append([[{"role": "user", "content": questions[row % len(questions)]}]])
        records["images"].append([{"bytes": buf.getvalue(), "path": None}])
    features = datasets.Features({
        "question_id": datasets.Value("string"),
        "turns": [[{"role": datasets.Value("string"), "content": datasets.Value("string")}]],
        "images": datasets.Sequence(datasets.Image()),
    })
    out.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(records, features=features).to_parquet(str(out / "train.parquet"))
    print(f"wrote {rows} rows to {out / 'train.parquet'}")
    """
)


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the benchmark's report."""
    print(f"[vllm_bench] {message}", file=sys.stderr, flush=True)


def ensure_venv(work: Path) -> Path:
    """The work venv's python, created with the benchmark's dependencies on first use."""
    python = work / "venv" / "bin" / "python"
    probe = "import aiohttp, datasets, pandas, numpy, PIL, tqdm, transformers, huggingface_hub"
    if python.exists() and _runs(python, probe):
        return python
    log(f"creating {work / 'venv'} with {' '.join(DEPENDENCIES)}")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *DEPENDENCIES], check=True)
    return python


def _runs(python: Path, code: str) -> bool:
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def sdist_url(python: Path, work: Path) -> str:
    """Ask pip (the registry's own client) where the vllm source distribution is."""
    scratch = work / "pip-scratch"
    scratch.mkdir(exist_ok=True)
    result = subprocess.run(
        [python, "-m", "pip", "download", "-vv", "--no-deps", "--no-binary", ":all:",
         f"vllm=={VLLM_VERSION}", "-d", str(scratch)],
        capture_output=True, text=True, timeout=900,
    )
    match = _SDIST_LINK.search(result.stdout + result.stderr)
    if match is None:
        raise RuntimeError("pip did not name the vllm source distribution:\n"
                           + (result.stdout + result.stderr)[-2000:])
    return match.group(0)


def ensure_benchmarks(python: Path, work: Path) -> Path:
    """``vllm-0.7.3/benchmarks`` unpacked from the sdist (downloaded once)."""
    bench_dir = work / f"vllm-{VLLM_VERSION}" / "benchmarks"
    if (bench_dir / "benchmark_serving.py").exists():
        return bench_dir
    tarball = work / f"vllm-{VLLM_VERSION}.tar.gz"
    if not tarball.exists():
        url = sdist_url(python, work)
        log(f"downloading {url}")
        partial = tarball.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=300) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out)
        partial.rename(tarball)
    log(f"{tarball.name}: sha256 {hashlib.sha256(tarball.read_bytes()).hexdigest()}")
    prefix = f"vllm-{VLLM_VERSION}/benchmarks/"
    with tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(prefix) and m.isfile()]
        archive.extractall(work, members=members, filter="data")
    if not (bench_dir / "benchmark_serving.py").exists():
        raise RuntimeError(f"{tarball} has no benchmarks/benchmark_serving.py")
    return bench_dir


def ensure_dataset(python: Path, work: Path, rows: int, image_size: int) -> None:
    """The local ``lmarena-ai/vision-arena-bench-v0.1`` stand-in (rebuilt if the size changed)."""
    folder = work / DATASET
    stamp = folder / "stamp.json"
    wanted = {"rows": rows, "image_size": image_size}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return
    script = work / "make_dataset.py"
    script.write_text(_DATASET_SCRIPT)
    subprocess.run([python, str(script), str(folder), str(rows), str(image_size)], check=True)
    stamp.write_text(json.dumps(wanted))


def start_server(args: argparse.Namespace, work: Path) -> ServeProcess:
    """``ovgraph serve`` on the model folder; wait until ready."""
    server = ServeProcess(
        ["--model_path", str(args.model), "--model_name", args.served_name,
         "--task", "text_generation", "--pipeline_type", args.pipeline_type,
         "--cache_size", str(args.cache_size), "--log_level", "WARNING"],
        cwd=REPO, log_dir=work, log_name="server",
    )
    try:
        return server.wait_ready(300)
    except Exception:
        server.stop()
        raise


def run_benchmark(python: Path, bench_dir: Path, work: Path, args: argparse.Namespace,
                  port: int) -> dict[str, float]:
    """Run OVMS's demo command from the work directory; return the saved result."""
    (work / "results").mkdir(exist_ok=True)
    result_name = f"ovgraph-{args.served_name}-c{args.max_concurrency}.json"
    cmd = [
        str(python), str(bench_dir / "benchmark_serving.py"),
        "--backend", "openai-chat", "--model", args.served_name, "--tokenizer", str(args.model),
        "--dataset-name", "hf", "--dataset-path", DATASET, "--hf-split", "train",
        "--endpoint", "/v3/chat/completions", "--host", "127.0.0.1", "--port", str(port),
        "--num-prompts", str(args.num_prompts), "--max-concurrency", str(args.max_concurrency),
        "--hf-output-len", str(args.output_len), "--seed", "0",
        "--save-result", "--result-dir", "results", "--result-filename", result_name,
    ]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("OPENAI_API_KEY", None)
    log("running: " + " ".join(cmd[1:]))
    subprocess.run(cmd, cwd=work, env=env, check=True)
    return json.loads((work / "results" / result_name).read_text())


def main(argv: list[str] | None = None) -> int:
    """Prepare, serve, benchmark, summarise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default=str(Path.home() / ".cache" / "ovgraph-bench"))
    default_model = Path(__file__).resolve().parent.parent / "models" / "medium-int8"
    parser.add_argument(
        "--model", default=os.environ.get("OVGRAPH_BENCH_MODEL", str(default_model))
    )
    parser.add_argument("--served-name", default="bench")
    parser.add_argument("--pipeline-type", default="VLM_CB", choices=["VLM", "VLM_CB"])
    parser.add_argument("--cache-size", type=int, default=2)
    parser.add_argument("--port", type=int, default=0, help="use a running server on this port")
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--max-concurrency", type=int, default=4)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rows", type=int, default=32, help="rows of the stand-in dataset")
    parser.add_argument("--image-size", type=int, default=336)
    args = parser.parse_args(argv)
    if args.model == "tiny":
        args.model = str(REPO / "graphs" / "qwen2vl-tiny")
    args.model = str(Path(args.model).resolve())
    work = Path(args.work_dir).expanduser().resolve()
    if work == REPO or REPO in work.parents:
        parser.error("--work-dir must be outside the repository")
    work.mkdir(parents=True, exist_ok=True)

    python = ensure_venv(work)
    bench_dir = ensure_benchmarks(python, work)
    ensure_dataset(python, work, args.rows, args.image_size)
    server = None if args.port else start_server(args, work)
    port = args.port or server.port
    try:
        result = run_benchmark(python, bench_dir, work, args, port)
    finally:
        if server is not None:
            server.stop()
    print(f"\novgraph {args.pipeline_type}, {args.num_prompts} prompts, "
          f"max concurrency {args.max_concurrency}, {args.output_len} output tokens:")
    for metric in ("ttft", "tpot", "itl"):
        print(f"  {metric.upper():5} ms  mean {result[f'mean_{metric}_ms']:8.1f}  "
              f"median {result[f'median_{metric}_ms']:8.1f}  p99 {result[f'p99_{metric}_ms']:8.1f}")
    print(f"  output throughput {result['output_throughput']:.1f} tok/s, "
          f"{result['completed']} completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
