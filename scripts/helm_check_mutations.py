#!/usr/bin/env python3
"""Proves that scripts/helm_check.py can fail: each mutation breaks one thing in a scratch copy
of the chart (or of the code it is compared with), and the checker must report that problem.
A mutation the checker does not notice fails this script."""

from __future__ import annotations

import pathlib
import shutil
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import code_facts  # noqa: E402
import helm_check  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
T = "helm/millrace/templates/"

# (file, text to replace, replacement, what the checker must say)
MUTATIONS = [
    ("helm/millrace/values.yaml", "    concurrency: 2\n", "    concurrency: -2\n",
     "values.yaml: services.chunking.concurrency: -2 is less than the minimum of 1"),
    ("helm/tests/bad-values/negative-replicas.yaml", "    replicas: -1", "    replicas: 1", "negative-replicas.yaml: accepted"),
    ("helm/tests/bad-values/unknown-tier.yaml", "# expect: llm.tier:", "# expect: llm.rpm:", "unknown-tier.yaml: rejected, but not for"),
    ("helm/millrace/Chart.yaml", "apiVersion: v2", "apiVersion: v1", "apiVersion is 'v1', not v2"),
    ("helm/millrace/Chart.yaml", 'appVersion: "0.1.0"', 'appVersion: "0.2.0"', "is not the workspace version"),
    (T + "hpa.yaml", "{{- end }}\n{{- end }}\n", "{{- end }}\n", "range never ended"),
    (T + "configmap.yaml", "$root.Values.keyPrefix", "$root.Values.keyPrefx", ".Values.keyPrefx is not in values.yaml"),
    (T + "service.yaml", 'include "millrace.labels"', 'include "millrace.label"', "include of undefined template 'millrace.label'"),
    (T + "grafana-dashboard.yaml", '.Files.Get "files/millrace-dashboard.json"', '.Files.Get "files/dashboard.json"',
     ".Files.Get 'files/dashboard.json': no such file in the chart"),
    ("helm/millrace/values.yaml", "ports: {http: 8062, grpc: 9062}", "ports: {http: 8066, grpc: 9062}",
     "services.metadata.ports is 8066/9062, the service uses 8062/9062"),
    (T + "deployment.yaml", "{path: /readyz, port: http}", "{path: /ready, port: http}", "templates use /ready"),
    ("helm/millrace/values.yaml", "    maxDocumentBytes: 10485760\n    # Any other MILLRACE_* setting of this service (name: string value); names are checked against the code.\n    env: {}",
     "    maxDocumentBytes: 10485760\n    env: {MILLRACE_CHUNK_SIZEE: \"1\"}", "MILLRACE_CHUNK_SIZEE is used by the chart but read by no service"),
    ("helm/millrace/files/millrace-dashboard.json", "{", "{ ", "files/millrace-dashboard.json differs from deploy/grafana/millrace-dashboard.json"),
    (T + "deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "securityContext is not non-root / read-only"),
    (T + "_helpers.tpl", "{{- add .Values.preStopSleepSeconds $deadline .Values.graceMarginSeconds -}}", "{{- add .Values.preStopSleepSeconds 10 -}}",
     "terminationGracePeriodSeconds 15 does not cover preStop 5s + drain 20000ms"),
    (T + "_helpers.tpl", "{{- .stage -}}", '{{- printf "%s-workers" .stage -}}', "millrace.group is not the stage's name"),
    (T + "_helpers.tpl", "ingestion: [chunking, metadata, embeddings, storage, llm-gateway]", "ingestion: [chunking, metadata, embeddings, storage]",
     "ingestion calls ['chunking', 'embeddings', 'llm-gateway', 'metadata', 'storage'] in the code"),
    ("helm/millrace/values.schema.json", '"tier5"', '"tier5", "tier6"', "llm.tier enum is not the gateway's tiers"),
    (T + "configmap.yaml", "{{ $svc.maxDocumentBytes | int64 | quote }}", "{{ $svc.maxDocumentBytes | quote }}",
     "MILLRACE_MAX_DOCUMENT_BYTES='1.048576e+07' is not a plain value"),
    (T + "networkpolicy.yaml", '{{- if eq $name "ingestion" }}', '{{- if eq $name "storage" }}', "storage: reachable from outside the namespace"),
    (T + "configmap.yaml", '  MILLRACE_DATABASE_POOL_SIZE:', '  MILLRACE_FETCH_MAX_BYTES: "1"\n  MILLRACE_DATABASE_POOL_SIZE:',
     "configmap.yaml sets MILLRACE_FETCH_MAX_BYTES for storage, which does not read it"),
    (T + "scaledobject.yaml", "lagCount: {{ $svc.autoscaling.lagCount", "pendingEntriesCount: {{ $svc.autoscaling.lagCount",
     "scaledobject.yaml lacks 'lagCount:'"),
    (T + "deployment.yaml", "              sleep:\n                seconds: {{ $root.Values.preStopSleepSeconds }}",
     "              exec:\n                command: [sh, -c, 'sleep 5']", "preStop must be a sleep action"),
    ("helm/millrace/values.yaml", "      cooldownPeriod: 300\n    pdb: {maxUnavailable: 1}\n    env: {}\n\n  metadata:",
     "      cooldownPeriod: 300\n    pdb: {maxUnavailable: 1}\n    env: {MILLRACE_VISIBILITY_TIMEOUT_MS: soon}\n\n  metadata:",
     "chunking: millrace-chunking --check-config refuses the environment: configuration error: MILLRACE_VISIBILITY_TIMEOUT_MS"),
    (T + "scaledobject.yaml", "pendingEntriesCount: {{ $svc.concurrency", "lagCount: {{ $svc.concurrency",
     "ScaledObject must scale millrace-chunking on one lagCount and one pendingEntriesCount trigger"),
    (T + "_helpers.tpl", '"text-embedding-3-small" 1536', '"text-embedding-3-small" 384',
     "MILLRACE_EMBEDDING_DIM {'embeddings': '384', 'storage': '384'}, expected 1536 for gateway embeddings"),
    (T + "deployment.yaml", "mountPath: /models/all-MiniLM-L6-v2", "mountPath: /models",
     "embeddings: modelVolume must be mounted read-only at /models/all-MiniLM-L6-v2"),
    # Issue 12: the gateway's metrics port, who may reach its API, keys and certificates from Secrets.
    ("helm/millrace/values.yaml", "ports: {http: 8065, grpc: 9065, metrics: 8075}", "ports: {http: 8065, grpc: 9065}",
     "services.llm-gateway.ports.metrics is None, the service serves /metrics on 8075"),
    (T + "networkpolicy.yaml", '        - port: {{ ternary "metrics" "http" (hasKey $svc.ports "metrics") }}', "        - port: http",
     "llm-gateway: the monitoring namespace reaches ports ['http'], want only metrics"),
    (T + "servicemonitor.yaml", '    - port: {{ ternary "metrics" "http" (hasKey $svc.ports "metrics") }}', "    - port: http",
     "llm-gateway: ServiceMonitor must scrape /metrics on metrics"),
    (T + "deployment.yaml", '{{- if has $name (list "ingestion" "llm-gateway") }}\n            - name: MILLRACE_ADMIN_KEY',
     '{{- if has $name (list "ingestion") }}\n            - name: MILLRACE_ADMIN_KEY', "llm-gateway: secret references"),
    (T + "_helpers.tpl", '{{- printf "%s-tls" (include "millrace.name" .) -}}', '{{- printf "%s-grpc" (include "millrace.fullname" .root) -}}',
     "the gRPC identity comes from millrace-grpc, want its own Secret"),
    (T + "configmap.yaml", '(ternary "https" "http" $root.Values.tls.grpc.enabled)', '"http"',
     "MILLRACE_STORAGE_URL='http://millrace-storage:9064', the storage Service is"),
]

# What the code says comes from the binaries (`--describe`, scripts/code_facts.py): these change
# what one binary says, as a change to its code would after a rebuild.
# (service or "*" for all, change to its description, what the checker must say)
FACT_MUTATIONS = [
    ("*", lambda d: d["consumes"] and d["consumes"].update(stream=d["consumes"]["stream"].replace(":stream:", ":streams:")),
     "the chart's stream is 'P:stream:chunking'"),
    ("storage", lambda d: d["peers"].append("MILLRACE_LLM_GATEWAY_URL"), "storage calls ['llm-gateway'] in the code"),
]


def copy_tree(dest: pathlib.Path) -> None:
    for rel in ("helm", "deploy", "lib", "services"):
        shutil.copytree(ROOT / rel, dest / rel, ignore=shutil.ignore_patterns("target", ".git"))
    shutil.copy(ROOT / "Cargo.toml", dest / "Cargo.toml")
    (dest / "scripts").mkdir()
    shutil.copy(ROOT / "scripts/images.py", dest / "scripts/images.py")


def main() -> int:
    missed = 0
    with tempfile.TemporaryDirectory(prefix="helm-mutations-") as tmp:
        pristine = pathlib.Path(tmp) / "pristine"
        copy_tree(pristine)
        for index, (rel, old, new, expected) in enumerate(MUTATIONS, 1):
            work = pathlib.Path(tmp) / f"m{index}"
            shutil.copytree(pristine, work)
            path = work / rel
            text = path.read_text()
            if old not in text:
                print(f"helm-mutations: MISS #{index} {rel}: the text to mutate is gone; update this list", file=sys.stderr)
                missed += 1
                continue
            path.write_text(text.replace(old, new, 1))
            missed += not caught(f"#{index} {rel}", work, expected)
            shutil.rmtree(work)
        describe = code_facts.describe
        for index, (service, change, expected) in enumerate(FACT_MUTATIONS, len(MUTATIONS) + 1):
            def mutated(name, env=None, service=service, change=change):
                description = describe(name, env)
                if service in (name, "*"):
                    change(description)
                return description
            code_facts.describe = mutated
            try:
                missed += not caught(f"#{index} millrace-{service} --describe", pristine, expected)
            finally:
                code_facts.describe = describe
    total = len(MUTATIONS) + len(FACT_MUTATIONS)
    print(f"helm-mutations: {total - missed} of {total} mutations caught")
    return 1 if missed else 0


def caught(what: str, root: pathlib.Path, expected: str) -> bool:
    checker = helm_check.Checker(root)
    for step in (checker.check_schema, checker.check_chart_yaml, checker.check_templates,
                 checker.check_consistency, checker.check_render):
        try:
            step()
        except Exception as err:
            checker.fail(step.__name__, f"{type(err).__name__}: {err}")
    hits = [p for p in checker.problems if expected in p]
    if hits:
        print(f"helm-mutations: caught {what}: {hits[0][:150]}")
    else:
        print(f"helm-mutations: MISS {what}: expected {expected!r}, got {checker.problems}", file=sys.stderr)
    return bool(hits)


if __name__ == "__main__":
    sys.exit(main())
