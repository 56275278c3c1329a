#!/usr/bin/env bash
# Shows that the k8s checks can fail: each case breaks one file (a manifest, a file of deploy/
# or the Rust code the checks read) in a throw-away copy of the tree, runs scripts/k8s-test.sh
# there and expects it to fail. Not part of `make test` (about a minute); run it after
# changing the checks:  k8s/tests/mutations.sh
set -uo pipefail

SRC="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/scripts"
cp -r "$SRC/k8s" "$SRC/deploy" "$SRC/lib" "$SRC/services" "$WORK/"
cp "$SRC/scripts/k8s-test.sh" "$SRC/scripts/service_env.py" "$SRC/scripts/code_facts.py" "$SRC/scripts/images.py" "$WORK/scripts/"
# The services' binaries (--check-config) are the checkout's build, not the copy's.
export MILLRACE_BIN_DIR="${MILLRACE_BIN_DIR:-${CARGO_TARGET_DIR:-$SRC/target}/debug}"
PYTHON="${MILLRACE_HOME:-$HOME/.cache/millrace}/venv-k8s/bin/python"

failed=0
# case LABEL FILE SED-EXPRESSION [regenerate]: the checks must fail after the edit.
case_() {
    local label="$1" file="$WORK/$2" expr="$3" regen="${4:-}"
    cp "$file" "$file.orig"
    sed -i "$expr" "$file"
    if cmp -s "$file" "$file.orig"; then
        echo "BROKEN TEST  $label: the edit changed nothing"; failed=1
    else
        [ -n "$regen" ] && "$PYTHON" "$WORK/k8s/generate.py"
        if out="$("$WORK/scripts/k8s-test.sh" 2>&1)"; then
            echo "NOT CAUGHT   $label"; failed=1
        else
            echo "caught       $label: $(echo "$out" | grep -v 'rendered and checked' | head -1 | cut -c1-150)"
        fi
    fi
    mv "$file.orig" "$file"
    [ -n "$regen" ] && "$PYTHON" "$WORK/k8s/generate.py"
}

"$WORK/scripts/k8s-test.sh" >/dev/null 2>&1 || { echo "the unbroken tree fails the checks; fix that first" >&2; exit 1; }

