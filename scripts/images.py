#!/usr/bin/env python3
"""OCI images of the six services, written without a container engine, and their check.

There is no Docker engine where millrace is built and no registry to pull base images from, so
each image is one layer assembled FROM scratch: the stripped release binary, the shared
libraries `ldd` says it needs and the dynamic loader, the CA bundle, /etc/passwd and /etc/group
with the non-root user 65532, nothing else (no shell). The layer, the image config, the manifest
and the index are written as an OCI image layout and packed into an `oci-archive` tarball, which
skopeo, podman, buildah and crane read. Everything is deterministic (fixed mtimes and owners,
sorted entries), so the same binaries give the same digests. Standard library only.

    images.py build --bin-dir DIR --out DIR [--service S ...] [--model DIR]
    images.py check --out DIR [--service S ...] [--max-mb 40] [--smoke]
    images.py self-test --bin-dir DIR        # the check must reject broken images

The check reads only the archive: digests, config, entrypoint, user, the ELF dependencies of the
binary resolved against the layer's own files, no shell, the CA bundle and the compressed size.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

# service → (HTTP port, gRPC port), as in README's table and each service's ServiceConfig::load.
SERVICES = {
    "ingestion": (8060, 9060),
    "chunking": (8061, 9061),
    "metadata": (8062, 9062),
    "embeddings": (8063, 9063),
    "storage": (8064, 9064),
    "llm-gateway": (8065, 9065),
}
UID = GID = 65532
BIN_DIR = "usr/local/bin"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
MODEL_DIR = "models/all-MiniLM-L6-v2"
# The chunking service counts chunk sizes in the model's tokens and refuses to start without its
# tokenizer; the two small files it reads (~0.5 MB) are baked in, the weights never are.
TOKENIZER_FILES = ("tokenizer.json", "sentence_bert_config.json")
# What the embeddings service loads with MODEL=1 (see lib/encoder/src/model.rs).
MODEL_FILES = ("config.json", "tokenizer.json", "sentence_bert_config.json", "model.safetensors")
SHELLS = ("bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/bash", "bin/dash", "usr/bin/dash", "bin/busybox")
# Where glibc's loader looks without an ld.so.cache (Debian multiarch first).
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib")

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class CheckError(Exception):
    pass


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def epoch() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


# ---------------------------------------------------------------------------------------------
# ELF: the interpreter and DT_NEEDED entries of a 64-bit little-endian file, read without running
# it (the check must resolve against the layer, not the host).


def elf_deps(data: bytes):
    """(interpreter or None, [needed sonames]) of an ELF64 LE file; raises CheckError otherwise."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise CheckError("not a 64-bit little-endian ELF file")
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    interp, dynamic, loads = None, None, []
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 3:  # PT_INTERP
            interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (p_offset, p_filesz)
        elif p_type == 1:  # PT_LOAD
            loads.append((p_vaddr, p_offset, p_filesz))
    if dynamic is None:
        return interp, []

    def offset_of(vaddr):
        for v, off, size in loads:
            if v <= vaddr < v + size:
                return vaddr - v + off
        raise CheckError(f"address {vaddr:#x} is in no loaded segment")

    needed, strtab = [], None
    off, end = dynamic[0], dynamic[0] + dynamic[1]
    while off + 16 <= end:
        tag, val = struct.unpack_from("<qQ", data, off)
        off += 16
        if tag == 0:
            break
        if tag == 1:  # DT_NEEDED
            needed.append(val)
        elif tag == 5:  # DT_STRTAB
            strtab = offset_of(val)
    if needed and strtab is None:
        raise CheckError("DT_NEEDED without DT_STRTAB")

    def string(at):
        stop = data.index(b"\0", strtab + at)
        return data[strtab + at:stop].decode()

    return interp, [string(n) for n in needed]


# ---------------------------------------------------------------------------------------------
# Building


