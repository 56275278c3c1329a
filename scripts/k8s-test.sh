#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests (k8s/), part of `make test`; no cluster needed:
#   - the monitoring component's copies of deploy/ (PrometheusRule, dashboard) are in sync
#     (k8s/generate.py --check);
#   - each overlay renders with `kubectl kustomize`, its core resources validate against the
#     Kubernetes 1.31 schemas (kubernetes-validate, strict), the custom resources against
#     k8s/tests/schemas, and ports, health paths, MILLRACE_* names, the gRPC call graph and
#     the stream/group names agree with the Rust sources (k8s/tests/check.py).
# Needs kubectl and the venv with kubernetes-validate that scripts/setup.sh installs.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${MILLRACE_HOME:-$HOME/.cache/millrace}/venv-k8s"

command -v kubectl >/dev/null || { echo "k8s-test: kubectl is missing (run scripts/setup.sh)" >&2; exit 1; }
# `components`, `labels` and generator labels need kustomize v5 (kubectl >= 1.27).
KUSTOMIZE_VERSION="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')"
if [ -z "$KUSTOMIZE_VERSION" ] || [ "$KUSTOMIZE_VERSION" -lt 5 ]; then
    echo "k8s-test: $(command -v kubectl) has kustomize ${KUSTOMIZE_VERSION:-?}, k8s/ needs v5 (kubectl >= 1.27; see https://kubernetes.io/docs/tasks/tools/)" >&2
    exit 1
fi
[ -x "$VENV/bin/python" ] || { echo "k8s-test: $VENV is missing (run scripts/setup.sh)" >&2; exit 1; }

# Both run, so one failure does not hide the other.
status=0
"$VENV/bin/python" "$ROOT/k8s/generate.py" --check || status=1
"$VENV/bin/python" "$ROOT/k8s/tests/check.py" || status=1
[ "$status" -eq 0 ] && echo "k8s-test: ok"
exit "$status"
