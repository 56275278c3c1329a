#!/usr/bin/env python3
"""What the full-text column costs at ingest (`BENCH=fulltext make bench`), printed as Markdown.

The same pipeline run as scripts/bench.py (synthetic documents through the job API and the
extractive extractor; the hashing embedder by default, so that nothing upstream hides the
storage stage's cost, or with --embeddings local the local all-MiniLM-L6-v2 model, as deployed),
in rounds that alternate between the schema as migrated (chunks.search_text, a stored generated
tsvector column, and its GIN index) and the same table with that column dropped, which is what
storage wrote before keyword search. One stack, one table, the order ABBA... so that a drift of
the machine falls on both sides; the median of each side and their ratio are reported.

usage: scripts/bench_fulltext.py [--docs N] [--paragraphs P] [--rounds R] [--embeddings hashing|local]
Standard library only; runs its own stack (scripts/bench.py's ports) in a temporary data folder.
"""
import argparse
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import bench

# The column and index as migration 0005_full_text.sql makes them.
ADD_COLUMN = """
    ALTER TABLE chunks ADD COLUMN search_text tsvector
        GENERATED ALWAYS AS (millrace_search_text(metadata ->> 'language', text)) STORED;
    CREATE INDEX chunks_search_text_gin ON chunks USING gin (search_text);"""
DROP_COLUMN = "ALTER TABLE chunks DROP COLUMN search_text"


def corpus(docs, paragraphs, round_no):
    """scripts/bench.py's documents, their text made this round's own: the embeddings service
    caches vectors by text, and a round repeating another's text would embed nothing."""
    documents = bench.corpus(docs, paragraphs, round_no)
    for document in documents:
        document["content"] = document["content"].replace(" paragraph ", f" round {round_no} paragraph ")
    return documents


def has_column(env):
    return bench.psql("SELECT count(*) FROM pg_attribute WHERE attrelid = 'chunks'::regclass "
                      "AND attname = 'search_text' AND NOT attisdropped", env) == "1"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--paragraphs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=8, help="rounds in all, half with the column")
    parser.add_argument("--embeddings", default="hashing", choices=["hashing", "local"])
    args = parser.parse_args()

    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="millrace-bench-fulltext-"))
    env = bench.stack_env(data_dir, {"MILLRACE_EMBEDDINGS_PROVIDER": args.embeddings}, drop=("MILLRACE_LLM_BASE_URL",))
    stack = str(bench.ROOT / "scripts/stack.sh")
    rates = {True: [], False: []}
    chunk_counts = []
    try:
        subprocess.run([stack, "up"], check=True, env=env, stdout=subprocess.DEVNULL)
        time.sleep(2)
        # A first round, not counted, warms the services, the connection pools and the caches.
        bench.wait_all(bench.submit(corpus(20, args.paragraphs, "warm")))
        for round_no in range(args.rounds):
            # A B B A A B ...: each side gets early and late rounds alike.
            with_column = (round_no % 4) in (0, 3)
            bench.psql("TRUNCATE chunks, documents", env)
            if with_column and not has_column(env):
                bench.psql(ADD_COLUMN, env)
            elif not with_column and has_column(env):
                bench.psql(DROP_COLUMN, env)
            bench.psql("VACUUM ANALYZE chunks", env)
            chunks, elapsed = bench.wait_all(bench.submit(corpus(args.docs, args.paragraphs, round_no)))
            rates[with_column].append(chunks / elapsed)
            chunk_counts.append(chunks)
            side = "with" if with_column else "without"
            print(f"round {round_no + 1} ({side} the column): {chunks} chunks in {elapsed:.1f} s = "
                  f"{rates[with_column][-1]:.0f}/s", file=sys.stderr)
        if not has_column(env):
            bench.psql("TRUNCATE chunks, documents; " + ADD_COLUMN, env)
    finally:
        subprocess.run([stack, "down"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(data_dir, ignore_errors=True)

    with_median, without_median = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"Machine: {bench.machine()}\n")
    print(f"### Ingest with and without the full-text column ({args.embeddings} embeddings; {args.rounds} rounds "
          f"alternating, {args.docs} documents, median {int(statistics.median(chunk_counts))} chunks per round)\n")
    print("| chunks.search_text | chunks/s per round | median |\n|---|---|---|")
    print(f"| with (tsvector + GIN) | {', '.join(f'{r:.0f}' for r in rates[True])} | {with_median:.0f} |")
    print(f"| without | {', '.join(f'{r:.0f}' for r in rates[False])} | {without_median:.0f} |")
    print(f"| **ratio with / without** | | **{with_median / without_median:.2f}** |")


if __name__ == "__main__":
    main()
