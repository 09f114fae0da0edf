"""Environments as boundaries for mistakes: each environment applies the newest revision whose own part
is valid. One commit that breaks dev and changes prod: prod applies it, dev keeps its last good state
and is reported rejected at file:line, staging is untouched; status, drift, events and the push feedback
say so per environment. Real processes: the registry, a bare Git repository we push to, the reconciler
(no hosts: what is checked is what the reconciler decides and reports)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.controller.env_revisions import EnvRevisions
from reconciler.controller.state import Store
from tests.reconciler.platform import GitRepo, Reconciler, Registry, application, environment, new_token
from tests.support.components import build
from tests.support.procs import wait_until

ENVS = ("dev", "staging", "prod")
COMP = {"name": "w", "image": "demo/hello:1.0.0", "placement": {"spread": {"replicas": 1}}}
BROKEN = """\
apiVersion: driftless.dev/v1alpha1
kind: Application
metadata:
  name: a
spec:
  components:
  - name: w
    image: demo/hello:1.0.0
    placement:
      spread:
        replicas: many
"""


@dataclass
class World:
    git: GitRepo
    registry: Registry
    rec: Reconciler
    token: Path
    first: str

    def env(self, name: str) -> dict[str, Any]:
        return self.rec.get(f"/api/v1/environments/{name}")

    def events(self) -> list[dict[str, Any]]:
        return self.rec.get("/api/v1/events?limit=1000")["events"]

    def cli(self, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "driftless", *args, "--control", self.rec.url,
                            "--token-file", str(self.token)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "NO_COLOR": "1"})
        return r.stdout + r.stderr


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    registry = Registry(tmp_path / "registry", tmp_path).start()
    registry.push("demo/hello:1.0.0", build("hello"))
    git = GitRepo(tmp_path / "git")
    tree: dict[str, str | None] = {}
    for env in ENVS:
        tree[f"{env}/environment.yaml"] = environment(env, prefix=f"/{env}")
        tree[f"{env}/apps/a.yaml"] = application("a", [COMP])
    first = git.push(tree, "three environments")
    token = new_token(tmp_path / "token")
    rec = Reconciler(repo=git.bare, registry=registry.url, data=tmp_path / "rec", log_dir=tmp_path,
                     token_file=token).start()
    try:
        w = World(git=git, registry=registry, rec=rec, token=token, first=first)
        wait_until(lambda: all(w.env(e)["revision"] == first for e in ENVS), timeout=20, what="first applied")
        yield w
    finally:
        rec.stop()
        registry.stop()


def _applied_everywhere_but_dev(w: World, revision: str) -> dict[str, Any]:
    def decided() -> dict[str, Any] | None:
        dev = w.env("dev")
        if (dev["rejected"] or {}).get("revision") == revision and w.env("prod")["revision"] == revision:
            return dev
        return None

    return wait_until(decided, timeout=20, what="dev rejected, prod applied")


def test_a_commit_breaking_dev_still_applies_prod(world: World) -> None:
    w = world
    bad = w.git.push({"dev/apps/a.yaml": BROKEN,
                      "prod/apps/b.yaml": application("b", [{**COMP, "name": "v"}])}, "break dev, add b to prod")
    dev = _applied_everywhere_but_dev(w, bad)
    # dev keeps its last good state, rejected at the file:line of the problem
    assert dev["revision"] == w.first
    errors = dev["rejected"]["errors"]
    assert errors and all(e["file"] == "dev/apps/a.yaml" for e in errors), errors
    assert errors[0]["line"] == 11, errors  # replicas: many
    assert [a["name"] for a in dev["apps"]] == ["a"]
    # prod applied its change from the same commit; staging (unchanged) follows with no rejection
    prod, staging = w.env("prod"), w.env("staging")
    assert prod["rejected"] is None and [a["name"] for a in prod["apps"]] == ["a", "b"]
    assert staging["rejected"] is None and staging["revision"] == bad
    # conditions: only dev's application is Stalled
    def stalled() -> dict[str, str]:
        return {e: next(c for c in w.rec.app(e, "a")["conditions"] if c["type"] == "Stalled")["status"] for e in ENVS}

    wait_until(lambda: stalled() == {"dev": "True", "staging": "False", "prod": "False"}, timeout=10,
               what="Stalled in dev only")
    assert w.rec.app("prod", "a")["revision"] == bad and w.rec.app("dev", "a")["revision"] == w.first
    # drift: RevisionRejected in dev only
    wait_until(lambda: {i["env"] for i in w.rec.get("/api/v1/drift")["items"] if i["category"] == "RevisionRejected"}
               == {"dev"}, timeout=10, what="RevisionRejected drift in dev only")
    # events: one Rejected, for dev; Applied for prod (changed), none for staging (nothing changed)
    events = [e for e in w.events() if e["revision"] == bad]
    assert [e["env"] for e in events if e["reason"] == "Rejected"] == ["dev"], events
    applied = {e["env"] for e in events if e["reason"] == "Applied"}
    assert applied == {"prod"}, events
    # the API's summary keeps the old shape and names the environment of each problem
    source = w.rec.get("/api/v1/environments")["source"]
    assert source["applied"]["revision"] == bad and source["rejected"]["revision"] == bad
    assert {e["env"] for e in source["rejected"]["errors"]} == {"dev"}
    assert source["environments"]["dev"]["applied"]["revision"] == w.first
    # the post-receive hook's feedback: the rejection under dev only
    hook = subprocess.run([sys.executable, "-m", "driftless.push_feedback", "--url", w.rec.url, "--token-file",
                           str(w.token)], input=f"{w.first} {bad} refs/heads/main\n", capture_output=True,
                          text=True, timeout=60)
    said = hook.stdout
    assert f"revision {bad[:12]} applied to prod, staging; rejected for dev" in said, said
    assert f"dev: rejected (1 error(s)); {w.first[:12]} stays applied in dev:" in said, said
    assert "manifests/dev/apps/a.yaml:11" in said and "prod/" not in said.split("rejected for dev")[1], said
    # the CLI: DRIFT and REJECTED in dev only
    status = w.cli("status")
    table = status.split("ENVIRONMENT")[1]  # the environments' table (before the applications')
    rows = {cells[0]: cells for line in table.splitlines() if (cells := line.split()) and cells[0] in ENVS}
    assert rows["dev"][4] == "1" and rows["staging"][4] == "0" and rows["prod"][4] == "0", status
    assert rows["dev"][1] == w.first[:12] and rows["prod"][1] == bad[:12], status
    assert f"head {bad[:12]} REJECTED in dev" in status and "dev: dev/apps/a.yaml:11" in status, status
    drift = w.cli("drift")
    rejected_rows = [line.split() for line in drift.splitlines() if line.startswith("RevisionRejected")]
    assert [row[1] for row in rejected_rows] == ["dev"], drift

    # the next commit fixing dev applies dev (and the rest of the tree stays as it is)
    fixed = w.git.push({"dev/apps/a.yaml": application("a", [{**COMP, "name": "fixed"}])}, "fix dev")
    wait_until(lambda: w.env("dev")["revision"] == fixed, timeout=20, what="dev fixed")
    assert all(w.env(e)["rejected"] is None for e in ENVS)
    assert w.rec.get("/api/v1/environments")["source"]["rejected"] is None
    wait_until(lambda: not [i for i in w.rec.get("/api/v1/drift")["items"] if i["category"] == "RevisionRejected"],
               timeout=10, what="no RevisionRejected drift")
    wait_until(lambda: [c["name"] for c in w.rec.app("dev", "a")["components"]] == ["fixed"], timeout=10,
               what="dev's fix in its status")
    assert [a["name"] for a in w.env("prod")["apps"]] == ["a", "b"]


def test_a_missing_image_in_dev_rejects_dev_only_until_it_is_pushed(world: World) -> None:
    w = world
    missing = {**COMP, "name": "m", "image": "demo/missing:1.0.0"}
    rev = w.git.push({"dev/apps/a.yaml": application("a", [missing]),
                      "prod/apps/a.yaml": application("a", [{**COMP, "name": "p"}])}, "missing image in dev")
    dev = _applied_everywhere_but_dev(w, rev)
    assert dev["revision"] == w.first
    assert [e["code"] for e in dev["rejected"]["errors"]] == ["unknown-image"]
    assert dev["rejected"]["errors"][0]["file"] == "dev/apps/a.yaml"
    wait_until(lambda: [c["name"] for c in w.rec.app("prod", "a")["components"]] == ["p"], timeout=10,
               what="prod's change in its status")
    # pushing the image applies the same revision to dev (the retry is per environment)
    w.registry.push("demo/missing:1.0.0", build("hello"))
    wait_until(lambda: w.env("dev")["revision"] == rev, timeout=40, what="dev applied once the image is there")
    assert w.env("dev")["rejected"] is None
    assert [e["env"] for e in w.events() if e["reason"] == "Rejected"] == ["dev"]


def test_an_older_single_record_is_migrated_per_environment(tmp_path: Path) -> None:
    """An upgrade keeps running: the single applied/rejected records become one per environment."""
    from model.loader import load_tree
    from tests.support.platform import write_tree

    root = tmp_path / "manifests"
    write_tree(root, {f"{e}/environment.yaml": environment(e, prefix=f"/{e}") for e in ("dev", "prod")}
               | {f"{e}/apps/a.yaml": application("a", [COMP]) for e in ("dev", "prod")})
    store = Store(tmp_path / "state.db")
    try:
        store.put("applied", {"revision": "a" * 40, "message": "m", "author": "x", "appliedAt": 1.0})
        store.put("rejected", {"revision": "b" * 40, "errors": [{"text": "dev/apps/a.yaml:1:1: bad",
                                                                "file": "dev/apps/a.yaml"}], "since": 2.0})
        store.save_tags("a" * 40, {"demo/hello:1.0.0": "sha256:" + "1" * 64}, at=1.0)
        envs = EnvRevisions()
        envs.read(store, load=lambda revision: load_tree(root) if revision == "a" * 40 else None)
        assert {e: a["revision"] for e, a in envs.applied.items()} == {"dev": "a" * 40, "prod": "a" * 40}
        assert envs.digests["prod"] == {"demo/hello:1.0.0": "sha256:" + "1" * 64}
        assert envs.tree is not None and sorted(envs.tree.applications) == ["dev", "prod"]
        assert sorted(envs.rejected) == ["dev", "prod"]  # the old record did not say which: every one
        again = EnvRevisions()  # saved: a second start reads the per-environment records
        again.read(store, load=lambda revision: load_tree(root))
        assert again.applied == envs.applied and store.get("applied_envs") == envs.applied
    finally:
        store.close()


def test_a_broken_environment_file_rejects_only_its_environment(tmp_path: Path) -> None:
    """prod promotes from staging: staging's broken environment.yaml is staging's problem, not prod's."""
    from model.loader import load_tree
    from reconciler.controller.env_revisions import attribute
    from reconciler.controller.revisions import problem_json
    from tests.support.platform import write_tree

    root = tmp_path / "manifests"
    prod = textwrap.dedent(environment("prod", prefix="/prod")) + "  promotion:\n    from: staging\n"
    write_tree(root, {"staging/environment.yaml": environment("staging", prefix="/s").replace("heal", "sometimes"),
                      "prod/environment.yaml": prod})
    tree = load_tree(root)
    by_env = attribute([problem_json(p) for p in tree.errors], envs={"staging", "prod"}, touched={"staging", "prod"})
    assert set(by_env) == {"staging"}, by_env
    assert all(e["file"] == "staging/environment.yaml" for e in by_env["staging"])
    # a promotion source that is not there at all stays prod's problem
    write_tree(root, {"staging/environment.yaml": None})
    (root / "staging").rmdir()
    assert [p.code for p in load_tree(root).errors] == ["promotion-unknown"]