case_ "render: missing resource"            k8s/base/kustomization.yaml 's/  - storage.yaml/  - storage-missing.yaml/'
case_ "schema: unknown field (strict)"      k8s/base/chunking.yaml 's/terminationGracePeriodSeconds: 40/terminationGracePeriod: 40/'
case_ "schema: wrong type"                  k8s/base/metadata.yaml 's/  replicas: 1/  replicas: "one"/'
case_ "keda: lag trigger without lagCount"  k8s/components/keda/scaledobjects.yaml '0,/lagCount: "8"/{s/lagCount: "8"/pendingCount: "8"/}'
case_ "keda: unknown trigger type"          k8s/components/keda/scaledobjects.yaml '0,/- type: redis-streams/{s/- type: redis-streams/- type: redis-stream/}'
case_ "servicemonitor: wrong port"          k8s/components/monitoring/servicemonitors.yaml '0,/- port: http/{s/- port: http/- port: grpc/}'
case_ "servicemonitor: no path"             k8s/components/monitoring/servicemonitors.yaml '0,/path: \/metrics/{/path: \/metrics/d}'
case_ "prometheusrule: hand edit of the generated copy" k8s/components/monitoring/prometheusrule.yaml '0,/severity: warning/{s/severity: warning/severity: urgent/}'
case_ "grafana: label missing"              k8s/components/monitoring/kustomization.yaml 's/grafana_dashboard: "1"/grafana_dash: "1"/'
case_ "sync: alerts.yml edited, copy not regenerated" deploy/prometheus/alerts.yml 's/for: 15m/for: 20m/'
case_ "sync: dashboard edited"              deploy/grafana/millrace-dashboard.json '0,/"title"/{s/"title": "/"title": "x/}'
case_ "code: wrong container port"          k8s/base/chunking.yaml 's/containerPort: 8061/containerPort: 8071/'
case_ "code: wrong Service port"            k8s/base/storage.yaml 's/port: 9064/port: 9074/'
case_ "code: readiness on /healthz"         k8s/base/pod-defaults.yaml 's/path: \/readyz/path: \/healthz/'
case_ "code: grace shorter than deadline"   k8s/base/embeddings.yaml 's/terminationGracePeriodSeconds: 40/terminationGracePeriodSeconds: 20/'
case_ "code: no preStop sleep"              k8s/base/pod-defaults.yaml 's/seconds: 5/seconds: 0/'
case_ "code: MILLRACE_* name no code reads" k8s/base/config.env 's/MILLRACE_METRICS_INTERVAL_MS=/MILLRACE_METRIC_INTERVAL_MS=/'
case_ "code: peer URL wrong"                k8s/base/config.env 's|MILLRACE_STORAGE_URL=http://millrace-storage:9064|MILLRACE_STORAGE_URL=http://storage:9064|'
case_ "code: required DATABASE_URL dropped" k8s/base/storage.yaml 's/MILLRACE_DATABASE_URL/MILLRACE_DB_URL/'
case_ "code: stream name wrong"             k8s/components/keda/scaledobjects.yaml 's/stream: millrace:stream:metadata/stream: millrace:metadata/'
case_ "code: consumer group wrong"          k8s/components/keda/scaledobjects.yaml 's/consumerGroup: storage/consumerGroup: storage-group/'
case_ "code: key prefix changed, KEDA not"  k8s/base/config.env 's/MILLRACE_KEY_PREFIX=millrace/MILLRACE_KEY_PREFIX=prod/'
case_ "netpol: storage no longer admits chunking" k8s/base/networkpolicies.yaml '/name: millrace-storage$/,/ports:/{s/app.kubernetes.io\/name: millrace-chunking$/app.kubernetes.io\/name: millrace-chunkin/}'
case_ "netpol: caller the code lacks"       k8s/base/networkpolicies.yaml 's/app.kubernetes.io\/name: millrace-metadata$/app.kubernetes.io\/name: millrace-storage/'
case_ "netpol: scrape policy opened to every namespace" k8s/base/networkpolicies.yaml 's/              kubernetes.io\/metadata.name: monitoring/              {}/'
case_ "netpol: storage open to everyone"    k8s/base/networkpolicies.yaml '/name: millrace-storage$/,/^  ingress:$/{s/^  ingress:$/  ingress:\n    - ports: [{port: grpc, protocol: TCP}]/}'
case_ "netpol: gateway API open to Prometheus" k8s/base/networkpolicies.yaml '/    matchExpressions:/,+1d'
case_ "netpol: gateway metrics open to all"  k8s/base/networkpolicies.yaml '/port: metrics, protocol: TCP/{s/- {port: metrics, protocol: TCP}/- {port: metrics, protocol: TCP}\n    - ports: [{port: metrics, protocol: TCP}]/}'
case_ "servicemonitor: gateway on its API"  k8s/components/monitoring/servicemonitors.yaml 's/- port: metrics/- port: http/'
case_ "code: gateway metrics port not declared" k8s/base/llm-gateway.yaml 's/containerPort: 8075/containerPort: 8076/'
case_ "llm-api: opened to every namespace"  k8s/components/llm-api/networkpolicy.yaml 's/millrace.io\/llm-api: allowed/{}/'
case_ "tls: a peer called over http"         k8s/components/tls/kustomization.yaml 's|MILLRACE_STORAGE_URL=https://|MILLRACE_STORAGE_URL=http://|'
case_ "cert-manager: unknown usage"          k8s/components/cert-manager/certificates.yaml '0,/usages: \[server auth/{s/usages: \[server auth/usages: [serverauth/}'
case_ "hpa: LLM_REPLICAS != maxReplicas"    k8s/base/llm-gateway.yaml 's/value: "4"/value: "3"/'
case_ "securityContext: writable root"      k8s/base/pod-defaults.yaml 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/'
case_ "rule: bad severity, copy regenerated"   deploy/prometheus/alerts.yml '0,/severity: warning/{s/severity: warning/severity: urgent/}' regen
case_ "rule: misspelt field, copy regenerated" deploy/prometheus/alerts.yml '0,/        annotations:/{s/        annotations:/        annotationz:/}' regen
case_ "code moves chunking's port"             services/chunking/src/lib.rs 's/"chunking", 8061, 9061/"chunking", 8071, 9061/'
case_ "code renames the streams"               lib/pipeline/src/keys.rs 's/"{}:stream:{}"/"{}:queue:{}"/'
case_ "code names the group differently"       lib/pipeline/src/runtime.rs 's/        stage.name().to_owned(),/        format!("{}-group", stage.name()),/'
case_ "deadline raised, grace kept"          k8s/base/config.env 's/MILLRACE_SHUTDOWN_DEADLINE_MS=20000/MILLRACE_SHUTDOWN_DEADLINE_MS=60000/'
case_ "code drops /readyz"                     lib/common/src/server.rs 's|"/readyz"|"/ready"|'
case_ "chunking calls metadata too"            services/chunking/src/lib.rs 's/settings.grpc_url("STORAGE_URL"/settings.grpc_url("METADATA_URL"/'
case_ "a value the service cannot parse"      k8s/base/config.env 's/MILLRACE_METRICS_INTERVAL_MS=5000/MILLRACE_METRICS_INTERVAL_MS=5s/'
case_ "service links on"                       k8s/base/pod-defaults.yaml '/enableServiceLinks/,+1{s/value: false/value: true/}'
case_ "model volume where the model is not"    k8s/components/embedding-model/kustomization.yaml 's|mountPath: /models/all-MiniLM-L6-v2|mountPath: /models|'

if [ "$failed" -ne 0 ]; then echo "mutations: some breakage was not caught" >&2; exit 1; fi
echo "mutations: every breakage was caught"
