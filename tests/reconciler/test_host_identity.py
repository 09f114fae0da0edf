"""Host identity against real processes: the platform's reconciler and two real ``driftless host``
processes (tests/support/platform.py), with raw httpx requests as the attacker who holds the join token.

The join token only bootstraps: registering hands each host a credential (kept in its data directory,
stored by the reconciler as a SHA-256 only) that alone reaches the host's desired state and reports. A
name held by a live host cannot be stolen with the join token. The tests share one platform; the
``world`` fixture brings it back to the baseline (both hosts up, Ready, hello Healthy) before each.
"""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.controller.events import EventLog
from reconciler.controller.hosts import Conflict, Forbidden, HostRegistry
from reconciler.controller.state import Store
from reconciler.settings import Settings
from tests.support.components import build
from tests.support.platform import LocalPlatform, application, environment, local_platform
from tests.support.procs import wait_until
from wire.control import HostCapacity, HostRegistration

HOSTS = {"aws-1": {"cloud": "aws"}, "gcp-1": {"cloud": "gcp"}}
WEB = {"name": "web", "image": "demo/hello:1.0.0", "config": {"GREETING": "secret-howdy"}, "expose": "/hello",
       "placement": {"spread": {"replicas": 2, "requirements": [  # one on each host
           {"labels": {"cloud": "aws"}, "weight": 1}, {"labels": {"cloud": "gcp"}, "weight": 1}]}}}  # fmt: skip


class World:
    def __init__(self, root: Path) -> None:
        self.p: LocalPlatform = local_platform(root, hosts=HOSTS)
        self.p.up(tree={"prod/environment.yaml": environment("prod"), "prod/apps/hello.yaml": application("hello", [WEB])},
                  components={"demo/hello:1.0.0": build("hello")})  # fmt: skip
        self.url = self.p.control_url
        self.token = self.p.token()

    def credential(self, host: str) -> str:
        return (self.p.data / "hosts" / host / "host-credential").read_text().strip()

    def host(self, name: str) -> dict[str, Any]:
        return self.p.reconciler.host(name)

    def healthy(self) -> bool:
        app = self.p.reconciler.app("prod", "hello")
        return app["health"] == "Healthy" and app["sync"] == "Synced" and app["components"][0]["ready"] == 2

    def reset(self) -> None:
        for name in HOSTS:
            if not self.p.alive(f"host-{name}"):
                self.p.restart(f"host-{name}")
        wait_until(lambda: all(self.host(h)["state"] == "Ready" for h in HOSTS) and self.healthy()
                   and all(httpx.get(f"{self.p.ingress(h)}/hello", timeout=2).status_code == 200
                           for h in HOSTS),
                   timeout=60, what="the baseline")  # fmt: skip

    def call(self, method: str, path: str, bearer: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, f"{self.url}/api/v1{path}", json=body, timeout=10,
                             headers={"Authorization": f"Bearer {bearer}"})


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("identity"))
    try:
        yield w
    finally:
        w.p.stop()


@pytest.fixture
def world(platform: World) -> World:
    platform.reset()
    return platform


def registration(name: str, **labels: str) -> dict[str, Any]:
    return HostRegistration(name=name, labels=labels, ingress_url="http://127.0.0.1:9/evil",
                            capacity=HostCapacity(memory_bytes=1 << 30, max_instances=100)).to_json()


def test_each_host_keeps_its_credential_and_the_reconciler_only_its_hash(world: World) -> None:
    w = world
    creds = {h: w.credential(h) for h in HOSTS}
    assert len(set(creds.values())) == 2 and all(len(c) >= 43 for c in creds.values())
    for h in HOSTS:
        mode = stat.S_IMODE((w.p.data / "hosts" / h / "host-credential").stat().st_mode)
        assert mode == 0o600, oct(mode)
    db = sqlite3.connect(str(w.p.data / "reconciler" / "state.db"))
    try:
        stored = dict(db.execute("SELECT name, hash FROM host_credentials"))
    finally:
        db.close()
    assert stored == {h: hashlib.sha256(c.encode()).hexdigest() for h, c in creds.items()}
    for f in (w.p.data / "reconciler").glob("state.db*"):
        raw = f.read_bytes()
        assert not any(c.encode() in raw for c in creds.values()), f
    assert not any(c in w.p.process("reconciler").log() for c in creds.values())


