#!/usr/bin/env python3
"""Offline checks of the Helm chart in helm/millrace (no helm binary, no cluster here).

1. values.yaml validates against values.schema.json, and every file in helm/tests/bad-values/
   (an overlay merged onto values.yaml the way Helm merges -f files) is rejected for the reason
   its first line names (`# expect: <path>: <text in the error>`).
2. Chart.yaml is well formed and its appVersion is the workspace's version.
3. Every template is structurally sound as a Go template: actions and comments closed, quotes
   and parentheses balanced, if/range/with/define/end nested, `include` names defined,
   `.Values` paths present in values.yaml, `.Files.Get` files present. Templates are NOT rendered.
4. The chart agrees with the code, as the binaries describe themselves (scripts/code_facts.py):
   ports, health paths, MILLRACE_* names, stream and consumer group names, the gRPC call graph;
   and with the sources: provider and tier names, and the dashboard/alerts copies.
5. The chart renders with Helm's own engine for several value sets, and each service's binary
   (`--check-config`) accepts the environment its Deployment gets.

Usage: helm_check.py [--root DIR]   (exit 1 and one line per problem on failure)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import pathlib
import re
import sys

import jsonschema
import yaml

import code_facts
import service_env

SERVICES = code_facts.SERVICES


class Checker:
    def __init__(self, root: pathlib.Path):
        self.root = root
        self.chart = root / "helm" / "millrace"
        self.problems: list[str] = []
        self.passed: list[str] = []

    def fail(self, check: str, message: str) -> None:
        self.problems.append(f"{check}: {message}")

    def ok(self, check: str) -> None:
        self.passed.append(check)

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def rust_sources(self, *dirs: str) -> str:
        out = []
        for d in dirs:
            for path in sorted((self.root / d).rglob("*.rs")):
                if "/tests/" in str(path.relative_to(self.root)):
                    continue
                out.append(path.read_text())
        return "\n".join(out)

    # ---------------------------------------------------------------- 1. schema
    def check_schema(self) -> None:
        schema = json.loads((self.chart / "values.schema.json").read_text())
        if schema.get("$schema") != "http://json-schema.org/draft-07/schema#":
            self.fail("schema", "values.schema.json does not declare draft-07")
        jsonschema.Draft7Validator.check_schema(schema)
        validator = jsonschema.Draft7Validator(schema)
        self.values = yaml.safe_load((self.chart / "values.yaml").read_text())
        errors = describe(validator.iter_errors(self.values))
        for error in errors:
            self.fail("schema", f"values.yaml: {error}")
        if not errors:
            self.ok("values.yaml validates against values.schema.json")

        bad_dir = self.root / "helm" / "tests" / "bad-values"
        bad_files = sorted(bad_dir.glob("*.yaml"))
        if len(bad_files) < 5:
            self.fail("schema", f"only {len(bad_files)} broken values files in {bad_dir}")
        for path in bad_files:
            text = path.read_text()
            match = re.match(r"#\s*expect:\s*(.+)", text)
            if not match:
                self.fail("schema", f"{path.name}: first line must be '# expect: <reason>'")
                continue
            expected = match.group(1).strip()
            merged = merge(copy.deepcopy(self.values), yaml.safe_load(text) or {})
            errors = describe(validator.iter_errors(merged))
            if not errors:
                self.fail("schema", f"{path.name}: accepted, expected a rejection with {expected!r}")
            elif not any(expected in e for e in errors):
                self.fail("schema", f"{path.name}: rejected, but not for {expected!r}: {errors}")
        if bad_files:
            self.ok(f"{len(bad_files)} broken values files rejected for their stated reason")

    # ---------------------------------------------------------------- 2. Chart.yaml
    def check_chart_yaml(self) -> None:
        chart = yaml.safe_load((self.chart / "Chart.yaml").read_text())
        semver = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
        before = len(self.problems)
        if not isinstance(chart, dict):
            self.fail("Chart.yaml", "not a mapping")
            return
        if chart.get("apiVersion") != "v2":
            self.fail("Chart.yaml", f"apiVersion is {chart.get('apiVersion')!r}, not v2")
        if chart.get("name") != self.chart.name:
            self.fail("Chart.yaml", f"name {chart.get('name')!r} is not the chart directory {self.chart.name!r}")
        if not re.match(semver, str(chart.get("version", ""))):
            self.fail("Chart.yaml", f"version {chart.get('version')!r} is not SemVer 2")
        if chart.get("type", "application") not in ("application", "library"):
            self.fail("Chart.yaml", f"type {chart.get('type')!r}")
        app = chart.get("appVersion")
        if not isinstance(app, str) or not app:
            self.fail("Chart.yaml", "appVersion missing or not a string (quote it)")
        workspace = re.search(r'\[workspace\.package\][^\[]*?\nversion\s*=\s*"([^"]+)"', self.read("Cargo.toml"), re.S)
        if workspace and app != workspace.group(1):
            self.fail("Chart.yaml", f"appVersion {app!r} is not the workspace version {workspace.group(1)!r}")
        if len(self.problems) == before:
            self.ok("Chart.yaml well formed (apiVersion v2, name, SemVer version, appVersion = workspace version)")

    # ---------------------------------------------------------------- 3. templates
    def check_templates(self) -> None:
        templates = sorted((self.chart / "templates").iterdir())
        self.template_text = {p.name: p.read_text() for p in templates if p.is_file()}
        defined: set[str] = set()
        used: list[tuple[str, str]] = []
        before = len(self.problems)
        for name, text in self.template_text.items():
            actions = parse_actions(name, text, self.fail)
            if actions is None:
                continue
            check_nesting(name, actions, self.fail)
            for line, action in actions:
                defined.update(re.findall(r'^\s*define\s+"([^"]+)"', action))
                used += [(f"{name}:{line}", n) for n in re.findall(r'\b(?:include|template)\s+"([^"]+)"', action)]
                for path in re.findall(r'\.Files\.Get\s+"([^"]+)"', action):
                    if not (self.chart / path).is_file():
                        self.fail("templates", f"{name}:{line}: .Files.Get {path!r}: no such file in the chart")
                for path in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", action):
                    if not has_path(self.values, path.lstrip(".").split(".")):
                        self.fail("templates", f"{name}:{line}: .Values{path} is not in values.yaml")
        if not used or not defined:
            self.fail("templates", "found no define or include: the action scanner is broken")
        for where, name in used:
            if name not in defined:
                self.fail("templates", f"{where}: include of undefined template {name!r}")
        if len(self.problems) == before:
            self.ok(f"{len(self.template_text)} template files structurally sound (not rendered)")

    # ---------------------------------------------------------------- 4. against the code
    def check_consistency(self) -> None:
        before = len(self.problems)
        services = self.values["services"]
        templates = "\n".join(self.template_text.values())

        # What the code says (scripts/code_facts.py, the reading k8s/tests/check.py uses too).
        facts = code_facts.read_code(self.root)
        # Ports: the defaults each service binds (ServiceConfig::load(settings, "name", http, grpc)).
        code_ports = self.code_ports = facts.ports
        self.code_graph: dict[str, set[str]] = {}
        self.code_metrics_ports = facts.metrics_ports
        for svc, (http, grpc) in code_ports.items():
            ports = services[svc]["ports"]
            if (ports["http"], ports["grpc"]) != (http, grpc):
                self.fail("ports", f"services.{svc}.ports is {ports['http']}/{ports['grpc']}, the service uses {http}/{grpc}")
            if ports.get("metrics") != facts.metrics_ports.get(svc):
                self.fail("ports", f"services.{svc}.ports.metrics is {ports.get('metrics')}, the service serves /metrics on "
                                   f"{facts.metrics_ports.get(svc) or 'its http port'}")
        for port_name in ("http", "grpc"):
            if f"name: {port_name}" not in self.template_text["service.yaml"]:
                self.fail("ports", f"service.yaml has no port named {port_name}")
        if self.template_text["service.yaml"].count("appProtocol:") < 2:
            self.fail("ports", "service.yaml ports lack appProtocol")

        # Health paths: what the templates probe and scrape must be routes of the ops router.
        routes = facts.health_paths
        used_paths = set(re.findall(r"path:\s*(/[a-z]+)", templates))
        for path in sorted(used_paths - routes):
            self.fail("health", f"templates use {path}, the services serve only {sorted(routes)}")
        for path in ("/healthz", "/readyz", "/metrics"):
            if path not in used_paths:
                self.fail("health", f"templates never use {path}")

        # MILLRACE_* names: each must be one the code reads (as the binaries describe it).
        self.facts = facts
        known = {f"MILLRACE_{n}" for n in facts.names_read}
        chart_names = set(re.findall(r"\bMILLRACE_[A-Z0-9_]+\b", templates))
        chart_names |= {k for svc in services.values() for k in svc.get("env", {})}
        chart_names |= set(re.findall(r"\bMILLRACE_[A-Z0-9_]+\b", (self.chart / "values.yaml").read_text()))
        # The URL variables come from a helper that builds them from the call graph: add what it builds.
        graph = yaml.safe_load(helper_body(self.template_text["_helpers.tpl"], "millrace.callGraph"))
        chart_names |= {url_var(callee) for callees in graph.values() for callee in callees or []}
        for name in sorted(chart_names - known):
            self.fail("variables", f"{name} is used by the chart but read by no service")
        cm = self.template_text["configmap.yaml"]
        # Per service: what the ConfigMap sets inside `if eq $name "x"` is read by that service (or a shared lib).
        # Each `if eq $name "x"` block runs to the next one (or the free-form env range).
        tail = cm.split("range $key, $value := $svc.env", 1)[0]
        blocks = re.findall(r'if eq \$name "([a-z-]+)"(.*?)(?=if eq \$name "|\Z)', tail, re.S)
        if sorted(b[0] for b in blocks) != sorted(set(SERVICES) - {"chunking"}):
            self.fail("variables", f"per-service blocks of configmap.yaml: {[b[0] for b in blocks]}")
        for svc, block in blocks:
            for name in sorted(set(re.findall(r"\bMILLRACE_[A-Z0-9_]+\b", block)) - self.vars_read_by(svc)):
                self.fail("variables", f"configmap.yaml sets {name} for {svc}, which does not read it")

        # The call graph: the peers' MILLRACE_*_URL each service reads.
        for svc in SERVICES:
            reads = {s for s in SERVICES if url_var(s)[len("MILLRACE_"):] in facts.grpc_urls[svc]}
            self.code_graph[svc] = reads
            if set(graph.get(svc) or []) != reads:
                self.fail("call graph", f"{svc} calls {sorted(reads)} in the code, millrace.callGraph says {sorted(graph.get(svc) or [])}")
        if sorted(graph) != sorted(SERVICES):
            self.fail("call graph", f"millrace.callGraph lists {sorted(graph)}")
        if helper_body(self.template_text["_helpers.tpl"], "millrace.serviceNames").split() != [
            "llm-gateway", "storage", "embeddings", "metadata", "chunking", "ingestion"
        ] or sorted(services) != sorted(SERVICES):
            self.fail("services", "millrace.serviceNames or values.services do not list the six services")

        # Streams and groups: what each stage says it consumes ("<prefix>:stream:<stage>", the group named after the stage).
        stream_helper = helper_body(self.template_text["_helpers.tpl"], "millrace.stream")
        h = re.search(r'printf\s+"([^"]+)"\s+\.prefix\s+\.stage', stream_helper)
        self.stream_format = facts.stream_format
        if not h:
            self.fail("streams", "cannot read the stream name format from millrace.stream")
        else:
            for stage in ("chunking", "x"):
                code_name = facts.stream_format.format(prefix="P", stage=stage)
                chart_name = h.group(1).replace("%s", "P", 1).replace("%s", stage, 1)
                if code_name != chart_name:
                    self.fail("streams", f"the chart's stream is {chart_name!r}, the code's {code_name!r}")
        if not facts.group_is_stage_name:
            self.fail("streams", "a stage no longer names its consumer group after itself")
        if helper_body(self.template_text["_helpers.tpl"], "millrace.group").strip("{}- \n") != ".stage":
            self.fail("streams", "millrace.group is not the stage's name")
        code_stages = facts.stages
        consumers = {svc: consumes["group"] for svc, consumes in facts.consumes.items()}
        chart_stages = helper_body(self.template_text["_helpers.tpl"], "millrace.streamStages").split()
        if sorted(chart_stages) != sorted(code_stages) or any(consumers.get(s) != s for s in chart_stages) or sorted(consumers) != sorted(chart_stages):
            self.fail("streams", f"stream stages: chart {chart_stages}, Stage names {code_stages}, consumers {consumers}")
        if self.values["keyPrefix"] != facts.key_prefix_default:
            self.fail("streams", f"keyPrefix {self.values['keyPrefix']!r} is not the code's default")
        so = self.template_text["scaledobject.yaml"] + helper_body(self.template_text["_helpers.tpl"], "millrace.kedaRedis")
        for needle in ("type: redis-streams", 'include "millrace.stream"', 'include "millrace.group"', "lagCount:"):
            if needle not in so:
                self.fail("streams", f"scaledobject.yaml lacks {needle!r}")

        # Drain: the grace period (as the helper computes it) is longer than the drain deadline.
        v = self.values
        grace = v["preStopSleepSeconds"] + math.ceil(v["shutdownDeadlineMs"] / 1000) + v["graceMarginSeconds"]
        if grace * 1000 <= v["shutdownDeadlineMs"] + v["preStopSleepSeconds"] * 1000:
            self.fail("drain", f"terminationGracePeriodSeconds {grace} does not cover the drain")
        if facts.shutdown_deadline_ms != v["shutdownDeadlineMs"]:
            self.fail("drain", "shutdownDeadlineMs is not the services' default MILLRACE_SHUTDOWN_DEADLINE_MS")

        # Enumerations in the schema: the providers and tiers the code accepts.
        schema = json.loads((self.chart / "values.schema.json").read_text())
        props = schema["properties"]["services"]["properties"]
        for svc, var in (("metadata", "METADATA_PROVIDER"), ("embeddings", "EMBEDDINGS_PROVIDER")):
            src = self.rust_sources(f"services/{svc}/src")
            arms = re.search(rf'get_or\("{var}".*?\{{(.*?)other =>', src, re.S)
            code_enum = set(re.findall(r'^\s*"([a-z]+)" =>', arms.group(1), re.M)) if arms else set()
            if set(props[svc]["properties"]["provider"]["enum"]) - {""} != code_enum:
                self.fail("enums", f"services.{svc}.provider allows {props[svc]['properties']['provider']['enum']}, the code {sorted(code_enum)}")
        tiers = set(re.findall(r'Tier \{ name: "(\w+)"', self.read("services/llm-gateway/src/config/tiers.rs")))
        if set(schema["properties"]["llm"]["properties"]["tier"]["enum"]) - {""} != tiers:
            self.fail("enums", f"llm.tier enum is not the gateway's tiers {sorted(tiers)}")

        # The embedding dimension the services default to, and where the images keep the model.
        dim = facts.reads["storage"].get("EMBEDDING_DIM")
        self.code_embedding_dim = int(dim) if dim else None
        model_dir = re.search(r'^MODEL_DIR = "([^"]+)"', self.read("scripts/images.py"), re.M)
        self.image_model_dir = model_dir.group(1) if model_dir else None
        if not dim or not model_dir:
            self.fail("model", "cannot read storage's default MILLRACE_EMBEDDING_DIM or images.py's MODEL_DIR")

        # The copies the chart packs: identical to deploy/.
        for copy_rel, original in (("files/millrace-dashboard.json", "deploy/grafana/millrace-dashboard.json"),
                                   ("files/alerts.yml", "deploy/prometheus/alerts.yml")):
            if (self.chart / copy_rel).read_bytes() != (self.root / original).read_bytes():
                self.fail("copies", f"helm/millrace/{copy_rel} differs from {original} (cp {original} helm/millrace/{copy_rel})")
        if len(self.problems) == before:
            self.ok("ports, health paths, MILLRACE_* names, call graph, streams/groups, drain, enums and copies match the code")


    # ---------------------------------------------------------------- 5. rendered by Helm's engine
    def vars_read_by(self, svc: str) -> set[str]:
        return {f"MILLRACE_{n}" for n in self.facts.reads[svc]}

    def check_render(self) -> None:
        """Renders the chart with Helm's own Go engine (helm-python-sdk binds Helm v4's SDK through
        a shared library; no helm binary, no cluster) and checks the manifests."""
        import helm_python as helm

        before = len(self.problems)
        scenarios = {
            "defaults": {},
            "llm-and-otel": {
                "jobRetentionSecs": 2592000,
                "llm": {"baseUrl": "https://api.openai.com/v1", "tier": "tier1", "rpm": 400, "tpm": 150000000,
                        "maxDailyCostUsd": 20, "embedModel": "text-embedding-3-small"},
                "otel": {"endpoint": "http://otel-collector.observability:4317", "samplerRatio": 0.25,
                         "resourceAttributes": {"deployment.environment": "prod"}},
                "redis": {"keda": {"passwordSecret": {"name": "redis-auth"}}},
                "networkPolicy": {"ingestionFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}]},
                "services": {"ingestion": {"maxDocumentBytes": 104857600, "env": {"MILLRACE_FETCH_ALLOW_PRIVATE": "false"}}},
            },
            # A chat-only upstream: embeddings stay local (384), no MILLRACE_LLM_EMBED_MODEL.
            "chat-only-upstream": {"llm": {"baseUrl": "https://api.groq.com/openai/v1"}},
            # TLS everywhere, the gRPC certificates from cert-manager, the LLM API open to one namespace.
            "tls-and-llm-api": {
                "tls": {"grpc": {"enabled": True, "certManager": {"enabled": True}},
                        "redis": {"caSecret": {"name": "redis-ca"}, "clientCertSecret": {"name": "redis-client"}},
                        "postgresql": {"caSecret": {"name": "pg-ca"}}},
                "auth": {"keyCacheMs": 500},
                "networkPolicy": {"llmGatewayFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-a"}}}]},
            },
            "model-volume": {
                "llm": {"embeddingDim": 384},
                "services": {"embeddings": {"modelVolume": {"persistentVolumeClaim": {"claimName": "millrace-model"}}}},
            },
            "no-autoscaling-no-operators": {
                "keda": {"enabled": False}, "serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False},
                "grafanaDashboard": {"enabled": False}, "networkPolicy": {"enabled": False},
                "services": {"ingestion": {"autoscaling": {"enabled": False}},
                             "llm-gateway": {"autoscaling": {"enabled": False}, "replicas": 3}},
            },
        }
        with helm.Chart.load(str(self.chart)) as chart:
            for label, overlay in scenarios.items():
                values = merge(copy.deepcopy(self.values), copy.deepcopy(overlay))
                try:
                    chart.validate_schema(overlay)
                    rendered = chart.render(overlay, name="millrace", namespace="rag")
                except Exception as err:
                    self.fail("render", f"{label}: {type(err).__name__}: {err}")
                    continue
                docs = []
                for path, text in rendered.items():
                    if path.endswith("NOTES.txt"):
                        continue
                    try:
                        docs += [d for d in yaml.safe_load_all(text) if d]
                    except yaml.YAMLError as err:
                        self.fail("render", f"{label}: {path} is not YAML: {err}")
                self.check_manifests(label, values, docs)

            # What the schema cannot compare, the chart's `fail` refuses.
            refused = {
                "minReplicas above maxReplicas": (
                    {"services": {"storage": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}},
                    "minReplicas 5 is above maxReplicas 2"),
                "an upstream embedding model of unknown dimension": (
                    {"llm": {"baseUrl": "https://llm.example/v1", "embedModel": "nomic-embed-text"}},
                    'llm.embeddingDim: set it to the dimension of the upstream\'s "nomic-embed-text" vectors'),
            }
            for case, (overlay, reason) in refused.items():
                try:
                    chart.render(overlay, name="millrace")
                    self.fail("render", f"{case} was rendered, expected a failure")
                except Exception as err:
                    if reason not in str(err):
                        self.fail("render", f"{case} failed for another reason: {err}")

            # Helm's own schema validation (the one install/upgrade run) refuses every broken file too.
            for path in sorted((self.root / "helm" / "tests" / "bad-values").glob("*.yaml")):
                try:
                    chart.validate_schema(yaml.safe_load(path.read_text()) or {})
                    self.fail("render", f"Helm's schema validation accepted {path.name}")
                except Exception:
                    pass

        lint = helm.lint(str(self.chart), strict=True, kube_version="v1.31.0")
        for message in lint.get("messages", []):
            if message.get("severity", 0) >= 2:
                self.fail("lint", f"{message.get('path')}: {message.get('error')}")
        for error in lint.get("errors") or []:
            self.fail("lint", str(error))
        if len(self.problems) == before:
            self.ok(f"rendered by Helm {helm.helm_sdk_version()} ({', '.join(scenarios)}); helm lint --strict clean; manifests checked")

    def check_manifests(self, label: str, values: dict, docs: list[dict]) -> None:
        def fail(msg: str) -> None:
            self.fail("render", f"{label}: {msg}")

        by_kind: dict[str, dict[str, dict]] = {}
        for d in docs:
            by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        full = "millrace"
        name = {svc: f"{full}-{svc}" for svc in SERVICES}
        stages = [s for s in SERVICES if s in ("chunking", "metadata", "embeddings", "storage")]
        keda_on = values["keda"]["enabled"]
        cms = by_kind.get("ConfigMap", {})

        for svc in SERVICES:
            sv = values["services"][svc]
            dep = by_kind.get("Deployment", {}).get(name[svc])
            cm = cms.get(name[svc])
            service = by_kind.get("Service", {}).get(name[svc])
            if not dep or not cm or not service or name[svc] not in by_kind.get("PodDisruptionBudget", {}):
                fail(f"{svc}: Deployment, ConfigMap, Service or PodDisruptionBudget missing")
                continue
            data = cm["data"]
            pod = dep["spec"]["template"]
            spec = pod["spec"]
            (container,) = spec["containers"]
            labels = pod["metadata"]["labels"]
            selector = dep["spec"]["selector"]["matchLabels"]
            if any(labels.get(k) != v for k, v in selector.items()) or labels.get("app.kubernetes.io/component") != svc:
                fail(f"{svc}: pod labels do not match the Deployment's selector")
            for other, kind in ((service["spec"]["selector"], "Service"),
                                (by_kind["PodDisruptionBudget"][name[svc]]["spec"]["selector"]["matchLabels"], "PDB")):
                if other != selector:
                    fail(f"{svc}: the {kind} selects {other}, the pods carry {selector}")

            # Ports: the container's, the Service's, the listen addresses and the code's defaults agree.
            cports = {p["name"]: p["containerPort"] for p in container["ports"]}
            http, grpc = self.code_ports[svc]
            metrics = self.code_metrics_ports.get(svc)
            want_ports = {"http": http, "grpc": grpc} | ({"metrics": metrics} if metrics else {})
            if cports != want_ports:
                fail(f"{svc}: container ports {cports}, the service listens on {want_ports}")
            if data.get("MILLRACE_HTTP_ADDR") != f"0.0.0.0:{http}" or data.get("MILLRACE_GRPC_ADDR") != f"0.0.0.0:{grpc}":
                fail(f"{svc}: listen addresses {data.get('MILLRACE_HTTP_ADDR')}/{data.get('MILLRACE_GRPC_ADDR')}")
            if data.get("MILLRACE_METRICS_ADDR", f"0.0.0.0:{metrics}" if metrics else None) != (f"0.0.0.0:{metrics}" if metrics else None):
                fail(f"{svc}: MILLRACE_METRICS_ADDR {data.get('MILLRACE_METRICS_ADDR')}, the metrics port is {metrics}")
            sports = {p["name"]: p for p in service["spec"]["ports"]}
            if set(sports) != set(want_ports) or any(not p.get("appProtocol") or p["targetPort"] != n for n, p in sports.items()):
                fail(f"{svc}: Service ports must be {sorted(want_ports)}, each with appProtocol and its named targetPort")

            # Probes, drain, security.
            probes = {k: container.get(k, {}).get("httpGet", {}) for k in ("startupProbe", "livenessProbe", "readinessProbe")}
            want = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
            for probe, path in want.items():
                if probes[probe].get("path") != path or probes[probe].get("port") != "http":
                    fail(f"{svc}: {probe} is {probes[probe]}, expected {path} on http")
            sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
            deadline_ms = int(data.get("MILLRACE_SHUTDOWN_DEADLINE_MS", "-1"))
            grace = spec.get("terminationGracePeriodSeconds", 0)
            if not sleep or "exec" in container.get("lifecycle", {}).get("preStop", {}):
                fail(f"{svc}: preStop must be a sleep action (the images have no shell)")
            elif grace * 1000 <= deadline_ms + sleep * 1000:
                fail(f"{svc}: terminationGracePeriodSeconds {grace} does not cover preStop {sleep}s + drain {deadline_ms}ms")
            sc = container.get("securityContext", {})
            psc = spec.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) or sc.get("readOnlyRootFilesystem") is not True \
                    or sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities", {}).get("drop") != ["ALL"] \
                    or (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                fail(f"{svc}: securityContext is not non-root / read-only / no escalation / drop ALL / RuntimeDefault")
            if not container.get("resources", {}).get("requests"):
                fail(f"{svc}: no resource requests")
            autoscaled = sv["autoscaling"]["enabled"] and (svc not in stages or keda_on)
            if autoscaled == ("replicas" in dep["spec"]):
                fail(f"{svc}: replicas {'set although an autoscaler owns them' if autoscaled else 'missing'}")

            # Environment: secrets by reference, and only variables this service reads.
            env = {e["name"]: e for e in container.get("env", [])}
            refs = {n: e["valueFrom"]["secretKeyRef"] for n, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
            expected_refs = {"MILLRACE_REDIS_URL": values["redis"]["existingSecret"]}
            # PostgreSQL: storage's chunks, and the API keys ingestion and the gateway look up.
            if svc in ("storage", "ingestion", "llm-gateway"):
                expected_refs["MILLRACE_DATABASE_URL"] = values["postgresql"]["existingSecret"]
            if svc in ("ingestion", "llm-gateway"):
                expected_refs["MILLRACE_ADMIN_KEY"] = values["auth"]["adminKeySecret"]
            if svc == "llm-gateway" and values["llm"]["baseUrl"]:
                expected_refs["MILLRACE_LLM_API_KEY"] = values["llm"]["existingSecret"]
            if refs != expected_refs:
                fail(f"{svc}: secret references {refs}, expected {expected_refs}")
            if any(isinstance(v, str) and re.search(r"(redis|postgres(ql)?)://|sk-", v) for v in data.values()):
                fail(f"{svc}: a ConfigMap value looks like a secret")
            read = self.vars_read_by(svc)
            for var in sorted((set(data) | set(env)) - read):
                if var.startswith("MILLRACE_"):
                    fail(f"{svc}: sets {var}, which {svc} does not read")
            for var, value in data.items():
                if not isinstance(value, str) or re.fullmatch(r"-?\d+(\.\d+)?e[+-]\d+", value):
                    fail(f"{svc}: {var}={value!r} is not a plain value the service parses")
            refused = service_env.check_config(svc, service_env.container_env(container, cms))
            if refused:
                fail(f"{svc}: millrace-{svc} --check-config refuses the environment: {refused}")
            otel = values["otel"]["endpoint"]
            if (env.get("OTEL_EXPORTER_OTLP_ENDPOINT", {}).get("value") or "") != otel:
                fail(f"{svc}: OTEL_EXPORTER_OTLP_ENDPOINT is not otel.endpoint")
            # gRPC addresses of the callees: the callee's Service and grpc port (https:// over TLS).
            scheme = "https" if values["tls"]["grpc"]["enabled"] else "http"
            for callee in self.code_graph[svc]:
                var = url_var(callee)
                if data.get(var) != f"{scheme}://{name[callee]}:{self.code_ports[callee][1]}":
                    fail(f"{svc}: {var}={data.get(var)!r}, the {callee} Service is {name[callee]}:{self.code_ports[callee][1]}")
            if svc in stages and data.get("MILLRACE_CONCURRENCY") != str(sv["concurrency"]):
                fail(f"{svc}: MILLRACE_CONCURRENCY is not services.{svc}.concurrency")
            self.check_tls(label, values, svc, name[svc], data, container, spec, by_kind)
        gw = cms.get(name["llm-gateway"], {}).get("data", {})
        gwv = values["services"]["llm-gateway"]
        expected_replicas = gwv["autoscaling"]["maxReplicas"] if gwv["autoscaling"]["enabled"] else gwv["replicas"]
        if gw.get("MILLRACE_LLM_REPLICAS") != str(expected_replicas):
            fail(f"llm-gateway: MILLRACE_LLM_REPLICAS {gw.get('MILLRACE_LLM_REPLICAS')} is not its most replicas {expected_replicas}")

        # The vectors embeddings make are the ones storage's table holds: 384 (the code's default,
        # the local model's) unless they come from the upstream, whose text-embedding-3-small makes 1536.
        emb = cms.get(name["embeddings"], {}).get("data", {})
        dims = {svc: cms.get(name[svc], {}).get("data", {}).get("MILLRACE_EMBEDDING_DIM") for svc in ("embeddings", "storage")}
        expected_dim = values["llm"]["embeddingDim"] or (
            self.code_embedding_dim if emb.get("MILLRACE_EMBEDDINGS_PROVIDER") != "gateway"
            else {"text-embedding-3-small": 1536}.get(values["llm"]["embedModel"]))
        if set(dims.values()) != {str(expected_dim)}:
            fail(f"MILLRACE_EMBEDDING_DIM {dims}, expected {expected_dim} for {emb.get('MILLRACE_EMBEDDINGS_PROVIDER')} embeddings")
        # The model volume, when given, is mounted read-only where the image looks for the model.
        emb_pod = by_kind.get("Deployment", {}).get(name["embeddings"], {}).get("spec", {}).get("template", {}).get("spec", {})
        model_mounts = [m for c in emb_pod.get("containers", []) for m in c.get("volumeMounts", []) if m["name"] == "model"]
        model_volumes = [v for v in emb_pod.get("volumes", []) if v["name"] == "model"]
        volume_source = values["services"]["embeddings"].get("modelVolume")
        if volume_source:
            if model_mounts != [{"name": "model", "mountPath": f"/{self.image_model_dir}", "readOnly": True}] \
                    or model_volumes != [{"name": "model", **volume_source}]:
                fail(f"embeddings: modelVolume must be mounted read-only at /{self.image_model_dir}: {model_mounts} {model_volumes}")
        elif model_mounts or model_volumes:
            fail("embeddings: a model volume although services.embeddings.modelVolume is null")

        # KEDA: one ScaledObject per stream stage, on the stage's real stream and group.
        scaled = by_kind.get("ScaledObject", {})
        want_scaled = {name[s] for s in stages if keda_on and values["services"][s]["autoscaling"]["enabled"]}
        if set(scaled) != want_scaled:
            fail(f"ScaledObjects {sorted(scaled)}, expected {sorted(want_scaled)}")
        for stage in stages:
            so = scaled.get(name[stage])
            if not so:
                continue
            # One trigger on the lag, one on the entries in flight (pending / the stage's concurrency).
            prefix = cms[name[stage]]["data"]["MILLRACE_KEY_PREFIX"]
            stream = self.stream_format.format(prefix=prefix, stage=stage)
            triggers = so["spec"]["triggers"]
            modes = sorted(k for t in triggers for k in ("lagCount", "pendingEntriesCount") if k in t["metadata"])
            if so["spec"]["scaleTargetRef"]["name"] != name[stage] or modes != ["lagCount", "pendingEntriesCount"]:
                fail(f"{stage}: ScaledObject must scale {name[stage]} on one lagCount and one pendingEntriesCount trigger, has {triggers}")
            for trigger in triggers:
                meta = trigger["metadata"]
                if trigger["type"] != "redis-streams" or meta.get("stream") != stream or meta.get("consumerGroup") != stage:
                    fail(f"{stage}: ScaledObject trigger {trigger}, expected redis-streams on {stream!r} group {stage!r}")
                if meta.get("pendingEntriesCount", cms[name[stage]]["data"]["MILLRACE_CONCURRENCY"]) != cms[name[stage]]["data"]["MILLRACE_CONCURRENCY"]:
                    fail(f"{stage}: pendingEntriesCount {meta['pendingEntriesCount']} is not the stage's MILLRACE_CONCURRENCY")
                if values["redis"]["keda"]["passwordSecret"]["name"] and "authenticationRef" not in trigger:
                    fail(f"{stage}: no authenticationRef although redis.keda.passwordSecret is set")

        hpas = by_kind.get("HorizontalPodAutoscaler", {})
        want_hpa = {name[s] for s in ("ingestion", "llm-gateway") if values["services"][s]["autoscaling"]["enabled"]}
        if set(hpas) != want_hpa:
            fail(f"HPAs {sorted(hpas)}, expected {sorted(want_hpa)}")
        for hpa in hpas.values():
            if hpa["spec"]["metrics"][0]["resource"]["name"] != "cpu":
                fail(f"{hpa['metadata']['name']}: the HPA does not scale on CPU")

        # Monitoring.
        monitors = by_kind.get("ServiceMonitor", {})
        if values["serviceMonitor"]["enabled"]:
            for svc in SERVICES:
                sm = monitors.get(name[svc])
                service = by_kind["Service"][name[svc]]
                port = "metrics" if self.code_metrics_ports.get(svc) else "http"
                if not sm or sm["spec"]["endpoints"][0].get("port") != port or sm["spec"]["endpoints"][0].get("path") != "/metrics" \
                        or service["metadata"]["labels"].get(sm["spec"].get("jobLabel")) != svc \
                        or any(service["metadata"]["labels"].get(k) != v for k, v in sm["spec"]["selector"]["matchLabels"].items()):
                    fail(f"{svc}: ServiceMonitor must scrape /metrics on {port}, select the Service, and make job={svc}")
        elif monitors:
            fail("ServiceMonitors rendered although disabled")
        dashboards = [d for n, d in cms.items() if n.endswith("-dashboard")]
        if values["grafanaDashboard"]["enabled"]:
            original = json.loads(self.read("deploy/grafana/millrace-dashboard.json"))
            if len(dashboards) != 1 or json.loads(dashboards[0]["data"]["millrace-dashboard.json"]) != original \
                    or dashboards[0]["metadata"]["labels"].get("grafana_dashboard") != "1":
                fail("the dashboard ConfigMap is not deploy/grafana/millrace-dashboard.json with the sidecar's label")
        rules = by_kind.get("PrometheusRule", {})
        if values["prometheusRule"]["enabled"]:
            if len(rules) != 1 or next(iter(rules.values()))["spec"] != yaml.safe_load(self.read("deploy/prometheus/alerts.yml")):
                fail("the PrometheusRule is not deploy/prometheus/alerts.yml")

        # NetworkPolicies: callers from the code; only ingestion open beyond the namespace.
        policies = by_kind.get("NetworkPolicy", {})
        if values["networkPolicy"]["enabled"]:
            for svc in SERVICES:
                pol = policies.get(name[svc])
                if not pol:
                    fail(f"{svc}: no NetworkPolicy")
                    continue
                callers, outside, monitored = set(), False, set()
                # Prometheus scrapes the metrics port, or the http port of a service without one.
                scrape = "metrics" if self.code_metrics_ports.get(svc) else "http"
                for rule in pol["spec"].get("ingress", []):
                    ports = {p["port"] for p in rule.get("ports", [])}
                    peers = rule.get("from")
                    if peers is None:
                        outside = True
                        continue
                    if svc == "llm-gateway" and ports == {"http"} and peers == values["networkPolicy"]["llmGatewayFrom"]:
                        continue  # the OpenAI-compatible API, open to the peers the values name
                    for peer in peers:
                        if "podSelector" in peer and "namespaceSelector" not in peer:
                            callers.add(peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component"))
                        elif peer.get("namespaceSelector", {}).get("matchLabels") == values["networkPolicy"]["metricsNamespaceSelector"]:
                            monitored |= ports
                        else:
                            outside = True
                if monitored != {scrape}:
                    fail(f"{svc}: the monitoring namespace reaches ports {sorted(monitored)}, want only {scrape}")
                expected = {c for c, callees in self.code_graph.items() if svc in callees}
                if callers != expected:
                    fail(f"{svc}: NetworkPolicy admits {sorted(callers)}, the code's callers are {sorted(expected)}")
                if outside != (svc == "ingestion"):
                    fail(f"{svc}: {'reachable' if outside else 'not reachable'} from outside the namespace")
        elif policies:
            fail("NetworkPolicies rendered although disabled")


    def check_tls(self, label: str, values: dict, svc: str, full: str, data: dict, container: dict, spec: dict, by_kind: dict) -> None:
        """Every certificate or key file a setting names lies in a Secret mounted read-only there;
        gRPC TLS gives each service its own Secret (and a Certificate when cert-manager issues it),
        mutual TLS on every service but ingestion."""
        def fail(msg: str) -> None:
            self.fail("render", f"{label}: {svc}: {msg}")

        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for var, path in data.items():
            if not var.endswith("_FILE") or not var.startswith("MILLRACE_"):
                continue
            mount = mounts.get(str(pathlib.PurePosixPath(path).parent))
            secret = volumes.get(mount["name"], {}).get("secret") if mount else None
            if not mount or not secret or mount.get("readOnly") is not True:
                fail(f"{var}={path} is not in a Secret mounted read-only")
        grpc = values["tls"]["grpc"]
        if grpc["enabled"]:
            mount = mounts.get("/etc/millrace/tls/grpc")
            secret = volumes.get(mount["name"], {}).get("secret", {}).get("secretName") if mount else None
            if secret != f"{full}-tls":
                fail(f"the gRPC identity comes from {secret}, want its own Secret {full}-tls")
            want_auth = "none" if svc == "ingestion" else grpc["clientAuth"]
            if data.get("MILLRACE_GRPC_TLS_CLIENT_AUTH") != want_auth:
                fail(f"MILLRACE_GRPC_TLS_CLIENT_AUTH is {data.get('MILLRACE_GRPC_TLS_CLIENT_AUTH')}, want {want_auth}")
            certificate = by_kind.get("Certificate", {}).get(f"{full}-tls")
            if grpc["certManager"]["enabled"] != bool(certificate):
                fail("a Certificate exactly when tls.grpc.certManager.enabled")
            elif certificate and (certificate["spec"]["secretName"] != secret or full not in certificate["spec"].get("dnsNames", [])
                                  or not {"server auth", "client auth"} <= set(certificate["spec"].get("usages", []))):
                fail(f"the Certificate must fill {secret}, name the Service {full} and serve server and client auth")
        elif any(var.startswith("MILLRACE_GRPC_TLS_") for var in data):
            fail("gRPC TLS settings although tls.grpc.enabled is false")


# ---------------------------------------------------------------- helpers
def describe(errors) -> list[str]:
    """Each schema error as 'path: message', the path dotted from the values root."""
    out = []
    for error in errors:
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        out.append(f"{path}: {error.message}")
        for sub in error.context or []:
            out.append(f"{path}.{'.'.join(str(p) for p in sub.absolute_path)}: {sub.message}".replace("..", "."))
    return out


def merge(base, overlay):
    """Helm's merge of a -f file onto values.yaml: maps merge, null deletes a key, anything else replaces."""
    if not isinstance(base, dict) or not isinstance(overlay, dict):
        return overlay
    for key, value in overlay.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = merge(base[key], value)
        else:
            base[key] = value
    return base


