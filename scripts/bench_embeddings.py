#!/usr/bin/env python3
"""Local embedding throughput: millrace's candle model against sentence-transformers on PyTorch.

Both embed the same texts with the same model folder (all-MiniLM-L6-v2 by default) on the CPU,
in requests of --batch texts, in alternating rounds within one run (so both see the same
machine state); medians and the ratio are printed as Markdown. The Rust side is the service's
own path (tokenizer, batcher, forward pass, pooling) in `examples/bench_local.rs`, release build.

The texts are cut from examples/ at random offsets with a mix of lengths: a quarter query-like
(5-20 words), half paragraph-like (30-120 words), a quarter chunk-like (150-250 words, some
beyond the 256-token limit). Two orders are timed:
  - mixed: requests of --batch texts as they come (what the service sees: a stream batch of
    chunks, queries merged in), so PyTorch pads each batch to its longest text;
  - sorted: the same texts sorted by length first (what sentence-transformers' `encode` does
    with a whole list), so batches hold texts of similar length and padding nearly vanishes;
    this compares the raw kernels.

usage: $HOME/.cache/millrace/pyref/bin/python scripts/bench_embeddings.py
           [--rounds 7] [--texts 512] [--batch 32] [--threads N] [--model-dir DIR] [--no-build]
Needs torch and sentence-transformers (the pyref venv), cargo, and the model (`make setup`).
"""

import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reference_embeddings import default_model_dir  # scripts/ is on the path when run as a script

ROOT = Path(__file__).resolve().parent.parent


def corpus(count: int, seed: int = 7) -> list[str]:
    words = []
    for path in sorted((ROOT / "examples").iterdir()):
        if path.suffix in (".md", ".txt", ".html"):
            text = re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8"))
            words += re.sub(r"[#*`>|]", " ", text).split()
    rng = random.Random(seed)
    texts = []
    for i in range(count):
        kind = i % 4
        n = rng.randint(5, 20) if kind == 0 else rng.randint(150, 250) if kind == 3 else rng.randint(30, 120)
        start = rng.randrange(0, len(words) - n)
        texts.append(" ".join(words[start : start + n]))
    rng.shuffle(texts)
    return texts


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for both sides")
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument("--no-build", action="store_true", help="use the release example as already built")
    args = parser.parse_args()

    if not (args.model_dir / "model.safetensors").is_file():
        print(f"no model in {args.model_dir}; run `make setup` first", file=sys.stderr)
        return 1
    target = Path(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/millrace/target")))
    env = dict(os.environ, CARGO_TARGET_DIR=str(target), RAYON_NUM_THREADS=str(args.threads))
    if not args.no_build:
        subprocess.run(
            ["cargo", "build", "--release", "-q", "-p", "millrace-embeddings", "--example", "bench_local"],
            cwd=ROOT, env=env, check=True,
        )
    binary = target / "release" / "examples" / "bench_local"

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    texts = corpus(args.texts)
    st = SentenceTransformer(str(args.model_dir), device="cpu")
    tokens = [min(len(ids), st.max_seq_length) for ids in st.tokenizer(texts, truncation=False)["input_ids"]]

    by_length = sorted(range(len(texts)), key=lambda i: tokens[i])
    scenarios = {"mixed": texts, "sorted": [texts[i] for i in by_length]}

    def torch_round(ordered: list[str]) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(ordered), args.batch):
                st.encode(ordered[i : i + args.batch], batch_size=args.batch, normalize_embeddings=True)
        return time.perf_counter() - started

    files = []
    for ordered in scenarios.values():
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(ordered, f)
            files.append(f.name)
    command = [str(binary), "--model-dir", str(args.model_dir), "--batch", str(args.batch)]
    for name in files:
        command += ["--corpus", name]
    rust = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def rust_round(index: int) -> float:
        assert rust.stdin and rust.stdout
        rust.stdin.write(f"run {index}\n")
        rust.stdin.flush()
        line = rust.stdout.readline()
        if not line:
            raise RuntimeError("bench_local exited")
        return json.loads(line)["seconds"]

    times: dict[tuple[str, str], list[float]] = {}
    try:
        rust_round(0), torch_round(texts)  # warm-up: caches, allocators, thread pools
        for r in range(args.rounds):
            for index, (scenario, ordered) in enumerate(scenarios.items()):
                # Alternate who goes first, so neither always runs on a warmer (or hotter) CPU.
                order = [("rust", lambda: rust_round(index)), ("torch", lambda: torch_round(ordered))]
                for name, run in order if r % 2 == 0 else reversed(order):
                    seconds = run()
                    times.setdefault((scenario, name), []).append(seconds)
                    print(f"round {r + 1} {scenario}: {name} {len(ordered) / seconds:.1f} sentences/s", file=sys.stderr)
    finally:
        if rust.stdin:
            rust.stdin.write("quit\n")
            rust.stdin.close()
        rust.wait(timeout=30)
        for name in files:
            os.unlink(name)

    import sentence_transformers

    print(f"### Local embedding throughput ({args.model_dir.name}, batch {args.batch}, {args.threads} threads)\n")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} CPUs; {len(texts)} texts from examples/, "
          f"{statistics.mean(tokens):.0f} tokens on average after truncation at {st.max_seq_length} "
          f"(min {min(tokens)}, max {max(tokens)}); {args.rounds} alternating rounds, medians.\n")
    print("| order | embedder | sentences/s (median) | min–max | vs PyTorch |")
    print("|---|---|---:|---:|---:|")
    labels = {
        "rust": "millrace local (candle, Rust)",
        "torch": f"sentence-transformers {sentence_transformers.__version__} (PyTorch {torch.__version__})",
    }
    for scenario in scenarios:
        torch_rate = len(texts) / statistics.median(times[(scenario, "torch")])
        for name in ("rust", "torch"):
            run_times = times[(scenario, name)]
            rate = len(texts) / statistics.median(run_times)
            lo, hi = len(texts) / max(run_times), len(texts) / min(run_times)
            print(f"| {scenario} | {labels[name]} | {rate:.1f} | {lo:.1f}–{hi:.1f} | {rate / torch_rate:.2f}× |")
    print(f"\n`{' '.join(sys.argv)}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
