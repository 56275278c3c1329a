#!/usr/bin/env python3
"""Benchmark of incremental re-ingest, printed as Markdown.

A corpus of N documents (P paragraphs each) is ingested through the job API with the fake
OpenAI-compatible upstream serving both the LLM metadata and the embeddings; then one paragraph
is changed in a share of the documents and the whole corpus is submitted again. The table
compares the upstream calls (texts embedded, chat completions) and the wall time of the second
run with the first. Every figure comes from the servers: the fake's /stats and the jobs'
created_at/finished_at.

usage: scripts/bench_reingest.py [--docs N] [--paragraphs P] [--changed SHARE]
Standard library only; needs the release binaries (make build-release) and runs its own stack
on the offset ports of scripts/bench.py.
"""
import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import json

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402  (the stack, corpus and polling helpers)

FAKE_PORT = 18090


def fake_items():
    with urllib.request.urlopen(f"http://127.0.0.1:{FAKE_PORT}/stats", timeout=10) as resp:
        stats = json.loads(resp.read())
    by = stats["by_endpoint"]
    return by.get("embeddings", {}).get("inputs", 0), by.get("chat_completions", {}).get("served", 0)


def changed_corpus(documents, share):
    step = max(1, round(1 / share))
    out = []
    for i, doc in enumerate(documents):
        doc = dict(doc)
        if i % step == 0:
            paragraphs = doc["content"].split("\n\n")
            paragraphs[len(paragraphs) // 2] += " A later survey found the wheel rebuilt in oak."
            doc["content"] = "\n\n".join(paragraphs)
        out.append(doc)
    return out, len(range(0, len(documents), step))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--paragraphs", type=int, default=10)
    parser.add_argument("--changed", type=float, default=0.1)
    args = parser.parse_args()

    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="millrace-bench-reingest-"))
    env = bench.stack_env(data_dir, {
        "MILLRACE_LLM_BASE_URL": f"http://127.0.0.1:{FAKE_PORT}/v1",
        "MILLRACE_LLM_CHAT_MODEL": "fake-chat", "MILLRACE_LLM_EMBED_MODEL": "fake-embed",
    })
    fake = subprocess.Popen(
        [str(bench.RELEASE / "millrace-fake-openai"), "--addr", f"127.0.0.1:{FAKE_PORT}", "--latency-ms", "20"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    stack = str(bench.ROOT / "scripts/stack.sh")
    try:
        subprocess.run([stack, "up"], check=True, env=env, stdout=subprocess.DEVNULL)
        time.sleep(2)
        documents = bench.corpus(args.docs, args.paragraphs, "reingest")
        first_chunks, first_time = bench.wait_all(bench.submit(documents))
        first_calls = fake_items()

        second_docs, changed = changed_corpus(documents, args.changed)
        second_chunks, second_time = bench.wait_all(bench.submit(second_docs))
        after = fake_items()
        second_calls = (after[0] - first_calls[0], after[1] - first_calls[1])
    finally:
        subprocess.run([stack, "down"], env=env, stdout=subprocess.DEVNULL)
        fake.terminate()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"Machine: {bench.machine()}\n")
    print(f"### Re-ingest of {args.docs} documents ({args.paragraphs} paragraphs each), "
          f"{changed} of them with one paragraph changed\n")
    print("| | texts embedded | chat completions | wall time (s) |\n|---|---|---|---|")
    print(f"| first ingest | {first_calls[0]} | {first_calls[1]} | {first_time:.1f} |")
    print(f"| re-ingest | {second_calls[0]} | {second_calls[1]} | {second_time:.1f} |")
    ratio = lambda a, b: f"{a / b:.3f}" if b else "n/a"  # noqa: E731
    print(f"| **ratio** | **{ratio(second_calls[0], first_calls[0])}** | **{ratio(second_calls[1], first_calls[1])}** "
          f"| **{ratio(second_time, first_time)}** |")
    print(f"\n(chunks: {first_chunks} stored by the first run, {second_chunks} counted by the second, "
          "whose unchanged documents completed at once)")


if __name__ == "__main__":
    main()
