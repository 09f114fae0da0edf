"""Status and drift: from what was published and what hosts report, each application's sync and
health with Flux-style conditions (Ready / Reconciling / Stalled), the drift items, and the heal
decisions for ``sync.mode: heal`` environments. The computing is done by the pure functions of
:mod:`reconciler.planner`; this module keeps their results, their transition times and events."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from model.types import ManifestTree, SyncMode
from reconciler.controller.events import EventLog
from reconciler.controller.hosts import HostRegistry
from reconciler.controller.revisions import Rejected
from reconciler.controller.rollouts import Rollouts
from reconciler.controller.state import StateStore
from reconciler.planner import drift, healing
from reconciler.planner.placement import READY, Unplaced
from reconciler.planner.status import DEGRADED, HEALTHY, SYNCED, AppView, Condition, app_views
from reconciler.settings import Settings
from wire.control import BACKOFF, FAILED, STARTING, STOPPING

log = logging.getLogger("driftless.reconciler")


class Revision(Protocol):
    """What the tracker reads of the controller's current revision."""

    tree: ManifestTree | None
    digests: dict[str, str]
    unplaced: tuple[Unplaced, ...]
    rejected: Rejected | None
    applied: dict[str, Any] | None
    current_tags: dict[str, str]
    rollouts: Rollouts


