"""A real platform for the drift, promotion and rollback end-to-end tests, started once per module:
the project's registry, a bare Git repository (watched by the reconciler), the reconciler, and three
host agents with admin APIs and fast heartbeats. Everything on 127.0.0.1, random ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.components import build, variant
from tests.support.procs import DriftlessProcess, free_port, wait_until

TOKEN = "drift-test-token"
HEARTBEAT = 0.5

ENVIRONMENTS = {
    "manifests/staging/environment.yaml": """\
apiVersion: driftless.dev/v1alpha1
kind: Environment
metadata: {name: staging}
spec:
  ingress: {pathPrefix: /staging}
  sync: {mode: report}   # drift is only reported here
""",
    "manifests/prod/environment.yaml": """\
apiVersion: driftless.dev/v1alpha1
kind: Environment
metadata: {name: prod}
spec:
  sync: {mode: heal}     # drift is corrected here
  promotion:
    from: staging
    minSoak: 1s
    requireApproval: true
""",
}


def hello_app(env: str, image: str, greeting: str) -> str:
    return f"""\
# hello in {env}
apiVersion: driftless.dev/v1alpha1
kind: Application
metadata:
  name: hello
spec:
  components:
  - name: web
    image: {image}   # promotion pins this
    config: {{GREETING: "{greeting}"}}
    placement:
      spread: {{replicas: 2}}
    expose: /hello
