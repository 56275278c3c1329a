"""The environment a rendered Deployment gives its container, and whether the service accepts it.

Shared by the offline Kubernetes checks (k8s/tests/check.py) and the Helm chart's
(scripts/helm_check.py): each service's own binary runs with `--check-config` under exactly
that environment, so a value the service cannot parse (not only a name it does not read) fails
the check, the way it would fail the pod at start.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import subprocess
import tempfile

import images

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The image's model folder is, on this machine, the one `make setup` installs (the images are
# built from it: the tokenizer in chunking's, the whole model in embeddings' with MODEL=1).
IMAGE_MODEL_DIR = f"/{images.MODEL_DIR}"
HOST_MODEL_DIR = pathlib.Path(os.environ.get("MILLRACE_HOME") or pathlib.Path.home() / ".cache/millrace") / images.MODEL_DIR

# What the referenced Secrets would hold: values of the right form, no real credentials.
SECRET_STAND_INS = {
    "MILLRACE_REDIS_URL": "redis://:stand-in@redis.example.internal:6379",
    "MILLRACE_DATABASE_URL": "postgres://millrace:stand-in@pg.example.internal:5432/millrace",
    "MILLRACE_LLM_API_KEY": "sk-stand-in",
}
FIELD_STAND_INS = {"metadata.name": "millrace-pod-0", "metadata.namespace": "millrace"}
# Certificates and keys the pods read from Secrets mounted here (k8s/components/tls, the chart's
# tls values): on this machine they are replaced by a stand-in certificate and key.
SECRET_FILES_DIR = "/etc/millrace/tls/"


@functools.cache
def stand_in_tls() -> dict[str, str]:
    """A throwaway self-signed certificate and its key (openssl), as files: what a mounted TLS
    Secret holds (tls.crt, tls.key, ca.crt), of the right form, trusting nothing real."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="millrace-stand-in-tls-"))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(folder / "tls.key"), "-out", str(folder / "tls.crt"), "-days", "1", "-subj", "/CN=millrace-stand-in",
         "-addext", "subjectAltName=DNS:millrace-stand-in"],
        check=True, capture_output=True,
    )
    return {"key": str(folder / "tls.key"), "crt": str(folder / "tls.crt")}


def stand_in_file(value: str) -> str:
    """A path into a mounted TLS Secret, replaced by the stand-in of its kind (a key or a certificate)."""
    if not value.startswith(SECRET_FILES_DIR):
        return value
    return stand_in_tls()["key" if value.endswith(".key") else "crt"]


def bin_dir() -> pathlib.Path:
    """Where `cargo build --workspace --bins` put the services (as scripts/stack.sh finds them)."""
    if os.environ.get("MILLRACE_BIN_DIR"):
        return pathlib.Path(os.environ["MILLRACE_BIN_DIR"])
    return pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug"


def container_env(container: dict, configmaps: dict[str, dict]) -> dict[str, str]:
    """The variables Kubernetes would set: whole ConfigMaps (`envFrom`), then `env` in order,
    with Secret references replaced by stand-ins and `$(VAR)` expanded from earlier variables."""
    env: dict[str, str] = {}
    from_secrets: set[str] = set()
    for source in container.get("envFrom", []):
        name = source.get("configMapRef", {}).get("name")
        if name not in configmaps:
            raise ValueError(f"envFrom names the ConfigMap {name!r}, which is not rendered")
        env.update({k: str(v) for k, v in (configmaps[name].get("data") or {}).items()})
    for var in container.get("env", []):
        source = var.get("valueFrom", {})
        if "secretKeyRef" in source:
            value = SECRET_STAND_INS.get(var["name"], "stand-in")
            from_secrets.add(var["name"])
        elif "fieldRef" in source:
            value = FIELD_STAND_INS[source["fieldRef"]["fieldPath"]]
        else:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), str(var.get("value", "")))
        env[var["name"]] = value
    # A pod given a CA for Redis or PostgreSQL has a TLS URL in its Secret: so has the stand-in.
    redis_tls = {"MILLRACE_REDIS_CA_FILE", "MILLRACE_REDIS_CLIENT_CERT_FILE"} & set(env)
    if "MILLRACE_REDIS_URL" in from_secrets and redis_tls:
        env["MILLRACE_REDIS_URL"] = env["MILLRACE_REDIS_URL"].replace("redis://", "rediss://", 1)
    database_tls = {"MILLRACE_DATABASE_CA_FILE", "MILLRACE_DATABASE_CLIENT_CERT_FILE"} & set(env)
    if "MILLRACE_DATABASE_URL" in from_secrets and database_tls:
        env["MILLRACE_DATABASE_URL"] += "?sslmode=verify-full"
    return env


def check_config(service: str, env: dict[str, str]) -> str | None:
    """Runs the service's binary with `--check-config` under the image's environment and `env`
    (the pod's) alone; None when it accepts the settings, else what it said."""
    binary = bin_dir() / f"millrace-{service}"
    if not binary.is_file():
        return f"no binary {binary} to check the settings with (cargo build --workspace --bins)"
    clean = dict(entry.split("=", 1) for entry in images.image_env(service))
    clean.update(env)
    clean = {k: str(HOST_MODEL_DIR) if v == IMAGE_MODEL_DIR else stand_in_file(v) for k, v in clean.items()}
    try:
        out = subprocess.run([str(binary), "--check-config"], env=clean, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "--check-config did not exit within 30 s"
    if out.returncode != 0:
        return (out.stderr.strip() or out.stdout.strip() or f"exit status {out.returncode}").splitlines()[-1]
    return None
