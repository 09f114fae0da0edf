"""``GET /metrics``: the reconciler's counters and live state as Prometheus families (the format
itself is :mod:`shared.prometheus`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.planner.placement import LOST, READY
from shared.prometheus import Exposition, labels

if TYPE_CHECKING:
    from reconciler.controller.pipeline import Controller


def render(controller: Controller) -> str:
    out = Exposition()
    out.family("driftless_reconcile_duration_seconds", "histogram",
               "Duration of a reconcile (fetch, load, resolve, plan, publish).")
    out.extend(controller.reconcile_seconds.lines("driftless_reconcile_duration_seconds"))
    out.family("driftless_reconcile_total", "counter", "Reconciles by outcome (success, rejected, error).")
    for outcome in ("success", "rejected", "error"):
        out.sample("driftless_reconcile_total", controller.reconciles.get(outcome, 0), labels(result=outcome))
    apps: dict[str, float] = {}
    for view in controller.tracker.views.values():
        key = labels(env=view.env, sync=view.sync, health=view.health)
        apps[key] = apps.get(key, 0) + 1
    out.gauge_by("driftless_apps", "Applications by environment, sync state and health.", apps)
    states = {labels(state=s): 0.0 for s in (READY, LOST)}
    for h in controller.fleet.hosts.values():
        states[labels(state=h.state)] += 1
    out.gauge_by("driftless_hosts", "Hosts by state.", states)
    drift: dict[str, float] = {}
    for item in controller.tracker.drift_items:
        if item.counted:
            key = labels(env=item.env, category=str(item.category))
            drift[key] = drift.get(key, 0) + 1
    out.gauge_by("driftless_drift_items", "Counted drift items by environment and category.", drift)
    out.single("driftless_git_fetch_total", "counter", "Git fetches.", controller.git_fetches)
    out.single("driftless_git_fetch_errors_total", "counter", "Git fetches that failed.", controller.git_fetch_errors)
    out.single("driftless_published_generations_total", "counter", "Desired-state documents published to hosts.",
               controller.generations_published)
    out.single("driftless_heals_total", "counter", "Republications to correct drift.", controller.tracker.heals)
    out.single("driftless_revision_rejected", "gauge",
               "1 when the Git head is rejected and an older revision stays applied.", 1 if controller.rejected else 0)
    info = {}
    if controller.applied:
        info[labels(revision=controller.applied["revision"])] = 1.0
    out.gauge_by("driftless_applied_revision_info", "The Git revision applied.", info)
    return out.text()
