"""``GET /metrics``: the reconciler's Prometheus families, rendered by prometheus-client.

The reconcile histogram is a real :class:`prometheus_client.Histogram` the controller observes; every
other family is read from the controller's live state at scrape time by :class:`ControllerCollector`.
Each scrape renders a registry of its own, never the process-wide default one (tests run several
reconcilers in one process).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.planner.placement import LOST, READY
from reconciler.planner.rollout import ABORTED, COMPLETED, PROGRESSING, SHADOW, WAITING

if TYPE_CHECKING:
    from reconciler.controller.pipeline import Controller

CONTENT_TYPE = CONTENT_TYPE_LATEST
ROLLOUT_PHASES = (SHADOW, PROGRESSING, WAITING, COMPLETED, ABORTED)


class ControllerCollector(Collector):
    """The controller's families, read when Prometheus scrapes."""

    def __init__(self, *, controller: Controller) -> None:
        self._controller = controller

    def collect(self) -> Iterator[Metric]:
        c = self._controller
        yield from c.reconcile_seconds.collect()
        reconciles = CounterMetricFamily("driftless_reconcile_total", "Reconciles by outcome (success, rejected, error).",
                                         labels=("result",))
        for outcome in ("success", "rejected", "error"):
            reconciles.add_metric((outcome,), c.reconciles.get(outcome, 0))
        yield reconciles
        yield _gauge_by("driftless_apps", "Applications by environment, sync state and health.",
                        labels=("env", "sync", "health"), counts=Counter((v.env, v.sync, v.health) for v in c.tracker.views.values()))
        hosts: Counter[tuple[str, ...]] = Counter({(READY,): 0, (LOST,): 0})
        hosts.update((h.state,) for h in c.fleet.hosts.values())
        yield _gauge_by("driftless_hosts", "Hosts by state.", labels=("state",), counts=hosts)
        yield _gauge_by("driftless_drift_items", "Counted drift items by environment and category.",
                        labels=("env", "category"), counts=Counter((i.env, str(i.category)) for i in c.tracker.drift_items if i.counted))
        yield CounterMetricFamily("driftless_git_fetch_total", "Git fetches.", value=c.git_fetches)
        yield CounterMetricFamily("driftless_git_fetch_errors_total", "Git fetches that failed.", value=c.git_fetch_errors)
        yield CounterMetricFamily("driftless_published_generations_total", "Desired-state documents published to hosts.",
                                  value=c.generations_published)
        yield CounterMetricFamily("driftless_heals_total", "Republications to correct drift.", value=c.tracker.heals)
        yield GaugeMetricFamily("driftless_revision_rejected",
                                "1 when a revision is rejected for some environment (an older one stays applied there).",
                                value=1 if c.rejected else 0)
        info = GaugeMetricFamily("driftless_applied_revision_info", "The Git revision applied.", labels=("revision",))
        if c.applied:
            info.add_metric((str(c.applied["revision"]),), 1)
        yield info
        yield GaugeMetricFamily("driftless_leader", "1 while this reconciler leads (always, alone on SQLite; "
                                "replicated on PostgreSQL: the one holding the lease).",
                                value=1 if c.leadership.leading() else 0)
        yield from _rollout_families(c)


def _rollout_families(c: Controller) -> Iterator[Metric]:
    """Canary rollouts: each one's phase and canary weight, and the aborts."""
    phase = GaugeMetricFamily("driftless_rollout_phase", "1 for the phase each application's canary rollout is in "
                              "(Shadow, Progressing, Waiting, Completed, Aborted).", labels=("env", "app", "phase"))
    weight = GaugeMetricFamily("driftless_rollout_canary_weight", "Percent of the traffic on the canary digest.",
                               labels=("env", "app"))
    for _, state in sorted(c.rollouts.all().items()):
        for name in ROLLOUT_PHASES:
            phase.add_metric((state.env, state.app, name), 1 if state.phase == name else 0)
        weight.add_metric((state.env, state.app), state.weight)
    yield phase
    yield weight
    yield CounterMetricFamily("driftless_rollout_aborts_total", "Canary rollouts aborted (abortWhen or shadow "
                              "minMatch exceeded) since this reconciler started.", value=c.rollouts.aborts)


def _gauge_by(name: str, help_text: str, *, labels: tuple[str, ...],
              counts: Counter[tuple[str, ...]]) -> GaugeMetricFamily:
    """A gauge family of one sample per label-value tuple, sorted."""
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for values, n in sorted(counts.items()):
        family.add_metric(values, n)
    return family


def render(controller: Controller) -> str:
    """The Prometheus text exposition of ``controller`` (served as :data:`CONTENT_TYPE`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControllerCollector(controller=controller))
    return generate_latest(registry).decode()
