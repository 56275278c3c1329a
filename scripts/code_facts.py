"""What the services say about running them: default ports, health routes, drain deadline, key
prefix, stream and consumer-group names, the settings each service reads and the peers it
calls. Each service binary prints these with `--describe` (lib/common/src/host.rs), from its
real config loader, so the offline Kubernetes checks (k8s/tests/check.py) and the Helm chart's
(scripts/helm_check.py) compare their manifests with the code itself, not a reading of its
source. Standard library only.

The binaries come from `cargo build --workspace --bins` (scripts/service_env.py finds them).
A service reads some settings only in some configurations (the gateway's upstream settings
when an upstream is set; metadata's and embeddings' gateway URL when they call it), so each
binary describes itself under each of PROFILES and the facts are their union.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from dataclasses import dataclass, field

import service_env

SERVICES = ["ingestion", "chunking", "metadata", "embeddings", "storage", "llm-gateway"]

# The configurations each binary describes itself under: none set, and an LLM upstream set
# (which turns on the gateway's upstream settings and the stages' calls to the gateway).
PROFILES = {
    "defaults": {},
    "llm-upstream": {
        "MILLRACE_LLM_BASE_URL": "http://upstream.invalid/v1",
        "MILLRACE_LLM_EMBED_MODEL": "text-embedding-3-small",
    },
}


class CodeChanged(Exception):
    """A binary is missing or does not describe itself as expected."""


@dataclass
class Code:
    ports: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Per service: the port /metrics has to itself (MILLRACE_METRICS_ADDR's default), or None
    # when /metrics is on the http port.
    metrics_ports: dict[str, int | None] = field(default_factory=dict)
    health_paths: set[str] = field(default_factory=set)
    shutdown_deadline_ms: int = 0
    key_prefix_default: str = ""
    stream_format: str = ""
    stages: list[str] = field(default_factory=list)
    group_is_stage_name: bool = False
    names_read: set[str] = field(default_factory=set)
    # Kept for the checks' shape; the binaries report full names, so these stay empty.
    name_prefixes: set[str] = field(default_factory=set)
    name_suffixes: set[str] = field(default_factory=set)
    grpc_urls: dict[str, set[str]] = field(default_factory=dict)
    required: dict[str, set[str]] = field(default_factory=dict)
    # Per service: every MILLRACE_* name it reads (without the prefix) and its default, if any.
    reads: dict[str, dict[str, str | None]] = field(default_factory=dict)
    # Per stage service: the stream, consumer group and dead-letter stream it consumes.
    consumes: dict[str, dict[str, str]] = field(default_factory=dict)


def describe(service: str, env: dict[str, str] | None = None) -> dict:
    """The JSON `millrace-<service> --describe` prints under `env` alone (no other variables)."""
    binary = service_env.bin_dir() / f"millrace-{service}"
    if not binary.is_file():
        raise CodeChanged(f"no binary {binary} to describe {service} (cargo build --workspace --bins)")
    out = subprocess.run([str(binary), "--describe"], env=env or {}, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise CodeChanged(f"millrace-{service} --describe failed: {(out.stderr or out.stdout).strip()}")
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError as err:
        raise CodeChanged(f"millrace-{service} --describe printed no JSON: {err}") from err


def short(name: str) -> str:
    return name.removeprefix("MILLRACE_")


def read_code(root: pathlib.Path | None = None) -> Code:
    """The facts, from the binaries (`root` is accepted for the callers' sake; the binaries are
    found the way scripts/service_env.py finds them)."""
    code = Code()
    defaults: dict[str, dict] = {}
    for service in SERVICES:
        reads: dict[str, str | None] = {}
        code.grpc_urls[service] = set()
        code.required[service] = set()
        for profile, env in PROFILES.items():
            facts = describe(service, env)
            if facts.get("service") != service:
                raise CodeChanged(f"millrace-{service} --describe names itself {facts.get('service')!r}")
            if profile == "defaults":
                defaults[service] = facts
            for var in facts["variables"]:
                reads.setdefault(short(var["name"]), var.get("default"))
                if var.get("required"):
                    code.required[service].add(short(var["name"]))
            code.grpc_urls[service] |= {short(name) for name in facts["peers"]}
        code.reads[service] = reads
        code.names_read |= set(reads)
        facts = defaults[service]
        code.ports[service] = (facts["ports"]["http"], facts["ports"]["grpc"])
        code.metrics_ports[service] = facts["ports"].get("metrics")
        if facts.get("consumes"):
            code.consumes[service] = facts["consumes"]

    every = [defaults[s] for s in SERVICES]
    code.health_paths = set.intersection(*(set(f["health_routes"]) for f in every))
    deadlines = {code.reads[s].get("SHUTDOWN_DEADLINE_MS") for s in SERVICES}
    prefixes = {code.reads[s].get("KEY_PREFIX") for s in SERVICES}
    if len(deadlines) != 1 or len(prefixes) != 1 or None in deadlines | prefixes:
        raise CodeChanged(f"the services disagree on defaults: shutdown deadlines {deadlines}, key prefixes {prefixes}")
    code.shutdown_deadline_ms = int(deadlines.pop())
    code.key_prefix_default = prefixes.pop()

    code.stages = list(code.consumes)
    code.group_is_stage_name = all(c["group"] == stage for stage, c in code.consumes.items())
    formats = {
        c["stream"].replace(code.key_prefix_default, "{prefix}", 1).replace(stage, "{stage}")
        for stage, c in code.consumes.items()
    }
    if len(formats) != 1:
        raise CodeChanged(f"the stages name their streams in different shapes: {sorted(formats)}")
    code.stream_format = formats.pop()
    return code
