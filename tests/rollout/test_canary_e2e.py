"""Canary rollouts by ``git push`` on a real platform (registry, Git, reconciler, two hosts, real
components): a well-behaved digest advances step by step to 100%; one that answers 500 to ~30% of
requests is aborted at the first step, the old digest serves everything again, the bad digest is
held back (not drift) across a reconciler restart; shadow traffic catches a changed answer before
any user sees it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from driftless.commands.status import rollout_rows
from tests.rollout.conftest import hello_variant
from tests.support.components import build
from tests.support.platform import LocalPlatform, environment, local_platform
from tests.support.procs import wait_until

HOSTS = {"aws-1": {"cloud": "aws"}, "gcp-1": {"cloud": "gcp"}}


def web(image: str, *, shadow: bool = False, name: str = "web") -> str:
    rollout: dict[str, Any] = {
        "strategy": "canary",
        "steps": [{"weight": 20, "pause": "2s"}, {"weight": 50, "pause": "1s"}, {"weight": 100}],
        "abortWhen": {"errorRate": "> 2%", "p99": "> 20x baseline", "traps": "> 0"},
    }
    if shadow:
        rollout["shadow"] = {"sample": "100%", "compare": "body", "duration": "1s"}
    body = {"apiVersion": "driftless.dev/v1alpha1", "kind": "Application", "metadata": {"name": name},
            "spec": {"components": [{"name": "web", "image": image, "expose": f"/{name}",
                                     "placement": {"daemon": {"perHost": 1}}}],
                     "rollout": rollout}}
    return json.dumps(body, indent=2) + "\n"


class Traffic:
    """Requests in a loop to both hosts, /<app>/0 ... /<app>/99, every answer kept."""

    def __init__(self, urls: list[str], app: str = "web") -> None:
        self.urls, self.app = urls, app
        self.seen: list[tuple[float, int, str, str]] = []  # (time, status, track, body)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        i = 0
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                url = self.urls[i % len(self.urls)]
                try:
                    r = client.get(f"{url}/{self.app}/{i % 100}")
                    self.seen.append((time.monotonic(), r.status_code, r.headers.get("x-driftless-track", ""),
                                      r.text))
                except httpx.HTTPError:
                    self.seen.append((time.monotonic(), 0, "", ""))
                i += 1
                time.sleep(0.002)


def rollout(p: LocalPlatform, app: str = "web") -> dict[str, Any]:
    return p.reconciler.app("dev", app).get("rollout") or {}


def served_digests(p: LocalPlatform, app: str = "web") -> set[str]:
    out = set()
    for host in HOSTS:
        report = p.reconciler.host(host).get("report") or {"instances": []}
        out |= {i["digest"] for i in report["instances"] if i["app"] == app and i["status"] == "Running"}
    return out


def test_canary_advances_aborts_holds_back_and_shadows(tmp_path: Path) -> None:
    p = local_platform(tmp_path, hosts=HOSTS)
    good = hello_variant("good")
    digests = p.up(tree={"dev/environment.yaml": environment("dev"), "dev/apps/web.yaml": web("demo/web:1.0.0"),
                         "dev/apps/shop.yaml": web("demo/web:1.0.0", shadow=True, name="shop")},
                   components={"demo/web:1.0.0": build("hello"), "demo/web:1.1.0": good,
                               "demo/web:1.2.0": hello_variant("flaky"), "demo/web:1.3.0": hello_variant("shouty")})
    v1, v11 = digests["demo/web:1.0.0"], digests["demo/web:1.1.0"]
    urls = [p.ingress(h) for h in HOSTS]
    try:
        wait_until(lambda: p.reconciler.app("dev", "web")["health"] == "Healthy", timeout=30, what="web Healthy")
        for url in urls:
            wait_until(lambda u=url: httpx.get(f"{u}/web/x").status_code == 200, timeout=10, what="web serves")

        # a well-behaved digest: step 1 (20%), step 2 (50%), then 100% and it is the stable digest
        phases: list[tuple[str, int, int]] = []
        with Traffic(urls) as traffic:
            p.git.push({"dev/apps/web.yaml": web("demo/web:1.1.0")}, "dev: web 1.1.0 as a canary")

            def completed() -> bool:
                r = rollout(p)
                if r and (not phases or phases[-1] != (r["phase"], r["step"], r["weight"])):
                    phases.append((r["phase"], r["step"], r["weight"]))
                return r.get("phase") == "Completed"

            wait_until(completed, timeout=25, interval=0.05, what="the good canary completes")
        assert phases[-1] == ("Completed", 3, 100), phases
        # every step, in order (the events: a status poll may miss a short step on a busy machine)
        steps = [e["message"] for e in p.reconciler.get("/api/v1/events?env=dev&app=web")["events"]
                 if e["reason"] in ("RolloutStarted", "RolloutAdvanced", "RolloutCompleted")]
        assert len(steps) == 3 and "step 1/3 at weight 20%" in steps[0], steps
        assert "now step 2/3 (weight 50%)" in steps[1] and "serves 100%" in steps[2], steps
        assert {s for _, s, _, _ in traffic.seen} == {200}
        assert {"stable", "canary"} <= {t for _, _, t, _ in traffic.seen}
        wait_until(lambda: served_digests(p) == {v11}, timeout=10, what="1.1.0 everywhere")
        measured = rollout(p)["measured"]
        assert measured["canary"]["requests"] > 0 and measured["canary"]["errors"] == 0

        # a digest answering 500 to ~30% of requests: aborted at the first step, 100% back to 1.1.0
        with Traffic(urls) as traffic:
            p.git.push({"dev/apps/web.yaml": web("demo/web:1.2.0")}, "dev: web 1.2.0 as a canary")
            aborted = wait_until(lambda: (r := rollout(p)).get("phase") == "Aborted" and r, timeout=20,
                                 interval=0.05, what="the flaky canary aborted")
            seen_aborted = time.monotonic()
            wait_until(lambda: served_digests(p) == {v11}, timeout=10, interval=0.05, what="the canary gone")
            at = time.monotonic()  # every host reported the canary gone: 100% on the old digest from here
            assert at - seen_aborted < 5, "the abort took more than seconds to reach the hosts"
            time.sleep(1.0)
        assert aborted["step"] == 1 and aborted["weight"] == 0 and aborted["heldBack"] is True
        condition = aborted["condition"]
        assert condition["reason"] == "AbortThresholdExceeded" and "errorRate" in condition["message"], condition
        assert aborted["measured"]["canary"]["errors"] > 0
        failed = [s for _, s, _, _ in traffic.seen if s != 200]
        on_canary = [t for _, _, t, _ in traffic.seen if t == "canary"]
        split = [t for _, _, t, _ in traffic.seen if t]
        # only the canary's share failed: no more than its weight (20%, give or take 3 sigma) of the
        # requests split while it ran, and about 30% of those
        allowed = 0.2 * len(split) + 3 * (0.16 * len(split)) ** 0.5
        assert failed and len(failed) <= len(on_canary) <= allowed, (len(failed), len(on_canary), len(split))
        after = [(s, t) for when, s, t, _ in traffic.seen if when > at + 0.1]
        assert after and all(s == 200 and t == "" for s, t in after), after[:5]

        # `driftless status` shows it: phase, step, weight, both digests' figures
        rows = rollout_rows(p.reconciler.get("/api/v1/environments")["environments"])
        assert [row[:5] for row in rows] == [["dev", "web", "Aborted", "1/3", "0%"]], rows
        assert "err" in rows[0][5] and rows[0][7].startswith("aborted at step 1/3 (weight 20%): errorRate")
        # held back: Git names 1.2.0, 1.1.0 runs; not drift; the same after a reconciler restart
        app = p.reconciler.app("dev", "web")
        assert app["sync"] == "Synced" and app["health"] == "Healthy"
        assert not [i for i in p.reconciler.get("/api/v1/drift?env=dev")["items"] if i.get("app") == "web"]
        events = p.reconciler.get("/api/v1/events?env=dev&app=web")["events"]
        assert any(e["reason"] == "RolloutAborted" and e["type"] == "Warning" for e in events)
        p.reconciler.stop()
        p.reconciler.start()
        wait_until(lambda: rollout(p).get("phase") == "Aborted", timeout=20, what="still Aborted after a restart")
        time.sleep(1.0)
        assert served_digests(p) == {v11}

        # shadow traffic: every request mirrored to 1.3.0 (another body), compared, never shown; aborted
        with Traffic(urls, app="shop") as traffic:
            p.git.push({"dev/apps/shop.yaml": web("demo/web:1.3.0", shadow=True, name="shop")}, "dev: shop 1.3.0")
            shadowed = wait_until(lambda: (r := rollout(p, "shop")).get("phase") == "Aborted" and r, timeout=20,
                                  interval=0.05, what="the shadow caught the changed answer")
        assert shadowed["shadow"] is True and shadowed["condition"]["reason"] == "ShadowMismatch", shadowed
        assert all(" from " in body for _, s, _, body in traffic.seen if s == 200)
        # the hosts stop the canary once the abort is published, and say so in their next report
        wait_until(lambda: served_digests(p, "shop") == {v1}, timeout=10, what="only 1.0.0 serves shop")
    finally:
        p.stop()


def test_a_host_that_cannot_split_makes_the_rollout_wait(tmp_path: Path) -> None:
    """An agent without traffic-split/v1 in its registration (an older one: here the reconciler tests'
    simulated host, which speaks the same wire types) holds the canary back until it is gone."""
    from tests.reconciler.simhost import SimHost

    p = local_platform(tmp_path, hosts={"aws-1": {"cloud": "aws"}})
    p.up(tree={"dev/environment.yaml": environment("dev"), "dev/apps/web.yaml": web("demo/web:1.0.0")},
         components={"demo/web:1.0.0": build("hello"), "demo/web:1.1.0": hello_variant("good")})
    old = SimHost(control=p.control_url, token=p.token(), name="old-1", labels={"cloud": "old"}, beat=0.2).start()
    try:
        wait_until(lambda: len(p.reconciler.app("dev", "web")["components"][0]["hosts"]) == 2, timeout=20,
                   what="web on both hosts")
        with Traffic([p.ingress("aws-1")]) as traffic:
            p.git.push({"dev/apps/web.yaml": web("demo/web:1.1.0")}, "dev: web 1.1.0 as a canary")
            waiting = wait_until(lambda: (r := rollout(p)).get("phase") == "Waiting" and r, timeout=20,
                                 what="the rollout waits")
            assert waiting["condition"]["reason"] == "HostCannotSplit" and "old-1" in waiting["condition"]["message"]
            time.sleep(1.0)
            assert {t for _, _, t, _ in traffic.seen[-20:]} == {""}  # no split anywhere: the stable digest serves
            events = p.reconciler.get("/api/v1/events?env=dev&app=web")["events"]
            assert any(e["reason"] == "RolloutWaiting" and e["type"] == "Warning" for e in events)
            old.stop()  # the old agent goes (Lost): every host left can split, the rollout goes on
            wait_until(lambda: rollout(p).get("phase") == "Completed", timeout=30, interval=0.05,
                       what="the rollout completes once every host can split")
    finally:
        old.stop()
        p.stop()
