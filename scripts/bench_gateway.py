#!/usr/bin/env python3
"""Benchmark of the llm-gateway's overhead and memory, printed as Markdown.

The fake upstream (no added latency), Redis and two gateways run on this machine with the load
generator (tools/loadgen, open loop, one thread), as in TensorZero's published benchmark. At
each rate, rounds alternate between three targets with the same chat completion request:

- direct: straight to the fake upstream;
- gateway: through a gateway with one upstream and no quota (accounting in Redis only);
- gateway + limiter: through a gateway whose upstream has RPM and TPM quotas (set far above the
  load), so every call also reserves and settles quota in Redis, as in production.

Every call carries an `llm`-scoped key (the API needs one since issue 12): a PostgreSQL runs for
the key store, and the key check is cached, as in production.

Overhead is a gateway's percentile minus the direct percentile of the same round; the median
over rounds is quoted. Memory is each gateway's VmRSS idle and its largest sampled VmRSS while
the highest rate runs; CPU is the gateway's user+system time per request.

usage: scripts/bench_gateway.py [--rates 500,2000] [--seconds S] [--rounds R]
Standard library only; needs the release binaries (make build-release).
"""
import argparse
import hashlib
import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402  (release binaries, memory, machine description)

BIN = bench.RELEASE
BODY = json.dumps({
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Name three parts of a water mill in one sentence."}],
    "max_tokens": 32,
})
TARGETS = ["direct", "gateway", "gateway + limiter"]
ROOT = pathlib.Path(__file__).resolve().parent.parent
# The key every call sends; its SHA-256 is what the key store keeps.
KEY = "mr_bench-llm-key-0123456789abcdefghijklmnopqrstuvwx"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, what, proc):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"bench: {what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: {what} did not answer at {url}")


def cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    """The largest VmRSS of each process while it runs, sampled every 100 ms."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids, self.peak, self.stop = pids, {pid: 0.0 for pid in pids}, threading.Event()

    def run(self):
        while not self.stop.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], bench.rss_mb(pid))
            time.sleep(0.1)


def add_llm_key(database_url, gateway_port):
    """Makes KEY an `llm` key of the store: the gateway creates the tables on its first lookup
    (a refused call), then the key's row is inserted as `POST /v1/keys` would write it."""
    request = urllib.request.Request(f"http://127.0.0.1:{gateway_port}/v1/models",
                                     headers={"Authorization": "Bearer mr_unknown"})
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as err:
        if err.code != 401:
            sys.exit(f"bench: the gateway answered {err.code} to an unknown key")
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    sql = ("INSERT INTO api_keys (id, tenant, name, key_hash, prefix, scopes) "
           f"VALUES ('key_bench', 'default', 'bench', '{digest}', '{KEY[:8]}', ARRAY['llm'])")
    psql = pathlib.Path(os.environ.get("MILLRACE_HOME", pathlib.Path.home() / ".cache/millrace")) / "pgserver/bin/psql"
    subprocess.run([str(psql) if psql.exists() else "psql", database_url, "-qc", sql], check=True, capture_output=True)


def start_gateway(redis_port, fake_port, extra, log):
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLRACE_")}
    env.update({
        "MILLRACE_HTTP_ADDR": f"127.0.0.1:{http}", "MILLRACE_GRPC_ADDR": f"127.0.0.1:{grpc}",
        "MILLRACE_METRICS_ADDR": f"127.0.0.1:{metrics}",
        "MILLRACE_REDIS_URL": f"redis://127.0.0.1:{redis_port}", "MILLRACE_KEY_PREFIX": f"bench{http}",
        "MILLRACE_LLM_BASE_URL": f"http://127.0.0.1:{fake_port}/v1",
        "MILLRACE_LLM_CHAT_MODEL": "gpt-4o-mini", "MILLRACE_LLM_EMBED_MODEL": "text-embedding-3-small",
        "RUST_LOG": "warn", **extra,
    })
    proc = subprocess.Popen([str(BIN / "millrace-llm-gateway")], env=env, stdout=log, stderr=log)
    wait_http(f"http://127.0.0.1:{http}/readyz", "llm-gateway", proc)
    return proc, http