def host_libraries(binary: Path):
    """Host paths of the loader and every shared library `ldd` resolves for the binary."""
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    paths = []
    for line in out.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (", 1)[0]
            if target == "not found" or not target:
                sys.exit(f"images: {binary}: {line}")
            paths.append(target)
        elif line.startswith("/"):
            paths.append(line.split(" (", 1)[0])
        # linux-vdso has no file.
    return paths


def stripped(binary: Path) -> bytes:
    """The binary without symbols and debug info (the release profile keeps line tables, which
    triple its size); objcopy works on a copy, the build output stays untouched."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / binary.name
        subprocess.run(["objcopy", "--strip-all", str(binary), str(out)], check=True)
        return out.read_bytes()


class Layer:
    """A deterministic tar: entries sorted, owned by root unless said, mtime SOURCE_DATE_EPOCH."""

    def __init__(self):
        self.entries = {}  # path → (TarInfo, bytes or None)

    def _dirs(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                self.dir(d)

    def dir(self, path, mode=0o755, uid=0, gid=0):
        self._dirs(path)
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, uid, gid, epoch()
        self.entries[path] = (info, None)

    def file(self, path, data: bytes, mode=0o644):
        self._dirs(path)
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = len(data), mode, epoch()
        self.entries[path] = (info, data)

    def tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                info, data = self.entries[path]
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def git_revision(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def image_env(service) -> list[str]:
    """The image's `Env`: the listen addresses on all interfaces and, for the two services that
    read the model folder (chunking its tokenizer, embeddings the model), where it is. Also what
    the Kubernetes checks run each binary under (scripts/service_env.py)."""
    http, grpc = SERVICES[service]
    env = [
        "PATH=/usr/local/bin",
        "HOME=/home/nonroot",
        f"SSL_CERT_FILE=/{CA_BUNDLE}",
        f"MILLRACE_HTTP_ADDR=0.0.0.0:{http}",
        f"MILLRACE_GRPC_ADDR=0.0.0.0:{grpc}",
    ]
    if service in ("chunking", "embeddings"):
        # embeddings: without MODEL=1 a volume is mounted here (a PVC, or an emptyDir filled by
        # an init container).
        env.append(f"MILLRACE_EMBEDDING_MODEL_DIR=/{MODEL_DIR}")
    return env


def image_files(service, binary: Path, model: Path | None, tokenizer: Path | None, *,
                user=f"{UID}:{GID}", omit=()):
    """The layer and the image config of one service. `user` and `omit` exist for self-test."""
    layer = Layer()
    name = f"millrace-{service}"
    layer.file(f"{BIN_DIR}/{name}", stripped(binary), 0o755)
    for lib in host_libraries(binary):
        rel = lib.lstrip("/")
        if Path(rel).name in omit:
            continue
        layer.file(rel, Path(lib).resolve().read_bytes(), 0o755)
    ca = Path("/") / CA_BUNDLE
    if not ca.is_file():
        sys.exit(f"images: {ca} missing; install the ca-certificates package")
    layer.file(CA_BUNDLE, ca.read_bytes())
    layer.file("etc/passwd", (f"root:x:0:0:root:/root:/sbin/nologin\n"
                              f"nonroot:x:{UID}:{GID}:nonroot:/home/nonroot:/sbin/nologin\n").encode())
    layer.file("etc/group", f"root:x:0:\nnonroot:x:{GID}:\n".encode())
    layer.file("etc/nsswitch.conf", b"hosts: files dns\n")
    layer.dir("home/nonroot", 0o700, UID, GID)
    layer.dir("tmp", 0o1777)

    if service == "chunking":
        for f in TOKENIZER_FILES:
            layer.file(f"{MODEL_DIR}/{f}", (tokenizer / f).read_bytes())
    if service == "embeddings" and model is not None:
        for f in MODEL_FILES:
            layer.file(f"{MODEL_DIR}/{f}", (model / f).read_bytes())
    return layer, image_env(service), user, SERVICES[service]


def write_archive(out: Path, service, layer: Layer, env, user, ports, version, source, revision):
    name = f"millrace-{service}"
    layer_tar = layer.tar()
    layer_gz = gzip_bytes(layer_tar)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch()))
    labels = {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": user,
            "Entrypoint": [f"/{BIN_DIR}/{name}"],
            "Env": env,
            "ExposedPorts": {f"{p}/tcp": {} for p in ports},
            "WorkingDir": "/home/nonroot",
            "Labels": labels,
            "StopSignal": "SIGTERM",
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
        "history": [{"created": created, "created_by": "scripts/images.py (FROM scratch)"}],
    }
    config_json = json.dumps(config, indent=2, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": sha256(config_json), "size": len(config_json)},
        "layers": [{"mediaType": MT_LAYER, "digest": sha256(layer_gz), "size": len(layer_gz)}],
        "annotations": labels,
    }
    manifest_json = json.dumps(manifest, indent=2, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": sha256(manifest_json),
            "size": len(manifest_json),
            "platform": {"architecture": "amd64", "os": "linux"},
            # skopeo's `oci-archive:FILE:TAG` and podman load use this tag.
            "annotations": {"org.opencontainers.image.ref.name": version,
                            "io.containerd.image.name": f"{name}:{version}"},
        }],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, indent=2, sort_keys=True).encode(),
    }
    for blob in (config_json, manifest_json, layer_gz):
        files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, epoch()
            tar.addfile(info)
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(files[path]), 0o644, epoch()
            tar.addfile(info, io.BytesIO(files[path]))
    tmp.replace(out)


def archive_path(out: Path, service) -> Path:
    return out / f"millrace-{service}.oci.tar"


def build(args, root: Path):
    version = args.version or cargo_version(root)
    revision = git_revision(root)
    for service in args.service:
        binary = args.bin_dir / f"millrace-{service}"
        if not binary.is_file():
            sys.exit(f"images: {binary} missing; build it with cargo build --release --workspace --bins")
        layer, env, user, ports = image_files(service, binary, args.model, args.tokenizer)
        dest = archive_path(args.out, service)
        write_archive(dest, service, layer, env, user, ports, version, args.source, revision)
        print(f"images: {dest} {dest.stat().st_size / 1e6:.1f} MB")


def cargo_version(root: Path) -> str:
    text = (root / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[1]
    for line in section.splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    return "0.0.0"


# ---------------------------------------------------------------------------------------------
# Checking


class Archive:
    """An oci-archive read back: the index, the manifest, the config and the layer's files."""

    def __init__(self, path: Path):
        try:
            with tarfile.open(path) as tar:
                self.files = {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        except (OSError, tarfile.TarError) as err:
            raise CheckError(f"cannot read the archive: {err}")
        if json.loads(self.files.get("oci-layout", b"{}")).get("imageLayoutVersion") != "1.0.0":
            raise CheckError("no oci-layout 1.0.0")
        index = self.json("index.json")
        manifests = index.get("manifests", [])
        if len(manifests) != 1:
            raise CheckError(f"index.json lists {len(manifests)} manifests, expected 1")
        self.manifest = self.json_blob(manifests[0], MT_MANIFEST)
        self.config = self.json_blob(self.manifest["config"], MT_CONFIG)
        layers = self.manifest.get("layers", [])
        if len(layers) != 1 or layers[0].get("mediaType") != MT_LAYER:
            raise CheckError(f"expected one {MT_LAYER} layer, got {layers}")
        layer_tar = gzip.decompress(self.blob(layers[0]))
        if self.config.get("rootfs", {}).get("diff_ids") != [sha256(layer_tar)]:
            raise CheckError("the config's diff_id is not the layer's uncompressed digest")
        self.layer = {}
        with tarfile.open(fileobj=io.BytesIO(layer_tar)) as tar:
            for m in tar.getmembers():
                self.layer[m.name.removeprefix("./").rstrip("/")] = (m, tar.extractfile(m).read() if m.isfile() else None)

    def json(self, name):
        try:
            return json.loads(self.files[name])
        except (KeyError, ValueError) as err:
            raise CheckError(f"{name}: {err!r}")

    def blob(self, desc):
        algo, _, hexdigest = desc.get("digest", "").partition(":")
        data = self.files.get(f"blobs/{algo}/{hexdigest}")
        if data is None:
            raise CheckError(f"blob {desc.get('digest')} missing")
        if sha256(data) != desc["digest"] or len(data) != desc.get("size"):
            raise CheckError(f"blob {desc['digest']} does not match its digest or size")
        return data

    def json_blob(self, desc, media_type):
        if desc.get("mediaType") != media_type:
            raise CheckError(f"{desc.get('digest')}: media type {desc.get('mediaType')}, expected {media_type}")
        try:
            return json.loads(self.blob(desc))
        except ValueError as err:
            raise CheckError(f"{desc['digest']}: {err}")

    def regular(self, path):
        """The bytes of a regular file of the layer, following symlinks inside it."""
        path = path.lstrip("/")
        for _ in range(16):
            entry = self.layer.get(path)
            if entry is None:
                return None
            member, data = entry
            if member.issym():
                target = member.linkname
                path = target.lstrip("/") if target.startswith("/") else os.path.normpath(
                    os.path.join(os.path.dirname(path), target))
                continue
            return data if member.isfile() else None
        return None


def check_archive(path: Path, service, max_mb: float, with_model: bool):
    """Raises CheckError naming the first thing wrong with one service's archive."""
    name = f"millrace-{service}"
    size_mb = path.stat().st_size / 1e6
    if not with_model and size_mb >= max_mb:
        raise CheckError(f"{size_mb:.1f} MB, limit {max_mb} MB")
    image = Archive(path)
    cfg = image.config.get("config", {})
    if image.config.get("os") != "linux" or image.config.get("architecture") != "amd64":
        raise CheckError("not a linux/amd64 image")

    entry = f"/{BIN_DIR}/{name}"
    if cfg.get("Entrypoint") != [entry] or cfg.get("Cmd"):
        raise CheckError(f"entrypoint {cfg.get('Entrypoint')} cmd {cfg.get('Cmd')}, expected [{entry!r}]")

    user = str(cfg.get("User", ""))
    uid, _, gid = user.partition(":")
    if not (uid.isdigit() and gid.isdigit()) or (int(uid), int(gid)) != (UID, GID):
        raise CheckError(f"user {user!r}, expected numeric {UID}:{GID} (non-root)")
    passwd = (image.regular("etc/passwd") or b"").decode()
    if not any(line.split(":")[2:4] == [str(UID), str(GID)] for line in passwd.splitlines() if line.count(":") >= 3):
        raise CheckError(f"/etc/passwd has no entry for {UID}:{GID}")
    if not any(line.split(":")[2:3] == [str(GID)] for line in (image.regular("etc/group") or b"").decode().splitlines()):
        raise CheckError(f"/etc/group has no entry for {GID}")

    binary = image.regular(entry)
    member = image.layer.get(entry.lstrip("/"), (None,))[0]
    if binary is None or member is None or not member.mode & 0o001:
        raise CheckError(f"{entry} missing or not executable by others")
    missing = missing_libraries(image, entry)
    if missing:
        raise CheckError(f"not in the layer: {', '.join(missing)}")

    for shell in SHELLS:
        if shell in image.layer:
            raise CheckError(f"/{shell} is in the image")
    ca = image.regular(CA_BUNDLE) or b""
    if b"BEGIN CERTIFICATE" not in ca:
        raise CheckError(f"/{CA_BUNDLE} missing or empty")

    http, grpc = SERVICES[service]
    env = dict(e.split("=", 1) for e in cfg.get("Env", []))
    if env.get("MILLRACE_HTTP_ADDR") != f"0.0.0.0:{http}" or env.get("MILLRACE_GRPC_ADDR") != f"0.0.0.0:{grpc}":
        raise CheckError(f"listen addresses {env.get('MILLRACE_HTTP_ADDR')} {env.get('MILLRACE_GRPC_ADDR')}")
    if set(cfg.get("ExposedPorts", {})) != {f"{http}/tcp", f"{grpc}/tcp"}:
        raise CheckError(f"exposed ports {sorted(cfg.get('ExposedPorts', {}))}")
    labels = cfg.get("Labels", {})
    for label in ("org.opencontainers.image.source", "org.opencontainers.image.version"):
        if not labels.get(label):
            raise CheckError(f"label {label} missing")
    if service == "chunking":
        for f in TOKENIZER_FILES:
            if image.regular(f"{MODEL_DIR}/{f}") is None:
                raise CheckError(f"/{MODEL_DIR}/{f} missing (chunking needs the tokenizer)")
    if service in ("chunking", "embeddings") and env.get("MILLRACE_EMBEDDING_MODEL_DIR") != f"/{MODEL_DIR}":
        raise CheckError("MILLRACE_EMBEDDING_MODEL_DIR not set")
    if with_model and image.regular(f"{MODEL_DIR}/model.safetensors") is None:
        raise CheckError("MODEL=1 but the model is not in the image")
    return image, size_mb


def missing_libraries(image: Archive, entry: str):
    """Every interpreter and DT_NEEDED library, recursively, looked up in the layer's own files
    the way glibc's loader would without an ld.so.cache."""
    missing, seen, todo = [], set(), [entry.lstrip("/")]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        interp, needed = elf_deps(image.regular(path))
        if interp is not None:
            if image.regular(interp) is None:
                missing.append(f"interpreter {interp}")
            else:
                todo.append(interp.lstrip("/"))
        for soname in needed:
            found = next((f"{d}/{soname}" for d in LIB_DIRS if image.regular(f"{d}/{soname}") is not None), None)
            if found is None:
                missing.append(f"{soname} (needed by /{path})")
            else:
                todo.append(found)
    return list(dict.fromkeys(missing))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke(image: Archive, service, path: Path) -> str:
    """Starts the binary from the extracted layer with the layer's own loader and libraries (no
    chroot, no engine) and waits for /healthz. Redis and PostgreSQL point at a closed port so no
    server on the machine is touched; /healthz does not depend on Redis. Storage connects to
    PostgreSQL before it binds a port, so for it the proof is its retry log line: the binary
    loaded, parsed its config and is running."""
    cfg = image.config["config"]
    with tempfile.TemporaryDirectory(prefix="millrace-image-") as tmp:
        root = Path(tmp)
        for name, (member, data) in image.layer.items():
            if member.isdir():
                (root / name).mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
                (root / name).chmod(member.mode & 0o755)
        interp, _ = elf_deps(image.regular(cfg["Entrypoint"][0]))
        http, grpc = free_port(), free_port()
        env = dict(e.split("=", 1) for e in cfg["Env"])
        closed = free_port()  # bound and released: nothing listens there
        env.update({
            "MILLRACE_HTTP_ADDR": f"127.0.0.1:{http}",
            "MILLRACE_GRPC_ADDR": f"127.0.0.1:{grpc}",
            "MILLRACE_REDIS_URL": f"redis://127.0.0.1:{closed}",
            "MILLRACE_DATABASE_URL": f"postgres://millrace@127.0.0.1:{closed}/millrace",
            "HOME": str(root / "home/nonroot"),
            "RUST_LOG": "warn",
        })
        for key in ("MILLRACE_EMBEDDING_MODEL_DIR",):
            if key in env:
                env[key] = str(root / env[key].lstrip("/"))
        if service == "embeddings" and not (root / MODEL_DIR / "model.safetensors").exists():
            # No model in the image: the hashing embedder needs none.
            env["MILLRACE_EMBEDDINGS_PROVIDER"] = "hashing"
        lib_path = ":".join(str(root / d) for d in LIB_DIRS if (root / d).is_dir())
        cmd = [str(root / interp.lstrip("/")), "--library-path", lib_path, str(root / cfg["Entrypoint"][0].lstrip("/"))]
        log = root / "smoke.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise CheckError(f"exited with {proc.returncode}: {log.read_text()[-2000:]}")
                if service == "storage" and "PostgreSQL not ready; retrying" in log.read_text():
                    return "running, waiting for PostgreSQL"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=2) as resp:
                        if resp.status == 200:
                            return "healthz answered"
                except OSError:
                    pass
                time.sleep(0.2)
            raise CheckError(f"/healthz did not answer within 30 s: {log.read_text()[-2000:]}")
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def check(args):
    failed = 0
    for service in args.service:
        path = archive_path(args.out, service)
        try:
            if not path.is_file():
                raise CheckError("archive missing; run make images")
            image, size_mb = check_archive(path, service, args.max_mb, args.model and service == "embeddings")
            started = f" ({smoke(image, service, path)})" if args.smoke else ""
            print(f"images: ok   {path.name} {size_mb:.1f} MB{started}")
        except CheckError as err:
            failed += 1
            print(f"images: FAIL {path.name}: {err}", file=sys.stderr)
    if failed:
        sys.exit(f"images: {failed} image(s) failed the check")


def self_test(args):
    """Builds broken images of one service and requires the check to reject each, so a check
    that passes everything cannot go unnoticed."""
    service = "llm-gateway"
    binary = args.bin_dir / f"millrace-{service}"
    cases = {
        "root user": (dict(user="0:0"), None),
        "missing libgcc_s": (dict(omit=("libgcc_s.so.1",)), None),
        "missing loader": (dict(omit=("ld-linux-x86-64.so.2",)), None),
        "a shell": ({}, lambda layer: layer.file("bin/sh", b"#!", 0o755)),
        "no CA bundle": ({}, lambda layer: layer.entries.pop(CA_BUNDLE)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for case, (broken, edit) in cases.items():
            layer, env, user, ports = image_files(service, binary, None, None, **broken)
            if edit is not None:
                edit(layer)
            path = archive_path(Path(tmp), service)
            write_archive(path, service, layer, env, user, ports, "0.0.0", "test", "test")
            try:
                check_archive(path, service, args.max_mb, False)
            except CheckError as err:
                print(f"images: self-test ok, {case} rejected: {err}")
                continue
            sys.exit(f"images: self-test FAILED: an image with {case} passed the check")
        # An oversized image: the limit is the only thing that changes.
        layer, env, user, ports = image_files(service, binary, None, None)
        path = archive_path(Path(tmp), service)
        write_archive(path, service, layer, env, user, ports, "0.0.0", "test", "test")
        try:
            check_archive(path, service, 1.0, False)
        except CheckError as err:
            print(f"images: self-test ok, over 1 MB rejected: {err}")
        else:
            sys.exit("images: self-test FAILED: an image over the size limit passed the check")


def main():
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "check", "self-test"):
        p = sub.add_parser(name)
        p.add_argument("--service", action="append", choices=sorted(SERVICES))
        p.add_argument("--out", type=Path, default=root / ".millrace/images")
        p.add_argument("--bin-dir", type=Path)
        p.add_argument("--max-mb", type=float, default=40.0)
        p.add_argument("--model", type=Path, help="bake this model folder into the embeddings image")
        p.add_argument("--tokenizer", type=Path, help="folder with the chunking tokenizer files")
        p.add_argument("--version")
        p.add_argument("--source", default="https://github.com/millrace/millrace")
        p.add_argument("--smoke", action="store_true", help="start each binary from its layer, wait for /healthz")
    args = parser.parse_args()
    args.service = args.service or list(SERVICES)
    if args.command == "build":
        if args.tokenizer is None and "chunking" in args.service:
            parser.error("--tokenizer is needed for the chunking image")
        build(args, root)
    elif args.command == "check":
        check(args)
    else:
        self_test(args)


if __name__ == "__main__":
    main()
