#!/usr/bin/env python3
"""Search quality and latency (`BENCH=search make bench`), printed as Markdown.

1. Quality. The Python documentation of Debian's `python3-doc` package (a fixed subset: every page
   of tutorial/, faq/, howto/, reference/ and library/) is ingested as HTML through the job API
   with the local all-MiniLM-L6-v2 model; document ids are the pages' paths under the html/
   folder. Every query of bench/search/queries.json is run in each search mode the API offers
   (`vector`, `keyword`, `hybrid`; group_by document, top_k 10) and scored against its labels:
   MRR@10, hit@1, hit@5, overall and per kind (paraphrased questions, exact terms).
2. The peer: LlamaIndex's default `VectorStoreIndex` (llama-index-core, in the venv that
   scripts/bench.sh sets up) over the same pages, embedded by the same model through millrace's
   own embeddings service (`MillraceEmbedding` below: same model, same vectors, so the
   comparison is about chunking and retrieval). It runs in that venv: this file, with the
   `llamaindex` subcommand.
3. Latency. The ingested chunks are copied (other document ids, the vector plus a little noise,
   the same text) into PostgreSQL until the table holds 10k, then 100k chunks (and 1M with
   --sizes); at each size every mode is timed through `POST /v1/search`, with and without a
   metadata filter that keeps a tenth of the documents, interleaved, one client, and p50/p99
   printed. Every query is a new string (a labelled query plus a counter word), so the query
   embedding cache never answers and the time includes embedding the query.

usage: scripts/bench_search.py [--sizes 10000,100000] [--samples 100] [--skip-latency]
                               [--skip-llamaindex] [--profile release|debug]
Standard library only (the LlamaIndex part runs in its venv); runs its own stack on offset
ports in a temporary data folder.
"""
import argparse
import html
import html.parser
import json
import os
import pathlib
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOME = pathlib.Path(os.environ.get("MILLRACE_HOME", pathlib.Path.home() / ".cache/millrace"))
SERVICES = ["ingestion", "chunking", "metadata", "embeddings", "storage", "llm-gateway"]
# Offsets of their own, so that this runs next to scripts/bench.py and a developer's stack.
HTTP_BASE, GRPC_BASE, REDIS_PORT, PG_PORT = 18160, 19160, 16490, 15590
API = f"http://127.0.0.1:{HTTP_BASE}"
EMBEDDINGS_GRPC = f"127.0.0.1:{GRPC_BASE + 3}"
ADMIN_KEY = "mr_bench_" + secrets.token_urlsafe(32)
# The labelled queries: the test set, whose figures docs/benchmarks.md reports, and the
# development set that search's ranking choices were made on (bench/search/README.md).
QUERY_SETS = {"test": ROOT / "bench/search/queries.json", "development": ROOT / "bench/search/dev-queries.json"}
# The corpus: these folders of the package's html/ tree, every page in them.
SECTIONS = ("tutorial", "faq", "howto", "reference", "library")
DOC_ROOTS = [pathlib.Path("/usr/share/doc/python3-doc/html")] + sorted(
    pathlib.Path("/usr/share/doc").glob("python3.*-doc/html"), reverse=True
)
VENV = HOME / "venv-llamaindex"
TOP_K = 10


# --- the corpus and the labels -------------------------------------------------------------------


def doc_root():
    for root in DOC_ROOTS:
        if (root / "library/json.html").is_file():
            return root.resolve()
    sys.exit("bench: no Python documentation; install Debian's python3-doc (scripts/bench.sh does)")


def pages(root):
    return [p.relative_to(root).as_posix() for s in SECTIONS for p in sorted((root / s).glob("*.html"))]


def load_queries():
    """Every labelled query of both sets, each with its set's name under "set"."""
    return [dict(q, set=name) for name, path in QUERY_SETS.items() for q in json.loads(path.read_text())["queries"]]