def test_allowed_signers_option_per_environment(tmp_path: Path) -> None:
    from driftless.commands.reconcile import _signers
    from shared.errors import UsageError

    every, dev = tmp_path / "every", tmp_path / "dev=keys"  # a file name may hold '='
    every.write_text("x ssh-ed25519 AAAA\n")
    dev.write_text("x ssh-ed25519 AAAA\n")
    assert _signers([str(every), f"dev={dev}", f"prod={every}"]) == (every, {"dev": dev, "prod": every})
    assert _signers([str(dev)]) == (dev, {})
    with pytest.raises(UsageError, match="is given twice"):
        _signers([f"dev={dev}", f"dev={every}"])
    with pytest.raises(UsageError, match="is not a file"):
        _signers([f"prod={tmp_path / 'missing'}"])


def test_push_feedback_per_environment() -> None:
    from driftless.push_feedback import outcome

    err = {"file": "dev/apps/a.yaml", "text": "dev/apps/a.yaml:3:1: bad", "code": "invalid"}
    good = {"revision": "b" * 40}
    envs = {"dev": {"applied": {"revision": "a" * 40}, "rejected": {"revision": "b" * 40, "errors": [err]}},
            "prod": {"applied": good, "rejected": None}}
    lines = outcome({"path": "manifests", "environments": envs}, "b" * 40)
    assert lines == [f"driftless: revision {'b' * 12} applied to prod; rejected for dev",
                     f"driftless: dev: rejected (1 error(s)); {'a' * 12} stays applied in dev:",
                     "driftless:   manifests/dev/apps/a.yaml:3:1: bad"]
    # not decided for staging yet: nothing said
    assert outcome({"environments": {**envs, "staging": {"applied": {"revision": "a" * 40}}}}, "b" * 40) is None
    # one environment, rejected: said as it always was
    only = outcome({"path": "manifests", "environments": {"dev": envs["dev"]}}, "b" * 40)
    assert only is not None and only[0] == f"driftless: revision {'b' * 12} rejected (1 error(s)); {'a' * 12} stays applied:"


