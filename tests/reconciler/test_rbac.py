"""Who may do what on the reconciler's API (docs/reconciler.md, "Authentication and roles"), against real
processes: a reconciler with a users file (admin, viewer, an operator of staging, an operator of prod),
one host agent serving hello in staging and prod, and the bare Git repository the writes push to.

A write without a credential, with a wrong one, with a viewer's, or with an operator's of another
environment is refused (401/403, saying what is missing) and changes nothing: not Git, not the state,
not the hosts. An operator of prod promotes into and rolls back prod, and the commits are authored
(and approved) by that user, never by a name in the request body.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.components import build, variant
from tests.support.platform import LocalPlatform, application, local_platform, user
from tests.support.procs import wait_until

VIEWER, STAGING_OP, PROD_OP = "viewer-token-vera", "operator-token-sam", "operator-token-olga"

PROD = """\
    apiVersion: driftless.dev/v1alpha1
    kind: Environment
    metadata: {name: prod}
    spec:
      ingress: {pathPrefix: /prod}
      promotion: {from: staging, minSoak: 0s, requireApproval: true}
    """
STAGING = """\
    apiVersion: driftless.dev/v1alpha1
    kind: Environment
    metadata: {name: staging}
    spec:
      ingress: {pathPrefix: /staging}
    """


def hello(image: str) -> str:
    return application("hello", [{"name": "web", "image": image, "placement": {"spread": {"replicas": 1}},
                                  "expose": "/hello"}])


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    root = tmp_path_factory.mktemp("rbac")
    lp = local_platform(root, hosts={"aws-1": {"cloud": "aws"}}, open_reads=False, users=[
        user("vera", VIEWER, "viewer"),
        user("sam", STAGING_OP, "operator", environments=["staging"]),
        user("olga", PROD_OP, "operator", environments=["prod"], email="olga@example.com"),
    ])
    try:
        lp.up(tree={"staging/environment.yaml": STAGING, "prod/environment.yaml": PROD,
                    "staging/apps/hello.yaml": hello("demo/hello:2.0.0"),
                    "prod/apps/hello.yaml": hello("demo/hello:1.0.0")},
              components={"demo/hello:1.0.0": build("hello"), "demo/hello:2.0.0": variant("hello", "2.0.0")})

        def healthy() -> bool:
            apps = [lp.reconciler.app(env, "hello") for env in ("staging", "prod")]
            return all(a["health"] == "Healthy" and a["sync"] == "Synced" for a in apps)

        wait_until(healthy, timeout=45, interval=0.2, what="hello Healthy in staging and prod")
        yield lp
    finally:
        lp.stop(timeout=5)


def head(p: LocalPlatform) -> str:
    return subprocess.run(["git", "--git-dir", str(p.git_dir), "rev-parse", "main"], check=True,
                          capture_output=True, text=True).stdout.strip()


def commit_field(p: LocalPlatform, fmt: str) -> str:
    return subprocess.run(["git", "--git-dir", str(p.git_dir), "log", "-1", f"--format={fmt}", "main"],
                          check=True, capture_output=True, text=True).stdout.strip()


def settled(p: LocalPlatform) -> None:
    """The head of Git applied, hello Healthy and Synced in both environments (whatever ran before)."""

    def done() -> bool:
        applied = (p.reconciler.get("/api/v1/environments")["source"]["applied"] or {}).get("revision")
        apps = [p.reconciler.app(env, "hello") for env in ("staging", "prod")]
        return applied == head(p) and all(a["health"] == "Healthy" and a["sync"] == "Synced" for a in apps)

    wait_until(done, timeout=30, interval=0.2, what="the head applied and hello Healthy")


def snapshot(p: LocalPlatform) -> dict[str, Any]:
    """What a write would change: Git, the applied state, what each host was told."""
    envs = p.reconciler.get("/api/v1/environments")
    hosts = p.reconciler.get("/api/v1/hosts")["hosts"]
    return {"head": head(p), "applied": envs["source"]["applied"], "history": p.reconciler.get("/api/v1/history"),
            "hosts": {h["name"]: h["generation"] for h in hosts}}


def seed(p: LocalPlatform) -> str:
    return str(p.reconciler.get("/api/v1/history?env=prod")["history"][-1]["revision"])


def writes(p: LocalPlatform) -> list[tuple[str, dict[str, Any]]]:
    """Writes that succeed for an admin (so a refusal is the credential's doing, not the request's)."""
    return [
        ("/api/v1/promote", {"app": "hello", "from": "staging", "to": "prod", "approve": True}),
        ("/api/v1/rollback", {"app": "hello", "env": "prod", "to": seed(p), "anyRevision": True}),
        ("/api/v1/sync", {}),
    ]


def test_reads_need_a_credential_of_any_role(p: LocalPlatform) -> None:
    url = p.control_url
    r = httpx.get(f"{url}/api/v1/environments", timeout=5)
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
    r = httpx.get(f"{url}/api/v1/environments", headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert r.status_code == 401 and "matches no user" in r.json()["error"]
    # the hosts' join token only registers hosts: it reads nothing either
    for path in ("/api/v1/environments", "/api/v1/hosts", "/api/v1/events", "/api/v1/plan-inputs", "/api/v1/drift"):
        r = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {p.token()}"}, timeout=5)
        assert r.status_code == 401 and "only registers hosts" in r.json()["error"], (path, r.text)
    r = httpx.post(f"{url}/hooks/generic", headers={"Authorization": f"Bearer {p.token()}"}, timeout=5)
    assert r.status_code == 401 and "only registers hosts" in r.json()["error"]
    # driftless up's post-receive hook has its own credential: the webhook secret and the viewer git-hook
    hook = p.hook_token_file.read_text().strip()
    assert p.hook_token_file.stat().st_mode & 0o077 == 0
    assert httpx.post(f"{url}/hooks/generic", headers={"Authorization": f"Bearer {hook}"}, timeout=5).status_code == 202
    assert httpx.get(f"{url}/api/v1/environments", headers={"Authorization": f"Bearer {hook}"}, timeout=5).status_code == 200
    r = p.reconciler.post("/api/v1/sync", {}, token=hook)
    assert r.status_code == 403 and "git-hook" in r.json()["error"], r.text
    for token in (VIEWER, STAGING_OP, PROD_OP, p.admin_token()):
        assert httpx.get(f"{url}/api/v1/hosts", headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize(("who", "token", "status", "says"), [
    ("nobody", "", 401, "needs a credential"),
    ("a wrong token", "not-a-user-token", 401, "matches no user"),
    ("the join token", None, 401, "only registers hosts"),
    ("a viewer", VIEWER, 403, "user 'vera' (role viewer) may not"),
    ("an operator of staging", STAGING_OP, 403, "user 'sam' (role operator of staging) may not"),
])
def test_refused_writes_change_nothing(p: LocalPlatform, who: str, token: str | None, status: int, says: str) -> None:
    bearer = p.token() if token is None else token
    settled(p)
    before = snapshot(p)
    for path, body in writes(p):
        r = p.reconciler.post(path, body, token=bearer)
        assert r.status_code == status, (who, path, r.status_code, r.text)
        assert says in r.json()["error"], (who, path, r.json())
    assert snapshot(p) == before, who
    log = p.running["reconciler"].log()
    assert all(t not in log for t in (VIEWER, STAGING_OP, PROD_OP, p.admin_token()))


def test_operator_of_prod_promotes_and_rolls_back_prod_as_itself(p: LocalPlatform) -> None:
    promote = {"app": "hello", "from": "staging", "to": "prod"}
    settled(p)
    before = snapshot(p)
    # the body cannot name another approver or author: refused, nothing written
    for body, field in (({**promote, "approve": "mallory"}, "approve 'mallory'"),
                        ({**promote, "approve": True, "author": "Mallory <m@evil>"}, "author 'Mallory <m@evil>'")):
        r = p.reconciler.post("/api/v1/promote", body, token=PROD_OP)
        assert r.status_code == 400 and f"{field} is not the authenticated user" in r.json()["error"], r.text
    r = p.reconciler.post("/api/v1/rollback", {"app": "hello", "env": "prod", "to": seed(p),
                                               "author": "Mallory <m@evil>"}, token=PROD_OP)
    assert r.status_code == 400 and "is not the authenticated user 'olga <olga@example.com>'" in r.json()["error"]
    assert snapshot(p) == before
    # olga, operator of prod, approves and promotes: the commit is hers
    r = p.reconciler.post("/api/v1/promote", {**promote, "approve": True}, token=PROD_OP)
    assert r.status_code == 200, r.text
    promoted = r.json()["commit"]
    assert promoted and head(p) == promoted
    assert commit_field(p, "%an <%ae>") == "olga <olga@example.com>"
    assert "Approved-By: olga" in commit_field(p, "%B").splitlines()
    # and rolls prod back to the seed, as herself
    r = p.reconciler.post("/api/v1/rollback", {"app": "hello", "env": "prod", "to": seed(p),
                                               "reason": "back to 1.0.0"}, token=PROD_OP)
    assert r.status_code == 200, r.text
    assert r.json()["commit"] == head(p) != promoted
    assert commit_field(p, "%s").startswith("rollback(hello): prod to")
    assert commit_field(p, "%an <%ae>") == "olga <olga@example.com>"
    # an operator of prod may not write staging
    r = p.reconciler.post("/api/v1/rollback", {"app": "hello", "env": "staging", "to": seed(p), "anyRevision": True},
                          token=PROD_OP)
    assert r.status_code == 403 and "operator of staging" in r.json()["error"]


def test_users_file_is_reread_when_it_changes(p: LocalPlatform) -> None:
    from reconciler.api.auth import dump_users, load_users

    url = p.control_url
    late = {"Authorization": "Bearer a-late-token"}
    assert httpx.get(f"{url}/api/v1/hosts", headers=late, timeout=5).status_code == 401
    original = p.users_file.read_text()
    users = [{"name": u.name, "email": u.email, "role": u.role, "tokenSha256": u.token_sha256,
              **({"environments": list(u.environments)} if u.environments is not None else {})}
             for u in load_users(p.users_file)]
    try:
        p.users_file.write_text(dump_users([*users, user("late", "a-late-token", "viewer")]))
        wait_until(lambda: httpx.get(f"{url}/api/v1/hosts", headers=late, timeout=5).status_code == 200,
                   timeout=5, what="the new user accepted")
        r = p.reconciler.post("/api/v1/sync", {}, token="a-late-token")
        assert r.status_code == 403 and "role viewer" in r.json()["error"]
        p.users_file.write_text("users: [{name: broken}]\n")  # a broken file: nobody, until it is fixed
        wait_until(lambda: httpx.get(f"{url}/api/v1/hosts", headers=late, timeout=5).status_code == 401,
                   timeout=5, what="a broken file fails closed")
        assert "users file is invalid" in httpx.get(f"{url}/api/v1/hosts", headers=late, timeout=5).json()["error"]
    finally:
        p.users_file.write_text(original)
    wait_until(lambda: p.reconciler.post("/api/v1/sync", {}).status_code == 202, timeout=5, what="the file restored")


def test_users_file_problems_are_usage_errors(tmp_path: Path) -> None:
    import sys

    bad = tmp_path / "users.yaml"
    bad.write_text("users:\n- {name: eve, role: root, tokenSha256: '" + "0" * 64 + "'}\n")
    token = tmp_path / "token"
    token.write_text("join")
    r = subprocess.run([sys.executable, "-m", "driftless", "reconcile", "--repo", str(tmp_path), "--data",
                        str(tmp_path / "rec"), "--registry", "http://127.0.0.1:9", "--token-file", str(token),
                        "--users-file", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "role must be one of viewer, operator, admin" in r.stderr, r.stderr