def loadgen(urls, rate, seconds, rounds):
    args = [str(BIN / "millrace-loadgen"), "--body", BODY, "--rate", str(rate), "--seconds", str(seconds),
            "--rounds", str(rounds), "--warmup", "3", "--header", f"Authorization:Bearer {KEY}"]
    for name, url in urls.items():
        args += ["--target", f"{name}={url}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="500,2000")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    for binary in ("millrace-llm-gateway", "millrace-fake-openai", "millrace-loadgen"):
        if not (BIN / binary).exists():
            sys.exit(f"bench: no {BIN / binary}; run make build-release")

    work = pathlib.Path(tempfile.mkdtemp(prefix="millrace-bench-gateway-"))
    log = open(work / "services.log", "w")
    procs = []
    pg_dir = work / "pg" / "data"
    try:
        pg_port = free_port()
        subprocess.run([str(ROOT / "scripts/pg.sh"), "start", str(pg_dir), str(pg_port)], check=True, stdout=log, stderr=log)
        database_url = subprocess.run([str(ROOT / "scripts/pg.sh"), "url", str(pg_port)], check=True,
                                      capture_output=True, text=True).stdout.strip()
        redis_port = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(work)], stdout=log, stderr=log))
        fake_port = free_port()
        fake = subprocess.Popen([str(BIN / "millrace-fake-openai"), "--addr", f"127.0.0.1:{fake_port}"],
                                stdout=log, stderr=log)
        procs.append(fake)
        wait_http(f"http://127.0.0.1:{fake_port}/stats", "fake-openai", fake)
        keys = {"MILLRACE_DATABASE_URL": database_url}
        plain, plain_port = start_gateway(redis_port, fake_port, keys, log)
        limited, limited_port = start_gateway(
            redis_port, fake_port, {**keys, "MILLRACE_LLM_RPM": "10000000", "MILLRACE_LLM_TPM": "10000000000"}, log)
        procs += [plain, limited]
        add_llm_key(database_url, plain_port)
        gateways = {"gateway": plain.pid, "gateway + limiter": limited.pid}
        idle = {name: bench.rss_mb(pid) for name, pid in gateways.items()}
        urls = {
            "direct": f"http://127.0.0.1:{fake_port}/v1/chat/completions",
            "gateway": f"http://127.0.0.1:{plain_port}/v1/chat/completions",
            "gateway + limiter": f"http://127.0.0.1:{limited_port}/v1/chat/completions",
        }
        results, peaks, cpu = {}, {}, {}
        for rate in rates:
            sampler = RssSampler(list(gateways.values()))
            sampler.start()
            cpu_before = {name: cpu_seconds(pid) for name, pid in gateways.items()}
            results[rate] = loadgen(urls, rate, args.seconds, args.rounds)
            sampler.stop.set()
            sampler.join()
            peaks[rate] = {name: sampler.peak[pid] for name, pid in gateways.items()}
            # Each gateway served its own rounds plus warm-up: rate × (rounds × seconds + 3).
            served = rate * (args.rounds * args.seconds + 3)
            cpu[rate] = {name: (cpu_seconds(pid) - cpu_before[name]) / served * 1e6 for name, pid in gateways.items()}
            print(f"rate {rate}: done", file=sys.stderr)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        if pg_dir.exists():
            subprocess.run([str(ROOT / "scripts/pg.sh"), "stop", str(pg_dir)], stdout=log, stderr=log)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    report(args, rates, results, idle, peaks, cpu)


def report(args, rates, results, idle, peaks, cpu):
    print(f"Machine: {bench.machine()}\n")
    for rate in rates:
        rows = results[rate]
        print(f"### {rate} requests/s ({args.rounds} rounds × {args.seconds} s per target, alternating)\n")
        print("| target | achieved req/s | non-2xx | p50 ms | p99 ms | p99.9 ms | p99 per round (ms) | send lag p99 ms |")
        print("|---|---|---|---|---|---|---|---|")
        by = {t: [r for r in rows if r["target"] == t] for t in TARGETS}
        for target in TARGETS:
            runs = by[target]
            bad = sum(n for r in runs for status, n in r["statuses"].items() if not status.startswith("2"))
            med = lambda key: statistics.median(r["latency_us"][key] for r in runs) / 1000  # noqa: E731
            print(f"| {target} | {statistics.median(r['achieved_rps'] for r in runs):.0f} | {bad} "
                  f"| {med('p50'):.3f} | {med('p99'):.3f} | {med('p999'):.3f} "
                  f"| {', '.join('%.2f' % (r['latency_us']['p99'] / 1000) for r in runs)} "
                  f"| {statistics.median(r['lag_us']['p99'] for r in runs) / 1000:.3f} |")
        print("\n| overhead (gateway − direct, same round; median over rounds) | p50 ms | p99 ms |\n|---|---|---|")
        for target in TARGETS[1:]:
            diff = lambda key: statistics.median(  # noqa: E731
                g["latency_us"][key] - d["latency_us"][key] for g, d in zip(by[target], by["direct"])) / 1000
            print(f"| {target} | {diff('p50'):.3f} | {diff('p99'):.3f} |")
        print()
    top = max(rates)
    print("### Gateway memory (VmRSS, MB) and CPU\n")
    print(f"| gateway | idle | peak at {top} req/s | CPU µs per request at {top} req/s |\n|---|---|---|---|")
    for name in TARGETS[1:]:
        print(f"| {name} | {idle[name]:.1f} | {peaks[top][name]:.1f} | {cpu[top][name]:.0f} |")


if __name__ == "__main__":
    main()