def has_path(values, parts) -> bool:
    node = values
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def url_var(service: str) -> str:
    return "MILLRACE_" + service.upper().replace("-", "_") + "_URL"


def helper_body(text: str, name: str) -> str:
    m = re.search(r'\{\{-?\s*define\s+"' + re.escape(name) + r'"\s*-?\}\}(.*?)\{\{-?\s*end\s*-?\}\}', text, re.S)
    return m.group(1).strip() if m else ""


def parse_actions(name: str, text: str, fail):
    """The {{ }} actions of a template with their line numbers, comments dropped; None on a lexical error."""
    actions = []
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            break
        line = text.count("\n", 0, start) + 1
        inner = start + 2
        if text.startswith("- ", inner) or text.startswith("-\t", inner) or text.startswith("-\n", inner):
            inner += 1
        body_start = inner
        stripped = text[inner:].lstrip()
        if stripped.startswith("/*"):
            close = text.find("*/", inner)
            if close < 0:
                fail("templates", f"{name}:{line}: comment never closed")
                return None
            after = text[close + 2:]
            m = re.match(r"\s*-?\}\}", after) if after.lstrip().startswith("-") else re.match(r"\}\}", after)
            if not m:
                fail("templates", f"{name}:{line}: a comment must end with */}} or */ -}}")
                return None
            pos = close + 2 + m.end()
            continue
        # Scan to the closing }} outside string literals.
        i, quote = body_start, None
        while i < len(text):
            c = text[i]
            if quote:
                if c == "\\" and quote == '"':
                    i += 2
                    continue
                if c == quote:
                    quote = None
                elif c == "\n" and quote == '"':
                    fail("templates", f"{name}:{line}: string literal not closed on its line")
                    return None
            elif c in "\"`'":
                quote = c
            elif text.startswith("}}", i):
                break
            i += 1
        else:
            fail("templates", f"{name}:{line}: action never closed")
            return None
        body = text[body_start:i]
        body = body[:-1] if body.endswith(" -") or body.endswith("\t-") else body
        bare = re.sub(r'"(\\.|[^"\\])*"|`[^`]*`|\'(\\.|[^\'\\])*\'', '""', body)
        if bare.count("(") != bare.count(")"):
            fail("templates", f"{name}:{line}: unbalanced parentheses in {{{{{body.strip()}}}}}")
        if not bare.strip():
            fail("templates", f"{name}:{line}: empty action")
        actions.append((line, body.strip()))
        pos = i + 2
    # A stray }} outside any action is usually a typo'd opening.
    return actions


