#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in k8s/ (run by scripts/k8s-test.sh, part of
`make test`). No cluster is needed.

1. Every overlay renders with `kubectl kustomize`.
2. Every core resource validates (strict: no unknown fields) against the Kubernetes
   OpenAPI schemas of KUBERNETES_VERSION, with kubernetes-validate.
3. The custom resources (KEDA ScaledObject and TriggerAuthentication, ServiceMonitor,
   PrometheusRule) and the Grafana dashboard ConfigMap validate against the JSON schemas in
   k8s/tests/schemas, which require the fields millrace relies on and refuse unknown ones.
4. The manifests agree with the code, as each service's binary describes itself
   (`--describe`, run by scripts/code_facts.py, so they cannot drift): default ports, health
   and metrics paths, the drain deadline (`SHUTDOWN_DEADLINE_MS` default), every MILLRACE_*
   name set is one the code reads, the gRPC call graph (each peer URL a service reads is set to
   the callee's Service and allowed by the callee's NetworkPolicy, and no policy admits a
   caller the code does not have), the required settings, the stream and consumer-group names
   KEDA watches.
5. Each service's binary (`--check-config`, from `cargo build --workspace --bins`) accepts the
   environment its Deployment gets, Secrets replaced by stand-ins.

Exit status 1 with one line per problem.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import code_facts  # noqa: E402  (shared with scripts/helm_check.py)
import service_env  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SCHEMAS = K8S / "tests/schemas"
KUBERNETES_VERSION = "1.31.0"
# What users apply, and test-only overlays that render the optional components.
TARGETS = ["overlays/dev", "overlays/prod", "tests/overlays/embedding-model", "tests/overlays/tls"]
DASHBOARD_CONFIGMAP = "millrace-grafana-dashboard"
SERVICES = code_facts.SERVICES
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("cert-manager.io/v1", "Certificate"): "certificate.json",
    ("cert-manager.io/v1", "Issuer"): "issuer.json",
}
# Namespaces labelled so may call the llm-gateway's OpenAI-compatible API (components/llm-api).
LLM_API_NAMESPACE_LABEL = {"millrace.io/llm-api": "allowed"}


class Problems(list):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


# --- what the manifests say ---------------------------------------------------------------


