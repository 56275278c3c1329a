#!/usr/bin/env python3
"""What tracing costs: pipeline throughput (chunks stored per second, as scripts/bench.py
measures it) with every service exporting its spans over OTLP to a local receiver
(millrace-otlp-sink), against the same stack with no exporter. Runs alternate (off, on, on,
off, ...) on fresh stacks; medians and their ratio are printed as Markdown.

The default workload is the storage-bound one of bench.py (hashing embedder, extractive
metadata: no upstream latency to hide the cost); `--upstream` adds the fake OpenAI upstream, so
metadata and embeddings go through the llm-gateway and its GenAI and gRPC spans are in it too.

usage: scripts/bench_tracing.py [--docs N] [--paragraphs P] [--rounds R] [--upstream]
"""
import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import bench

SINK_GRPC, SINK_HTTP, FAKE_PORT = 14317, 14318, 18990


def sink_spans():
    with urllib.request.urlopen(f"http://127.0.0.1:{SINK_HTTP}/spans", timeout=10) as resp:
        return json.loads(resp.read())["spans"]


def run(args, traced, round_no, data_dir):
    """One run on a fresh stack; returns (chunks/s, chunks, spans received)."""
    settings = {"MILLRACE_MAX_QUEUED_JOBS": "100000"}
    drop = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"]
    if args.upstream:
        settings.update({"MILLRACE_LLM_BASE_URL": f"http://127.0.0.1:{FAKE_PORT}/v1",
                         "MILLRACE_LLM_CHAT_MODEL": "fake-chat", "MILLRACE_LLM_EMBED_MODEL": "fake-embed"})
    else:
        settings["MILLRACE_EMBEDDINGS_PROVIDER"] = "hashing"
        drop.append("MILLRACE_LLM_BASE_URL")
    if traced:
        settings["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{SINK_GRPC}"
        drop.remove("OTEL_EXPORTER_OTLP_ENDPOINT")
    env = bench.stack_env(data_dir, settings, drop=drop)
    stack = str(bench.ROOT / "scripts/stack.sh")
    subprocess.run([stack, "up"], check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        time.sleep(2)
        bench.psql("TRUNCATE chunks, documents", env)
        before = sink_spans()
        chunks, elapsed = bench.wait_all(bench.submit(bench.corpus(args.docs, args.paragraphs, round_no)))
        time.sleep(1.5)  # the exporters' last batches (every second at most by default: 5 s)
        spans = sink_spans() - before
    finally:
        subprocess.run([stack, "down"], env=env, stdout=subprocess.DEVNULL)
    return chunks / elapsed, chunks, spans


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--paragraphs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--upstream", action="store_true", help="metadata and embeddings through the fake upstream")
    args = parser.parse_args()

    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="millrace-bench-tracing-"))
    helpers = [subprocess.Popen([str(bench.RELEASE / "millrace-otlp-sink"), "--grpc-addr", f"127.0.0.1:{SINK_GRPC}",
                                 "--http-addr", f"127.0.0.1:{SINK_HTTP}"], stderr=subprocess.DEVNULL)]
    if args.upstream:
        helpers.append(subprocess.Popen([str(bench.RELEASE / "millrace-fake-openai"), "--addr", f"127.0.0.1:{FAKE_PORT}"],
                                        stderr=subprocess.DEVNULL))
    rates = {False: [], True: []}
    spans = []
    try:
        time.sleep(1)
        for round_no in range(args.rounds):
            order = (False, True) if round_no % 2 == 0 else (True, False)
            for traced in order:
                rate, chunks, received = run(args, traced, round_no, data_dir)
                rates[traced].append(rate)
                if traced:
                    spans.append(received / chunks)
                    if received == 0:
                        sys.exit("bench: the traced run sent no spans to the receiver")
                elif received:
                    sys.exit(f"bench: the untraced run sent {received} spans")
                print(f"round {round_no + 1} tracing {'on ' if traced else 'off'}: {chunks} chunks, {rate:.0f}/s, "
                      f"{received} spans", file=sys.stderr)
    finally:
        for helper in helpers:
            helper.terminate()
            helper.wait()
        shutil.rmtree(data_dir, ignore_errors=True)

    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    workload = "fake upstream (LLM metadata, gateway embeddings)" if args.upstream else "hashing embedder, extractive metadata"
    print(f"Machine: {bench.machine()}. Workload: {args.docs} documents of {args.paragraphs} paragraphs a run, "
          f"{workload}; runs alternate on fresh stacks.\n")
    print("| tracing | chunks/s per run | median |")
    print("|---|---|---|")
    print(f"| off | {', '.join(f'{r:,.0f}' for r in rates[False])} | {off:,.0f} |")
    print(f"| OTLP to a local receiver | {', '.join(f'{r:,.0f}' for r in rates[True])} | {on:,.0f} |")
    print(f"\nRatio on/off (medians): **{on / off:.2f}**; spans exported per chunk: {statistics.median(spans):.2f}.")


if __name__ == "__main__":
    main()
