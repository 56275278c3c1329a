#!/usr/bin/env python3
"""What tracing costs: pipeline throughput (chunks stored per second, as scripts/bench.py
measures it) in three modes on fresh stacks, taking turns round by round:
  off        OTEL_SDK_DISABLED=true: no tracing layer at all;
  ids only   the default without an endpoint: spans are made (trace ids in logs, context passed
             on) but not exported;
  exported   OTEL_EXPORTER_OTLP_ENDPOINT set: every service exports its spans over OTLP to a
             local receiver (millrace-otlp-sink, which only counts them).
Medians and their ratios to "off" are printed as Markdown.

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


MODES = ("off", "ids only", "exported")


def run(args, mode, round_no, data_dir):
    """One run on a fresh stack; returns (chunks/s, chunks, spans received)."""
    settings = {"MILLRACE_MAX_QUEUED_JOBS": "100000"}
    drop = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"]
    if args.upstream:
        settings.update({"MILLRACE_LLM_BASE_URL": f"http://127.0.0.1:{FAKE_PORT}/v1",
                         "MILLRACE_LLM_CHAT_MODEL": "fake-chat", "MILLRACE_LLM_EMBED_MODEL": "fake-embed"})
    else:
        settings["MILLRACE_EMBEDDINGS_PROVIDER"] = "hashing"
        drop.append("MILLRACE_LLM_BASE_URL")
    if mode == "off":
        settings["OTEL_SDK_DISABLED"] = "true"
    elif mode == "exported":
        settings["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{SINK_GRPC}"
    drop = [key for key in drop if key not in settings]
    env = bench.stack_env(data_dir, settings, drop=drop)
    stack = str(bench.ROOT / "scripts/stack.sh")
    subprocess.run([stack, "up"], check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        time.sleep(2)
        bench.psql("TRUNCATE chunks, documents", env)
        before = sink_spans()
        chunks, elapsed = bench.wait_all(bench.submit(bench.corpus(args.docs, args.paragraphs, round_no)))
        # The exporters send a batch every 5 s (or at 512 spans): wait for the last ones.
        spans = settle(before)
    finally:
        subprocess.run([stack, "down"], env=env, stdout=subprocess.DEVNULL)
    return chunks / elapsed, chunks, spans


def settle(before):
    """Spans received since `before`, once the count stops growing for 6 s."""
    last = sink_spans()
    while True:
        time.sleep(6)
        now = sink_spans()
        if now == last:
            return now - before
        last = now


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
    rates = {mode: [] for mode in MODES}
    spans = []
    try:
        time.sleep(1)
        for round_no in range(args.rounds):
            # Each round starts with the next mode, so none is always first or last.
            order = MODES[round_no % 3:] + MODES[:round_no % 3]
            for mode in order:
                rate, chunks, received = run(args, mode, round_no, data_dir)
                rates[mode].append(rate)
                if mode == "exported":
                    if received == 0:
                        sys.exit("bench: the exporting run sent no spans to the receiver")
                    spans.append(received / chunks)
                elif received:
                    sys.exit(f"bench: the {mode} run sent {received} spans")
                print(f"round {round_no + 1} {mode}: {chunks} chunks, {rate:.0f}/s, {received} spans", file=sys.stderr)
    finally:
        for helper in helpers:
            helper.terminate()
            helper.wait()
        shutil.rmtree(data_dir, ignore_errors=True)

    off = statistics.median(rates["off"])
    workload = "fake upstream (LLM metadata, gateway embeddings)" if args.upstream else "hashing embedder, extractive metadata"
    print(f"Machine: {bench.machine()}. Workload: {args.docs} documents of {args.paragraphs} paragraphs a run, "
          f"{workload}; the modes take turns on fresh stacks.\n")
    print("| tracing | chunks/s per run | median | × off |")
    print("|---|---|---|---|")
    for mode in MODES:
        median = statistics.median(rates[mode])
        print(f"| {mode} | {', '.join(f'{r:,.0f}' for r in rates[mode])} | {median:,.0f} | {median / off:.2f} |")
    print(f"\nSpans exported per chunk stored: {statistics.median(spans):.2f}.")


if __name__ == "__main__":
    main()
