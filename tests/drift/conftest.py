"""The platform of the drift, promotion and rollback end-to-end tests: the one test platform
(tests/support/platform.py: registry, bare Git repository, reconciler, three host agents with admin
APIs and fast heartbeats), started once per module. Before each test the ``p`` fixture brings it back
to the baseline (``TREE`` in Git, the tags where they were pushed, every host up, no counted drift),
so each test passes alone and in any order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.components import build, variant
from tests.support.platform import LocalPlatform, Process, local_platform
from tests.support.procs import wait_until

TOKEN = "drift-test-token"  # the join token (hosts register with it)
ADMIN = "alice"  # the reconciler's admin user: the CLI promotes and approves as her
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
    proc: Process


@dataclass
class Platform:
    root: Path
    registry: str  # URL
    control: str  # URL
    remote: Path  # bare repository
    work: Path  # a clone the tests commit from
    hosts: dict[str, Host] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # tag -> digest pushed
    lp: LocalPlatform | None = None  # the processes

    @property
    def credential(self) -> Path:
        """The admin's bearer token file (DATA/admin-token, like `driftless up`)."""
        assert self.lp is not None
        return self.lp.admin_token_file

    def client(self) -> Any:
        """A ReconcilerClient of the platform, as the admin."""
        from driftless.client import ReconcilerClient

        return ReconcilerClient(base_url=self.control, token_file=self.credential)

    @property
    def registry_host(self) -> str:
        return self.registry.removeprefix("http://")

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DRIFTLESS_CONTROL": self.control,
            "DRIFTLESS_REGISTRY": self.registry,
            "DRIFTLESS_REPO": str(self.remote),
            "DRIFTLESS_TOKEN_FILE": str(self.credential),  # the reconciler's API: the admin credential
            "DRIFTLESS_DATA": str(self.root / "cli"),  # no stray up.json
            "NO_COLOR": "1",
        }

    def cli(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        if args[:3] == ("host", "exec", "--admin"):  # the host's own admin credential, never the join token
            assert self.lp is not None
            name = next(h.name for h in self.hosts.values() if h.admin == args[3])
            args = (*args[:4], "--token-file", str(self.lp.host_admin_token_file(name)), *args[4:])
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
        assert self.lp is not None
        for k, v in self.lp.host_admin_headers(host).items():
            req.add_header(k, v)
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
            self.git("pull", "-q", "--rebase", "--autostash", "origin", "main")
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


HOSTS = {"aws-1": {"cloud": "aws"}, "gcp-1": {"cloud": "gcp"}, "edge-1": {"tier": "edge"}}
COMPONENTS = {"demo/hello:1.0.0": lambda: build("hello"), "demo/hello:2.0.0": lambda: variant("hello", "2.0.0")}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("platform")
    (root / "token").write_text(TOKEN)
    lp = local_platform(root, hosts=HOSTS, heartbeat=HEARTBEAT, host_args=["--drain-timeout", "1"], admin_name=ADMIN)
    try:
        digests = lp.up(tree={k.removeprefix("manifests/"): v for k, v in TREE.items()},
                        message="seed: hello in staging (2.0.0) and prod (1.0.0)",
                        components={ref: wasm() for ref, wasm in COMPONENTS.items()})
        p = Platform(root=root, registry=lp.registry_url, control=lp.control_url, remote=lp.git_dir,
                     work=lp.git.work, digests=digests, lp=lp)
        p.hosts = {name: Host(name=name, admin=lp.admin(name), proc=lp.process(f"host-{name}")) for name in HOSTS}
        wait_until(p.healthy, timeout=45, interval=0.2, what="every app Synced and Healthy")
        wait_until(lambda: not p.counted(), timeout=10, interval=0.2, what="no drift on a fresh platform")
        yield p
    finally:
        lp.stop(timeout=5)  # SIGTERM every host at once, so their graceful stops overlap, then the rest


def reset(p: Platform) -> None:
    """Back to the baseline, whatever the previous test left: every process up, each tag on the digest
    first pushed, ``TREE`` at the head of Git, everything applied, Healthy, and no counted drift."""
    from shared.registry_client import resolve

    assert p.lp is not None
    for name in [*p.lp.procs]:
        if not p.lp.alive(name):
            p.lp.restart(name)
    for ref in COMPONENTS:
        if resolve(f"{p.registry_host}/{ref}") != p.digests[ref]:  # a test moved the tag
            p.lp.registry.tag(ref, p.digests[ref])
    p.git("pull", "-q", "--rebase", "origin", "main")
    for rel, text in TREE.items():
        (p.work / rel).write_text(text)
    if p.git("status", "--porcelain", "manifests").strip():
        p.commit({}, "back to the baseline")
    head = p.git("rev-parse", "HEAD").strip()
    httpx.post(f"{p.control}/api/v1/sync", json={}, timeout=5,  # tags are read at a fetch
               headers=p.lp.admin_headers()).raise_for_status()

    def at_baseline() -> bool:
        hosts = p.api("/api/v1/hosts")["hosts"]
        return p.applied() == head and p.healthy() and not p.counted() and len(hosts) == len(HOSTS) \
            and all(h["state"] == "Ready" for h in hosts)

    wait_until(at_baseline, timeout=45, interval=0.2, what="the baseline")


@pytest.fixture
def p(platform: Platform) -> Platform:
    """Short name for the platform in the tests, at the baseline."""
    reset(platform)
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
