"""Drift, heal, promotion, rollback and diff against a real platform (registry, Git, reconciler, 3 hosts).

The tests share one platform (module scope); the ``p`` fixture brings it back to the baseline before
each test, and a test that needs history (a promotion, a rejected commit) makes it itself: each passes
alone and in any order.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from reconciler.gitops.working_copy import parse_trailers
from tests.drift.conftest import HEARTBEAT, Platform, hello_app, wait_for_drift
from tests.support.procs import wait_until


def _events(p: Platform, reason: str, since: float) -> list[dict[str, Any]]:
    return [e for e in p.api(f"/api/v1/events?since={since}&limit=1000")["events"] if e["reason"] == reason]


def _prod_instance(p: Platform) -> tuple[str, str]:
    """(host, instance id) of a running prod hello instance."""
    for h in p.api("/api/v1/hosts")["hosts"]:
        for inst in (h.get("report") or {}).get("instances") or []:
            if inst["id"].startswith("prod/hello/web/") and inst["status"] == "Running":
                return h["name"], inst["id"]
    raise AssertionError("no prod hello instance runs")


def _soaked(p: Platform, seconds: float = 1.2) -> None:
    """Wait until hello in staging has been Healthy for prod's minSoak (1s)."""

    def ok() -> bool:
        since = p.api("/api/v1/environments/staging/apps/hello").get("healthySince")
        return since is not None and time.time() - since >= seconds

    wait_until(ok, timeout=15, interval=0.1, what="staging soaked")


def _digest(p: Platform, env: str) -> str:
    return str(p.api(f"/api/v1/environments/{env}/apps/hello")["components"][0]["digest"])


def _reject_a_typo(p: Platform) -> str:
    """Commit a typo to prod, see it rejected, revert it; the rejected revision."""
    bad = p.commit({"manifests/prod/apps/hello.yaml": hello_app("prod", "demo/hello:1.0.0", "x") + "  replicaz: 3\n"},
                   "a commit with a typo")  # fmt: skip
    wait_for_drift(p, category="RevisionRejected", env="prod", expected=bad)
    p.git("revert", "--no-edit", "HEAD")
    p.git("push", "-q", "origin", "HEAD:main")
    fixed = p.git("rev-parse", "HEAD").strip()
    wait_until(lambda: p.applied() == fixed and p.healthy() and not p.counted(), timeout=15, what="the fix applied")
    return bad


def _promote(p: Platform) -> None:
    """Promote hello from staging to prod (approved) and wait until prod runs it."""
    _soaked(p)
    done = p.cli("promote", "hello", "--from", "staging", "--to", "prod", "--approve", "alice")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: _digest(p, "prod") == _digest(p, "staging") and p.healthy(), timeout=30, what="promoted")


def test_fresh_platform_reports_no_drift(p: Platform) -> None:
    r = p.cli("drift")
    assert r.returncode == 0, r.stderr
    assert "No drift" in r.stdout
    status = p.cli("status")
    assert status.returncode == 0, status.stderr
    assert "prod" in status.stdout and "staging" in status.stdout and "aws-1" in status.stdout
    assert status.stdout.splitlines()[2].split()[:5] == ["ENVIRONMENT", "REVISION", "SYNC", "HEALTH", "DRIFT"]
    envs = {line.split()[0]: line.split() for line in status.stdout.splitlines()[3:5]}
    assert envs["prod"][2:5] == ["Synced", "Healthy", "0"]
    for command in (["status", "--env", "nope"], ["drift", "--env", "nope"], ["history", "--env", "nope"]):
        wrong = p.cli(*command)
        assert wrong.returncode == 1, command  # never 2: for drift that would mean "drifting"
        assert "environment 'nope' not found; known: prod, staging" in wrong.stderr