def render(target: str) -> list[dict]:
    # scripts/k8s-test.sh picks the renderer: `kubectl kustomize` or a standalone `kustomize build`.
    command = shlex.split(os.environ.get("MILLRACE_KUSTOMIZE", "kubectl kustomize"))
    out = subprocess.run([*command, str(K8S / target)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} {target} failed: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def name_of(resource: dict) -> str:
    return f"{resource['kind']}/{resource['metadata']['name']}"


def validate_schemas(target: str, resources: list[dict], problems: Problems) -> None:
    for resource in resources:
        where = f"{target} {name_of(resource)}"
        key = (resource["apiVersion"], resource["kind"])
        if key in CUSTOM_SCHEMAS:
            schema = json.loads((SCHEMAS / CUSTOM_SCHEMAS[key]).read_text())
            for error in jsonschema.Draft202012Validator(schema).iter_errors(resource):
                problems.add(where, f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}")
            continue
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.add(where, f"no schema for {key} in Kubernetes {KUBERNETES_VERSION} nor in k8s/tests/schemas")
        except kubernetes_validate.ValidationError as error:
            path = "/".join(map(str, error.path)) if hasattr(error, "path") else ""
            problems.add(where, f"{path}: {error.message}")
        if resource["kind"] == "ConfigMap" and (
            resource["metadata"]["name"] == DASHBOARD_CONFIGMAP or "grafana_dashboard" in resource["metadata"].get("labels", {})
        ):
            schema = json.loads((SCHEMAS / "grafana-dashboard-configmap.json").read_text())
            for error in jsonschema.Draft202012Validator(schema).iter_errors(resource):
                problems.add(where, f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}")
            for key, text in resource.get("data", {}).items():
                try:
                    dashboard = json.loads(text)
                except json.JSONDecodeError as error:
                    problems.add(where, f"{key} is not JSON: {error}")
                    continue
                if not dashboard.get("title") or not dashboard.get("panels"):
                    problems.add(where, f"{key} is not a dashboard (no title or no panels)")


def by_kind(resources: list[dict], kind: str) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects pods with `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def ingress_peers(policies: dict[str, dict], pod_labels: dict, port: str):
    """The `from` list of each ingress rule on `port` (a rule naming no ports covers every port)
    of the policies selecting these pods; None for a rule without `from`, which admits anyone."""
    for policy in policies.values():
        if not selects(policy["spec"].get("podSelector", {}), pod_labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = [p.get("port") for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            yield rule.get("from")


def namespaces_admitted(policies: dict[str, dict], pod_labels: dict, port: str) -> list[dict]:
    """The namespace selectors (of peers from other namespaces) that some policy selecting these
    pods admits on `port`; a rule without `from` admits everything ({})."""
    admitted = []
    for peers in ingress_peers(policies, pod_labels, port):
        if peers is None:
            admitted.append({})
            continue
        admitted += [p.get("namespaceSelector", {}).get("matchLabels", {}) for p in peers if "namespaceSelector" in p or "ipBlock" in p]
    return admitted


def policy_allows(policies: dict[str, dict], target_pod_labels: dict, source: str, port: str) -> bool:
    """Whether some NetworkPolicy selecting the target admits pods of `source` on `port`."""
    for peers in ingress_peers(policies, target_pod_labels, port):
        if peers is None:
            return True
        for peer in peers:
            labels = peer.get("podSelector", {}).get("matchLabels")
            if labels == {"app.kubernetes.io/name": f"millrace-{source}"} and "namespaceSelector" not in peer:
                return True
    return False


def grpc_callers_allowed(policies: dict[str, dict], service: str) -> set[str]:
    """The millrace services a NetworkPolicy names as callers of `service`'s grpc port."""
    callers = set()
    for policy in policies.values():
        if policy["spec"].get("podSelector", {}).get("matchLabels") != {"app.kubernetes.io/name": f"millrace-{service}"}:
            continue
        for rule in policy["spec"].get("ingress", []):
            if "grpc" not in [p.get("port") for p in rule.get("ports", [])]:
                continue
            for peer in rule.get("from", []):
                name = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name", "")
                if name.startswith("millrace-"):
                    callers.add(name.removeprefix("millrace-"))
    return callers


def check_consistency(target: str, resources: list[dict], code: code_facts.Code, problems: Problems) -> None:
    deployments = by_kind(resources, "Deployment")
    services = by_kind(resources, "Service")
    configmaps = by_kind(resources, "ConfigMap")
    policies = by_kind(resources, "NetworkPolicy")
    hpas = by_kind(resources, "HorizontalPodAutoscaler")
    scaled = by_kind(resources, "ScaledObject")
    auths = by_kind(resources, "TriggerAuthentication")
    monitors = by_kind(resources, "ServiceMonitor")

    if {"/healthz", "/readyz", "/metrics"} - code.health_paths:
        problems.add("code", f"lib/common/src/server.rs no longer routes {sorted({'/healthz', '/readyz', '/metrics'} - code.health_paths)}")

    envs = {}
    for service in SERVICES:
        name = f"millrace-{service}"
        where = f"{target} {service}"
        deployment = deployments.get(name)
        if deployment is None:
            problems.add(where, f"no Deployment {name}")
            continue
        http, grpc = code.ports[service]
        metrics = code.metrics_ports.get(service)
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        want_ports = {"http": http, "grpc": grpc} | ({"metrics": metrics} if metrics else {})
        if ports != want_ports:
            problems.add(where, f"container ports {ports}, the code listens on {want_ports}")
        svc = services.get(name)
        if svc is None:
            problems.add(where, f"no Service {name}")
        else:
            sports = {p["name"]: (p["port"], p.get("targetPort"), p.get("appProtocol")) for p in svc["spec"]["ports"]}
            want = {"http": (http, "http", "http"), "grpc": (grpc, "grpc", "grpc")}
            if metrics:
                want["metrics"] = (metrics, "metrics", "http")
            if sports != want:
                problems.add(where, f"Service ports {sports}, want {want}")
            if svc["spec"]["selector"] != deployment["spec"]["selector"]["matchLabels"]:
                problems.add(where, "the Service's selector is not the Deployment's")

        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or get.get("port") not in ("http", http):
                problems.add(where, f"{probe} is {get or 'missing'}, want GET {path} on the http port")

        sc = container.get("securityContext", {})
        psc = pod.get("securityContext", {})
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problems.add(where, "runAsNonRoot is not set")
        if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
            problems.add(where, "needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.add(where, "capabilities must drop ALL")
        if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.add(where, "seccompProfile must be RuntimeDefault")

        env = service_env.container_env(container, configmaps)
        envs[service] = env
        # The service itself accepts this environment (values, not only names).
        refused = service_env.check_config(service, env)
        if refused:
            problems.add(where, f"millrace-{service} --check-config refuses the environment: {refused}")
        if pod.get("enableServiceLinks") is not False:
            # Else every Service named millrace-* adds MILLRACE_<NAME>_PORT=tcp://… variables.
            problems.add(where, "enableServiceLinks must be false (Service links put MILLRACE_*_PORT variables in the environment)")
        # A model volume is mounted, read-only, where the service reads the model from.
        for mount in container.get("volumeMounts", []):
            if mount["name"] == "model" and (mount["mountPath"] != env.get("MILLRACE_EMBEDDING_MODEL_DIR") or mount.get("readOnly") is not True):
                problems.add(where, f"the model volume is mounted at {mount['mountPath']} (read-only: {mount.get('readOnly', False)}); "
                                    f"MILLRACE_EMBEDDING_MODEL_DIR is {env.get('MILLRACE_EMBEDDING_MODEL_DIR')}")
        deadline = int(env.get("MILLRACE_SHUTDOWN_DEADLINE_MS") or code.shutdown_deadline_ms)
        sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
        if not isinstance(sleep, int) or sleep <= 0:
            problems.add(where, "needs a preStop sleep (the images have no shell)")
            sleep = 0
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace * 1000 <= sleep * 1000 + deadline:
            problems.add(where, f"terminationGracePeriodSeconds {grace} does not cover the preStop sleep ({sleep} s) and the drain deadline ({deadline} ms)")

        for var in env:
            if not var.startswith("MILLRACE_"):
                continue
            short = var.removeprefix("MILLRACE_")
            known = short in code.names_read or any(
                short.startswith(p) and short[len(p):] in code.name_suffixes for p in code.name_prefixes
            )
            if not known:
                problems.add(where, f"sets {var}, which no code reads")
        for short in code.required[service]:
            if f"MILLRACE_{short}" not in env:
                problems.add(where, f"the code requires MILLRACE_{short}; the Deployment does not set it")
        if "OTEL_EXPORTER_OTLP_ENDPOINT" not in env:
            problems.add(where, "OTEL_EXPORTER_OTLP_ENDPOINT is not wired")

        # The gRPC call graph: every peer URL the service reads points at that peer's Service
        # and the peer's NetworkPolicy lets this service in.
        for url_var in sorted(code.grpc_urls[service]):
            callee = url_var.removesuffix("_URL").lower().replace("_", "-")
            if callee not in SERVICES:
                problems.add(where, f"reads {url_var}, which names no known service")
                continue
            # Over TLS (a CA to verify the callee with) the peers are called over https://.
            scheme = "https" if env.get("MILLRACE_GRPC_TLS_CA_FILE") else "http"
            want = f"{scheme}://millrace-{callee}:{code.ports[callee][1]}"
            if env.get(f"MILLRACE_{url_var}") != want:
                problems.add(where, f"MILLRACE_{url_var} is {env.get(f'MILLRACE_{url_var}')!r}, want {want!r}")
            callee_labels = deployments.get(f"millrace-{callee}", {}).get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
            if not policy_allows(policies, callee_labels, service, "grpc"):
                problems.add(where, f"calls {callee} over gRPC ({url_var}) but no NetworkPolicy lets it in")

    for service in SERVICES:
        allowed = grpc_callers_allowed(policies, service)
        callers = {s for s in SERVICES if any(u.removesuffix("_URL").lower().replace("_", "-") == service for u in code.grpc_urls[s])}
        if allowed - callers:
            problems.add(f"{target} {service}", f"its NetworkPolicy admits {sorted(allowed - callers)} on grpc, which never call it")
    if "millrace-default-deny-ingress" not in policies or policies["millrace-default-deny-ingress"]["spec"] != {"podSelector": {}, "policyTypes": ["Ingress"]}:
        problems.add(target, "no default deny-ingress NetworkPolicy")
    for policy in policies.values():
        selector = policy["spec"].get("podSelector", {})
        only_ingestion = selector == {"matchLabels": {"app.kubernetes.io/name": "millrace-ingestion"}}
        only_gateway = selector == {"matchLabels": {"app.kubernetes.io/name": "millrace-llm-gateway"}}
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            outside = [p for p in (peers or [{}]) if peers is None or "namespaceSelector" in p or "ipBlock" in p]
            if not outside or only_ingestion:
                continue
            # From outside the namespace only Prometheus (namespace `monitoring`) on the http
            # port, and KEDA's operator (namespace `keda`) on the optional Redis.
            ports = [p.get("port") for p in rule.get("ports", [])]
            namespaces = {
                p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                if set(p) == {"namespaceSelector"} and set(p["namespaceSelector"]) == {"matchLabels"}
                and len(p["namespaceSelector"]["matchLabels"]) == 1 else None
                for p in outside
            }
            llm_api = only_gateway and ports == ["http"] and all(
                set(p) == {"namespaceSelector"} and p["namespaceSelector"] == {"matchLabels": LLM_API_NAMESPACE_LABEL}
                for p in outside
            )
            allowed = llm_api or (namespaces == {"monitoring"} and ports in (["http"], ["metrics"])) or (
                namespaces == {"keda"} and ports == ["redis"]
                and selector == {"matchLabels": {"app.kubernetes.io/name": "millrace-redis"}}
            )
            if not allowed:
                problems.add(target, f"NetworkPolicy {policy['metadata']['name']} admits traffic from outside the namespace "
                                     f"to {selector or 'every pod'} (ports {ports or 'all'}); only ingestion may be open, "
                                     "Prometheus from `monitoring` on http or metrics, the llm-gateway's http from namespaces "
                                     f"labelled {LLM_API_NAMESPACE_LABEL} and KEDA from `keda` on Redis")
    # A service with a metrics port of its own keeps its http port (its API) from Prometheus, and
    # opens the metrics port to it alone.
    for service in SERVICES:
        metrics = code.metrics_ports.get(service)
        labels = deployments.get(f"millrace-{service}", {}).get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
        if not metrics or not labels:
            continue
        monitoring = {"kubernetes.io/metadata.name": "monitoring"}
        api = namespaces_admitted(policies, labels, "http")
        if monitoring in api or {} in api:
            problems.add(f"{target} {service}", "its http port (the API) is open to the monitoring namespace or everyone; "
                                               "Prometheus scrapes its metrics port")
        if namespaces_admitted(policies, labels, "metrics") != [monitoring]:
            problems.add(f"{target} {service}", f"its metrics port admits {namespaces_admitted(policies, labels, 'metrics')}, "
                                               "want the monitoring namespace alone")

    # Stream stages: KEDA watches the stream and group the code reads from.
    prefix = envs.get("chunking", {}).get("MILLRACE_KEY_PREFIX") or code.key_prefix_default
    if not code.group_is_stage_name:
        problems.add("code", "a stage no longer names its consumer group after itself; update k8s/tests/check.py")
    if sorted(code.stages) != sorted(["chunking", "metadata", "embeddings", "storage"]):
        problems.add("code", f"the stages are now {code.stages}; update the ScaledObjects and k8s/tests/check.py")
    if scaled:
        for stage in code.stages:
            obj = scaled.get(f"millrace-{stage}")
            where = f"{target} ScaledObject/millrace-{stage}"
            if obj is None:
                problems.add(where, "missing")
                continue
            if obj["spec"]["scaleTargetRef"]["name"] not in deployments:
                problems.add(where, f"scales {obj['spec']['scaleTargetRef']['name']}, which is not a Deployment here")
            if obj["spec"]["minReplicaCount"] > obj["spec"]["maxReplicaCount"]:
                problems.add(where, "minReplicaCount > maxReplicaCount")
            stream = code.stream_format.format(prefix=prefix, stage=stage)
            concurrency = envs.get(stage, {}).get("MILLRACE_CONCURRENCY")
            for trigger in obj["spec"]["triggers"]:
                meta = trigger["metadata"]
                if meta.get("stream") != stream or meta.get("consumerGroup") != stage:
                    problems.add(where, f"watches {meta.get('stream')}/{meta.get('consumerGroup')}, the stage reads {stream}/{stage}")
                if trigger.get("authenticationRef", {}).get("name") not in auths:
                    problems.add(where, f"authenticationRef {trigger.get('authenticationRef')} is not a TriggerAuthentication here")
                if "pendingEntriesCount" in meta and meta["pendingEntriesCount"] != concurrency:
                    problems.add(where, f"pendingEntriesCount {meta['pendingEntriesCount']} is not the stage's MILLRACE_CONCURRENCY {concurrency}")
        for name in set(scaled) - {f"millrace-{s}" for s in code.stages}:
            problems.add(f"{target} ScaledObject/{name}", "scales something that is not a stream stage")

    for service in ("ingestion", "llm-gateway"):
        hpa = hpas.get(f"millrace-{service}")
        if hpa is None or hpa["spec"]["scaleTargetRef"]["name"] != f"millrace-{service}":
            problems.add(f"{target} {service}", "no HorizontalPodAutoscaler on CPU")
        elif service == "llm-gateway":
            replicas = envs.get("llm-gateway", {}).get("MILLRACE_LLM_REPLICAS")
            if str(hpa["spec"]["maxReplicas"]) != replicas:
                problems.add(f"{target} llm-gateway", f"MILLRACE_LLM_REPLICAS {replicas} is not the HPA's maxReplicas {hpa['spec']['maxReplicas']}")

    if monitors:
        # The monitoring component brings the dashboard too (validated in validate_schemas).
        if DASHBOARD_CONFIGMAP not in configmaps:
            problems.add(target, f"ServiceMonitors but no ConfigMap {DASHBOARD_CONFIGMAP} (the Grafana dashboard)")
        for service in SERVICES:
            monitor = monitors.get(f"millrace-{service}")
            where = f"{target} ServiceMonitor/millrace-{service}"
            if monitor is None:
                problems.add(where, "missing")
                continue
            selector = monitor["spec"].get("selector", {}).get("matchLabels", {})
            matched = [s for s in services.values() if all(s["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
            if [s["metadata"]["name"] for s in matched] != [f"millrace-{service}"]:
                problems.add(where, f"selects {[s['metadata']['name'] for s in matched]}, not just millrace-{service}")
            port = "metrics" if code.metrics_ports.get(service) else "http"
            for endpoint in monitor["spec"].get("endpoints", []):
                if endpoint.get("port") != port or endpoint.get("path") != "/metrics":
                    problems.add(where, f"scrapes {endpoint.get('port')} {endpoint.get('path')}, the metrics are at {port} /metrics")
            job_label = monitor["spec"].get("jobLabel")
            for s in matched:
                if s["metadata"].get("labels", {}).get(job_label) != service:
                    problems.add(where, f"jobLabel {job_label} does not give job={service} (the dashboard and alerts group by job)")


def main() -> int:
    try:
        code = code_facts.read_code(ROOT)
    except code_facts.CodeChanged as changed:
        sys.exit(f"k8s check: {changed}")
    problems = Problems()
    for target in TARGETS:
        try:
            resources = render(target)
        except RuntimeError as error:
            problems.add(target, str(error))
            continue
        validate_schemas(target, resources, problems)
        check_consistency(target, resources, code, problems)
        print(f"k8s check: {target}: {len(resources)} resources rendered and checked")
    for problem in problems:
        print(f"k8s check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
