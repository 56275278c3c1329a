#!/usr/bin/env python3
"""Ingest the bundled examples through the job API, show progress, then run a sample search.

Standard library only, so `make run` needs nothing beyond python3. (The `millrace` command
line replaces this in a later issue.)

usage: scripts/demo.py [--url URL] [--query TEXT] [DIR]
"""
import argparse
import base64
import json
import pathlib
import sys
import time
import urllib.error
import urllib.request

CONTENT_TYPES = {
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, {"error": {"code": "http", "message": raw.decode(errors="replace")}}
    except urllib.error.URLError as err:
        sys.exit(f"demo: cannot reach {url}: {err.reason}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8060")
    parser.add_argument("--query", default="how did a mill use the rise and fall of the sea")
    parser.add_argument("dir", nargs="?", default=str(pathlib.Path(__file__).resolve().parent.parent / "examples"))
    args = parser.parse_args()

    files = sorted(p for p in pathlib.Path(args.dir).iterdir() if p.suffix in CONTENT_TYPES and p.name != "README.md")
    if not files:
        sys.exit(f"demo: no documents in {args.dir}")
    jobs = {}
    for path in files:
        document = {
            "document_id": path.name,
            "content_type": CONTENT_TYPES[path.suffix],
            "source": f"examples/{path.name}",
            "metadata": {"collection": "examples"},
        }
        if CONTENT_TYPES[path.suffix].startswith("text/"):
            document["content"] = path.read_text(encoding="utf-8")
        else:
            document["content_base64"] = base64.b64encode(path.read_bytes()).decode()
        status, body = call("POST", f"{args.url}/v1/ingest", document)
        if status not in (200, 202):
            sys.exit(f"demo: {path.name} refused with {status}: {body['error']['message']}")
        jobs[body["job_id"]] = path.name
        print(f"submitted {path.name:40} job {body['job_id']}")

    started = time.monotonic()
    last = {}
    failed = []
    while jobs.keys() - last.keys() or any(j["status"] not in ("completed", "failed", "cancelled") for j in last.values()):
        for job_id, name in jobs.items():
            if last.get(job_id, {}).get("status") in ("completed", "failed", "cancelled"):
                continue
            _, job = call("GET", f"{args.url}/v1/jobs/{job_id}")
            line = (job["status"], job["progress"], job["chunks"]["stored"])
            if line != tuple(last.get(job_id, {}).get(k) for k in ("status", "progress", "stored")):
                c = job["chunks"]
                print(f"[{job['progress']:3}%] {name:40} {job['status']:9} chunks {c['stored']}/{c['total']} stored")
            last[job_id] = {"status": job["status"], "progress": job["progress"], "stored": job["chunks"]["stored"]}
            if job["status"] == "failed":
                failed.append(f"{name}: {job['error']['stage']}: {job['error']['message']}")
        if time.monotonic() - started > 300:
            sys.exit("demo: jobs did not finish within 300 s")
        time.sleep(0.3)

    print(f"\n{len(jobs) - len(failed)} of {len(jobs)} documents ingested in {time.monotonic() - started:.1f} s")
    for line in failed:
        print(f"FAILED {line}")

    status, body = call("POST", f"{args.url}/v1/search", {"query": args.query, "top_k": 3})
    if status != 200:
        sys.exit(f"demo: search failed with {status}: {body}")
    print(f'\nsearch: "{args.query}"')
    for hit in body["results"]:
        text = " ".join(hit["text"].split())
        where = " > ".join(hit["metadata"].get("heading_path") or [])
        page = hit["metadata"].get("page_start")
        place = f" [{where}]" if where else ""
        place += f" (page {page})" if page else ""
        print(f"  {hit['score']:.3f}  {hit['document_id']}#{hit['chunk_index']}{place}: {text[:160]}")
    if not body["results"]:
        sys.exit("demo: the search found nothing")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
