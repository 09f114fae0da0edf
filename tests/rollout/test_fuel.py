"""Fuel per request in a real rollout: a new digest that answers the same but burns far more fuel
per request (a busy loop) is caught by ``abortWhen.fuel`` while it only gets shadow copies of the
requests (in-process runtime: the host counts each call's fuel), and aborted with the numbers; a
promotion of it to the next environment is refused by the gate ``rollout``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from driftless.commands.status import rollout_rows
from tests.rollout.conftest import hello_variant
from tests.rollout.test_canary_e2e import Traffic, rollout
from tests.support.components import build
from tests.support.platform import environment, local_platform
from tests.support.procs import wait_until


def app(image: str) -> str:
    body = {"apiVersion": "driftless.dev/v1alpha1", "kind": "Application", "metadata": {"name": "web"},
            "spec": {"components": [{"name": "web", "image": image, "expose": "/web",
                                     "placement": {"daemon": {"perHost": 1}}}],
                     "rollout": {"strategy": "canary", "steps": [{"weight": 50, "pause": "1s"}, {"weight": 100}],
                                 "abortWhen": {"errorRate": "> 2%", "fuel": "> 1.5x baseline"},
                                 "shadow": {"sample": "100%", "compare": "body", "duration": "2s"}}}}
    return json.dumps(body, indent=2) + "\n"


def test_a_digest_burning_more_fuel_per_request_is_aborted(tmp_path: Path) -> None:
    p = local_platform(tmp_path, hosts={"aws-1": {"cloud": "aws"}})
    prod = environment("prod", prefix="/prod", selector={"cloud": "nowhere"}).rstrip(" ") + (
        "          promotion:\n            from: dev\n")
    digests = p.up(tree={"dev/environment.yaml": environment("dev"), "dev/apps/web.yaml": app("demo/web:1.0.0"),
                         "prod/environment.yaml": prod, "prod/apps/web.yaml": app("demo/web:1.0.0")},
                   components={"demo/web:1.0.0": build("hello"), "demo/web:1.1.0": hello_variant("burner")})
    v1, burner = digests["demo/web:1.0.0"], digests["demo/web:1.1.0"]
    url = p.ingress("aws-1")
    try:
        wait_until(lambda: httpx.get(f"{url}/web/x").status_code == 200, timeout=30, what="web serves")
        with Traffic([url]) as traffic:
            p.git.push({"dev/apps/web.yaml": app("demo/web:1.1.0")}, "dev: web 1.1.0, the same answers, more fuel")
            aborted: dict[str, Any] = wait_until(lambda: (r := rollout(p)).get("phase") == "Aborted" and r,
                                                 timeout=20, interval=0.05, what="the fuel threshold aborts")

            def served() -> set[str]:
                report = p.reconciler.host("aws-1").get("report") or {"instances": []}
                return {i["digest"] for i in report["instances"] if i["app"] == "web" and i["status"] == "Running"}

            wait_until(lambda: served() == {v1}, timeout=10, what="the canary gone")
        assert aborted["shadow"] is True and aborted["condition"]["reason"] == "AbortThresholdExceeded", aborted
        message = aborted["condition"]["message"]
        m = re.search(r"fuel (\d+)/req > 1\.5x baseline (\d+)/req \(limit (\d+)/req\)", message)
        assert m, message
        canary_fuel, stable_fuel = int(m.group(1)), int(m.group(2))
        assert canary_fuel > 10 * stable_fuel > 0, message  # a 20,000-iteration loop against a few copies
        assert "fuel " in message.split("(canary ")[1], message  # the numbers: both digests' fuel per request
        measured = aborted["measured"]
        assert measured["canary"]["fuelPerRequest"] > 10 * measured["stable"]["fuelPerRequest"] > 0, measured
        # users only ever saw the stable digest's answers: the canary got shadow copies
        assert {s for _, s, _, _ in traffic.seen} == {200} and {t for _, _, t, _ in traffic.seen} <= {"stable", ""}
        rows = rollout_rows(p.reconciler.get("/api/v1/environments")["environments"])
        assert rows[0][:3] == ["dev", "web", "Aborted"] and "fuel/req" in rows[0][5], rows
        # the host's metrics: the mean fuel per request of each digest (deterministic: the same on any machine)
        metrics = httpx.get(f"{p.admin('aws-1')}/metrics", headers=p.host_admin_headers("aws-1")).text
        means = {d: float(re.search(rf'driftless_host_fuel_per_request{{[^}}]*digest="{d}"[^}}]*}} (\S+)',
                                    metrics).group(1)) for d in (v1, burner)}  # type: ignore[union-attr]
        assert means[burner] > 10 * means[v1], means
        # the held-back digest is what Git names in dev: promoting it to prod is refused, with the numbers
        refused = p.reconciler.post("/api/v1/promote", {"app": "web", "from": "dev", "to": "prod", "dryRun": True})
        assert refused.status_code == 409, refused.text
        gate = next(g for g in refused.json()["gates"] if g["name"] == "rollout")
        assert not gate["passed"] and "aborted in dev and is held back there" in gate["message"] and \
            "fuel" in gate["message"], gate
        print(f"fuel per request: stable {means[v1]:.0f}, canary {means[burner]:.0f}; {message}")
    finally:
        p.stop()
