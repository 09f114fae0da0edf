"""Four eyes: a target whose ``requireApproval`` is ``{approvers: 1, distinctFromPromoter: true}`` is not
promoted on the promoter's own approval; another user of the users file approves ahead (``POST
/api/v1/approvals``, ``driftless approve``), tied to the exact digests, and the promotion then records
both as ``Approved-By:`` trailers. A viewer cannot approve; an approval is used once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.drift.test_promote_review import math
from tests.support.platform import ADMIN, application, environment, local_platform, user, with_custom_section
from tests.support.procs import wait_until

BOB, CAROL = "bob-token", "carol-token"


def calc(tag: str) -> str:
    return application("calc", [{"name": "math", "image": f"demo/math:{tag}"}])


def test_the_promoter_alone_does_not_pass_a_four_eyes_gate(tmp_path: Path) -> None:
    prod = environment("prod").rstrip(" ") + ("          promotion:\n            from: staging\n"
                                               "            requireApproval: {approvers: 1, distinctFromPromoter: true}\n")
    p = local_platform(tmp_path, hosts={"h1": {"cloud": "aws"}},
                       users=[user("bob", BOB, "operator", environments=["prod"]), user("carol", CAROL, "viewer")])
    try:
        p.up(tree={"staging/environment.yaml": environment("staging", prefix="/staging"),
                   "staging/apps/calc.yaml": calc("1.0.0"),
                   "prod/environment.yaml": prod, "prod/apps/calc.yaml": calc("1.0.0")},
             components={"demo/math:1.0.0": math(), "demo/math:1.0.1": with_custom_section(math(), b"1.0.1")})  # fmt: skip
        newer = p.registry.digest("demo/math:1.0.1")

        def runs(env: str, digest: str | None = None) -> bool:
            a = p.reconciler.app(env, "calc")
            return a["health"] == "Healthy" and (digest is None or a["components"][0]["digest"] == digest)

        def promote(**extra: object) -> tuple[int, dict[str, Any]]:
            r = p.reconciler.post("/api/v1/promote", {"app": "calc", "from": "staging", "to": "prod", **extra})
            return r.status_code, r.json()

        def approve(token: str | None = None) -> tuple[int, dict[str, Any]]:
            r = p.reconciler.post("/api/v1/approvals", {"app": "calc", "to": "prod"}, token=token)
            return r.status_code, r.json()

        def approval_gate(body: dict[str, Any]) -> dict[str, Any]:
            return next(g for g in body["gates"] if g["name"] == "approval")

        wait_until(lambda: runs("staging") and runs("prod"), timeout=60, what="calc Healthy")
        p.git.push({"staging/apps/calc.yaml": calc("1.0.1")}, "staging: math 1.0.1")
        wait_until(lambda: runs("staging", newer), timeout=60, what="staging runs 1.0.1")

        # the promoter approves ahead and approves again when promoting: it does not count
        status, body = approve()
        assert status == 200 and body["approval"]["user"] == ADMIN, body
        assert body["approval"]["digests"] == {"math": newer}
        status, body = promote(approve=True)
        assert status == 409, body
        gate = approval_gate(body)
        assert not gate["passed"]
        assert f"{ADMIN} promotes: their own approval does not count" in gate["message"]
        assert "driftless approve calc --to prod" in gate["message"]

        # a viewer may not approve
        status, body = approve(CAROL)
        assert status == 403, body

        # bob approves with the CLI, as a person would
        token_file = tmp_path / "bob.token"
        token_file.write_text(BOB)
        r = subprocess.run([sys.executable, "-m", "driftless", "approve", "calc", "--env", "prod", "--control",
                            p.reconciler.url, "--token-file", str(token_file)], capture_output=True, text=True,
                           timeout=30)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "Approved as bob: promoting calc staging -> prod" in r.stdout
        pending = p.reconciler.get("/api/v1/environments/prod")["promotion"]["approvals"]
        assert {a["user"] for a in pending} == {ADMIN, "bob"}
        events = p.reconciler.get("/api/v1/events?limit=50")["events"]
        assert any(e["reason"] == "PromotionApproved" and e["message"].startswith("bob approved promoting calc "
                                                                                  "from staging to prod at math=sha256:")
                   for e in events), events

        status, body = promote(approve=True)
        assert status == 200, body
        assert approval_gate(body)["passed"]
        assert body["approvedBy"] == [ADMIN, "bob"] or body["approvedBy"] == ["bob", ADMIN]
        p.git.sync()
        message = subprocess.run(["git", "-C", str(p.git.work), "log", "-1", "--format=%B"], check=True,
                                 capture_output=True, text=True).stdout
        assert "Approved-By: bob\n" in message and f"Approved-By: {ADMIN}\n" in message, message
        assert p.reconciler.get("/api/v1/environments/prod")["promotion"]["approvals"] == []  # used once
    finally:
        p.stop()
