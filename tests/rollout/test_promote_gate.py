"""The promotion gate ``rollout``: a digest is promoted out of an environment where it had a canary
rollout only once that rollout completed within its abortWhen (fuel per request included) and shadow
minMatch; an aborted, held-back digest, or one still rolling out, is refused with the rollout's words."""

from __future__ import annotations

from typing import Any

from reconciler.gitops.promote import PolicyView, check_gates

DIGEST = "sha256:" + "b" * 64


def gates(rollout: dict[str, Any] | None) -> dict[str, tuple[bool, str]]:
    status = {"sync": "Synced", "health": "Healthy", "healthySince": 0.0, "rollout": rollout,
              "components": [{"name": "web", "image": "demo/web:1.1.0", "digest": DIGEST}]}
    found = check_gates(policy=PolicyView(env="prod", from_env="dev", min_soak_seconds=0, require_approval=False,
                                          present=True),
                        from_env="dev", to_env="prod", app="web", source_status=status, target_components=["web"],
                        approver=None, now=100.0)
    return {g.name: (g.passed, g.message) for g in found}


def test_the_source_rollout_must_have_completed_within_its_bounds() -> None:
    assert "rollout" not in gates(None)  # no canary in the source: no such gate
    window = {"requests": 40, "errorRate": 0.0, "fuelPerRequest": 480.0}
    done = gates({"phase": "Completed", "step": 2, "steps": 2, "weight": 100, "shadow": False,
                  "measured": {"canary": window, "stable": {**window, "fuelPerRequest": 475.0}},
                  "condition": {"message": "passed"}})
    assert done["rollout"] == (True, "the canary rollout of web completed in dev within its abortWhen "
                                     "(40 canary requests, 0.0% errors, fuel 480/req vs 475/req (1.01x))")
    aborted = gates({"phase": "Aborted", "step": 0, "steps": 2, "weight": 0, "shadow": True,
                     "condition": {"message": "aborted at shadow traffic: fuel 120483/req > 1.5x baseline 481/req"}})
    passed, message = aborted["rollout"]
    assert not passed and message.startswith("web's canary was aborted in dev and is held back there: aborted at "
                                             "shadow traffic: fuel 120483/req"), message
    rolling = gates({"phase": "Progressing", "step": 1, "steps": 3, "weight": 20, "shadow": False,
                     "condition": {"message": "measuring"}})
    assert rolling["rollout"] == (False, "web's canary is still rolling out in dev (Progressing, step 1/3, weight "
                                         "20%): promote once it completes")