class MainText(html.parser.HTMLParser):
    """The text of a Sphinx page's `role="main"` element, one line per block: the same region
    millrace's HTML parser keeps (`<main>`, then `[role=main]`), for LlamaIndex, whose core
    package would read an .html file as raw markup (its HTML readers are other packages)."""

    BLOCKS = {"p", "div", "section", "li", "dt", "dd", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "br",
              "table", "ul", "ol", "dl", "blockquote"}
    SKIPPED = {"script", "style", "nav"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0  # >0 inside the main element, counting nested divs
        self.skip = 0
        self.pre = 0
        self.parts = []

    def handle_starttag(self, tag, attrs):
        if self.depth == 0:
            if dict(attrs).get("role") == "main":
                self.depth = 1
            return
        if tag == "div":
            self.depth += 1
        if tag in self.SKIPPED:
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if tag in self.SKIPPED:
            self.skip = max(0, self.skip - 1)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag == "div":
            self.depth -= 1
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.depth and not self.skip:
            # Source line breaks inside a paragraph are spaces; in code they are lines.
            self.parts.append(data if self.pre else " ".join(data.split("\n")))

    def text(self):
        lines = (" ".join(line.split()) for line in "".join(self.parts).replace("¶", "").splitlines())
        return "\n".join(line for line in lines if line)


def main_text(raw):
    parser = MainText()
    parser.feed(raw)
    return parser.text()


def score(ranked, relevant):
    """(reciprocal rank within TOP_K, hit@1, hit@5) of one query's ranked document ids."""
    rank = next((i + 1 for i, d in enumerate(ranked[:TOP_K]) if d in relevant), None)
    return (1 / rank if rank else 0.0, rank == 1, rank is not None and rank <= 5)


def summary(rows):
    n = len(rows)
    return {"mrr": sum(r[0] for r in rows) / n, "hit1": sum(r[1] for r in rows) / n, "hit5": sum(r[2] for r in rows) / n, "n": n}


# --- the stack ------------------------------------------------------------------------------------


def stack_env(data_dir, profile, target_dir):
    env = dict(os.environ)
    env.update({
        "MILLRACE_DATA_DIR": str(data_dir), "MILLRACE_HTTP_PORT_BASE": str(HTTP_BASE),
        "MILLRACE_GRPC_PORT_BASE": str(GRPC_BASE), "MILLRACE_REDIS_PORT": str(REDIS_PORT),
        "MILLRACE_PG_PORT": str(PG_PORT), "MILLRACE_PROFILE": profile, "RUST_LOG": "warn",
        "CARGO_TARGET_DIR": str(target_dir), "MILLRACE_ADMIN_KEY": ADMIN_KEY,
        # The local model for chunks and queries; no upstream at all (metadata: extractive).
        "MILLRACE_EMBEDDINGS_PROVIDER": "local",
    })
    for key in ("MILLRACE_DATABASE_URL", "MILLRACE_API_KEY", "MILLRACE_LLM_BASE_URL", "MILLRACE_LLM_EMBED_MODEL"):
        env.pop(key, None)
    return env


def call(method, path, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}"}
    req = urllib.request.Request(API + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def psql(sql, env, stdin=None):
    binary = pathlib.Path(os.environ.get("MILLRACE_PG_BIN", HOME / "pgserver/bin")) / "psql"
    out = subprocess.run(
        [str(binary), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
         "-Atqc", sql],
        check=True, capture_output=True, text=True, env=env, input=stdin,
    )
    return out.stdout.strip()


def ingest(root, names):
    """Submits the pages as HTML in batches of at most 4 MB; returns the job ids."""
    job_ids, batch, size = [], [], 0

    def flush():
        nonlocal batch, size
        if batch:
            for item in call("POST", "/v1/ingest/batch", {"documents": batch}, timeout=600)["jobs"]:
                if "error" in item:
                    sys.exit(f"bench: refused: {item}")
                job_ids.append(item["job_id"])
        batch, size = [], 0

    for name in names:
        content = (root / name).read_text(encoding="utf-8")
        if size + len(content) > 4_000_000:
            flush()
        batch.append({"document_id": name, "content": content, "content_type": "text/html"})
        size += len(content)
    flush()
    return job_ids


def wait_all(job_ids, timeout=5400):
    pending, chunks = set(job_ids), 0
    deadline = time.monotonic() + timeout
    while pending:
        for job_id in list(pending)[:200]:
            job = call("GET", f"/v1/jobs/{job_id}")
            if job["status"] in ("completed", "failed", "cancelled"):
                if job["status"] != "completed":
                    sys.exit(f"bench: job {job_id} {job['status']}: {job.get('error')}")
                pending.discard(job_id)
                chunks += job["chunks"]["stored"]
        if time.monotonic() > deadline:
            sys.exit(f"bench: {len(pending)} jobs unfinished after {timeout} s")
        time.sleep(1)
    return chunks


def search(query, mode=None, top_k=TOP_K, group_by="document", filter=None):
    body = {"query": query, "top_k": top_k}
    if mode is not None:
        body["mode"] = mode
        body["group_by"] = group_by
    if filter is not None:
        body["filter"] = filter
    return call("POST", "/v1/search", body)


def api_modes():
    """The modes the running API offers: all three once it answers with its `mode`, else today's
    vector search alone (None: send no `mode`, group the chunks here)."""
    try:
        answer = search("probe", mode="keyword")
    except urllib.error.HTTPError:
        return [None]
    return ["vector", "keyword", "hybrid"] if answer.get("mode") == "keyword" else [None]


def ranked_documents(query, mode):
    if mode is None:
        # Before group_by: 100 chunks, the first occurrence of each document in order.
        seen = []
        for hit in search(query, top_k=100)["results"]:
            if hit["document_id"] not in seen:
                seen.append(hit["document_id"])
        return seen[:TOP_K]
    return [hit["document_id"] for hit in search(query, mode)["results"]]


# --- LlamaIndex, in its venv ----------------------------------------------------------------------


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf, i):
    shift = result = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i


def encode_embed_request(texts):
    """millrace.v1.EmbedRequest {repeated string texts = 1}, written by hand: two fields do not
    need protoc and grpcio-tools in the venv."""
    out = bytearray()
    for text in texts:
        raw = text.encode("utf-8")
        out += b"\x0a" + varint(len(raw)) + raw
    return bytes(out)


def decode_embed_response(buf):
    """The vectors of millrace.v1.EmbedResponse {..., repeated Vector vectors = 3} where
    Vector {repeated float values = 1} (packed, as proto3 writes it)."""
    import struct

    vectors, i = [], 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        wire = key & 7
        if wire == 0:
            _, i = read_varint(buf, i)
            continue
        if wire != 2:
            raise ValueError(f"unexpected wire type {wire}")
        length, i = read_varint(buf, i)
        body, i = buf[i:i + length], i + length
        if key >> 3 != 3:
            continue
        values, j = [], 0
        while j < len(body):
            k, j = read_varint(body, j)
            if k == 0x0A:
                n, j = read_varint(body, j)
                values += struct.unpack(f"<{n // 4}f", body[j:j + n])
                j += n
            elif k == 0x0D:
                values += struct.unpack("<f", body[j:j + 4])
                j += 4
            else:
                raise ValueError(f"unexpected field {k} in Vector")
        vectors.append(list(values))
    return vectors


def llamaindex_main(argv):
    """`bench_search.py llamaindex --root R --pages FILE --queries FILE --out FILE`, in the venv."""
    import grpc
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.base.embeddings.base import BaseEmbedding

    parser = argparse.ArgumentParser(prog="bench_search.py llamaindex")
    parser.add_argument("--root", type=pathlib.Path, required=True)
    parser.add_argument("--pages", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--embeddings", default=EMBEDDINGS_GRPC)
    args = parser.parse_args(argv)

    channel = grpc.insecure_channel(args.embeddings, options=[("grpc.max_receive_message_length", 64 << 20)])
    embed_rpc = channel.unary_unary(
        "/millrace.v1.Embeddings/Embed",
        request_serializer=encode_embed_request,
        response_deserializer=decode_embed_response,
    )

    class MillraceEmbedding(BaseEmbedding):
        """all-MiniLM-L6-v2 as millrace's embeddings service runs it (truncation at 256 tokens,
        mean pooling, L2 norm, as sentence-transformers does), so both sides use the very same
        vectors for the same text."""

        def _get_query_embedding(self, query):
            return embed_rpc([query], timeout=120)[0]

        def _get_text_embedding(self, text):
            return embed_rpc([text], timeout=120)[0]

        def _get_text_embeddings(self, texts):
            out = []
            # Small requests: the service has a deadline per request, and batches passes itself.
            for start in range(0, len(texts), 16):
                out += embed_rpc(texts[start:start + 16], timeout=600)
            return out

        async def _aget_query_embedding(self, query):
            return self._get_query_embedding(query)

    Settings.embed_model = MillraceEmbedding(model_name="all-MiniLM-L6-v2", embed_batch_size=16)
    names = args.pages.read_text().split()
    documents = [
        Document(text=main_text((args.root / name).read_text(encoding="utf-8")), id_=name,
                 metadata={"document_id": name}, excluded_embed_metadata_keys=["document_id"],
                 excluded_llm_metadata_keys=["document_id"])
        for name in names
    ]
    started = time.monotonic()
    index = VectorStoreIndex.from_documents(documents)
    build = time.monotonic() - started
    nodes = len(index.docstore.docs)
    # The default retriever returns chunks; 100 of them, grouped by document as millrace does.
    retriever = index.as_retriever(similarity_top_k=100)
    ranked, times = {}, []
    for q in load_queries():
        started = time.monotonic()
        hits = retriever.retrieve(q["query"])
        times.append(time.monotonic() - started)
        seen = []
        for hit in hits:
            doc = hit.node.ref_doc_id
            if doc not in seen:
                seen.append(doc)
        ranked[q["id"]] = seen[:TOP_K]
    import llama_index.core

    args.out.write_text(json.dumps({
        "ranked": ranked, "nodes": nodes, "build_seconds": build, "version": llama_index.core.__version__,
        "query_p50_ms": statistics.median(times) * 1000,
    }))


def run_llamaindex(root, names, data_dir):
    python = VENV / "bin/python"
    if not python.exists():
        sys.exit(f"bench: no LlamaIndex venv at {VENV} (scripts/bench.sh sets it up)")
    pages_file, out = data_dir / "pages.txt", data_dir / "llamaindex.json"
    pages_file.write_text("\n".join(names))
    subprocess.run([str(python), __file__, "llamaindex", "--root", str(root), "--pages", str(pages_file),
                    "--out", str(out)], check=True)
    return json.loads(out.read_text())


# --- latency --------------------------------------------------------------------------------------


def columns(env):
    """The chunks table's columns that an INSERT may name (not generated ones)."""
    return psql("SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
                "WHERE attrelid = 'chunks'::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''", env)


def grow(env, target, seed_rows, copy_no):
    """Copies the seed corpus (the ingested pages) under new document ids until chunks holds
    about `target` rows: same text, the vector plus uniform noise of ±0.02 per dimension (so
    HNSW sees clusters like real ones, not duplicates), metadata {"shard": copy % 10} on the documents and their chunks. The
    chunks' secondary indexes are dropped during the copy and rebuilt after, as a bulk load
    would. Returns the next copy number."""
    have = int(psql("SELECT count(*) FROM chunks", env))
    if have >= target:
        return copy_no
    indexes = psql("SELECT indexdef FROM pg_indexes WHERE tablename = 'chunks' AND indexname NOT IN "
                   "(SELECT conname FROM pg_constraint WHERE conrelid = 'chunks'::regclass)", env).splitlines()
    names = psql("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks' AND indexname NOT IN "
                 "(SELECT conname FROM pg_constraint WHERE conrelid = 'chunks'::regclass)", env).splitlines()
    for name in names:
        psql(f"DROP INDEX {name}", env)
    cols = columns(env)
    doc_cols = psql("SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
                    "WHERE attrelid = 'documents'::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''", env)
    while have < target:
        # The last copy takes only the documents it needs (whole documents, in id order).
        need = target - have
        partial = need < seed_rows
        where = (
            "WHERE document_id IN (SELECT document_id FROM (SELECT document_id, sum(chunk_count) OVER "
            f"(ORDER BY document_id) AS total FROM bench_seed_documents) s WHERE total <= {need})"
        ) if partial else ""
        suffix = f"'#copy{copy_no}'"
        psql(f"""
            CREATE UNLOGGED TABLE bench_docs AS SELECT * FROM bench_seed_documents {where};
            CREATE UNLOGGED TABLE bench_chunks AS SELECT * FROM bench_seed_chunks
                WHERE document_id IN (SELECT document_id FROM bench_docs);
            UPDATE bench_docs SET document_id = document_id || {suffix},
                metadata = metadata || jsonb_build_object('shard', {copy_no % 10});
            UPDATE bench_chunks SET document_id = document_id || {suffix},
                metadata = metadata || jsonb_build_object('shard', {copy_no % 10}),
                embedding = (SELECT array_agg(e + (random() - 0.5) * 0.04) FROM unnest(embedding::real[]) e)::vector;
            INSERT INTO documents ({doc_cols}) SELECT {doc_cols} FROM bench_docs;
            INSERT INTO chunks ({cols}) SELECT {cols} FROM bench_chunks;
            DROP TABLE bench_docs, bench_chunks;""", env)
        copy_no += 1
        have = int(psql("SELECT count(*) FROM chunks", env))
        if partial:
            break
    started = time.monotonic()
    for index in indexes:
        psql(f"SET maintenance_work_mem = '4GB'; {index}", env)
    psql("VACUUM ANALYZE chunks", env)
    psql("VACUUM ANALYZE documents", env)
    print(f"bench: {have} chunks; indexes rebuilt in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return copy_no


def latency(modes, queries, samples):
    """{(mode, filtered): [ms, ...]}, the cells interleaved so that all see the same machine."""
    cells = [(mode, filtered) for mode in modes for filtered in (False, True)]
    times = {cell: [] for cell in cells}
    short = {cell: 0 for cell in cells}
    words = [q["query"] for q in queries]
    counter = 0
    for _ in range(10):  # warm-up: connections, caches, plans
        for mode, filtered in cells:
            search(words[counter % len(words)] + f" warm{counter}", mode, filter={"metadata": {"shard": 3}} if filtered else None)
            counter += 1
    for i in range(samples):
        order = cells[:]
        random.Random(i).shuffle(order)
        for mode, filtered in order:
            counter += 1
            query = words[counter % len(words)] + f" w{counter}"
            started = time.perf_counter()
            answer = search(query, mode, filter={"metadata": {"shard": 3}} if filtered else None)
            times[(mode, filtered)].append((time.perf_counter() - started) * 1000)
            if len(answer["results"]) < TOP_K:
                short[(mode, filtered)] += 1
    return times, short


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


# --- report ---------------------------------------------------------------------------------------


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB, {platform.system()} {platform.release()}"


def quality_table(results, queries):
    kinds = {q["id"]: q["kind"] for q in queries}
    print("| retriever | MRR@10 | hit@1 | hit@5 | paraphrase MRR@10 / hit@1 / hit@5 | exact MRR@10 / hit@1 / hit@5 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, per_query in results.items():
        overall = summary(list(per_query.values()))
        part = {k: summary([r for qid, r in per_query.items() if kinds[qid] == k]) for k in ("paraphrase", "exact")}
        print(f"| {name} | {overall['mrr']:.3f} | {overall['hit1']:.2f} | {overall['hit5']:.2f} | "
              + " | ".join(f"{part[k]['mrr']:.3f} / {part[k]['hit1']:.2f} / {part[k]['hit5']:.2f}" for k in ("paraphrase", "exact"))
              + " |")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "llamaindex":
        return llamaindex_main(sys.argv[2:])
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000", help="chunk counts for latency, comma-separated")
    parser.add_argument("--samples", type=int, default=100, help="timed searches per mode and filter and size")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--latency-only", action="store_true",
                        help="no quality runs; the latency seed is tutorial/, faq/ and howto/ alone (faster)")
    parser.add_argument("--skip-llamaindex", action="store_true")
    parser.add_argument("--profile", default="release", choices=["release", "debug"])
    parser.add_argument("--per-query", type=pathlib.Path, help="write every query's ranked documents here (JSON)")
    args = parser.parse_args()
    target_dir = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", HOME / "target"))

    root = doc_root()
    names = pages(root)
    if args.latency_only:
        names = [n for n in names if n.split("/")[0] in ("tutorial", "faq", "howto")]
    queries = load_queries()
    labelled = {d for q in queries for d in q["relevant"]}
    missing = labelled - set(names)
    if missing and not args.latency_only:
        sys.exit(f"bench: labels name pages outside the corpus: {sorted(missing)}")

    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="millrace-bench-search-"))
    env = stack_env(data_dir, args.profile, target_dir)
    stack = str(ROOT / "scripts/stack.sh")
    lat = {}
    try:
        subprocess.run([stack, "up"], check=True, env=env, stdout=subprocess.DEVNULL)
        started = time.monotonic()
        chunks = wait_all(ingest(root, names))
        ingest_seconds = time.monotonic() - started
        print(f"bench: {len(names)} pages, {chunks} chunks in {ingest_seconds:.0f} s", file=sys.stderr)

        modes = api_modes()
        results, ranked_all = {}, {}
        for mode in ([] if args.latency_only else modes):
            name = mode or "vector (today's API: 100 chunks grouped here)"
            ranked_all[name] = {q["id"]: ranked_documents(q["query"], mode) for q in queries}
            results[name] = {q["id"]: score(ranked_all[name][q["id"]], set(q["relevant"])) for q in queries}
        li = None
        if not args.skip_llamaindex and not args.latency_only:
            li = run_llamaindex(root, names, data_dir)
            name = f"LlamaIndex {li['version']} VectorStoreIndex (default)"
            ranked_all[name] = li["ranked"]
            results[name] = {q["id"]: score(li["ranked"][q["id"]], set(q["relevant"])) for q in queries}
        if args.per_query:
            args.per_query.write_text(json.dumps(ranked_all, indent=1))

        if not args.skip_latency:
            # The ingested documents take a shard too, so the filter matches at every size.
            psql("UPDATE documents SET metadata = metadata || jsonb_build_object('shard', abs(hashtext(document_id)) % 10)", env)
            psql("DROP TABLE IF EXISTS bench_seed_documents, bench_seed_chunks; "
                 "CREATE UNLOGGED TABLE bench_seed_documents AS SELECT * FROM documents; "
                 "CREATE UNLOGGED TABLE bench_seed_chunks AS SELECT * FROM chunks", env)
            seed_rows = int(psql("SELECT count(*) FROM bench_seed_chunks", env))
            copy_no = 1
            for size in (int(s) for s in args.sizes.split(",")):
                copy_no = grow(env, size, seed_rows, copy_no)
                stored = int(psql("SELECT count(*) FROM chunks", env))
                lat[stored] = latency([m for m in modes], queries, args.samples)
                print(f"bench: {stored} chunks measured; searches with fewer than {TOP_K} results: {lat[stored][1]}", file=sys.stderr)
            psql("DROP TABLE IF EXISTS bench_seed_documents, bench_seed_chunks", env)
    finally:
        subprocess.run([stack, "down"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end\n")
    print(f"Corpus: {len(names)} pages of {root} ({', '.join(SECTIONS)}), {chunks} millrace chunks, "
          f"ingested in {ingest_seconds:.0f} s" + (f"; LlamaIndex: {li['nodes']} nodes, index built in {li['build_seconds']:.0f} s" if li else "") + "\n")
    for set_name in QUERY_SETS if results else ():
        chosen = [q for q in queries if q["set"] == set_name]
        print(f"### Quality, {set_name} set ({len(chosen)} queries: {sum(q['kind'] == 'paraphrase' for q in chosen)} "
              f"paraphrased, {sum(q['kind'] == 'exact' for q in chosen)} exact; top {TOP_K} documents)\n")
        ids = {q["id"] for q in chosen}
        quality_table({name: {i: r for i, r in rows.items() if i in ids} for name, rows in results.items()}, chosen)
        print()
    for size, (times, short) in lat.items():
        print(f"\n### Search latency through `POST /v1/search`, {size:,} chunks ({args.samples} searches a cell, ms)\n")
        print("| mode | p50 | p99 | p50 filtered | p99 filtered | answers under top 10 (plain / filtered) |\n|---|---:|---:|---:|---:|---:|")
        for mode in modes:
            plain, filtered = times[(mode, False)], times[(mode, True)]
            print(f"| {mode or 'vector (today)'} | {statistics.median(plain):.1f} | {p99(plain):.1f} | "
                  f"{statistics.median(filtered):.1f} | {p99(filtered):.1f} | {short[(mode, False)]} / {short[(mode, True)]} |")


if __name__ == "__main__":
    main()
