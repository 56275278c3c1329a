#!/usr/bin/env python3
"""Benchmark of quota saturation, printed as Markdown: how much of an upstream's requests-per-
minute quota the metadata stage uses, with 1 and with 3 metadata replicas sharing it through
the gateway's limiter in Redis, and how many 429s the upstream answered.

The fake upstream enforces RPM R over a sliding 60 s window (answering 429 + Retry-After past
it) and takes 100-200 ms per answer; the gateway is told the same quota. A backlog larger than
the window can drain is submitted (one chunk per chat request), and the upstream's own request
log is read: achieved = chat requests it served in the window starting at the first one,
divided by R × minutes. (At most 1,000 requests between two polls of that log: R ≤ 12,000.)

usage: scripts/bench_quota.py [--rpm R] [--minutes M] [--replicas 1,3]
Standard library only; needs the release binaries (make build-release) and runs its own stack
on the offset ports of scripts/bench.py.
"""
import argparse
import collections
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402  (the stack, corpus and machine helpers)

FAKE_PORT = 18091
CHUNK_OPTIONS = {"chunk_size": 120, "chunk_overlap": 0}


def fake(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{FAKE_PORT}{path}", timeout=30) as resp:
        return json.loads(resp.read())


class ChatLog:
    """Every chat request the upstream received, as (started_ms, status), gathered from its
    request log, which keeps only the last 1,000: polled often enough to overlap (at most
    1,000 requests between polls), each request counted once however many polls saw it."""

    def __init__(self):
        self.seen = collections.Counter()

    def poll(self):
        now = collections.Counter(
            (r["started_ms"], r["finished_ms"], r.get("status") or 0)
            for r in fake("/requests")["requests"] if r["endpoint"] == "chat_completions")
        for key, count in now.items():
            self.seen[key] = max(self.seen[key], count)

    def requests(self):
        return sorted((started, status) for (started, _, status), n in self.seen.items() for _ in range(n))


def run(replicas, rpm, minutes):
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="millrace-bench-quota-"))
    env = bench.stack_env(data_dir, {
        "MILLRACE_SCALE": f"metadata={replicas}",
        "MILLRACE_LLM_BASE_URL": f"http://127.0.0.1:{FAKE_PORT}/v1",
        "MILLRACE_LLM_CHAT_MODEL": "gpt-4o-mini", "MILLRACE_LLM_RPM": str(rpm),
        "MILLRACE_METADATA_CHUNKS_PER_REQUEST": "1",
        # Only chat counts against the quota: vectors come from the hashing embedder.
        "MILLRACE_EMBEDDINGS_PROVIDER": "hashing",
        "MILLRACE_MAX_QUEUED_JOBS": "100000",
    }, drop=("MILLRACE_LLM_UPSTREAMS_FILE", "MILLRACE_LLM_TPM", "MILLRACE_LLM_TIER"))
    upstream = subprocess.Popen(
        [str(bench.RELEASE / "millrace-fake-openai"), "--addr", f"127.0.0.1:{FAKE_PORT}",
         "--rpm", str(rpm), "--latency-ms", "100", "--jitter-ms", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    stack = str(bench.ROOT / "scripts/stack.sh")
    try:
        subprocess.run([stack, "up"], check=True, env=env, stdout=subprocess.DEVNULL)
        # About 10 chunks a document; a backlog 1.3× what the window can take.
        documents = bench.corpus(int(rpm * minutes * 1.3 / 10) + 1, 10, f"quota{replicas}")
        for document in documents:
            document["options"] = CHUNK_OPTIONS
        bench.submit(documents)
        window_ms = minutes * 60_000
        submitted = time.monotonic()
        chats = ChatLog()
        first = None
        while first is None or time.time() * 1000 < first + window_ms + 5_000:
            time.sleep(5)
            chats.poll()
            if first is None and chats.seen:
                first = chats.requests()[0][0]
            if first is None and time.monotonic() > submitted + 120:
                sys.exit("bench: no chat request reached the upstream in 2 minutes")
        log = chats.requests()
    finally:
        subprocess.run([stack, "down"], env=env, stdout=subprocess.DEVNULL)
        upstream.terminate()
        upstream.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)
    served = sum(1 for started, status in log if status == 200 and started < first + window_ms)
    per_minute = [sum(1 for started, status in log if status == 200 and first + m * 60_000 <= started
                      < first + (m + 1) * 60_000) for m in range(minutes)]
    # 429s over the whole run, not only the window.
    return {"served": served, "limited": sum(1 for _, status in log if status == 429), "per_minute": per_minute}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--replicas", default="1,3")
    args = parser.parse_args()
    results = {}
    for replicas in (int(r) for r in args.replicas.split(",")):
        results[replicas] = run(replicas, args.rpm, args.minutes)
        print(f"{replicas} replica(s): {results[replicas]}", file=sys.stderr)

    print(f"Machine: {bench.machine()}\n")
    print(f"### Quota saturation: RPM {args.rpm}, {args.minutes} minutes from the first call\n")
    print("| metadata replicas | chat requests served | per minute | achieved / configured | 429s |")
    print("|---|---|---|---|---|")
    for replicas, r in results.items():
        achieved = r["served"] / (args.rpm * args.minutes)
        print(f"| {replicas} | {r['served']} | {', '.join(map(str, r['per_minute']))} | **{achieved:.3f}** "
              f"| {r['limited']} |")


if __name__ == "__main__":
    main()
