#!/usr/bin/env python3
"""What the full-text column costs at ingest (`BENCH=fulltext make bench`), printed as Markdown.

The same pipeline run as scripts/bench.py (synthetic documents through the job API and the
extractive extractor; the hashing embedder by default, so that nothing upstream hides the
storage stage's cost, or with --embeddings local the local all-MiniLM-L6-v2 model, as deployed),
in rounds that rotate between three schemas of one table: the column as migrated
(chunks.search_text, a stored generated tsvector and its GIN index; one parse per English
chunk since migration 7), the same column as migration 5 made it (two parses per chunk: the
stemmed words and the words as written), and no column at all, which is what storage wrote
before keyword search. One stack, one table, the order A B C C B A ... so that a drift of the
machine falls on every side; each side's median and its ratio to "without" are reported.
Then the column alone, in PostgreSQL: the last round's chunks inserted into a table with each
schema's column and index and nothing else, which is what the column costs the database per
chunk without the pipeline's noise.

usage: scripts/bench_fulltext.py [--docs N] [--paragraphs P] [--rounds R] [--repeats K] [--embeddings hashing|local]
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

# The column and its index, as migration 7 (0007_one_parse.sql) makes them on `chunks`, and with
# migration 5's expression: the chunk's stemmer and the `simple` words, two parses.
COLUMN = """
    ALTER TABLE {table} ADD COLUMN search_text tsvector GENERATED ALWAYS AS ({expression}) STORED;
    CREATE INDEX {table}_search_text_gin ON {table} USING gin (search_text);"""
EXPRESSIONS = {
    "one parse (as migrated)": "millrace_search_text(metadata ->> 'language', text)",
    "two parses (migration 5)": "to_tsvector(millrace_text_search_config(metadata ->> 'language'), text) "
    "|| to_tsvector('simple'::regconfig, text)",
    "without": None,
}


def add_column(table, schema):
    """The SQL that gives `table` the column and index of `schema` (nothing for "without")."""
    expression = EXPRESSIONS[schema]
    return COLUMN.format(table=table, expression=expression) if expression else ""


def corpus(docs, paragraphs, round_no):
    """scripts/bench.py's documents, their text made this round's own: the embeddings service
    caches vectors by text, and a round repeating another's text would embed nothing."""
    documents = bench.corpus(docs, paragraphs, round_no)
    for document in documents:
        document["content"] = document["content"].replace(" paragraph ", f" round {round_no} paragraph ")
    return documents


def column_cost(env, repeats):
    """What computing and indexing the column costs PostgreSQL alone, per chunk: the last round's
    chunks (text and metadata) inserted with one statement into a table holding only those and
    each schema's column and GIN index (no HNSW index, no pipeline), the schemas alternating,
    `repeats` times each. Returns {schema: [microseconds per chunk, ...]}."""
    rows = int(bench.psql("SELECT count(*) FROM chunks", env))
    costs = {name: [] for name in EXPRESSIONS}
    for _ in range(repeats):
        for name in EXPRESSIONS:
            bench.psql("DROP TABLE IF EXISTS bench_column; CREATE TABLE bench_column (text text, metadata jsonb);"
                       + add_column("bench_column", name), env)
            started = time.monotonic()
            bench.psql("INSERT INTO bench_column SELECT text, metadata FROM chunks", env)
            costs[name].append((time.monotonic() - started) * 1e6 / rows)
    bench.psql("DROP TABLE bench_column", env)
    return costs


def use_schema(name, env):
    bench.psql(f"TRUNCATE chunks, documents; ALTER TABLE chunks DROP COLUMN IF EXISTS search_text; "
               f"{add_column('chunks', name)}", env)
    bench.psql("VACUUM ANALYZE chunks", env)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--paragraphs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=18, help="rounds in all, a third per schema")
    parser.add_argument("--embeddings", default="hashing", choices=["hashing", "local"])
    parser.add_argument("--repeats", type=int, default=5, help="inserts per schema when timing the column alone")
    args = parser.parse_args()

    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="millrace-bench-fulltext-"))
    env = bench.stack_env(data_dir, {"MILLRACE_EMBEDDINGS_PROVIDER": args.embeddings}, drop=("MILLRACE_LLM_BASE_URL",))
    stack = str(bench.ROOT / "scripts/stack.sh")
    names = list(EXPRESSIONS)
    # A B C C B A ...: each side gets early and late rounds alike.
    order = names + names[::-1]
    rates = {name: [] for name in names}
    chunk_counts = []
    try:
        subprocess.run([stack, "up"], check=True, env=env, stdout=subprocess.DEVNULL)
        time.sleep(2)
        # A first round, not counted, warms the services, the connection pools and the caches.
        bench.wait_all(bench.submit(corpus(20, args.paragraphs, "warm")))
        for round_no in range(args.rounds):
            name = order[round_no % len(order)]
            use_schema(name, env)
            chunks, elapsed = bench.wait_all(bench.submit(corpus(args.docs, args.paragraphs, round_no)))
            rates[name].append(chunks / elapsed)
            chunk_counts.append(chunks)
            print(f"round {round_no + 1} ({name}): {chunks} chunks in {elapsed:.1f} s = {rates[name][-1]:.0f}/s",
                  file=sys.stderr)
        column_costs = column_cost(env, args.repeats)
    finally:
        subprocess.run([stack, "down"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(data_dir, ignore_errors=True)

    medians = {name: statistics.median(r) for name, r in rates.items() if r}
    print(f"Machine: {bench.machine()}\n")
    print(f"### Ingest with and without the full-text column ({args.embeddings} embeddings; {args.rounds} rounds "
          f"rotating, {args.docs} documents, median {int(statistics.median(chunk_counts))} chunks per round)\n")
    print("| chunks.search_text | chunks/s per round | median | ratio to without |\n|---|---|---:|---:|")
    for name, median in medians.items():
        print(f"| {name} | {', '.join(f'{r:.0f}' for r in rates[name])} | {median:.0f} | "
              f"**{median / medians['without']:.2f}** |")

    print(f"\n### The column alone in PostgreSQL ({args.repeats} inserts per schema of one round's chunks, "
          "text and metadata only, no HNSW index; microseconds per chunk)\n")
    print("| chunks.search_text | µs per chunk | median | more than without |\n|---|---|---:|---:|")
    baseline = statistics.median(column_costs["without"])
    for name, costs in column_costs.items():
        median = statistics.median(costs)
        print(f"| {name} | {', '.join(f'{c:.0f}' for c in costs)} | {median:.0f} | {median - baseline:.0f} |")


if __name__ == "__main__":
    main()