def test_out_of_band_instance_is_unexpected_and_stays_in_report_mode(p: Platform) -> None:
    digest = p.digests["demo/hello:2.0.0"]
    admin = p.hosts["aws-1"].admin
    r = p.cli("host", "exec", "--admin", admin, "run", "--env", "staging", "--app", "hello", "--component", "web",
              "--id", "staging/hello/web/by-hand", f"{p.registry_host}/demo/hello@{digest}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    item = wait_for_drift(p, category="Unexpected", env="staging", instance="staging/hello/web/by-hand")
    assert item["host"] == "aws-1" and item["expected"] == "absent" and item["since"] > 0
    drift = p.cli("drift", "--env", "staging")
    assert drift.returncode == 2, drift.stdout + drift.stderr
    assert "Unexpected" in drift.stdout and "staging/hello/web/by-hand" in drift.stdout
    # staging is `sync.mode: report`: several heartbeats later it is still reported and still running
    time.sleep(HEARTBEAT * 6)
    assert any(i["instance"] == "staging/hello/web/by-hand" for i in p.counted("staging"))
    assert any(i["id"] == "staging/hello/web/by-hand" for i in p.instances("aws-1"))
    stop = p.cli("host", "exec", "--admin", admin, "stop", "staging/hello/web/by-hand")
    assert stop.returncode == 0, stop.stderr
    wait_until(lambda: not p.counted("staging"), timeout=10, what="staging clean again")


def test_stopped_instance_is_missing_until_a_new_generation_in_report_mode(p: Platform) -> None:
    host, instance = next(
        (h["name"], i["id"])
        for h in p.api("/api/v1/hosts")["hosts"]
        for i in (h.get("report") or {}).get("instances") or []
        if i["id"].startswith("staging/hello/web/")
    )
    r = p.cli("host", "exec", "--admin", p.hosts[host].admin, "stop", instance)
    assert r.returncode == 0, r.stderr
    item = wait_for_drift(p, category="Missing", env="staging", instance=instance)
    assert item["host"] == host and item["actual"] == "absent"
    time.sleep(HEARTBEAT * 6)  # report mode: nobody restarts it
    assert any(i["instance"] == instance for i in p.counted("staging"))
    # a new desired generation (any change in Git for that environment) brings it back
    p.commit({"manifests/staging/apps/hello.yaml": hello_app("staging", "demo/hello:2.0.0", "hi again from staging")},
             "staging: new greeting")  # fmt: skip
    wait_until(lambda: not p.counted("staging"), timeout=15, what="staging converged again")


def test_config_changed_out_of_band_is_healed_in_heal_mode(p: Platform) -> None:
    host, instance = _prod_instance(p)
    before = time.time()
    r = p.cli("host", "exec", "--admin", p.hosts[host].admin, "set-config", instance, "GREETING=hacked")
    assert r.returncode == 0, r.stderr
    drifted = wait_until(
        lambda: _events(p, "DriftConfigMismatch", before), timeout=10, what="ConfigMismatch event"
    )
    assert drifted[0]["env"] == "prod" and drifted[0]["host"] == host
    wait_until(
        lambda: [e for e in _events(p, "Healed", before) if host in e["message"]], timeout=10, what="heal"
    )

    def restored() -> bool:
        inst = next(i for i in p.instances(host) if i["id"] == instance)
        return inst["config"].get("GREETING") == "hi from prod" and inst["status"] == "Running"

    wait_until(restored, timeout=15, what="config restored by heal")
    wait_until(lambda: not p.counted("prod"), timeout=10, what="prod clean again")
    report = p.cli("drift", "--env", "prod")
    assert report.returncode == 0
    assert "ConfigMismatch" in report.stdout and "Healed" in report.stdout  # what was healed, and when


def test_out_of_band_instance_is_removed_in_heal_mode(p: Platform) -> None:
    digest = p.digests["demo/hello:1.0.0"]
    before = time.time()
    r = p.cli("host", "exec", "--admin", p.hosts["gcp-1"].admin, "run", "--env", "prod", "--app", "hello",
              "--component", "web", "--id", "prod/hello/web/by-hand", f"{p.registry_host}/demo/hello@{digest}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    wait_until(lambda: [e for e in _events(p, "DriftUnexpected", before) if "by-hand" in e["message"]], timeout=10,
               what="Unexpected drift event")  # fmt: skip
    wait_until(lambda: all(i["id"] != "prod/hello/web/by-hand" for i in p.instances("gcp-1")), timeout=15,
               what="the instance removed by heal")  # fmt: skip
    wait_until(lambda: not p.counted("prod"), timeout=10, what="prod clean again")


def _running(p: Platform, env: str) -> tuple[str, str]:
    """(host, instance id) of a running hello instance in ``env``, from the hosts' reports."""
    for h in p.api("/api/v1/hosts")["hosts"]:
        for inst in (h.get("report") or {}).get("instances") or []:
            if inst["id"].startswith(f"{env}/hello/web/") and inst["status"] == "Running":
                return h["name"], inst["id"]
    raise AssertionError(f"no {env} hello instance runs")


def _reported(p: Platform, host: str, instance: str) -> dict[str, Any] | None:
    """What ``host`` last reported to the reconciler about ``instance``."""
    h = next(h for h in p.api("/api/v1/hosts")["hosts"] if h["name"] == host)
    return next((i for i in (h.get("report") or {}).get("instances") or [] if i["id"] == instance), None)


def test_image_set_out_of_band_is_a_version_mismatch_in_report_mode(p: Platform) -> None:
    from shared.registry_client import push_component
    from tests.support.components import variant

    declared = _digest(p, "staging")
    hotfix = push_component(f"{p.registry_host}/demo/hello:2.0.0-hotfix", variant("hello", "staging-hotfix"))
    assert hotfix != declared
    host, instance = _running(p, "staging")
    admin = p.hosts[host].admin
    r = p.cli("host", "exec", "--admin", admin, "set-image", instance, f"{p.registry_host}/demo/hello:2.0.0-hotfix")
    assert r.returncode == 0, r.stderr
    assert f"resolved {p.registry_host}/demo/hello:2.0.0-hotfix to {hotfix}" in r.stdout
    item = wait_for_drift(p, category="VersionMismatch", env="staging", instance=instance)
    assert (item["host"], item["expected"], item["actual"]) == (host, declared, hotfix)
    assert (item["app"], item["component"]) == ("hello", "web")
    drift = p.cli("drift", "--env", "staging", "-o", "json")
    assert drift.returncode == 2, drift.stdout + drift.stderr
    [listed] = [i for i in json.loads(drift.stdout)["items"] if i["category"] == "VersionMismatch"]
    assert (listed["instance"], listed["expected"], listed["actual"]) == (instance, declared, hotfix)
    table = p.cli("drift", "--env", "staging")
    assert table.returncode == 2 and "VersionMismatch" in table.stdout and instance in table.stdout
    # report mode: several heartbeats later it is still reported, and the host still runs the hotfix
    time.sleep(HEARTBEAT * 6)
    assert any(i["category"] == "VersionMismatch" and i["instance"] == instance for i in p.counted("staging"))
    running = next(i for i in p.instances(host) if i["id"] == instance)
    assert (running["digest"], running["status"], running["managed"]) == (hotfix, "Running", True)
    # the operator rolls the hotfix back by hand (pinned this time): no drift again
    back = p.cli("host", "exec", "--admin", admin, "set-image", instance, f"{p.registry_host}/demo/hello@{declared}")
    assert back.returncode == 0, back.stderr
    wait_until(lambda: not p.counted("staging"), timeout=15, what="staging clean again")


def test_image_set_out_of_band_is_healed_in_heal_mode(p: Platform) -> None:
    from shared.registry_client import push_component
    from tests.support.components import variant

    declared = _digest(p, "prod")
    hotfix = push_component(f"{p.registry_host}/demo/hello:prod-hotfix", variant("hello", "prod-hotfix"))
    assert hotfix != declared
    host, instance = _prod_instance(p)
    before = time.time()
    r = p.cli("host", "exec", "--admin", p.hosts[host].admin, "set-image", instance,
              f"{p.registry_host}/demo/hello@{hotfix}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    drifted = wait_until(
        lambda: [e for e in _events(p, "DriftVersionMismatch", before) if instance in e["message"]],
        timeout=10, what="VersionMismatch event",
    )  # fmt: skip
    assert drifted[0]["env"] == "prod" and drifted[0]["host"] == host
    wait_until(
        lambda: [e for e in _events(p, "Healed", before) if host in e["message"]], timeout=10, what="heal"
    )

    def healed() -> bool:
        reported = _reported(p, host, instance)
        return reported is not None and (reported["digest"], reported["status"]) == (declared, "Running")

    wait_until(healed, timeout=15, what="the host reports the declared digest again")
    assert next(i for i in p.instances(host) if i["id"] == instance)["digest"] == declared
    wait_until(lambda: not p.counted("prod"), timeout=10, what="prod clean again")
    report = p.cli("drift", "--env", "prod")
    assert report.returncode == 0
    assert "VersionMismatch" in report.stdout and "Healed" in report.stdout  # what was healed, and when


def test_invalid_commit_is_rejected_and_the_older_revision_stays(p: Platform) -> None:
    applied = p.applied()
    bad = p.commit({"manifests/prod/apps/hello.yaml": hello_app("prod", "demo/hello:1.0.0", "x") + "  replicaz: 3\n"},
                   "a commit with a typo")  # fmt: skip
    item = wait_for_drift(p, category="RevisionRejected", env="prod", expected=bad)
    assert item["actual"] == applied and "replicaz" in item["message"]
    # prod keeps its last good revision; staging (valid, unchanged) applies the commit: per environment
    assert p.api("/api/v1/environments/prod")["revision"] == applied
    assert wait_until(lambda: p.api("/api/v1/environments/staging")["revision"] == bad, timeout=10, what="staging")
    assert [i["env"] for i in p.api("/api/v1/drift")["items"] if i["category"] == "RevisionRejected"] == ["prod"]
    r = p.cli("drift", "--env", "prod", "-o", "json")
    assert r.returncode == 2
    p.git("revert", "--no-edit", "HEAD")
    p.git("push", "-q", "origin", "HEAD:main")
    fixed = p.git("rev-parse", "HEAD").strip()
    wait_until(lambda: p.applied() == fixed, timeout=15, what="the fix applied")
    wait_until(lambda: not p.counted(), timeout=10, what="no drift after the fix")


def test_promotion_gates_then_commit_then_rollout(p: Platform) -> None:
    staging_digest = _digest(p, "staging")
    assert staging_digest == p.digests["demo/hello:2.0.0"] != _digest(p, "prod")
    _soaked(p)
    head = p.git("ls-remote", str(p.remote), "main").split()[0]
    refused = p.cli("promote", "hello", "--from", "staging", "--to", "prod")
    assert refused.returncode == 1
    assert "requires an approval" in refused.stderr and "FAIL  approval" in refused.stderr
    dry = p.cli("promote", "hello", "--from", "staging", "--to", "prod", "--approve", "alice", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "pass  no-drift" in dry.stdout  # the CLI gives the source's drift to the gates
    assert f"+    image: demo/hello@{staging_digest}   # promotion pins this" in dry.stdout
    assert p.git("ls-remote", str(p.remote), "main").split()[0] == head
    done = p.cli("promote", "hello", "--from", "staging", "--to", "prod", "--approve", "alice")
    assert done.returncode == 0, done.stderr
    message = p.git("--git-dir", str(p.remote), "log", "-1", "--format=%B", "main")
    trailers = parse_trailers(message)
    assert message.startswith("promote(hello): staging -> prod")
    assert trailers["Promoted-Digest"] == [f"web={staging_digest}"] and trailers["Approved-By"] == ["alice"]
    wait_until(
        lambda: _digest(p, "prod") == staging_digest and p.healthy(),
        timeout=30,
        what="prod runs the promoted digest",
    )


def test_promote_and_rollback_through_the_api(p: Platform) -> None:
    from driftless.client import ApiError, ReconcilerClient

    client = ReconcilerClient(base_url=p.control, token_file=p.credential)
    _promote(p)  # something to roll back
    _soaked(p)
    head = p.git("ls-remote", str(p.remote), "main").split()[0]
    with pytest.raises(ApiError) as not_hers:  # an approval is the credential's user's, not the body's
        client.post("/api/v1/promote", {"app": "hello", "from": "staging", "to": "prod", "approve": "bob",
                                        "dryRun": True})
    assert not_hers.value.status == 400 and "not the authenticated user 'alice'" in str(not_hers.value)
    dry = client.post(
        "/api/v1/promote", {"app": "hello", "from": "staging", "to": "prod", "approve": True, "dryRun": True}
    )
    assert dry["dryRun"] is True and dry["commit"] is None and all(g["passed"] for g in dry["gates"])
    with pytest.raises(ApiError) as refused:
        client.post("/api/v1/promote", {"app": "hello", "from": "staging", "to": "prod"})
    assert refused.value.status == 409 and "requires an approval" in str(refused.value)
    with pytest.raises(ApiError) as bad:
        client.post("/api/v1/rollback", {"app": "hello", "env": "prod"})
    assert bad.value.status == 400 and "'to' is required" in str(bad.value)
    seed = p.api("/api/v1/history?env=prod&app=hello")["history"][-1]["revision"]
    back = client.post("/api/v1/rollback", {"app": "hello", "env": "prod", "to": seed, "dryRun": True})
    assert back["toRevision"] == seed and back["commit"] is None
    assert back["files"] == [{"path": "manifests/prod/apps/hello.yaml", "action": "restore"}]
    assert p.git("ls-remote", str(p.remote), "main").split()[0] == head


def test_rollback_restores_the_previous_applied_revision(p: Platform) -> None:
    _reject_a_typo(p)
    _promote(p)
    history = p.api("/api/v1/history?env=prod&app=hello")["history"]
    assert history[0]["message"].startswith("promote(hello)")
    previous = history[1]["revision"]
    rejected = p.git(
        "--git-dir", str(p.remote), "log", "--format=%H", "--grep=^a commit with a typo", "main"
    ).split()[0]
    never = p.cli("rollback", "hello", "--env", "prod", "--to", rejected)
    assert never.returncode == 1 and f"revision {rejected} was never applied to prod" in never.stderr
    r = p.cli("rollback", "hello", "--env", "prod", "--to", previous[:10], "--reason", "2.0.0 misbehaves")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: _digest(p, "prod") == p.digests["demo/hello:1.0.0"] and p.healthy(), timeout=30,
               what="prod back on 1.0.0")  # fmt: skip
    log = p.git("--git-dir", str(p.remote), "log", "--format=%s", "-3", "main").splitlines()
    assert log[0] == f"rollback(hello): prod to {previous[:12]}" and log[1].startswith("promote(hello)")
    listed = p.cli("history", "--env", "prod", "hello")
    assert listed.returncode == 0 and "rollback(hello)" in listed.stdout.splitlines()[1]


def test_diff_shows_what_a_working_tree_would_change(p: Platform) -> None:
    p.git("pull", "-q", "--rebase", "origin", "main")
    path = p.work / "manifests/prod/apps/hello.yaml"
    original = path.read_text()
    path.write_text(original.replace("hi from prod", "bonjour").replace("replicas: 2", "replicas: 3"))
    try:
        r = p.cli("diff", "--env", "prod", "--exit-code", cwd=p.work)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "config GREETING: 'hi from prod' -> 'bonjour'" in r.stdout
        assert "+ start  prod/hello/web/2" in r.stdout and "1 to start, 2 to update, 0 to stop." in r.stdout
        same = p.cli("diff", "--env", "prod", "HEAD", cwd=p.work)
        assert same.returncode == 0 and "no changes" in same.stdout
        outside = p.cli("diff", cwd=p.root)  # not in a clone: HEAD of the Git remote
        assert outside.returncode == 0 and "(HEAD)" in outside.stdout and "no changes" in outside.stdout
    finally:
        path.write_text(original)


def test_moved_tag_is_reported(p: Platform) -> None:
    from driftless.client import ReconcilerClient
    from shared.registry_client import push_component
    from tests.support.components import variant

    deployed = p.digests["demo/hello:2.0.0"]
    moved = push_component(f"{p.registry_host}/demo/hello:2.0.0", variant("hello", "2.0.0-rebuilt"))
    assert moved != deployed
    r = p.cli("drift", "--env", "staging", "-o", "json")
    assert r.returncode == 2, r.stdout + r.stderr
    [item] = [i for i in json.loads(r.stdout)["items"] if i["category"] == "TagMoved"]
    assert (item["env"], item["app"], item["component"]) == ("staging", "hello", "web")
    assert (item["expected"], item["actual"]) == (deployed, moved)
    assert "demo/hello:2.0.0" in item["message"]
    # the reconciler sees it too at its next fetch (here: asked for at once), in the API and as an event
    before = time.time()
    ReconcilerClient(base_url=p.control, token_file=p.credential).post("/api/v1/sync", {})
    served = wait_for_drift(p, category="TagMoved", env="staging", component="web")
    assert (served["expected"], served["actual"]) == (deployed, moved)
    wait_until(lambda: _events(p, "DriftTagMoved", before - 60), timeout=10, what="TagMoved event")
    # the remedy the message suggests: pin the digest that runs
    pinned = p.commit({"manifests/staging/apps/hello.yaml": hello_app("staging", f"demo/hello@{deployed}", "hi from staging")},
                      "pin hello in staging")  # fmt: skip
    wait_until(lambda: p.applied() == pinned, timeout=15, what="the pin applied")
    wait_until(
        lambda: p.cli("drift", "--env", "staging").returncode == 0, timeout=15, what="no drift once pinned"
    )


def test_killed_host_is_reported_lost(p: Platform) -> None:
    p.hosts["edge-1"].proc.kill()
    item = wait_for_drift(p, category="HostLost", host="edge-1", timeout=15)
    assert item["actual"] == "Lost"
    r = p.cli("drift", "-o", "json")
    assert r.returncode == 2
    status = p.cli("status", "-o", "json")
    doc = json.loads(status.stdout)
    assert {h["name"]: h["state"] for h in doc["hosts"]}["edge-1"] == "Lost"
    assert sum(doc["drift"].values()) >= 1
