#!/usr/bin/env python3
"""Benchmark of the crawler, printed as Markdown: a local site of SECTIONS x PAGES pages (the
test site of lib/testkit, 5,000 pages by default) crawled from its home page by REPLICAS chunking
services sharing a per-host limit of RPM requests per minute (the Redis limiter of
lib/resilience). The site counts every request it answers; the figures are its counts:
the most requests in any sliding window (must not exceed the limit), the requests in each whole
window from the first request (against the limit: the achieved rate), and pages taken per second.

It runs the ignored test `crawl_bench` of services/chunking/tests/crawl (real Redis, the
chunking binaries as processes), which prints one line `CRAWL_BENCH {json}`.

usage: scripts/bench_crawl.py [--sections 50] [--pages 100] [--rpm 1200] [--replicas 2]
                              [--window-ms 60000] [--release]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", type=int, default=50)
    parser.add_argument("--pages", type=int, default=100, help="pages per section")
    parser.add_argument("--rpm", type=int, default=1200, help="requests per minute per host")
    parser.add_argument("--replicas", type=int, default=2, help="chunking services sharing the limit")
    parser.add_argument("--window-ms", type=int, default=60_000, help="the limiter's window (a minute)")
    parser.add_argument("--release", action="store_true", help="build and run in release mode")
    args = parser.parse_args()

    env = dict(os.environ)
    env.update({
        "CRAWL_BENCH_SECTIONS": str(args.sections), "CRAWL_BENCH_PAGES_PER_SECTION": str(args.pages),
        "CRAWL_BENCH_RPM": str(args.rpm), "CRAWL_BENCH_REPLICAS": str(args.replicas),
        "CRAWL_BENCH_WINDOW_MS": str(args.window_ms),
    })
    command = ["cargo", "test", "-p", "millrace-chunking", "--test", "crawl"]
    if args.release:
        command.append("--release")
    command += ["--", "--ignored", "--exact", "crawl_bench", "--nocapture"]
    print("bench_crawl: " + " ".join(command), file=sys.stderr)
    run = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith("CRAWL_BENCH ")]
    if run.returncode != 0 or not lines:
        sys.stdout.write(run.stdout[-4000:])
        sys.exit(f"bench_crawl: the benchmark failed (exit {run.returncode})")
    r = json.loads(lines[-1].split(" ", 1)[1])

    window_s = r["window_ms"] / 1000
    limit = r["rpm"]
    windows = r["per_whole_window"]
    mean = sum(windows) / len(windows) if windows else float("nan")
    print(f"### Crawl: {r['html_pages']:,} pages at {limit:,} requests per {window_s:g} s per host, "
          f"{r['replicas']} chunking replica(s)\n")
    print("| figure | value |")
    print("|---|---|")
    print(f"| pages taken (jobs) | {r['pages_taken']:,} of {r['html_pages']:,} |")
    print(f"| requests the site answered | {r['requests']:,} |")
    print(f"| most requests in any {window_s:g} s window | {r['max_in_any_window']:,} (limit {limit:,}: "
          f"{'never above' if r['max_in_any_window'] <= limit else 'ABOVE THE LIMIT'}) |")
    print(f"| requests in each whole window from the first | {', '.join(f'{n:,}' for n in windows)} |")
    print(f"| achieved rate / limit (whole windows) | {mean / limit:.3f} |")
    print(f"| crawl time (first to last request) | {r['crawl_span_s']:.1f} s |")
    print(f"| pages taken per second (run start to all pages done) | {r['pages_per_s']:.1f} |")
    print(f"\n_{'release' if args.release else 'debug'} build; `scripts/bench_crawl.py "
          f"--sections {args.sections} --pages {args.pages} --rpm {args.rpm} --replicas {args.replicas}`_")


if __name__ == "__main__":
    main()
