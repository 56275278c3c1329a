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

# The renderer: `kubectl kustomize` when kubectl carries kustomize v5 (kubectl >= 1.27), else the
# standalone kustomize that scripts/setup.sh installs (components need kustomize >= 3.7).
if [ -z "${MILLRACE_KUSTOMIZE:-}" ]; then
    KUBECTL_KUSTOMIZE="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p' || true)"
    if [ "${KUBECTL_KUSTOMIZE:-0}" -ge 5 ]; then
        MILLRACE_KUSTOMIZE="kubectl kustomize"
    elif [ -x "${MILLRACE_HOME:-$HOME/.cache/millrace}/bin/kustomize" ]; then
        MILLRACE_KUSTOMIZE="${MILLRACE_HOME:-$HOME/.cache/millrace}/bin/kustomize build"
    else
        echo "k8s-test: no kustomize: kubectl >= 1.27 or the kustomize scripts/setup.sh installs" >&2
        exit 1
    fi
fi
export MILLRACE_KUSTOMIZE
[ -x "$VENV/bin/python" ] || { echo "k8s-test: $VENV is missing (run scripts/setup.sh)" >&2; exit 1; }

# Both run, so one failure does not hide the other.
status=0
"$VENV/bin/python" "$ROOT/k8s/generate.py" --check || status=1
"$VENV/bin/python" "$ROOT/k8s/tests/check.py" || status=1
[ "$status" -eq 0 ] && echo "k8s-test: ok"
exit "$status"