def test_the_join_token_alone_cannot_read_desired_state_or_report(world: World) -> None:
    w = world
    r = w.call("GET", "/hosts/aws-1/desired?after=0", w.token)
    assert r.status_code == 401 and "register" in r.json()["error"], r.text
    assert "secret-howdy" not in r.text
    r = w.call("POST", "/hosts/aws-1/report", w.token, {"name": "aws-1", "observedGeneration": 0, "instances": []})
    assert r.status_code == 401 and "register" in r.json()["error"], r.text
    r = w.call("GET", "/hosts/aws-1/desired?after=0", "not-a-credential")
    assert r.status_code == 401
    # the host's own credential does reach it
    r = w.call("GET", "/hosts/aws-1/desired?after=0", w.credential("aws-1"))
    assert r.status_code == 200 and r.json()["host"] == "aws-1"


def test_stealing_a_registered_name_is_refused(world: World) -> None:
    w = world
    before = w.host("aws-1")
    r = w.call("POST", "/hosts/register", w.token, registration("aws-1", cloud="evil"))
    assert r.status_code == 409, r.text
    body = r.json()
    assert "held" in body["error"] and "--allow-host-takeover" in body["hint"], body
    assert "credential" not in body
    # another host's credential cannot register the name either
    r = w.call("POST", "/hosts/register", w.credential("gcp-1"), registration("aws-1", cloud="evil"))
    assert r.status_code == 403 and "gcp-1" in r.json()["error"], r.text
    time.sleep(1.5)  # a few heartbeats and a reconcile would show any effect
    after = w.host("aws-1")
    assert after["state"] == "Ready" and after["labels"] == before["labels"]
    assert after["ingressUrl"] == before["ingressUrl"] == w.p.ingress("aws-1")
    assert after["registeredAt"] == before["registeredAt"]
    assert after["desired"] == before["desired"] and after["generation"] == before["generation"]
    assert w.healthy()
    # the real host's own credential still works
    assert w.call("GET", "/hosts/aws-1/desired?after=0", w.credential("aws-1")).status_code == 200
    events = w.p.reconciler.get("/api/v1/events?host=aws-1")["events"]
    assert any(e["reason"] == "HostRegistrationRefused" for e in events)


def test_a_credential_reaches_only_its_own_host(world: World) -> None:
    w = world
    gcp = w.credential("gcp-1")
    r = w.call("GET", "/hosts/gcp-1/desired?after=0", gcp)
    assert r.status_code == 200 and r.json()["host"] == "gcp-1"
    r = w.call("GET", "/hosts/aws-1/desired?after=0", gcp)
    assert r.status_code == 403 and "gcp-1" in r.json()["error"] and "secret-howdy" not in r.text, r.text

    before = w.host("aws-1")
    assert before["report"]["instances"], before
    forged = {**before["report"], "instances": [{**i, "status": "Failed", "lastError": "forged"}
                                                for i in before["report"]["instances"]]}
    for bearer, code in ((gcp, 403), (w.token, 401)):
        r = w.call("POST", "/hosts/aws-1/report", bearer, forged)
        assert r.status_code == code, r.text
    # a forged "Running" report for an instance aws-1 does not run is refused too
    running = {"name": "aws-1", "observedGeneration": before["generation"], "instances": [
        {"id": "prod/hello/web/99", "env": "prod", "app": "hello", "component": "web", "digest": "sha256:" + "0" * 64,
         "status": "Running"}]}  # fmt: skip
    assert w.call("POST", "/hosts/aws-1/report", gcp, running).status_code == 403
    time.sleep(1.5)
    after = w.host("aws-1")
    assert [(i["id"], i["status"], i["digest"]) for i in after["report"]["instances"]] == \
        [(i["id"], i["status"], i["digest"]) for i in before["report"]["instances"]]
    assert after["lastSeen"] > before["lastSeen"]  # the real host's own reports still land
    assert w.healthy()


