"""What the Rust sources say about running the services: default ports, health routes, drain
deadline, key prefix, stream and consumer-group names, the settings each service reads and the
peers it calls. Read from the code (standard library only), so that the offline Kubernetes
checks (k8s/tests/check.py) and the Helm chart's (scripts/helm_check.py) compare their
manifests with one reading of it, and neither can drift from the code.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass, field

SERVICES = ["ingestion", "chunking", "metadata", "embeddings", "storage", "llm-gateway"]


class CodeChanged(Exception):
    """The code no longer has a shape these readers know: the readers need updating."""


def rust_sources(under: pathlib.Path) -> str:
    """Non-test Rust source under a folder: `#[cfg(test)] mod tests` and tests/ folders cut off."""
    text = []
    for path in sorted(under.rglob("*.rs")):
        if "tests" in path.relative_to(under).parts or path.name == "tests.rs":
            continue
        source = path.read_text()
        source = re.split(r"#\[cfg\(test\)\]\s*mod tests", source)[0]
        text.append(source)
    return "\n".join(text)


def must_find(pattern: str, text: str, what: str) -> re.Match:
    match = re.search(pattern, text, re.S)
    if not match:
        raise CodeChanged(f"cannot find {what} in the code (pattern {pattern!r}); update scripts/code_facts.py")
    return match


@dataclass
class Code:
    ports: dict[str, tuple[int, int]] = field(default_factory=dict)
    health_paths: set[str] = field(default_factory=set)
    shutdown_deadline_ms: int = 0
    key_prefix_default: str = ""
    stream_format: str = ""
    stages: list[str] = field(default_factory=list)
    group_is_stage_name: bool = False
    names_read: set[str] = field(default_factory=set)
    name_prefixes: set[str] = field(default_factory=set)
    name_suffixes: set[str] = field(default_factory=set)
    grpc_urls: dict[str, set[str]] = field(default_factory=dict)
    required: dict[str, set[str]] = field(default_factory=dict)


def read_code(root: pathlib.Path) -> Code:
    code = Code()
    gateway = (root / "services/llm-gateway/src/config.rs").read_text()
    for service in SERVICES:
        src = rust_sources(root / f"services/{service}/src")
        if service == "llm-gateway":
            http = int(must_find(r"pub const HTTP_PORT: u16 = (\d+);", gateway, "the gateway's HTTP_PORT")[1])
            grpc = int(must_find(r"pub const GRPC_PORT: u16 = (\d+);", gateway, "the gateway's GRPC_PORT")[1])
            must_find(r"ServiceConfig::load\(settings, SERVICE, HTTP_PORT, GRPC_PORT\)", src, "the gateway's ports")
        else:
            m = must_find(
                rf'ServiceConfig::load\(\s*settings,\s*"{re.escape(service)}",\s*(\d+),\s*(\d+)\s*\)', src,
                f"the default ports of {service}",
            )
            http, grpc = int(m[1]), int(m[2])
        code.ports[service] = (http, grpc)
        code.grpc_urls[service] = set(re.findall(r'grpc_url\(\s*"([A-Z0-9_]+_URL)"', src))
        code.required[service] = set(re.findall(r'\.require(?:::<[^>]*>)?\(\s*"([A-Z0-9_]+)"', src))

    server = (root / "lib/common/src/server.rs").read_text()
    code.health_paths = set(re.findall(r'\.route\(\s*"(/healthz|/readyz|/metrics)"', server))

    config = (root / "lib/common/src/config.rs").read_text()
    deadline = must_find(r'duration_ms\("SHUTDOWN_DEADLINE_MS",\s*([\d_]+)\)', config, "the shutdown deadline default")
    code.shutdown_deadline_ms = int(deadline[1].replace("_", ""))
    code.key_prefix_default = must_find(r'get_or\("KEY_PREFIX",\s*"([^"]+)"', config, "the key prefix default")[1]

    keys = (root / "lib/pipeline/src/keys.rs").read_text()
    fmt = must_find(r'pub fn stream\(&self, stage: Stage\) -> String \{\s*format!\("([^"]+)", self\.prefix, stage\.name\(\)\)',
                    keys, "Keys::stream")[1]
    code.stream_format = fmt.replace("{}", "{prefix}", 1).replace("{}", "{stage}", 1)
    stage = (root / "lib/pipeline/src/stage.rs").read_text()
    code.stages = re.findall(r'Stage::\w+ => "([a-z-]+)"', stage)
    runtime = (root / "lib/pipeline/src/runtime.rs").read_text()
    # WorkerConfig::from_settings(settings, stream, group, …): the group is the stage's name.
    code.group_is_stage_name = bool(
        re.search(r"WorkerConfig::from_settings\(\s*settings,\s*keys\.stream\(stage\),\s*stage\.name\(\)\.to_owned\(\),", runtime)
    )

    everything = rust_sources(root / "lib") + rust_sources(root / "services")
    literals = set(re.findall(r'"(?:MILLRACE_)?([A-Z][A-Z0-9_]*)"', everything))
    code.names_read = literals
    # Names built from a prefix: format!("{prefix}REPLICAS") with prefix "LLM_" (the limiter).
    code.name_prefixes = {name for name in literals if name.endswith("_")}
    code.name_suffixes = set(re.findall(r'"\{prefix\}([A-Z][A-Z0-9_]*)"', everything))
    return code
