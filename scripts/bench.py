#!/usr/bin/env python3
"""End-to-end benchmark of the local stack (release build), printed as Markdown.

1. Pipeline throughput: chunks stored per second for a corpus ingested through the job API,
   with the hashing embedder and the extractive extractor (no upstream latency), side by side
   in the same run with the physical limit of the storage stage: a bulk `\\copy` of the same rows
   into an identical table with the same HNSW index. Rounds alternate; medians are reported.
2. Resident memory of every service: idle, with 5,000 and 10,000 jobs queued (chunking paused
   with SIGSTOP so the backlog stays in Redis), and the peak while that backlog drains.

usage: scripts/bench.py [--docs N] [--paragraphs P] [--rounds R] [--backlog B]
Standard library only; runs its own stack on offset ports in a temporary data folder.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
SERVICES = ["ingestion", "chunking", "metadata", "embeddings", "storage", "llm-gateway"]
HTTP_BASE, GRPC_BASE, REDIS_PORT, PG_PORT = 18060, 19060, 16390, 15490
API = f"http://127.0.0.1:{HTTP_BASE}"
# The release binaries: the stack's, the fake upstream's and the load generator's.
TARGET_DIR = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/millrace/target"))
RELEASE = TARGET_DIR / "release"
# The stack's bootstrap admin key for this run (every API call needs a key).
ADMIN_KEY = "mr_bench_" + secrets.token_urlsafe(32)


def stack_env(data_dir, settings, drop=()):
    """The environment for scripts/stack.sh: its own data folder, the offset ports, the release
    binaries, quiet logs, this run's admin key and `settings`; the caller's database and API key
    and the variables in `drop` unset."""
    env = dict(os.environ)
    env.update({
        "MILLRACE_DATA_DIR": str(data_dir), "MILLRACE_HTTP_PORT_BASE": str(HTTP_BASE),
        "MILLRACE_GRPC_PORT_BASE": str(GRPC_BASE), "MILLRACE_REDIS_PORT": str(REDIS_PORT),
        "MILLRACE_PG_PORT": str(PG_PORT), "MILLRACE_PROFILE": "release", "RUST_LOG": "warn",
        "CARGO_TARGET_DIR": str(TARGET_DIR), "MILLRACE_ADMIN_KEY": ADMIN_KEY, **settings,
    })
    for key in ("MILLRACE_DATABASE_URL", "MILLRACE_API_KEY", *drop):
        env.pop(key, None)
    return env


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}"}
    req = urllib.request.Request(API + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=120) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def psql(sql, env):
    home = pathlib.Path(os.environ.get("MILLRACE_HOME", pathlib.Path.home() / ".cache/millrace"))
    binary = pathlib.Path(os.environ.get("MILLRACE_PG_BIN", home / "pgserver/bin")) / "psql"
    out = subprocess.run(
        [str(binary), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-d", "postgres", "-Atqc", sql],
        check=True, capture_output=True, text=True, env=env,
    )
    return out.stdout.strip()


def paragraph(doc, i):
    return (
        f"Document {doc} paragraph {i} describes mill number {doc * 31 + i} on the river. "
        f"The wheel turns at {i % 7 + 3} revolutions per minute and grinds {doc % 5 + 1} tons of grain each day. "
        f"Its millrace was dug in year {1700 + (doc * 13 + i) % 250} and repaired after the flood of marker{doc}x{i}. "
        f"Visitors note the sluice gate, the tailrace and the sound of water falling on the buckets."
    )


def corpus(docs, paragraphs, tag):
    return [
        {
            "document_id": f"bench-{tag}-{d}",
            "content": "\n\n".join(paragraph(d, i) for i in range(paragraphs)),
            "content_type": "text/plain",
        }
        for d in range(docs)
    ]


def submit(documents):
    job_ids = []
    for start in range(0, len(documents), 500):
        answer = call("POST", "/v1/ingest/batch", {"documents": documents[start:start + 500]})
        for item in answer["jobs"]:
            if "error" in item:
                sys.exit(f"bench: refused: {item}")
            job_ids.append(item["job_id"])
    return job_ids


def wait_all(job_ids, timeout=1800):
    """Waits for every job; returns (chunks stored, seconds from the first job's creation to the
    last job's finish, both as the server recorded them, so polling adds nothing)."""
    pending = set(job_ids)
    chunks = 0
    created, finished = [], []
    deadline = time.monotonic() + timeout
    while pending:
        for job_id in list(pending)[:200]:
            job = call("GET", f"/v1/jobs/{job_id}")
            if job["status"] in ("completed", "failed", "cancelled"):
                if job["status"] != "completed":
                    sys.exit(f"bench: job {job_id} {job['status']}: {job.get('error')}")
                pending.discard(job_id)
                chunks += job["chunks"]["stored"]
                created.append(datetime.datetime.fromisoformat(job["created_at"]))
                finished.append(datetime.datetime.fromisoformat(job["finished_at"]))
        if time.monotonic() > deadline:
            sys.exit(f"bench: {len(pending)} jobs unfinished after {timeout} s")
        time.sleep(0.2)
    return chunks, (max(finished) - min(created)).total_seconds()


def rss_mb(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pids(data_dir):
    return {s: int((data_dir / "run" / f"{s}.pid").read_text()) for s in SERVICES}


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB, {platform.system()} {platform.release()}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--paragraphs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=10_000, help="0 skips the memory measurement")
    args = parser.parse_args()

    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="millrace-bench-"))
    env = stack_env(data_dir, {
        "MILLRACE_MAX_QUEUED_JOBS": str(max(args.backlog * 2, 100_000)),
        # The storage stage is what this measures: vectors from the hashing embedder cost nothing.
        "MILLRACE_EMBEDDINGS_PROVIDER": "hashing",
    }, drop=("MILLRACE_LLM_BASE_URL",))
    stack = str(ROOT / "scripts/stack.sh")
    try:
        subprocess.run([stack, "up"], check=True, env=env, stdout=subprocess.DEVNULL)
        time.sleep(2)
        procs = pids(data_dir)
        idle = {s: rss_mb(p) for s, p in procs.items()}

        pipeline_rates, copy_rates, chunk_counts = [], [], []
        for round_no in range(args.rounds):
            psql("TRUNCATE chunks, documents", env)
            documents = corpus(args.docs, args.paragraphs, round_no)
            chunks, elapsed = wait_all(submit(documents))
            pipeline_rates.append(chunks / elapsed)
            chunk_counts.append(chunks)

            dump = data_dir / "rows.copy"
            psql("DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy (LIKE chunks INCLUDING ALL)", env)
            psql(f"COPY chunks TO '{dump}'", env)
            started = time.monotonic()
            psql(f"\\copy bench_copy FROM '{dump}'", env)
            copy_elapsed = time.monotonic() - started
            rows = int(psql("SELECT count(*) FROM bench_copy", env))
            copy_rates.append(rows / copy_elapsed)
            print(f"round {round_no + 1}: pipeline {chunks} chunks in {elapsed:.1f} s = {pipeline_rates[-1]:.0f}/s; "
                  f"copy {rows} rows in {copy_elapsed:.1f} s = {copy_rates[-1]:.0f}/s", file=sys.stderr)
        psql("DROP TABLE IF EXISTS bench_copy; TRUNCATE chunks, documents", env)

        if args.backlog == 0:
            return report(args, pipeline_rates, copy_rates, chunk_counts, idle, None, None, None, 0)
        # Memory under a backlog: pause chunking so queued jobs stay queued.
        os.kill(procs["chunking"], signal.SIGSTOP)
        backlog = {}
        tiny = [{"document_id": f"backlog-{i}", "content": f"Backlog document {i} about a mill wheel."}
                for i in range(args.backlog)]
        half = args.backlog // 2
        ids = submit(tiny[:half])
        backlog[half] = {s: rss_mb(p) for s, p in procs.items()}
        ids += submit(tiny[half:])
        time.sleep(1)
        backlog[args.backlog] = {s: rss_mb(p) for s, p in procs.items()}
        os.kill(procs["chunking"], signal.SIGCONT)
        peak = dict(backlog[args.backlog])
        drain_started = time.monotonic()
        while True:
            for s, p in procs.items():
                peak[s] = max(peak[s], rss_mb(p))
            active = call("GET", "/v1/jobs?status=queued&limit=1")["jobs"] + call("GET", "/v1/jobs?status=running&limit=1")["jobs"]
            if not active:
                break
            if time.monotonic() - drain_started > 1800:
                sys.exit("bench: backlog did not drain in 30 minutes")
            time.sleep(0.5)
        drain = time.monotonic() - drain_started
    finally:
        subprocess.run([stack, "down"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(data_dir, ignore_errors=True)

    return report(args, pipeline_rates, copy_rates, chunk_counts, idle, backlog, half, peak, drain)


def report(args, pipeline_rates, copy_rates, chunk_counts, idle, backlog, half, peak, drain):
    p_med, c_med = statistics.median(pipeline_rates), statistics.median(copy_rates)
    print(f"Machine: {machine()}\n")
    print(f"### Pipeline vs bulk COPY ({args.rounds} rounds, {args.docs} documents, median {int(statistics.median(chunk_counts))} chunks per round)\n")
    print("| | chunks/s per round | median |\n|---|---|---|")
    print(f"| pipeline (job API → stored) | {', '.join(f'{r:.0f}' for r in pipeline_rates)} | {p_med:.0f} |")
    print(f"| bulk COPY into same table + HNSW | {', '.join(f'{r:.0f}' for r in copy_rates)} | {c_med:.0f} |")
    print(f"| **ratio** | {', '.join(f'{p / c:.2f}' for p, c in zip(pipeline_rates, copy_rates))} | **{p_med / c_med:.2f}** |\n")
    if backlog is None:
        return
    print(f"### Resident memory (MB); backlog of {args.backlog} jobs drained in {drain:.0f} s\n")
    print(f"| service | idle | {half} queued | {args.backlog} queued | peak while draining |\n|---|---|---|---|---|")
    for s in SERVICES:
        print(f"| {s} | {idle[s]:.1f} | {backlog[half][s]:.1f} | {backlog[args.backlog][s]:.1f} | {peak[s]:.1f} |")


if __name__ == "__main__":
    main()