class StatusTracker:
    def __init__(self, *, store: StateStore, events: EventLog, settings: Settings, fleet: HostRegistry,
                 revision: Revision, heal: Callable[[Mapping[str, frozenset[str]]], None]) -> None:
        self._store = store
        self._event = events
        self._settings = settings
        self._fleet = fleet
        self._revision = revision
        self._heal_hosts = heal
        self.views: dict[tuple[str, str], AppView] = {}
        self.marks: dict[str, dict[str, Any]] = {}  # "env/app" -> healthySince, digests, conditions
        self.first_seen: dict[str, float] = {}
        self.drift_items: list[drift.DriftItem] = []
        self.drift_available = True
        self.heals = 0
        self._heal_schedule: dict[str, healing.HealSchedule] = {}

    def restore(self) -> None:
        self.marks = self._store.get("marks", {})
        self.first_seen = self._store.get("drift_first_seen", {})

    # ------------------------------------------------------------------ status
    def update(self, *, observe_only: bool = False) -> None:
        """Compute views and drift; ``observe_only`` (a follower of replicated reconcilers): write
        nothing and heal nothing, the leader does (its marks and first-seen times are read back)."""
        now = time.time()
        rev, fleet = self._revision, self._fleet
        views = app_views(
            tree=rev.tree,
            digests=rev.digests,
            published={h: d for h, (d, _) in fleet.published.items()},
            reports={h: r for h, (r, _) in fleet.reports.items()},
            host_states=fleet.states(),
            unplaced=rev.unplaced,
        )
        marks_changed = False
        for key, view in views.items():
            mark_key = f"{key[0]}/{key[1]}"
            mark = self.marks.setdefault(mark_key, {"healthySince": None, "digests": {}, "conditions": {}})
            old = self.views.get(key)
            if old is None or old.health != view.health:
                if old is not None or view.health == DEGRADED:
                    self._event(type="Warning" if view.health == DEGRADED else "Normal", reason=f"App{view.health}",
                                env=view.env, app=view.app, message=f"{view.app} is {view.health}: {view.message}")
            good = view.health == HEALTHY and view.sync == SYNCED
            if good and (mark["healthySince"] is None or mark["digests"] != dict(view.digests)):
                mark["healthySince"], mark["digests"] = now, dict(view.digests)
                marks_changed = True
            elif not good and mark["healthySince"] is not None:
                mark["healthySince"] = None
                marks_changed = True
            for ctype, status in self._condition_states(view).items():
                seen = mark["conditions"].get(ctype)
                if seen is None or seen[0] != status:
                    mark["conditions"][ctype] = [status, now]
                    marks_changed = True
        for gone in set(self.views) - set(views):
            self.marks.pop(f"{gone[0]}/{gone[1]}", None)
            marks_changed = True
        self.views = views
        if marks_changed and not observe_only:
            self._store.put("marks", self.marks)
        self._update_drift(now, observe_only=observe_only)

    def _condition_states(self, view: AppView) -> dict[str, str]:
        rejected = self._revision.rejected
        ready = view.health == HEALTHY and view.sync == SYNCED and rejected is None
        return {
            "Ready": "True" if ready else "False",
            "Reconciling": "True" if view.health != HEALTHY or view.sync != SYNCED else "False",
            "Stalled": "True" if rejected is not None else "False",
        }

    def conditions(self, view: AppView) -> list[Condition]:
        mark = self.marks.get(f"{view.env}/{view.app}", {"conditions": {}})
        rejected = self._revision.rejected
        revision = (self._revision.applied or {}).get("revision")
        rejection = rejected.summary() if rejected is not None else ""
        out = []
        for ctype, status in self._condition_states(view).items():
            since = (mark["conditions"].get(ctype) or [status, time.time()])[1]
            if ctype == "Ready":
                if status == "True":
                    reason, message = "ReconciliationSucceeded", f"applied revision {revision}"
                elif rejected is not None and view.health == HEALTHY and view.sync == SYNCED:
                    reason, message = "RevisionRejected", rejection
                else:
                    reason, message = view.reason or "Progressing", view.message
            elif ctype == "Reconciling":
                reason, message = ("Progressing", view.message) if status == "True" else ("Converged", "")
            else:
                reason, message = ("ValidationFailed", rejection) if status == "True" else ("", "")
            out.append(Condition(type=ctype, status=status, reason=reason, message=message,
                                 observed_revision=revision, last_transition_time=since))
        return out

    def app_status(self, env: str, app: str) -> dict[str, Any] | None:
        """One application's status document (``GET /api/v1/environments/{env}/apps/{app}``; the
        promotion gates read the same)."""
        view = self.views.get((env, app))
        if view is None:
            return None
        mark = self.marks.get(f"{env}/{app}", {})
        return {
            "env": env,
            "app": app,
            "revision": (self._revision.applied or {}).get("revision"),
            "sync": view.sync,
            "health": view.health,
            "healthySince": mark.get("healthySince"),
            "message": view.message,
            "conditions": [c.to_json() for c in self.conditions(view)],
            "components": [c.to_json() for c in view.components],
            "rollout": self._revision.rollouts.status(env, app),  # a canary rollout (or None)
        }

    # ------------------------------------------------------------------ drift
    def _rejections(self) -> list[drift.Rejection]:
        rev = self._revision
        rej = rev.rejected
        if rej is None:
            return []
        applied = (rev.applied or {}).get("revision")
        envs = sorted(rev.tree.environments) if rev.tree else []
        texts = [e["text"] for e in rej.errors]
        return [drift.Rejection(env=e, revision=rej.revision, applied_revision=applied, errors=texts,
                                since=rej.since) for e in envs or [""]]  # "": before any environment is known

    def _update_drift(self, now: float, *, observe_only: bool = False) -> None:
        if not self.drift_available:
            return
        rev = self._revision
        try:
            deployed = [
                drift.DeployedImage(env=env, app=app.name, component=c.name, image=c.image,
                                    digest=rev.digests.get(c.image, ""))
                for env, apps in (rev.tree.applications.items() if rev.tree else ())
                for app in apps.values() for c in app.components
            ]
            items = drift.compute_drift(
                desired={h: d for h, (d, _) in self._fleet.published.items()},
                hosts=self._fleet.observations(),
                tags=drift.tag_observations(deployed=deployed, current=rev.current_tags),
                rejections=self._rejections(),
                first_seen=self.first_seen,
                now=now,
                grace_seconds=self._settings.grace_seconds,
            )
        except NotImplementedError:
            self.drift_available = False
            return
        keys = {i.key for i in items}
        new = [i for i in items if i.key not in self.first_seen and i.counted]
        fs_changed = bool(new) or bool(set(self.first_seen) - keys)
        self.first_seen = {k: self.first_seen.get(k, now) for k in keys}
        for item in new:
            self._event(type="Warning", reason=f"Drift{item.category}", env=item.env, app=item.app, host=item.host,
                        message=item.message or f"{item.category} {item.instance or item.component}")
        if fs_changed and not observe_only:
            self._store.put("drift_first_seen", self.first_seen)
        self.drift_items = items if observe_only else self._heal(items, now)

    def _heal(self, items: list[drift.DriftItem], now: float) -> list[drift.DriftItem]:
        """In heal-mode environments, republish to hosts with drift (see reconciler.planner.healing)."""
        tree, fleet = self._revision.tree, self._fleet
        if tree is None:
            return items
        busy = {i.id for rep, _ in fleet.reports.values() for i in rep.instances
                if i.status in (FAILED, BACKOFF, STARTING, STOPPING)}
        # only on a fresh report (not one restored from before a restart) of the current generation
        eligible = {
            name for name, h in fleet.hosts.items()
            if h.state == READY and name in fleet.fresh_reports and name in fleet.reports
            and fleet.reports[name][0].observed_generation >= fleet.generation(name)
        }  # fmt: skip
        decision = healing.decide(
            items=items,
            heal_envs={n for n, e in tree.environments.items() if e.sync.mode == SyncMode.HEAL},
            eligible_hosts=eligible,
            busy_instances=busy,
            schedule=self._heal_schedule,
            now=now,
            base=max(2.0, 2 * self._settings.heartbeat),
        )
        self._heal_schedule = decision.schedule
        if decision.hosts:
            self.heals += len(decision.hosts)
            log.info("event=heal hosts=%s", ",".join(sorted(decision.hosts)))
            self._heal_hosts(decision.envs)
        return list(decision.items)