def test_a_restarted_host_keeps_its_name_with_its_stored_credential(world: World) -> None:
    w = world
    credential = w.credential("aws-1")
    view = w.host("aws-1")
    desired = view["desired"]
    proc = w.p.process("host-aws-1")
    proc.kill()
    proc.start()
    log = w.p.running["host-aws-1"]
    wait_until(lambda: w.host("aws-1")["registeredAt"] > view["registeredAt"], timeout=20, what="registered again")
    assert desired["instances"]
    wait_until(lambda: httpx.get(f"{w.p.ingress('aws-1')}/hello", timeout=2).text == "secret-howdy from /hello",
               timeout=20, what="served again")  # fmt: skip
    assert "does not know this host's credential" not in log.log()  # its own credential was enough
    assert w.credential("aws-1") == credential  # kept: not rotated
    wait_until(lambda: w.host("aws-1")["state"] == "Ready" and w.healthy(), timeout=20, what="Ready and Healthy")
    assert w.host("aws-1")["desired"]["instances"] == desired["instances"]


def test_a_lost_hosts_name_is_free_and_its_old_credential_revoked(world: World) -> None:
    w = world
    old = w.credential("gcp-1")
    w.p.stop_process("host-gcp-1")
    wait_until(lambda: w.host("gcp-1")["state"] == "Lost", timeout=20, what="gcp-1 Lost")
    r = w.call("POST", "/hosts/register", w.token, registration("gcp-1", cloud="elsewhere"))
    assert r.status_code == 200, r.text
    squatter = r.json()["credential"]
    assert squatter and squatter != old
    assert w.call("GET", "/hosts/gcp-1/desired?after=0", old).status_code == 401  # revoked
    assert w.call("GET", "/hosts/gcp-1/desired?after=0", squatter).status_code == 200
    # the real gcp-1 comes back: its credential is unknown now, the join token is refused while the
    # new holder lives; once that one is Lost (it never reports), the name is free again
    w.p.restart("host-gcp-1")
    log = w.p.running["host-gcp-1"]
    wait_until(lambda: "does not know this host's credential" in log.log(), timeout=20, what="credential refused")
    wait_until(lambda: w.credential("gcp-1") not in (old, squatter), timeout=30, what="a new credential")
    assert w.call("GET", "/hosts/gcp-1/desired?after=0", squatter).status_code == 401
    wait_until(lambda: w.host("gcp-1")["labels"]["cloud"] == "gcp" and w.host("gcp-1")["state"] == "Ready",
               timeout=20, what="gcp-1 back")  # fmt: skip
    events = [e["reason"] for e in w.p.reconciler.get("/api/v1/events?host=gcp-1")["events"]]
    assert "HostCredentialReplaced" in events


def test_takeover_needs_the_admin_option(tmp_path: Path) -> None:
    """The controller's rule alone (no processes): --allow-host-takeover lets the join token take a live name."""
    for allow in (False, True):
        store = Store(tmp_path / f"{allow}.db")
        settings = Settings(repo="r", data=tmp_path, registry="http://127.0.0.1:9", token="join",
                            allow_host_takeover=allow)
        fleet = HostRegistry(store=store, events=EventLog(store), settings=settings, replan=lambda: None,
                             status_changed=lambda: None)
        reg = HostRegistration.from_json(registration("h"))
        first = fleet.admit("h", credential="join", join=True)
        fleet.register(reg)
        assert fleet.identify(first) == "h" and fleet.admit("h", credential=first, join=False) == first
        with pytest.raises(Forbidden):
            fleet.admit("other", credential=first, join=False)
        if allow:
            second = fleet.admit("h", credential="join", join=True)
            assert second != first and fleet.identify(first) is None and fleet.identify(second) == "h"
            assert [e.reason for e in store.events()][-1] == "HostTakenOver"
        else:
            with pytest.raises(Conflict):
                fleet.admit("h", credential="join", join=True)
            assert fleet.identify(first) == "h"
        store.close()
