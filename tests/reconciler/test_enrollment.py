"""Host enrollment against a real reconciler over HTTP (tests/support/platform.py), with simulated hosts
(tests/reconciler/simhost.py: real clients of the control API) as the edge boxes that try to be more
than they were enrolled as, and raw requests as the attacker holding a join token.

An admin enrolls hosts (``driftless hosts enroll`` / ``POST /api/v1/enrollments``) for label values and
environments: labels beyond that are refused at registration, re-registering cannot widen them, a host
not enrolled for prod gets no prod instance or secret even with prod's labels, a revoked host's
credential stops working and its instances move, traffic a host reports for an instance it was not
given moves no canary, and a metadata, link-local or file:// ingress URL is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reconciler.simhost import SimHost
from tests.support.components import build
from tests.support.platform import (
    LocalPlatform,
    application,
    environment,
    local_platform,
    user,
    with_custom_section,
)
from tests.support.procs import DriftlessProcess, free_port, wait_until
from wire.control import HostCapacity, HostRegistration
from wire.traffic import FEATURE_TRAFFIC_SPLIT, DigestTraffic

SECRET = "s3cr3t-" + secrets.token_hex(8)
OPS = secrets.token_urlsafe(16)  # an operator of every environment: still no admin
HELLO = build("hello")
HELLO_2 = with_custom_section(HELLO, b"v2")


def spread(name: str, replicas: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "demo/hello:1.0.0", "placement": {"spread": {"replicas": replicas}}, **extra}


def canary_app(image: str) -> str:
    body = {"apiVersion": "driftless.dev/v1alpha1", "kind": "Application", "metadata": {"name": "shop"},
            "spec": {"components": [{"name": "web", "image": image, "expose": "/shop",
                                     "placement": {"daemon": {"perHost": 1}}}],
                     "rollout": {"strategy": "canary", "steps": [{"weight": 50, "pause": "10m"}, {"weight": 100}],
                                 "abortWhen": {"errorRate": "> 2%"}}}}
    return json.dumps(body, indent=2) + "\n"


TREE = {
    "dev/environment.yaml": environment("dev", prefix="/dev", selector={"tier": "edge"}),
    # a daemon: every host that may serve dev runs one, whichever other edge hosts the tests (in random
    # order) registered first (a spread replica would stay where it was placed)
    "dev/apps/hello.yaml": application("hello", [{"name": "web", "image": "demo/hello:1.0.0",
                                                  "placement": {"daemon": {"perHost": 1}}, "expose": "/hello"}]),
    "prod/environment.yaml": environment("prod", prefix="/prod", selector={"tier": "prod"}),
    # two replicas: a second prod host that may serve prod gets the second one (and the secret)
    "prod/apps/pay.yaml": application("pay", [spread("api", 2, config={"DB_PASSWORD": {"secretRef": "db"}})]),
    "stage/environment.yaml": environment("stage", prefix="/stage", selector={"tier": "stage"}),
    "stage/apps/hello.yaml": application("hello", [spread("web", 1, expose="/hello")]),
    "qa/environment.yaml": environment("qa", prefix="/qa", selector={"tier": "qa"}),
    "qa/apps/shop.yaml": canary_app("demo/hello:1.0.0"),
}


class World:
    def __init__(self, root: Path) -> None:
        secrets_file = root / "secrets.yaml"
        fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f'db: "{SECRET}"\n')
        self.root = root
        # a slower heartbeat than the tests' default: simulated hosts on a busy machine must not flap Lost
        self.p: LocalPlatform = local_platform(root / "platform", heartbeat=2.0, users=[user("ops", OPS, "operator")],
                                               reconciler_args=["--secrets-file", str(secrets_file)])
        self.digests = self.p.up(tree=TREE, components={"demo/hello:1.0.0": HELLO, "demo/hello:2.0.0": HELLO_2},
                                 hosts=False)
        self.url = self.p.control_url
        self.sims: list[SimHost] = []

    def sim(self, name: str, labels: dict[str, str], token: str, **kw: Any) -> SimHost:
        host = SimHost(control=self.url, token=token, name=name, labels=labels, **kw)
        self.sims.append(host)
        return host

    def enroll(self, **body: Any) -> tuple[str, str]:
        r = self.p.reconciler.post("/api/v1/enrollments", body)
        assert r.status_code == 201, r.text
        return r.json()["enrollment"]["id"], r.json()["token"]

    def register(self, reg: HostRegistration, bearer: str) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1/hosts/register", json=reg.to_json(), timeout=10,
                          headers={"Authorization": f"Bearer {bearer}"})

    def desired(self, host: str, credential: str) -> httpx.Response:
        return httpx.get(f"{self.url}/api/v1/hosts/{host}/desired?after=0", timeout=10,
                         headers={"Authorization": f"Bearer {credential}"})

    def placed(self, env: str) -> dict[str, list[str]]:
        """host -> ids of the instances of ``env`` published to it."""
        inputs = self.p.reconciler.get("/api/v1/plan-inputs")
        return {h: ids for h, doc in inputs["published"].items()
                if (ids := [i["id"] for i in doc["instances"] if i["env"] == env])}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "driftless", "hosts", *args, "--control", self.url,
                               "--token-file", str(self.p.admin_token_file)],
                              capture_output=True, text=True, timeout=60)


def reg(name: str, labels: dict[str, str], ingress: str | None = None) -> HostRegistration:
    return HostRegistration(name=name, labels=labels, version="test", ingress_url=ingress,
                            capacity=HostCapacity(memory_bytes=1 << 30, max_instances=100))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("enrollment"))
    try:
        yield w
    finally:
        for host in w.sims:
            host.stop_soon()
        for host in w.sims:
            host.stop()
        w.p.stop()


def test_a_host_enrolled_for_edge_and_dev_cannot_become_prod(world: World) -> None:
    w = world
    token_file = w.root / "edge-1.token"
    made = w.cli("enroll", "--label", "tier=edge", "--env", "dev", "--token-out", str(token_file))
    assert made.returncode == 0, made.stderr
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()
    assert token not in made.stdout + made.stderr  # written to the file only
    edge = w.sim("edge-1", {"tier": "edge"}, token).start()
    wait_until(lambda: "edge-1" in w.placed("dev"), timeout=20, what="dev's hello on edge-1")
    assert edge.credential

    prod_labels = reg("edge-1", {"tier": "prod"})
    for bearer, why in ((edge.credential, "not allowed"), (token, "not allowed"),
                        (w.p.token(), "is enrolled by enrollment")):
        r = w.register(prod_labels, bearer)
        assert r.status_code == 403, r.text
        assert "edge-1" in r.json()["error"] and why in r.json()["error"], r.text
        if why == "not allowed":
            assert "tier=prod" in r.json()["error"] and r.json()["reason"] == "OutsideEnrollment"
            assert "tier may be edge" in r.json()["error"]
    host = w.p.reconciler.host("edge-1")
    assert host["labels"]["tier"] == "edge" and host["state"] == "Ready"
    assert "edge-1" not in w.placed("prod")
    answer = w.desired("edge-1", edge.credential)
    assert answer.status_code == 200 and SECRET not in answer.text and '"prod"' not in answer.text
    events = w.p.reconciler.get("/api/v1/events?host=edge-1")["events"]
    assert any(e["reason"] == "HostRegistrationRefused" and "tier=prod" in e["message"] for e in events)
    listed = json.loads(w.cli("list", "-o", "json").stdout)
    mine = [e for e in listed["enrollments"] if e["hosts"] == ["edge-1"]]
    assert mine and mine[0]["labels"] == {"tier": ["edge"]} and mine[0]["environments"] == ["dev"]
    assert all("tokenSha256" not in e for e in listed["enrollments"])
    assert token not in json.dumps(listed)
    shown = w.cli("list")
    assert shown.returncode == 0 and mine[0]["id"] in shown.stdout and "tier=edge" in shown.stdout, shown.stderr
    assert "edge-1" in shown.stdout and token not in shown.stdout


def test_prod_labels_without_prod_enrollment_get_no_prod_instance_nor_secret(world: World) -> None:
    """Labels alone do not make a prod host: the environments of the enrollment do (placement, then publish)."""
    w = world
    _, token = w.enroll(labels={"tier": ["edge", "prod"]}, environments=["dev"])
    edge = w.sim("edge-2", {"tier": "prod"}, token).start()  # matches prod's hostSelector
    # the control: a host the join token (unbounded here, as `driftless up` runs it) registers gets prod's
    # two replicas and the secret
    prod = w.sim("prod-1", {"tier": "prod"}, w.p.token()).start()
    wait_until(lambda: len(w.placed("prod").get("prod-1", [])) == 2, timeout=20, what="both pay replicas on prod-1")
    assert "edge-2" not in w.placed("prod")
    assert SECRET in w.desired("prod-1", prod.credential or "").text
    answer = w.desired("edge-2", edge.credential or "")
    assert answer.status_code in (200, 204) and SECRET not in answer.text
    assert w.p.reconciler.host("edge-2")["labels"]["tier"] == "prod"
    assert "edge-2" not in w.p.reconciler.get("/api/v1/environments/prod")["hosts"]
    inputs = {h["name"]: h for h in w.p.reconciler.get("/api/v1/plan-inputs")["hosts"]}  # what `driftless diff` plans
    assert inputs["edge-2"]["environments"] == ["dev"] and inputs["prod-1"]["environments"] is None


def test_labels_outside_the_enrollment_are_refused_at_the_first_registration(world: World) -> None:
    w = world
    ident, token = w.enroll(labels={"tier": "edge"}, environments=["dev"], maxUses=1)
    r = w.register(reg("edge-3", {"tier": "edge", "gpu": "yes"}), token)
    assert r.status_code == 403 and "edge-3" in r.json()["error"] and "gpu=yes" in r.json()["error"], r.text
    assert "driftless hosts enroll" in r.json()["hint"]
    assert httpx.get(f"{w.url}/api/v1/hosts/edge-3", timeout=5).status_code == 404
    [listed] = [e for e in json.loads(w.cli("list", "-o", "json").stdout)["enrollments"] if e["id"] == ident]
    assert listed["uses"] == 0  # a refused registration uses nothing
    assert w.register(reg("edge-3", {"tier": "edge", "os": "linux"}), token).status_code == 200  # automatic: free
    again = w.register(reg("edge-3b", {"tier": "edge"}), token)
    assert again.status_code == 403 and "used 1 time(s)" in again.json()["error"]


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "file:///etc/passwd", "http://[fe80::1]:8081",
                                 "http://metadata.google.internal", "http://[fd00:ec2::254]/", "gopher://x:70"])
def test_a_dangerous_ingress_url_is_refused(world: World, url: str) -> None:
    w = world
    for bearer in (w.p.token(), w.enroll(labels={"tier": "edge"}, environments=["dev"])[1]):
        r = w.register(reg("edge-url", {"tier": "edge"}, ingress=url), bearer)
        assert r.status_code == 403, r.text
        assert "edge-url" in r.json()["error"] and f"ingressUrl {url} is refused" in r.json()["error"], r.text
    assert httpx.get(f"{w.url}/api/v1/hosts/edge-url", timeout=5).status_code == 404


def test_an_enrollment_pins_the_ingress(world: World) -> None:
    w = world
    _, token = w.enroll(labels={"tier": "edge"}, environments=["dev"], ingress="http://127.0.0.1:7001")
    r = w.register(reg("edge-pin", {"tier": "edge"}, ingress="http://127.0.0.1:7002"), token)
    assert r.status_code == 403 and "not under http://127.0.0.1:7001" in r.json()["error"], r.text
    r = w.register(reg("edge-pin", {"tier": "edge"}, ingress="http://127.0.0.1:7001.evil.example/"), token)
    assert r.status_code == 403, r.text
    assert w.register(reg("edge-pin", {"tier": "edge"}, ingress="http://127.0.0.1:7001/"), token).status_code == 200
    assert w.p.reconciler.host("edge-pin")["ingressUrl"] == "http://127.0.0.1:7001/"


def test_revoking_an_enrollment_ends_its_hosts_credentials_and_moves_their_instances(world: World) -> None:
    w = world
    first, token_a = w.enroll(labels={"tier": "stage"}, environments=["stage"])
    _, token_b = w.enroll(labels={"tier": "stage"}, environments=["stage"])
    a = w.sim("stage-a", {"tier": "stage"}, token_a).start()
    wait_until(lambda: "stage-a" in w.placed("stage"), timeout=20, what="stage's hello on stage-a")
    w.sim("stage-b", {"tier": "stage"}, token_b).start()
    a.stop()  # its threads would register again at the first 401 (as a real host does, refused then)
    credential = a.credential or ""
    assert w.desired("stage-a", credential).status_code == 200
    done = w.cli("revoke", first)
    assert done.returncode == 0 and "stage-a" in done.stdout, done.stderr
    assert w.desired("stage-a", credential).status_code == 401
    r = w.register(reg("stage-a", {"tier": "stage"}), credential)
    assert r.status_code == 401
    r = w.register(reg("stage-a", {"tier": "stage"}), token_a)
    assert r.status_code == 403 and "revoked" in r.json()["error"], r.text
    assert w.p.reconciler.host("stage-a")["state"] == "Revoked"
    wait_until(lambda: list(w.placed("stage")) == ["stage-b"], timeout=20, what="hello moved to stage-b")
    listed = json.loads(w.cli("list", "-o", "json").stdout)
    [revoked] = [e for e in listed["enrollments"] if e["id"] == first]
    assert revoked["revokedAt"] and revoked["hosts"] == []
    # the join token is no user credential: it enrolls nobody; an operator is no admin
    assert w.p.reconciler.post("/api/v1/enrollments", {"environments": ["dev"]}, token=w.p.token()).status_code == 401
    refused = w.p.reconciler.post("/api/v1/enrollments", {"environments": ["dev"]}, token=OPS)
    assert refused.status_code == 403 and "role admin" in refused.json()["error"], refused.text
    assert w.p.reconciler.post("/api/v1/hosts/stage-b/revoke", token=OPS).status_code == 403
    listing = httpx.get(f"{w.url}/api/v1/enrollments", headers={"Authorization": f"Bearer {OPS}"}, timeout=5)
    assert listing.status_code == 403
    assert w.p.reconciler.host("stage-b")["state"] == "Ready"


def test_traffic_a_host_reports_for_an_instance_it_was_not_given_moves_no_canary(world: World) -> None:
    w = world
    _, token = w.enroll(labels={"tier": "qa"}, environments=["qa"])
    qa = w.sim("qa-1", {"tier": "qa"}, token, features=(FEATURE_TRAFFIC_SPLIT,)).start()
    liar = w.sim("liar-1", {"tier": "edge"}, w.enroll(labels={"tier": "edge"}, environments=["dev"])[1],
                 features=(FEATURE_TRAFFIC_SPLIT,)).start()
    wait_until(lambda: "qa-1" in w.placed("qa"), timeout=20, what="shop on qa-1")
    w.p.git.push({"qa/apps/shop.yaml": canary_app("demo/hello:2.0.0")}, "shop 2.0.0 (canary)")

    def rollout() -> dict[str, Any]:
        return w.p.reconciler.app("qa", "shop").get("rollout") or {}

    wait_until(lambda: rollout().get("phase") == "Progressing" and rollout().get("stepStartedAt"), timeout=30,
               what="the canary measuring at its first step")
    canary = rollout()["canary"]["web"]
    failing = (DigestTraffic(env="qa", app="shop", component="web", digest=canary, requests=100, errors=100),)
    liar.traffic = failing  # a host that runs no shop reports the canary failing every request
    liar.report()
    wait_until(lambda: (rollout().get("measured") or {}).get("canary") is not None, timeout=10, what="a measure")
    time.sleep(1.5)  # six decisions (a tick is 0.25 s): an abort would have happened by now
    state = rollout()
    assert state["phase"] == "Progressing", state
    assert state["measured"]["canary"]["requests"] == 0, state["measured"]
    qa.traffic = failing  # the same figures from the host running the canary: they count
    qa.report()
    wait_until(lambda: rollout().get("phase") == "Aborted", timeout=10, what="the canary aborted")


def test_a_real_host_restarted_with_prod_labels_is_refused_and_stays_what_it_enrolled_as(world: World) -> None:
    """A real ``driftless host``: its own credential is refused for tier=prod (OutsideEnrollment), and it
    does not fall back to its token (which would not widen anything): it logs why and keeps retrying."""
    w = world
    _, token = w.enroll(labels={"tier": "edge"}, environments=["dev"], host="edge-real")
    token_file = w.root / "edge-real.token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    port, admin = free_port(), free_port()

    def start(tier: str) -> DriftlessProcess:
        return DriftlessProcess(
            ["host", "--control", w.url, "--token-file", str(token_file), "--name", "edge-real",
             "--label", f"tier={tier}", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
             "--data", str(w.root / "edge-real"), "--heartbeat", "0.5"],
            log_dir=w.root, name="edge-real", ready_url=f"http://127.0.0.1:{admin}/healthz").start()

    host = start("edge")
    try:
        wait_until(lambda: httpx.get(f"{w.url}/api/v1/hosts/edge-real", timeout=5).status_code == 200, timeout=20,
                   what="edge-real registered")
        host.stop()
        host = start("prod")
        wait_until(lambda: "refused the registration (403)" in host.log() and "tier=prod" in host.log(),
                   timeout=20, what="the refusal in the host's log")
        assert "registering with the join token" not in host.log()
        assert w.p.reconciler.host("edge-real")["labels"]["tier"] == "edge"
        assert "edge-real" not in w.placed("prod")
    finally:
        host.stop()