def test_a_route_collision_rejects_the_environment_the_commit_changed(tmp_path: Path) -> None:
    """dev and prod may share hosts; prod serves /shop; a commit adding /shop to dev rejects dev, not prod
    (the loader reports the collision in prod's file, the later environment)."""
    from model.loader import load_tree
    from reconciler.controller.env_revisions import attribute
    from reconciler.controller.evaluation import _blame_route_collisions
    from reconciler.controller.revisions import problem_json
    from tests.support.platform import write_tree

    root = tmp_path / "manifests"
    shop = application("shop", [{**COMP, "expose": "/shop"}])
    write_tree(root, {"dev/environment.yaml": environment("dev"), "prod/environment.yaml": environment("prod"),
                      "dev/apps/shop.yaml": shop, "prod/apps/shop.yaml": shop})
    errors = [problem_json(p) for p in load_tree(root).errors]
    assert [e["code"] for e in errors] == ["route-collision"] and errors[0]["file"] == "prod/apps/shop.yaml", errors
    envs = {"dev", "prod"}
    blamed = attribute(_blame_route_collisions(errors, envs=envs, touched={"dev"}), envs=envs, touched={"dev"})
    assert set(blamed) == {"dev"}
    both = attribute(_blame_route_collisions(errors, envs=envs, touched=envs), envs=envs, touched=envs)
    assert set(both) == {"prod"}