def check_nesting(name: str, actions, fail) -> None:
    stack: list[tuple[str, int]] = []
    for line, action in actions:
        word = re.match(r"(\w+)", action)
        word = word.group(1) if word else ""
        if word in ("if", "range", "with", "define", "block"):
            if word == "define" and stack:
                fail("templates", f"{name}:{line}: define inside {stack[-1][0]} (line {stack[-1][1]})")
            stack.append((word, line))
        elif word == "else":
            if not stack or stack[-1][0] not in ("if", "range", "with"):
                fail("templates", f"{name}:{line}: else outside if/range/with")
        elif word == "end":
            if not stack:
                fail("templates", f"{name}:{line}: end without an opening if/range/with/define")
            else:
                stack.pop()
    for word, line in stack:
        fail("templates", f"{name}:{line}: {word} never ended")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    checker = Checker(args.root.resolve())
    for step in (checker.check_schema, checker.check_chart_yaml, checker.check_templates, checker.check_consistency,
                 checker.check_render):
        try:
            step()
        except Exception as err:  # a check that cannot run is a failure, with its reason
            checker.fail(step.__name__, f"{type(err).__name__}: {err}")
    for line in checker.passed:
        print(f"helm-check: ok   {line}")
    sys.stdout.flush()
    for line in checker.problems:
        print(f"helm-check: FAIL {line}", file=sys.stderr)
    return 1 if checker.problems else 0


if __name__ == "__main__":
    sys.exit(main())
