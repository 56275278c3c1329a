#!/usr/bin/env python3
"""How hybrid search's fusion was chosen: variants compared offline on the development queries.

The corpus of scripts/bench_search.py (the Python documentation of Debian's python3-doc) is
ingested into a stack of its own; then, for every query of bench/search/dev-queries.json (or
--queries), the vector retriever's ranking of chunks is read through `POST /v1/search` (mode
vector, one result per chunk, 100), and the keyword retriever's matches straight from SQL with
what each holds of the query: the query as a phrase, every term, or some terms (and the share of
its English-stemmed terms). Fusion variants are then computed here, on those same rankings, and
scored as the benchmark scores (MRR@10, hit@1, hit@5 over the top 10 documents).
docs/benchmarks.md ("Search") tells how this table, and the same variants measured through the
service, led to what storage does.

It is an approximation of the service: the keyword matches are read more deeply (5,000 of each
half rather than max(5 × pool, 500)), which flatters partial matches, and documents are grouped
from 100 chunks of each ranking with no deeper retry.

usage: scripts/tune_search_fusion.py [--queries bench/search/dev-queries.json]
Standard library only; uses scripts/bench_search.py's ports (do not run both at once).
"""
import argparse
import collections
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import bench_search as bench

# Each keyword match, with the strength tiers storage uses and the share of the query's terms.
KEYWORD_MATCHES = """
WITH common AS (SELECT coalesce(array_agg(e.lexeme), '{}') AS lexemes FROM pg_stats s,
        unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS e(lexeme, share)
        WHERE s.tablename = 'chunks' AND s.attname = 'search_text' AND e.lexeme IS NOT NULL AND e.share > 0.05),
     terms AS (SELECT array_agg(lexeme) AS lexemes FROM unnest(to_tsvector('english', :'q'))),
     matches AS MATERIALIZED (
        (SELECT c.document_id, c.chunk_index, c.search_text, true AS every_term FROM chunks c
         WHERE c.search_text @@ (SELECT millrace_search_query_all(:'q')) LIMIT 5000)
        UNION ALL
        (SELECT c.document_id, c.chunk_index, c.search_text, false FROM chunks c
         WHERE c.search_text @@ (SELECT millrace_search_query_any(:'q', (SELECT lexemes FROM common))) LIMIT 5000))
SELECT coalesce(json_agg(r), '[]') FROM (
    SELECT g.document_id, g.chunk_index, g.every_term, g.score,
           g.every_term AND (g.search_text @@ phraseto_tsquery('english', :'q') OR g.search_text @@ phraseto_tsquery('simple', :'q')) AS phrase,
           (SELECT count(*) FROM unnest((SELECT lexemes FROM terms)) t WHERE g.search_text @@ quote_literal(t)::tsquery)::float
               / greatest(1, cardinality((SELECT lexemes FROM terms))) AS coverage
    FROM (SELECT document_id, chunk_index, bool_or(every_term) AS every_term, (array_agg(search_text))[1] AS search_text,
                 max(ts_rank_cd(search_text, (SELECT millrace_search_query(:'q')), 1)) AS score
          FROM matches GROUP BY 1, 2 ORDER BY score DESC LIMIT 1000) g) r
"""
POOL = 100


def keyword_matches(query, env):
    binary = pathlib.Path(os.environ.get("MILLRACE_PG_BIN", bench.HOME / "pgserver/bin")) / "psql"
    out = subprocess.run(
        [str(binary), "-h", "127.0.0.1", "-p", str(bench.PG_PORT), "-U", "postgres", "-d", "postgres",
         "-v", "ON_ERROR_STOP=1", "-v", f"q={query}", "-Atq"],
        input=KEYWORD_MATCHES, capture_output=True, text=True, env=env,
    )
    if out.returncode != 0:
        raise SystemExit(f"tune: the keyword query failed for {query!r}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def fuse(rankings, keyword_weight=1.0, some_terms=1.0, phrase=1.0, coverage_power=0.0, by_strength=False):
    """The top 10 documents of one variant: weighted reciprocal rank fusion of the vector
    ranking and the keyword one (ordered by strength first when `by_strength`), the keyword vote
    weighed by what the match holds."""
    scores = collections.defaultdict(float)
    for rank, (document, chunk) in enumerate(rankings["vector"][:POOL], 1):
        scores[(document, chunk)] += 1.0 / (60 + rank)
    keyword = rankings["keyword"]
    if by_strength:
        keyword = sorted(keyword, key=lambda m: (not m["phrase"], not m["every_term"], -m["score"]))
    for rank, m in enumerate(keyword[:POOL], 1):
        weight = keyword_weight * (phrase if m["phrase"] else 1.0 if m["every_term"] else some_terms)
        scores[(m["document_id"], m["chunk_index"])] += weight * m["coverage"] ** coverage_power / (60 + rank)
    documents = []
    for (document, _), _ in sorted(scores.items(), key=lambda item: -item[1]):
        if document not in documents:
            documents.append(document)
    return documents[:bench.TOP_K]


VARIANTS = [
    ("vector alone", dict(keyword_weight=0.0)),
    ("RRF, equal weights (before)", dict()),
    ("RRF, keyword weight 0.5", dict(keyword_weight=0.5)),
    ("RRF, keyword weight 0.3", dict(keyword_weight=0.3)),
    *[(f"some terms weigh {w}{', by strength' if s else ''}", dict(some_terms=w, by_strength=s))
      for w in (0.0, 0.25, 0.5) for s in (False, True)],
    *[(f"weighed by term share^{p}, by strength", dict(coverage_power=p, by_strength=True)) for p in (1, 2)],
    *[(f"phrase {p}, every term 1, some {w}, by strength", dict(phrase=p, some_terms=w, by_strength=True))
      for p in (2, 3) for w in (0.0, 0.25, 0.5)],
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=pathlib.Path, default=bench.QUERY_SETS["development"])
    args = parser.parse_args()
    queries = json.loads(args.queries.read_text())["queries"]
    root = bench.doc_root()
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="millrace-tune-search-"))
    env = bench.stack_env(data_dir, "release", pathlib.Path(os.environ.get("CARGO_TARGET_DIR", bench.HOME / "target")))
    stack = str(bench.ROOT / "scripts/stack.sh")
    try:
        subprocess.run([stack, "up"], check=True, env=env, stdout=subprocess.DEVNULL)
        bench.wait_all(bench.ingest(root, bench.pages(root)))
        rankings = {}
        for q in queries:
            hits = bench.search(q["query"], "vector", top_k=POOL, group_by="chunk")["results"]
            rankings[q["id"]] = {"vector": [(h["document_id"], h["chunk_index"]) for h in hits],
                                 "keyword": keyword_matches(q["query"], env)}
    finally:
        subprocess.run([stack, "down"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"| variant ({args.queries.name}) | MRR@10 | hit@1 | hit@5 | paraphrase MRR@10 | exact MRR@10 / hit@1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, options in VARIANTS:
        scored = {q["id"]: bench.score(fuse(rankings[q["id"]], **options), set(q["relevant"])) for q in queries}
        overall = bench.summary(list(scored.values()))
        part = {kind: bench.summary([scored[q["id"]] for q in queries if q["kind"] == kind]) for kind in ("paraphrase", "exact")}
        print(f"| {name} | {overall['mrr']:.3f} | {overall['hit1']:.2f} | {overall['hit5']:.2f} | "
              f"{part['paraphrase']['mrr']:.3f} | {part['exact']['mrr']:.3f} / {part['exact']['hit1']:.2f} |")


if __name__ == "__main__":
    main()