def test_a_tag_resolved_differently_per_environment_runs_each_ones_digest(tmp_path: Path) -> None:
    """The composite tree: dev applied demo/hello:1.0.0 when it pointed to D1, prod later when it pointed to
    D2; each runs its own digest (dev's pinned in the composite), nothing of dev moves with prod's apply."""
    from model.loader import load_tree
    from reconciler.planner.placement import _digest_of
    from tests.support.platform import write_tree

    root = tmp_path / "manifests"
    write_tree(root, {f"{e}/environment.yaml": environment(e, prefix=f"/{e}") for e in ("dev", "prod")}
               | {f"{e}/apps/a.yaml": application("a", [COMP]) for e in ("dev", "prod")})
    tree = load_tree(root)
    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    envs = EnvRevisions()
    envs.set_applied("dev", record={"revision": "a" * 40, "appliedAt": 1.0}, tree=tree, digests={COMP["image"]: d1})
    envs.set_applied("prod", record={"revision": "b" * 40, "appliedAt": 2.0}, tree=tree, digests={COMP["image"]: d2})
    envs.rebuild()
    assert envs.tree is not None and envs.tree.revision is None  # two revisions make it up
    dev_image = envs.tree.applications["dev"]["a"].components[0].image
    prod_image = envs.tree.applications["prod"]["a"].components[0].image
    assert prod_image == COMP["image"] and dev_image == f"{COMP['image']}@{d1}"
    assert _digest_of(dev_image, envs.merged) == d1 and _digest_of(prod_image, envs.merged) == d2
    assert envs.summary_applied() == {"revision": "b" * 40, "appliedAt": 2.0}


