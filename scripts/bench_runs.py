#!/usr/bin/env python3
"""Benchmark of a large run, printed as Markdown.

A run of N small content items (20,000 by default: more than a day's work of the
contact-extraction service) is submitted in one `POST /v1/runs`; the feeder submits its items as
admission allows and the pipeline processes them (hashing embedder, extractive extractor: no
upstream). Once the run is done, three reads are timed, each several times (median reported):
listing the tenant's runs (`GET /v1/runs`), paging through all the run's items
(`GET /v1/runs/{id}/items`, 1,000 per page, following `next_cursor`), and producing its report
(`GET /v1/runs/{id}/report.csv`). The target is under 2 s each.

usage: scripts/bench_runs.py [--items N] [--rounds R] [--profile release|debug]
Standard library only; runs its own stack (scripts/stack.sh) on ports of its own (28060…), so it
can run beside the other benchmarks.
"""
import argparse
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402  (the stack and API helpers)

bench.HTTP_BASE, bench.GRPC_BASE, bench.REDIS_PORT, bench.PG_PORT = 28060, 29060, 26390, 25490
bench.API = f"http://127.0.0.1:{bench.HTTP_BASE}"


def get_text(path):
    req = urllib.request.Request(bench.API + path, headers={"authorization": f"Bearer {bench.ADMIN_KEY}"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return resp.read().decode()


def timed(action, rounds):
    """Runs `action` `rounds` times; returns (median seconds, its last result)."""
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result, times


def call(method, path):
    """`bench.call`, with the server's error message shown when it answers an error."""
    try:
        return bench.call(method, path)
    except urllib.error.HTTPError as err:
        sys.exit(f"bench: {method} {path} answered {err.code}: {err.read().decode(errors='replace')}")


def page_through(run_id):
    items, cursor, pages = 0, "", 0
    while True:
        answer = call("GET", f"/v1/runs/{run_id}/items?limit=1000&cursor={cursor}")
        items += len(answer["items"])
        pages += 1
        cursor = answer["next_cursor"]
        if not cursor:
            return items, pages


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", default="release", choices=["release", "debug"])
    parser.add_argument("--timeout", type=int, default=3600, help="seconds to wait for the run to finish")
    parser.add_argument("--until", default="done", choices=["done", "submitted"],
                        help="time the reads once the run is done, or once every item is submitted")
    args = parser.parse_args()

    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="millrace-bench-runs-"))
    # The whole run fits under the queue bounds, so `--until submitted` is reached without
    # waiting for the pipeline (the feeder holds back what does not fit, by design).
    env = bench.stack_env(data_dir, {
        "MILLRACE_PROFILE": args.profile,
        "MILLRACE_MAX_QUEUED_JOBS_PER_TENANT": str(max(args.items, 10_000)),
        "MILLRACE_MAX_QUEUED_JOBS": str(max(args.items, 100_000)),
    })
    stack = str(bench.ROOT / "scripts/stack.sh")
    try:
        subprocess.run([stack, "up"], check=True, env=env, stdout=subprocess.DEVNULL)
        time.sleep(2)
        items = [
            {"document_id": f"run-item-{i}", "content": f"Item {i}: mill {i % 97} on the river, wheel {i % 13}."}
            for i in range(args.items)
        ]
        start = time.perf_counter()
        accepted = bench.call("POST", "/v1/runs", {"name": "bench", "items": items})
        accepted_s = time.perf_counter() - start
        run_id = accepted["run_id"]
        deadline = time.monotonic() + args.timeout
        while True:
            run = bench.call("GET", f"/v1/runs/{run_id}")
            if run["status"] != "running" or (args.until == "submitted" and run["counts"]["pending"] == 0):
                break
            if time.monotonic() > deadline:
                sys.exit(f"bench: the run is not done after {args.timeout} s: {run['counts']}")
            time.sleep(2)
        processed_s = time.perf_counter() - start

        list_s, listed, list_all = timed(lambda: bench.call("GET", "/v1/runs?limit=50"), args.rounds)
        assert listed["runs"][0]["run_id"] == run_id
        page_s, (paged, pages), page_all = timed(lambda: page_through(run_id), args.rounds)
        assert paged == args.items, f"paged {paged} of {args.items} items"
        report_s, report, report_all = timed(lambda: get_text(f"/v1/runs/{run_id}/report.csv"), args.rounds)
        rows = report.count("\r\n") - 1
        assert rows == args.items, f"the report has {rows} rows for {args.items} items"
        summary_s, _, summary_all = timed(lambda: bench.call("GET", f"/v1/runs/{run_id}"), args.rounds)
    finally:
        subprocess.run([stack, "down"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"Machine: {bench.machine()}; {args.profile} build\n")
    print(f"### A run of {args.items:,} items\n")
    state = "done" if run["status"] == "done" else "fully submitted"
    print(f"`POST /v1/runs` answered in {accepted_s:.2f} s; the run was {state} {processed_s:.0f} s after it was "
          f"submitted ({run['counts']['completed']:,} completed, {run['counts']['in_progress']:,} in progress, "
          f"{run['counts']['failed']} failed when the reads were timed).\n")
    print(f"| read (median of {args.rounds}) | seconds | all rounds |\n|---|---|---|")
    fmt = lambda values: ", ".join(f"{v:.3f}" for v in values)  # noqa: E731
    print(f"| list runs (`GET /v1/runs`) | {list_s:.3f} | {fmt(list_all)} |")
    print(f"| page through its items ({pages} pages of 1,000) | {page_s:.3f} | {fmt(page_all)} |")
    print(f"| its report (`report.csv`, {rows:,} rows, {len(report) / 1e6:.1f} MB) | {report_s:.3f} | {fmt(report_all)} |")
    print(f"| its summary (`GET /v1/runs/{{id}}`) | {summary_s:.3f} | {fmt(summary_all)} |")


if __name__ == "__main__":
    main()
