"""Git commit status (``spec.commitStatus``): the commit a user pushed shows what became of it, in the
GitHub and GitLab commit-status API shapes. The APIs are a real aiohttp server on 127.0.0.1 that
checks each request's path, headers and body; the platform is ``driftless up``'s own (a registry,
the Git repository, the reconciler with a --secrets-file and the API allowed by --outbound-allow, one host).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from reconciler.controller.commit_status import Outcome, outcome
from tests.support.components import build
from tests.support.http_server import ThreadedServer
from tests.support.platform import LocalPlatform, application, environment, local_platform
from tests.support.procs import wait_until

GITHUB_TOKEN = "ghp_commitStatusTestToken0123456789"
GITLAB_TOKEN = "glpat-commitStatusTestToken"
HELLO = application("hello", [{"name": "web", "image": "demo/hello:1.0.0"}])
BROKEN = application("hello", [{"name": "web", "image": "demo/hello:1.0.0", "replicas": 3}])  # unknown field
HEX40 = re.compile(r"^[0-9a-f]{40}$")


class StatusAPI:
    """GitHub's and GitLab's commit-status endpoints: each request is checked and recorded as
    (provider, sha, body); the first GitHub request is answered 502 (so it must be retried)."""

    def __init__(self) -> None:
        self.statuses: list[tuple[str, str, dict[str, Any]]] = []
        self.refused: list[str] = []
        self.answered: list[int] = []
        self.bad_gateway: list[dict[str, Any]] = []  # the bodies answered 502
        app = web.Application()
        app.router.add_post("/repos/{owner}/{repo}/statuses/{sha}", self._github)
        app.router.add_post("/api/v4/projects/{project}/statuses/{sha}", self._gitlab)
        self._server = ThreadedServer(app)

    def _refuse(self, why: str) -> web.Response:
        self.refused.append(why)
        return web.json_response({"message": why}, status=422)

    async def _github(self, request: web.Request) -> web.Response:
        m = request.match_info
        if (m["owner"], m["repo"]) != ("acme", "manifests") or not HEX40.match(m["sha"]):
            return self._refuse(f"github path {request.path}")
        if request.headers.get("Authorization") != f"Bearer {GITHUB_TOKEN}":
            return self._refuse("github Authorization")
        if request.headers.get("Accept") != "application/vnd.github+json" \
                or request.headers.get("Content-Type") != "application/json":
            return self._refuse("github Accept/Content-Type")
        body = await request.json()
        if set(body) != {"state", "target_url", "description", "context"} \
                or body["state"] not in ("pending", "success", "failure", "error") \
                or not isinstance(body["description"], str) or len(body["description"]) > 140:
            return self._refuse(f"github body {body}")
        first = not any(p == "github" for p, _, _ in self.statuses) and 502 not in self.answered
        self.answered.append(502 if first else 201)
        if first:
            self.bad_gateway.append(body)
            return web.json_response({"message": "Bad gateway"}, status=502)
        self.statuses.append(("github", m["sha"], body))
        return web.json_response({"id": len(self.statuses), **body}, status=201)

    async def _gitlab(self, request: web.Request) -> web.Response:
        m = request.match_info
        if m["project"] != "acme/manifests" or not HEX40.match(m["sha"]) \
                or "/projects/acme%2Fmanifests/" not in request.raw_path:
            return self._refuse(f"gitlab path {request.raw_path}")
        if request.headers.get("PRIVATE-TOKEN") != GITLAB_TOKEN or "Authorization" in request.headers:
            return self._refuse("gitlab PRIVATE-TOKEN")
        body = await request.json()
        if set(body) != {"state", "name", "target_url", "description"} \
                or body["state"] not in ("pending", "running", "success", "failed", "canceled"):
            return self._refuse(f"gitlab body {body}")
        self.statuses.append(("gitlab", m["sha"], body))
        return web.json_response({"id": len(self.statuses), "status": body["state"]}, status=201)

    @property
    def url(self) -> str:
        return self._server.url

    def states(self, provider: str, sha: str) -> list[str]:
        return [b["state"] for p, s, b in self.statuses if p == provider and s == sha]

    def last(self, provider: str, sha: str) -> dict[str, Any]:
        return [b for p, s, b in self.statuses if p == provider and s == sha][-1]

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def api() -> Iterator[StatusAPI]:
    server = StatusAPI()
    try:
        yield server
    finally:
        server.close()


def _secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def test_a_pushed_commit_shows_applied_then_rejected_on_github_and_gitlab(tmp_path: Path, api: StatusAPI) -> None:
    secrets = _secret_file(tmp_path / "secrets.yaml", f'github-status: "{GITHUB_TOKEN}"\n'  # every environment
                                                       f'gitlab-status: {{value: "{GITLAB_TOKEN}", environments: [prod]}}\n')
    env = environment("prod").rstrip(" ") + f"""\
          commitStatus:
          - provider: github
            url: {api.url}
            repository: acme/manifests
            token: {{secretRef: github-status}}
            targetUrl: https://driftless.example.com/
          - provider: gitlab
            url: {api.url}/api/v4
            repository: acme/manifests
            token: {{secretRef: gitlab-status}}
            context: deploy/prod
            targetUrl: https://driftless.example.com/
        """
    p: LocalPlatform = local_platform(tmp_path / "platform", hosts={"h1": {"cloud": "aws"}},
                                      reconciler_args=["--secrets-file", str(secrets), "--outbound-allow", api.url])
    try:
        p.up(tree={"prod/environment.yaml": env, "prod/apps/hello.yaml": HELLO},
             components={"demo/hello:1.0.0": build("hello")})
        seed = p.git.head()
        # applied: pending (GitLab: running) while the host converges, then success; GitHub's first
        # answer is a 502: retried with backoff, sending the newest state by then
        wait_until(lambda: api.states("github", seed)[-1:] == ["success"]
                   and api.states("gitlab", seed)[-1:] == ["success"], timeout=30, what="the seed's success")
        assert api.states("gitlab", seed) == ["running", "success"]
        assert api.answered[0] == 502 and api.bad_gateway[0]["state"] == "pending", api.bad_gateway
        assert api.bad_gateway[0]["description"] in ("reconciling", "applied in prod, converging: 0/1 app(s) ready")
        done = api.last("github", seed)
        assert done == {"state": "success", "context": "driftless/prod", "target_url": "https://driftless.example.com/",
                        "description": "applied in prod, 1 app(s) healthy"}
        assert api.states("gitlab", seed)[0] == "running" and api.last("gitlab", seed)["name"] == "deploy/prod"

        # rejected: failure (GitLab: failed) with file:line in the description
        bad = p.git.push({"prod/apps/hello.yaml": BROKEN}, "a broken app")
        wait_until(lambda: api.states("github", bad)[-1:] == ["failure"]
                   and api.states("gitlab", bad)[-1:] == ["failed"], timeout=20, what="the rejection reported")
        description = api.last("github", bad)["description"]
        assert re.match(r"rejected: prod/apps/hello\.yaml:\d+:\d+: .*replicas", description), description
        assert api.last("gitlab", bad)["description"] == description
        assert api.refused == []
        log = "".join(f.read_text() for f in (p.data / "logs").glob("reconciler*.log"))
        assert "event=commit-status provider=github" in log
        assert GITHUB_TOKEN not in log and GITLAB_TOKEN not in log  # never logged
    finally:
        p.stop()


def test_the_state_of_a_head_per_environment() -> None:
    ok = {"app": "a", "health": "Healthy", "sync": "Synced"}
    common: dict[str, Any] = {"env": "prod", "head": "h", "rejected": None, "rejected_errors": [], "last_error": None}
    assert outcome(**{**common, "applied": "old"}, apps=[ok]) == Outcome("pending", "reconciling")
    assert outcome(**{**common, "applied": "old", "last_error": "registry away"}, apps=[]).description == \
        "reconciling, retrying: registry away"
    assert outcome(**common, applied="h", apps=[ok, {"app": "b", "health": "Progressing", "sync": "Synced"}]) == \
        Outcome("pending", "applied in prod, converging: 1/2 app(s) ready")
    assert outcome(**common, applied="h", apps=[ok]).state == "success"
    degraded = [{"app": "b", "health": "Degraded", "message": "no host fits"}]
    assert outcome(**common, applied="h", apps=degraded) == Outcome("error", "stalled in prod: b is Degraded: no host fits")
    assert outcome(**common, applied="h", apps=degraded, settled=False) == \
        Outcome("pending", "applied in prod, converging: 0/1 app(s) ready")  # within the grace time
    errors = [{"file": "prod/apps/x.yaml", "line": 3, "column": 5, "message": "bad " * 60}, {"message": "two"}]
    failed = outcome(**{**common, "rejected": "h", "rejected_errors": errors}, applied="old", apps=[])
    assert failed.state == "failure" and failed.description.startswith("rejected (+1 more): prod/apps/x.yaml:3:5: bad")
    assert len(failed.description) == 140
    assert json.dumps(failed.description)


def test_commit_status_is_per_environment(tmp_path: Path, api: StatusAPI) -> None:
    """A commit breaking dev and changing prod: driftless/dev fails at dev's file:line, driftless/prod
    reports its apply (each environment applies its own part of the commit)."""
    from tests.reconciler.platform import GitRepo, Reconciler, Registry, new_token

    secrets = _secret_file(tmp_path / "secrets.yaml", f'github-status: "{GITHUB_TOKEN}"\n')

    def env(name: str) -> str:
        return environment(name, prefix=f"/{name}").rstrip(" ") + f"""\
          commitStatus:
          - provider: github
            url: {api.url}
            repository: acme/manifests
            token: {{secretRef: github-status}}
            targetUrl: https://driftless.example.com/
        """

    registry = Registry(tmp_path / "registry", tmp_path).start()
    registry.push("demo/hello:1.0.0", build("hello"))
    git = GitRepo(tmp_path / "git")
    git.push({"dev/environment.yaml": env("dev"), "dev/apps/hello.yaml": HELLO,
              "prod/environment.yaml": env("prod"), "prod/apps/hello.yaml": HELLO}, "two environments")
    rec = Reconciler(repo=git.bare, registry=registry.url, data=tmp_path / "rec", log_dir=tmp_path,
                     token_file=new_token(tmp_path / "token"),
                     extra=["--secrets-file", str(secrets), "--outbound-allow", api.url]).start()
    try:
        bad = git.push({"dev/apps/hello.yaml": BROKEN,
                        "prod/apps/other.yaml": application("other", [{"name": "web", "image": "demo/hello:1.0.0"}])},
                       "break dev, change prod")

        def by_context(sha: str) -> dict[str, dict[str, Any]]:
            return {b["context"]: b for p, s, b in api.statuses if p == "github" and s == sha}

        def decided() -> dict[str, dict[str, Any]] | None:
            c = by_context(bad)
            if {"driftless/dev", "driftless/prod"} <= set(c) and "reconciling" not in (
                    c["driftless/dev"]["description"] + c["driftless/prod"]["description"]):
                return c
            return None

        last = wait_until(decided, timeout=30, what="a status per environment")
        dev, prod = last["driftless/dev"], last["driftless/prod"]
        assert dev["state"] == "failure" and "dev/apps/hello.yaml:" in dev["description"], dev
        assert prod["state"] != "failure", prod
        assert prod["description"].startswith(("applied in prod", "stalled in prod")), prod
        assert not [b for p, s, b in api.statuses if s == bad and b["context"] == "driftless/prod"
                    and b["state"] == "failure"]
        assert not api.refused
    finally:
        rec.stop()
        registry.stop()