def test_real_hosts_dev_keeps_running_its_last_good_state_while_prod_moves(tmp_path: Path) -> None:
    """Two real hosts, one per environment: a commit breaking dev and adding a component to prod reaches
    the prod host; the dev host's document stays as it was (same generation, same instances)."""
    from tests.support.platform import local_platform

    p = local_platform(tmp_path / "platform", hosts={"dev-1": {"env": "dev"}, "prod-1": {"env": "prod"}})
    tree: dict[str, str | None] = {}
    for env in ("dev", "prod"):
        tree[f"{env}/environment.yaml"] = environment(env, prefix=f"/{env}", selector={"env": env})
        tree[f"{env}/apps/a.yaml"] = application("a", [COMP])
    try:
        p.up(tree=tree, components={"demo/hello:1.0.0": build("hello")})
        wait_until(lambda: all(p.reconciler.app(e, "a")["health"] == "Healthy" for e in ("dev", "prod")), timeout=60,
                   what="both environments healthy")
        dev_before = p.reconciler.host("dev-1")
        bad = p.git.push({"dev/apps/a.yaml": BROKEN,
                          "prod/apps/a.yaml": application("a", [COMP, {**COMP, "name": "v"}])}, "break dev, grow prod")
        wait_until(lambda: p.reconciler.app("prod", "a")["health"] == "Healthy"
                   and sorted(c["name"] for c in p.reconciler.app("prod", "a")["components"]) == ["v", "w"],
                   timeout=60, what="prod runs its change")
        prod_host = p.reconciler.host("prod-1")
        assert prod_host["desired"]["revision"] == bad
        assert len(prod_host["desired"]["instances"]) == 2
        dev_after = p.reconciler.host("dev-1")
        assert dev_after["generation"] == dev_before["generation"], (dev_before, dev_after)
        assert dev_after["desired"]["instances"] == dev_before["desired"]["instances"]
        dev = p.reconciler.get("/api/v1/environments/dev")
        assert dev["rejected"]["revision"] == bad and p.reconciler.app("dev", "a")["health"] == "Healthy"
    finally:
        p.stop()


def test_an_upgrade_from_one_record_for_all_keeps_running(world: World, tmp_path: Path) -> None:
    """A state.db written before per-environment application (one applied and one rejected record)
    is migrated by a restarted reconciler: the same revision stays applied everywhere, nothing is
    applied again, and the next commit is judged per environment."""
    w = world
    w.rec.stop()
    store = Store(tmp_path / "rec" / "reconciler" / "state.db")
    try:
        assert store.get("applied_envs") is not None  # written by this version
        for key in ("applied_envs", "rejected_envs", "env_digests"):
            store.put(key, None)
        store.put("applied", {"revision": w.first, "message": "three environments", "author": "x", "appliedAt": 1.0})
        store.put("rejected", None)
    finally:
        store.close()
    w.rec.start()
    wait_until(lambda: all(w.env(e)["revision"] == w.first for e in ENVS), timeout=20, what="migrated")
    assert len([e for e in w.events() if e["reason"] == "Applied"]) == len(ENVS)  # once each, before the upgrade
    logs = [f.read_text(errors="replace") for f in tmp_path.rglob("*.log") if f.is_file()]
    assert any("event=state-migrated" in text for text in logs)
    bad = w.git.push({"dev/apps/a.yaml": BROKEN}, "break dev after the upgrade")
    dev = _applied_everywhere_but_dev(w, bad)
    assert dev["revision"] == w.first
