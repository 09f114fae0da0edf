"""Fixtures for the host tests: a real CNCF registry (/usr/bin/docker-registry) on loopback, the
example components pushed to it with oras-py, and helpers to start real ``driftless host`` processes."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.components import build
from tests.support.procs import DriftlessProcess, free_port, wait_until

WASM_LAYER = "application/vnd.wasm.content.layer.v1+wasm"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    root: Path

    def push(self, name: str, data: bytes, *, tag: str = "1.0.0", media_type: str = WASM_LAYER) -> str:
        """Push ``data`` as a wasm OCI artifact ``demo/<name>:<tag>``; return the pinned image reference."""
        import oras.client

        work = self.root.parent / "push" / f"{name}-{tag}"
        work.mkdir(parents=True, exist_ok=True)
        blob = work / f"{name}.wasm"
        blob.write_bytes(data)
        config = work / "config.json"
        config.write_text(json.dumps({"architecture": "wasm", "os": "wasip2"}))
        client = oras.client.OrasClient(hostname=self.host, insecure=True)
        client.push(
            target=f"{self.host}/demo/{name}:{tag}",
            files=[f"{blob}:{media_type}"],
            manifest_config=f"{config}:{WASM_CONFIG}",
            disable_path_validation=True,
        )
        return f"{self.host}/demo/{name}@{self.digest(name, tag)}"

    def digest(self, name: str, tag: str) -> str:
        req = urllib.request.Request(
            f"http://{self.host}/v2/demo/{name}/manifests/{tag}",
            method="HEAD",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return str(r.headers["Docker-Content-Digest"])


def start_registry(root: Path, port: int) -> subprocess.Popen[bytes]:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    log = open(root / "registry.log", "ab")
    proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    log.close()

    def up() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as r:
            return r.status == 200

    wait_until(up, timeout=15, what="docker-registry")
    return proc


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    proc = start_registry(root, port)
    try:
        yield Registry(host=f"127.0.0.1:{port}", root=root)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def images(registry: Registry) -> dict[str, str]:
    """Every example component pushed once: name -> pinned image reference."""
    return {name: registry.push(name, build(name)) for name in ("hello", "greeter", "frontend", "spin", "hog", "slow", "job")}


def instance(
    image: str, *, component: str, env: str = "dev", app: str = "demo", ordinal: int = 0, **extra: Any
) -> dict[str, Any]:
    """An InstanceSpec as JSON for a desired-state file."""
    return {
        "id": f"{env}/{app}/{component}/{ordinal}",
        "env": env,
        "app": app,
        "component": component,
        "image": image,
        "digest": image.rpartition("@")[2],
        **extra,
    }


def write_desired(path: Path, generation: int, instances: list[dict[str, Any]], *, host: str = "h1") -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"host": host, "generation": generation, "instances": instances}))
    tmp.replace(path)


@dataclass
class Host:
    proc: DriftlessProcess
    url: str
    admin: str
    token: str  # the join token
    data: Path

    @property
    def admin_token_file(self) -> Path:
        """The admin API's credential, which the host created in its data directory (0600)."""
        return self.data / "admin-token"

    @property
    def admin_token(self) -> str:
        return self.admin_token_file.read_text().strip()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()

    def get(self, path: str, **kw: Any) -> Any:
        import httpx

        return httpx.get(self.url + path, timeout=kw.pop("timeout", 10), **kw)

    def admin_get(self, path: str) -> Any:
        import httpx

        r = httpx.get(self.admin + path, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=5)
        r.raise_for_status()
        return r.json()

    @property
    def metrics_token(self) -> str:
        """The read-only credential of the admin listener's /metrics (DATA/metrics-token, made by the host)."""
        return (self.data / "metrics-token").read_text().strip()

    def metrics(self) -> str:
        """The host's Prometheus text, scraped as Prometheus would: admin listener, metrics token."""
        import httpx

        r = httpx.get(self.admin + "/metrics", headers={"Authorization": f"Bearer {self.metrics_token}"}, timeout=5)
        r.raise_for_status()
        return r.text

    def instances(self) -> dict[str, dict[str, Any]]:
        return {i["id"]: i for i in self.admin_get("/api/v1/instances")["instances"]}

    def wait_status(self, instance_id: str, status: str, *, timeout: float = 20) -> dict[str, Any]:
        return wait_until(
            lambda: (i := self.instances().get(instance_id)) and i["status"] == status and i,
            timeout=timeout,
            what=f"{instance_id} {status}",
        )


def start_host(
    tmp_path: Path, *args: str, data: Path | None = None, name: str = "h1", token_file: Path | None = None
) -> Host:
    port, admin_port = free_port(), free_port()
    data = data or tmp_path / f"host-{name}"
    token = token_file.read_text().strip() if token_file else "test-token"
    token_args = ["--token-file", str(token_file)] if token_file else ["--token", token]
    proc = DriftlessProcess(
        ["host", "--name", name, "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin_port}",
         "--data", str(data), *token_args, "--heartbeat", "0.5", *args],
        log_dir=tmp_path, name=f"host-{name}", ready_url=f"http://127.0.0.1:{admin_port}/healthz",
    )  # fmt: skip
    proc.start()
    return Host(proc=proc, url=f"http://127.0.0.1:{port}", admin=f"http://127.0.0.1:{admin_port}", token=token, data=data)
