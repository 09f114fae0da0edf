"""End to end with real processes: the Driftless registry, a bare Git repository we `git push` to,
the reconciler, and three `driftless host` processes labelled cloud=aws, cloud=gcp and tier=edge that
really run the components and serve them over HTTP: the one test platform (tests/support/platform.py).

The tests share one platform (started once) but none depends on another: the ``platform`` fixture
brings it back to the same baseline before each test (hello at 3 replicas and the greeter app, every
host up and converged), so each test passes alone and in any order. The first deploy gets a platform
of its own.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.components import build
from tests.support.platform import (
    LocalPlatform,
    Process,
    application,
    environment,
    local_platform,
    with_custom_section,
)
from tests.support.procs import wait_until

HOSTS = {"aws": {"cloud": "aws"}, "gcp": {"cloud": "gcp"}, "edge": {"tier": "edge"}}


class Platform:
    """The one test platform, with the names these tests read it by."""

    def __init__(self, root: Path) -> None:
        self.lp: LocalPlatform = local_platform(root, hosts=HOSTS)
        self.lp.prepare()
        self.lp.start_registry()
        self.registry = self.lp.registry
        self.digests = {name: self.registry.push(f"demo/{name}:1.0.0", build(name))
                        for name in ("hello", "greeter", "frontend")}
        # the other version of hello, there whatever test runs first (pushing it again changes nothing)
        self.registry.push("demo/hello:1.1.0", with_custom_section(build("hello"), b"1.1.0"))
        self.git = self.lp.git
        self.token_file = self.lp.token_file
        self.reconciler = self.lp.reconciler
        self.ingress = {name: self.lp.ingress(name) for name in HOSTS}
        self.admin = {name: self.lp.admin(name) for name in HOSTS}

    @property
    def hosts(self) -> dict[str, Process]:
        return {name: self.lp.process(f"host-{name}") for name in HOSTS if f"host-{name}" in self.lp.procs}

    def start_host(self, name: str) -> None:
        self.lp.start_host(self.lp.host_plan(name))

    def deploy_first(self) -> str:
        """Start the reconciler (on a repository with the environment only) and the hosts, then push the
        baseline, so every host is there for the first plan; the revision pushed."""
        self.git.push({"prod/environment.yaml": environment("prod")}, "the prod environment")
        self.reconciler.start()
        for name in HOSTS:
            self.start_host(name)
        wait_until(lambda: all(self.reconciler.host(h)["state"] == "Ready" for h in HOSTS), timeout=30,
                   what="every host registered")
        return self.git.push(baseline(), "first deploy")

    def reset(self) -> None:
        """Back to the baseline, whatever the previous test left (or did not finish)."""
        for name in [*self.lp.procs]:
            if not self.lp.alive(name):
                self.lp.restart(name)
        self.git.write(baseline())
        if self.git.changed():
            self.git.push({}, "back to the baseline")
        head = self.git.head()

        def at_baseline() -> bool:
            source = self.reconciler.get("/api/v1/environments")["source"]
            hello_app = healthy(self, "hello")
            return (source["applied"] or {}).get("revision") == head and source["rejected"] is None \
                and hello_app is not None and healthy(self, "greeter") is not None \
                and hello_app["components"][0]["digest"] == self.digests["hello"] \
                and hello_app["components"][0]["ready"] == 3 \
                and all(self.reconciler.host(h)["state"] == "Ready" and sorted(self.report(h)) == self.desired(h)
                        for h in HOSTS)

        wait_until(at_baseline, timeout=45, what="the baseline")

    def stop(self) -> None:
        self.lp.stop()  # SIGTERM every host at once: each drains on its own, so they stop in parallel

    def report(self, host: str) -> dict[str, dict[str, Any]]:
        rep = self.reconciler.host(host)["report"] or {"instances": []}
        return {i["id"]: i for i in rep["instances"]}

    def desired(self, host: str) -> list[str]:
        doc = self.reconciler.host(host)["desired"] or {"instances": []}
        return sorted(i["id"] for i in doc["instances"])


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode(errors="replace")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(tmp_path_factory.mktemp("e2e"))
    try:
        p.deploy_first()
        yield p
    finally:
        p.stop()


@pytest.fixture
def platform(shared: Platform) -> Platform:
    shared.reset()
    return shared


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Platform]:
    p = Platform(tmp_path)
    try:
        yield p
    finally:
        p.stop()


def hello(replicas: int, *, image: str = "demo/hello:1.0.0", greeting: str = "hi") -> dict[str, Any]:
    return {"name": "web", "image": image, "config": {"GREETING": greeting}, "expose": "/hello",
            "placement": {"spread": {"replicas": replicas, "requirements": [
                {"labels": {"cloud": "aws"}, "weight": 2}, {"labels": {"cloud": "gcp"}, "weight": 1}]}}}


GREETER = application("greeter", [
    {"name": "frontend", "image": "demo/frontend:1.0.0", "expose": "/greet",
     "placement": {"spread": {"replicas": 1, "requirements": [{"labels": {"tier": "edge"}}]}}},
    {"name": "greeter", "image": "demo/greeter:1.0.0", "placement": {"spread": {"replicas": 1, "requirements": [
        {"labels": {"cloud": "gcp"}}]}}},
]).replace('"spec": {', '"spec": {\n    "links": [{"from": "frontend", "to": "greeter", '
                         '"interface": "driftless:demo/greeter"}],', 1)


def baseline() -> dict[str, str | None]:
    """What every test but the first deploy starts from."""
    return {"prod/environment.yaml": environment("prod"),
            "prod/apps/hello.yaml": application("hello", [hello(3)]),
            "prod/apps/greeter.yaml": GREETER, "prod/apps/api.yaml": None}


def healthy(p: Platform, app: str) -> dict[str, Any] | None:
    a = p.reconciler.app("prod", app)
    return a if a["health"] == "Healthy" and a["sync"] == "Synced" else None


def test_first_deploy_spread_by_weight_and_links(fresh: Platform) -> None:
    p = fresh
    rev = p.deploy_first()
    app = wait_until(lambda: healthy(p, "hello"), timeout=30, what="hello Healthy")
    assert app["revision"] == rev and app["components"][0]["ready"] == 3
    # weight 2:1 over aws and gcp; nothing on the edge
    assert len(p.desired("aws")) == 2 and len([i for i in p.desired("gcp") if "/hello/" in i]) == 1
    assert not [i for i in p.desired("edge") if "/hello/" in i]
    assert fetch(f"{p.ingress['aws']}/hello") == (200, "hi from /hello")
    assert fetch(f"{p.ingress['gcp']}/hello")[0] == 200
    assert fetch(f"{p.ingress['edge']}/hello")[0] == 404
    # the frontend on the edge calls its greeter, co-placed there for the link
    wait_until(lambda: healthy(p, "greeter"), timeout=30, what="greeter Healthy")
    assert "prod/greeter/greeter/edge.link" in p.desired("edge")
    status, body = fetch(f"{p.ingress['edge']}/greet")
    assert status == 200, body


def test_scale_up_and_down(platform: Platform) -> None:
    p = platform
    before = {h: p.desired(h) for h in HOSTS}
    p.git.push({"prod/apps/hello.yaml": application("hello", [hello(6)])}, "scale to 6")
    wait_until(lambda: (a := healthy(p, "hello")) and a["components"][0]["ready"] == 6, timeout=20, what="6 ready")
    assert len(p.desired("aws")) == 4
    assert all(set(before[h]) <= set(p.desired(h)) for h in HOSTS)
    p.git.push({"prod/apps/hello.yaml": application("hello", [hello(3)])}, "back to 3")
    wait_until(lambda: (a := healthy(p, "hello")) and a["components"][0]["desired"] == 3, timeout=20, what="3")
    wait_until(lambda: {h: sorted(p.report(h)) for h in HOSTS} == before, timeout=20, what="hosts back to 3")


def test_new_digest_rolls_without_a_failed_request(platform: Platform) -> None:
    p = platform
    new = p.registry.push("demo/hello:1.1.0", with_custom_section(build("hello"), b"1.1.0"))
    assert new != p.digests["hello"]
    failures: list[str] = []
    served = [0]
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            for host in ("aws", "gcp"):
                status, body = fetch(f"{p.ingress[host]}/hello")
                if status != 200:
                    failures.append(f"{host}: {status} {body[:80]}")
                served[0] += 1

    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        p.git.push({"prod/apps/hello.yaml": application("hello", [hello(3, image="demo/hello:1.1.0")])}, "hello 1.1.0")
        app = wait_until(lambda: (a := healthy(p, "hello")) and a["components"][0]["digest"] == new
                         and a["components"][0]["ready"] == 3 and a, timeout=30, what="healthy on the new digest")
        running = [i for h in ("aws", "gcp") for i in p.report(h).values() if "/hello/" in i["id"]]
        assert len(running) == 3 and all(i["digest"] == new and i["status"] == "Running" for i in running)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(10)
    assert app["components"][0]["digest"] == new
    assert served[0] > 10
    assert failures == []


def test_invalid_commit_is_rejected_and_last_good_keeps_serving(platform: Platform) -> None:
    p = platform
    good = p.reconciler.get("/api/v1/environments/prod")["revision"]
    bad = p.git.push({"prod/apps/hello.yaml": "apiVersion: driftless.dev/v1alpha1\nkind: Application\n"
                                              "metadata: {name: hello}\nspec:\n  components:\n  - name: web\n"
                                              "    image: 'NOT A REF'\n"}, "broken image reference")
    env = wait_until(lambda: (e := p.reconciler.get("/api/v1/environments/prod"))["rejected"] and e, timeout=10,
                     what="rejected")
    assert env["rejected"]["revision"] == bad and env["revision"] == good
    assert any(e["file"].endswith("hello.yaml") and e["line"] >= 1 for e in env["rejected"]["errors"])
    assert fetch(f"{p.ingress['aws']}/hello")[0] == 200
    assert p.reconciler.app("prod", "hello")["health"] == "Healthy"
    fixed = p.git.push({"prod/apps/hello.yaml": application("hello", [hello(3, image="demo/hello:1.1.0")])}, "fix")
    wait_until(lambda: p.reconciler.get("/api/v1/environments/prod")["revision"] == fixed, timeout=10, what="fixed")


def test_reconciler_restart_restarts_no_component(platform: Platform) -> None:
    p = platform
    wait_until(lambda: healthy(p, "hello") and healthy(p, "greeter"), timeout=20, what="all healthy")
    time.sleep(0.6)  # one more heartbeat: reports are current

    def running() -> dict[str, tuple[Any, Any, Any]]:
        return {i: (x["startedAt"], x["restarts"], x["digest"]) for h in HOSTS for i, x in p.report(h).items()}

    before = running()
    gens = {h: p.reconciler.host(h)["generation"] for h in HOSTS}
    assert before and all(v[0] for v in before.values())
    p.reconciler.stop()
    time.sleep(0.5)
    p.reconciler.start()
    wait_until(lambda: healthy(p, "hello") and healthy(p, "greeter"), timeout=20, what="healthy after restart")
    time.sleep(1.5)
    assert {h: p.reconciler.host(h)["generation"] for h in HOSTS} == gens
    assert running() == before


def test_instance_stopped_by_hand_is_healed(platform: Platform) -> None:
    p = platform
    victim = next(i for i in p.desired("aws") if "/hello/" in i)
    req = urllib.request.Request(f"{p.admin['aws']}/api/v1/instances?id={urllib.parse.quote(victim)}",
                                 method="DELETE", headers=p.lp.host_admin_headers("aws"))
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status in (200, 202, 204)
    wait_until(lambda: victim not in p.report("aws"), timeout=10, what="instance gone from the report")
    # sync.mode heal: the reconciler republishes and the host starts it again
    wait_until(lambda: p.report("aws").get(victim, {}).get("status") == "Running", timeout=20, what="healed")
    events = p.reconciler.get("/api/v1/events?env=prod&limit=1000")["events"]
    assert any(e["reason"] == "Healed" for e in p.reconciler.get("/api/v1/events?limit=1000")["events"]), events[-5:]
    assert any(e["reason"] == "DriftMissing" and victim in e["message"] for e in events)


def test_killed_host_is_rescheduled(platform: Platform) -> None:
    p = platform
    spread_all = {"name": "api", "image": "demo/hello:1.0.0", "config": {"GREETING": "api"}, "expose": "/api",
                  "placement": {"spread": {"replicas": 2}}}
    p.git.push({"prod/apps/api.yaml": application("api", [spread_all])}, "api on any two hosts")
    app = wait_until(lambda: healthy(p, "api"), timeout=20, what="api healthy")
    victim = next(h for h in ("gcp", "aws", "edge") if h in app["components"][0]["hosts"])
    survivors = [h for h in HOSTS if h != victim]
    p.hosts[victim].kill()
    wait_until(lambda: p.reconciler.host(victim)["state"] == "Lost", timeout=10, what="Lost")
    app = wait_until(lambda: (a := healthy(p, "api")) and victim not in a["components"][0]["hosts"] and a,
                     timeout=20, what="api rescheduled")
    assert sorted(app["components"][0]["hosts"]) == sorted(survivors)
    for h in survivors:
        assert fetch(f"{p.ingress[h]}/api") == (200, "api from /api")
    # it comes back (same data directory, so it remembers its old instances): it gets a fresh
    # desired state, its stale api instance is removed, and nothing moves back to it
    p.hosts[victim].start()
    wait_until(lambda: p.reconciler.host(victim)["state"] == "Ready" and p.reconciler.host(victim)["report"]
               and not any("/api/" in i for i in p.report(victim)), timeout=20, what="returned without stale instances")
    assert fetch(f"{p.ingress[victim]}/api")[0] == 404
    assert sorted(p.reconciler.app("prod", "api")["components"][0]["hosts"]) == sorted(survivors)


def test_prune_removes_what_git_no_longer_declares(platform: Platform) -> None:
    p = platform
    p.git.push({"prod/apps/api.yaml": application("api", [{"name": "api", "image": "demo/hello:1.0.0",
               "config": {"GREETING": "api"}, "expose": "/api", "placement": {"spread": {"replicas": 2}}}])},
               "api on any two hosts")
    wait_until(lambda: healthy(p, "api"), timeout=20, what="api healthy")
    p.git.push({"prod/apps/api.yaml": None}, "remove api")
    wait_until(lambda: not any("/api/" in i for h in HOSTS if p.hosts[h].alive() for i in p.report(h)),
               timeout=20, what="api pruned from the hosts")
    for h in HOSTS:
        if p.hosts[h].alive():
            assert fetch(f"{p.ingress[h]}/api")[0] == 404
    events = p.reconciler.get("/api/v1/events?env=prod&limit=1000")["events"]
    assert any(e["reason"] == "Applied" and "remove api" in e["message"] for e in events)
