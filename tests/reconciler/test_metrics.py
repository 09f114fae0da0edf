"""/metrics renders every family docs/reconciler.md lists, from the controller's live state."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from reconciler.api.prometheus import render
from reconciler.controller.hosts import HostState
from reconciler.controller.pipeline import Controller
from reconciler.planner.placement import LOST
from reconciler.planner.rollout import RolloutState
from reconciler.settings import Settings
from wire.control import HostCapacity, HostRegistration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reconciler.md"


def documented_metrics() -> list[str]:
    table = DOCS.read_text().split("| metric | type | labels |", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"`(driftless_[a-z_]+)`", table)


def test_every_documented_family_is_rendered_from_the_engine(tmp_path: Path) -> None:
    controller = Controller(Settings(repo=str(tmp_path / "none.git"), data=tmp_path / "data", registry="http://127.0.0.1:9",
                             token="t"))
    try:
        reg = HostRegistration(name="aws-1", labels={"cloud": "aws"}, capacity=HostCapacity(memory_bytes=1 << 30, max_instances=10))
        controller.fleet.hosts["aws-1"] = HostState(registration=reg, registered_at=1.0, last_seen=1.0, state=LOST)
        controller.reconcile_seconds.observe(0.2)
        controller.reconciles["rejected"] = 2
        controller.git_fetches, controller.tracker.heals = 5, 1
        controller.envs.applied["dev"] = {"revision": "abc123", "message": "m", "author": "a", "appliedAt": 1.0}
        controller.rollouts.states["dev/web"] = RolloutState(env="dev", app="web", stable={}, canary={},
                                                              phase="Progressing", weight=20)
        controller.rollouts.aborts = 1
        text = render(controller)
    finally:
        asyncio.run(controller.stop())
    names = documented_metrics()
    assert len(names) == 15, names
    for name in names:
        kind = "histogram" if name.endswith("_seconds") else "(counter|gauge)"
        assert re.search(rf"^# TYPE {name} {kind}$", text, re.M), name
    for line in ('driftless_reconcile_total{result="rejected"} 2.0', "driftless_reconcile_duration_seconds_count 1.0",
                 'driftless_hosts{state="Lost"} 1.0', 'driftless_hosts{state="Ready"} 0.0', "driftless_git_fetch_total 5.0",
                 "driftless_heals_total 1.0", "driftless_revision_rejected 0.0",
                 'driftless_applied_revision_info{revision="abc123"} 1.0', "driftless_leader 1.0",
                 'driftless_rollout_phase{app="web",env="dev",phase="Progressing"} 1.0',
                 'driftless_rollout_phase{app="web",env="dev",phase="Aborted"} 0.0',
                 'driftless_rollout_canary_weight{app="web",env="dev"} 20.0', "driftless_rollout_aborts_total 1.0"):
        assert line in text.splitlines(), line