"""


TREE = {
    **ENVIRONMENTS,
    "manifests/staging/apps/hello.yaml": hello_app("staging", "demo/hello:2.0.0", "hi from staging"),
    "manifests/prod/apps/hello.yaml": hello_app("prod", "demo/hello:1.0.0", "hi from prod"),
}


@dataclass
class Host:
    name: str
    admin: str
    proc: DriftlessProcess


@dataclass
class Platform:
    root: Path
    registry: str  # URL
    control: str  # URL
    remote: Path  # bare repository
    work: Path  # a clone the tests commit from
    hosts: dict[str, Host] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # tag -> digest pushed

    @property
    def registry_host(self) -> str:
        return self.registry.removeprefix("http://")

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DRIFTLESS_CONTROL": self.control,
            "DRIFTLESS_REGISTRY": self.registry,
            "DRIFTLESS_REPO": str(self.remote),
            "DRIFTLESS_TOKEN": TOKEN,
            "DRIFTLESS_DATA": str(self.root / "cli"),  # no stray up.json
            "NO_COLOR": "1",
        }

    def cli(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "driftless", *args],
            capture_output=True, text=True, env=self.env(), cwd=cwd or self.root, timeout=60,
        )  # fmt: skip

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.control + path, timeout=5) as r:
            return json.loads(r.read())

    def admin(self, host: str, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.hosts[host].admin + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {TOKEN}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def drift(self, env: str | None = None) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/drift" + (f"?env={env}" if env else ""))["items"])

    def counted(self, env: str | None = None) -> list[dict[str, Any]]:
        return [i for i in self.drift(env) if i["category"] != "Pending"]

    def git(self, *args: str) -> str:
        r = subprocess.run(
            ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
            cwd=self.work, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    def commit(self, files: dict[str, str], message: str) -> str:
        if self.git("ls-remote", "origin", "main").strip():
            self.git("pull", "-q", "--rebase", "origin", "main")
        for rel, text in files.items():
            (self.work / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.work / rel).write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD").strip()

    def applied(self) -> str | None:
        return (self.api("/api/v1/environments")["source"].get("applied") or {}).get("revision")

    def healthy(self) -> bool:
        envs = self.api("/api/v1/environments")["environments"]
        apps = [a for e in envs for a in e["apps"]]
        return bool(apps) and all(a["health"] == "Healthy" and a["sync"] == "Synced" for a in apps)

    def instances(self, host: str) -> list[dict[str, Any]]:
        return list(self.admin(host, "GET", "/api/v1/instances")["instances"])


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    from shared.registry_client import push_component

    root = tmp_path_factory.mktemp("platform")
    logs = root / "logs"
    logs.mkdir()
    started: list[DriftlessProcess] = []
    try:
        reg_port = free_port()
        registry = f"http://127.0.0.1:{reg_port}"
        started.append(
            DriftlessProcess(
                ["registry", "serve", "--root", str(root / "registry"), "--listen", f"127.0.0.1:{reg_port}"],
                log_dir=logs, ready_url=f"{registry}/v2/", name="registry",
            ).start()
        )  # fmt: skip
        digests = {
            "demo/hello:1.0.0": push_component(f"127.0.0.1:{reg_port}/demo/hello:1.0.0", build("hello")),
            "demo/hello:2.0.0": push_component(
                f"127.0.0.1:{reg_port}/demo/hello:2.0.0", variant("hello", "2.0.0")
            ),
        }
        remote, work = root / "manifests.git", root / "work"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True, capture_output=True)
        p = Platform(root=root, registry=registry, control="", remote=remote, work=work, digests=digests)
        p.git("checkout", "-q", "-b", "main")
        p.commit(TREE, "seed: hello in staging (2.0.0) and prod (1.0.0)")
        token_file = root / "token"
        token_file.write_text(TOKEN)
        ctl_port = free_port()
        p.control = f"http://127.0.0.1:{ctl_port}"
        started.append(
            DriftlessProcess(
                ["reconcile", "--repo", str(remote), "--listen", f"127.0.0.1:{ctl_port}", "--data", str(root / "rec"),
                 "--registry", registry, "--token-file", str(token_file), "--heartbeat", str(HEARTBEAT),
                 "--interval", "30", "--grace", "3"],
                log_dir=logs, ready_url=f"{p.control}/healthz", name="reconciler",
            ).start()
        )  # fmt: skip
        for name, labels in (("aws-1", "cloud=aws"), ("gcp-1", "cloud=gcp"), ("edge-1", "tier=edge")):
            admin_port = free_port()
            proc = DriftlessProcess(
                ["host", "--control", p.control, "--token-file", str(token_file), "--name", name,
                 "--listen", f"127.0.0.1:{free_port()}", "--admin-listen", f"127.0.0.1:{admin_port}",
                 "--data", str(root / "hosts" / name), "--heartbeat", str(HEARTBEAT), "--label", labels,
                 "--drain-timeout", "1"],
                log_dir=logs, name=f"host-{name}",
            ).start()  # fmt: skip
            started.append(proc)
            p.hosts[name] = Host(name=name, admin=f"http://127.0.0.1:{admin_port}", proc=proc)
        wait_until(p.healthy, timeout=45, interval=0.2, what="every app Synced and Healthy")
        wait_until(lambda: not p.counted(), timeout=10, interval=0.2, what="no drift on a fresh platform")
        yield p
    finally:
        # SIGTERM every host at once, so their graceful stops overlap, then the rest in reverse order
        hosts = [proc for proc in started if proc.name.startswith("host-")]
        for proc in hosts:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in hosts:
            _wait_or_kill(proc, timeout=max(0.1, deadline - time.monotonic()))
        for proc in reversed(started):
            proc.stop(timeout=5)


def _wait_or_kill(proc: DriftlessProcess, *, timeout: float) -> None:
    try:
        if proc.proc is not None:
            proc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def p(platform: Platform) -> Platform:
    """Short name for the platform in the tests."""
    return platform


def wait_for_drift(
    p: Platform, *, category: str, env: str | None = None, timeout: float = 15.0, **match: str
) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for item in p.drift(env):
            if item["category"] == category and all(item.get(k) == v for k, v in match.items()):
                return item
        return None

    return wait_until(found, timeout=timeout, interval=0.1, what=f"{category} drift {match}")  # type: ignore[no-any-return]


def now() -> float:
    return time.time()
