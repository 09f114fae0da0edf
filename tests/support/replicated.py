"""Replicated reconcilers on PostgreSQL as real processes, for tests/reconciler/test_failover.py and
hack/bench/failover.py: ``driftless up``'s platform (registry, bare Git repository, hosts) with two
reconcilers ("reconciler", "reconciler-b") on one database, and hosts given both URLs.

    r = Replicated(root, postgres.new_database()); r.start()
    r.role("reconciler")        # "leader" | "follower" | None (not answering)
    r.p.kill("reconciler"); r.p.restart("reconciler"); r.p.stop()
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.components import build
from tests.support.platform import LocalPlatform, application, environment, local_platform
from tests.support.procs import free_port, wait_until

HOSTS = {"aws-1": {"cloud": "aws"}, "gcp-1": {"cloud": "gcp"}}
LEASE = 3.0


def prod_environment() -> str:
    return environment("prod", prefix="/prod").rstrip(" ") + (
        "          promotion:\n"
        "            from: dev\n"
        "            minSoak: 0s\n"
        "            requireApproval: false\n")


def app(name: str, replicas: int = 2) -> str:
    return application(name, [{
        "name": "web", "image": "demo/hello:1.0.0", "config": {"GREETING": f"hi from {name}"}, "expose": f"/{name}",
        "placement": {"spread": {"replicas": replicas}}}])


TREE = {
    "dev/environment.yaml": environment("dev", prefix="/dev"),
    "dev/apps/hello.yaml": app("hello"),
    "dev/apps/greet.yaml": app("greet"),
    "prod/environment.yaml": prod_environment(),
    "prod/apps/hello.yaml": app("hello"),
    "prod/apps/greet.yaml": app("greet"),
}


class Replicated:
    """The platform with a second reconciler ("reconciler-b") on the same database."""

    def __init__(self, root: Path, state: str) -> None:
        self.b_port = free_port()
        self.p: LocalPlatform = local_platform(
            root, hosts=HOSTS, reconciler_args=["--state", state, "--lease", str(LEASE)])
        self.p.host_args = ["--control", f"{self.p.control_url},{self.url_b}"]
        self.urls = {"reconciler": self.p.control_url, "reconciler-b": self.url_b}

    @property
    def url_b(self) -> str:
        return f"http://127.0.0.1:{self.b_port}"

    def start(self) -> None:
        p = self.p
        p.prepare()
        p.start_registry()
        p.registry.push("demo/hello:1.0.0", build("hello"))
        p.seed(TREE)
        p.start_reconciler()
        wait_until(lambda: self.role("reconciler") == "leader", timeout=15, what="the first reconciler leads")
        p._spawn("reconciler-b", [*p.reconciler_command(), "--listen", f"127.0.0.1:{self.b_port}",
                                  "--data", str(p.data / "reconciler-b")])
        wait_until(lambda: self.role("reconciler-b") == "follower", timeout=15, what="the second one follows")
        p.start_hosts()

    def health(self, name: str) -> dict[str, Any]:
        r = httpx.get(f"{self.urls[name]}/healthz", timeout=2)
        return r.json()["leadership"]  # type: ignore[no-any-return]

    def role(self, name: str) -> str | None:
        try:
            return self.health(name)["role"]  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def get(self, name: str, path: str) -> Any:
        r = httpx.get(f"{self.urls[name]}{path}", timeout=5, headers=self.p.read_headers)
        r.raise_for_status()
        return r.json()

    def healthy(self, name: str) -> bool:
        envs = self.get(name, "/api/v1/environments")["environments"]
        apps = [a for e in envs for a in e["apps"]]
        return len(apps) == 4 and all(a["health"] == "Healthy" and a["sync"] == "Synced" for a in apps)

    def running(self, name: str) -> dict[str, tuple[Any, ...]]:
        """Every instance the hosts report: id -> (started at, restarts, digest, status)."""
        out = {}
        for h in HOSTS:
            rep = self.get(name, f"/api/v1/hosts/{h}")["report"] or {"instances": []}
            for i in rep["instances"]:
                out[f"{h}:{i['id']}"] = (i["startedAt"], i["restarts"], i["digest"], i["status"])
        return out

    def generations(self, name: str) -> dict[str, int]:
        return {h: self.get(name, f"/api/v1/hosts/{h}")["generation"] for h in HOSTS}

    def reported_to(self, name: str, since: float) -> bool:
        return all((self.get(name, f"/api/v1/hosts/{h}").get("reportedAt") or 0) > since for h in HOSTS)

    def git_log(self) -> list[str]:
        out = subprocess.run(["git", "--git-dir", str(self.p.git_dir), "log", "--format=%H %s", "main"],
                             check=True, capture_output=True, text=True).stdout
        return out.splitlines()

    def promote(self, app_name: str, urls: str) -> subprocess.Popen[str]:
        """``driftless promote APP --from dev --to prod --control URLS`` (the CLI, as a user runs it)."""
        return subprocess.Popen(
            [sys.executable, "-m", "driftless", "promote", app_name, "--from", "dev", "--to", "prod",
             "--control", urls, "--token-file", str(self.p.admin_token_file), "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})

    def log(self, name: str) -> str:
        return self.p.running[name].log()
