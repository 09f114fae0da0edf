"""Status and drift: from what was published and what hosts report, each application's sync and
health with Flux-style conditions (Ready / Reconciling / Stalled), the drift items, and the heal
decisions for ``sync.mode: heal`` environments. The computing is done by the pure functions of
:mod:`reconciler.planner`; this module keeps their results, their transition times and events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from model.types import ManifestTree, SyncMode
from reconciler.controller.env_revisions import EnvRevisions
from reconciler.controller.events import EventLog
from reconciler.controller.hosts import HostRegistry
from reconciler.controller.rollouts import Rollouts
from reconciler.controller.state import StateStore
from reconciler.planner import drift, healing
from reconciler.planner.placement import READY, Unplaced
from reconciler.planner.status import DEGRADED, HEALTHY, SYNCED, AppView, Condition, app_views
from reconciler.settings import Settings
from wire.control import BACKOFF, FAILED, STARTING, STOPPING, HostDesiredState, HostRegistration, HostReport

log = logging.getLogger("driftless.reconciler")


class Revision(Protocol):
    """What the tracker reads of the controller's current revisions (per environment: ``envs``)."""

    @property
    def tree(self) -> ManifestTree | None: ...  # the composite: each environment's part from its applied revision

    @property
    def digests(self) -> dict[str, str]: ...

    envs: EnvRevisions
    unplaced: tuple[Unplaced, ...]
    current_tags: dict[str, str]
    rollouts: Rollouts


@dataclass(slots=True, kw_only=True)
class _Inputs:
    """What one status update reads, taken on the event loop (shallow copies: O(hosts) but no computing);
    the computing (:meth:`StatusTracker._compute`) then runs on it in a thread."""

    seq: int
    now: float
    tree: ManifestTree | None
    digests: dict[str, str]
    unplaced: tuple[Unplaced, ...]
    current_tags: dict[str, str]
    rejections: list[drift.Rejection]
    published: dict[str, tuple[HostDesiredState, float]]
    reports: dict[str, tuple[HostReport, float]]
    hosts: list[tuple[str, str, HostRegistration, float]]  # name, state, registration, last seen
    fresh_reports: frozenset[str]
    first_seen: dict[str, float]
    schedule: dict[str, healing.HealSchedule]
    drift_available: bool
    observe_only: bool
    grace_seconds: float
    heartbeat: float


@dataclass(slots=True, kw_only=True)
class _Result:
    seq: int
    now: float
    views: dict[tuple[str, str], AppView]
    items: list[drift.DriftItem] | None  # None: drift is not available
    decision: healing.HealDecision | None
    observe_only: bool


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
        self._seq = 0  # inputs taken
        self._applied_seq = 0  # the latest inputs whose result was applied (an older result is dropped)

    def restore(self) -> None:
        self.marks = self._store.get("marks", {})
        self.first_seen = self._store.get("drift_first_seen", {})

    # ------------------------------------------------------------------ status
    def update(self, *, observe_only: bool = False) -> None:
        """Compute views and drift; ``observe_only`` (a follower of replicated reconcilers): write
        nothing and heal nothing, the leader does (its marks and first-seen times are read back)."""
        self._apply(self._compute(self._inputs(observe_only=observe_only)))

    async def update_in_thread(self) -> None:
        """:meth:`update` with its computing (app views, drift, heal decisions: ~0.1-0.3 s at 10,000 hosts)
        in a thread: the inputs are taken on the event loop, the results applied there (marks, events, heals)."""
        inputs = self._inputs(observe_only=False)
        self._apply(await asyncio.to_thread(self._compute, inputs))

    def _inputs(self, *, observe_only: bool) -> _Inputs:
        rev, fleet = self._revision, self._fleet
        self._seq += 1
        return _Inputs(
            seq=self._seq, now=time.time(), tree=rev.tree, digests=rev.digests, unplaced=rev.unplaced,
            current_tags=rev.current_tags, rejections=self._rejections(), published=dict(fleet.published),
            reports=dict(fleet.reports),
            hosts=[(n, h.state, h.registration, h.last_seen) for n, h in fleet.hosts.items()],
            fresh_reports=frozenset(fleet.fresh_reports), first_seen=dict(self.first_seen),
            schedule=self._heal_schedule, drift_available=self.drift_available, observe_only=observe_only,
            grace_seconds=self._settings.grace_seconds, heartbeat=self._settings.heartbeat)

    @staticmethod
    def _compute(i: _Inputs) -> _Result:
        """Pure: the planner's functions on the inputs (no store, no events: safe in a thread)."""
        published = {h: d for h, (d, _) in i.published.items()}
        reports = {h: r for h, (r, _) in i.reports.items()}
        views = app_views(tree=i.tree, digests=i.digests, published=published, reports=reports,
                          host_states={n: state for n, state, _, _ in i.hosts}, unplaced=i.unplaced)
        items = decision = None
        if i.drift_available:
            deployed = [
                drift.DeployedImage(env=env, app=app.name, component=c.name, image=c.image,
                                    digest=i.digests.get(c.image, ""))
                for env, apps in (i.tree.applications.items() if i.tree else ())
                for app in apps.values() for c in app.components
            ]
            observations = {}
            for name, state, reg, last_seen in i.hosts:
                pub = i.published.get(name)
                rep = i.reports.get(name)
                observations[name] = drift.HostObservation(
                    name=name, state=state, labels=dict(reg.labels), last_seen=last_seen,
                    published_generation=pub[0].generation if pub else 0, published_at=pub[1] if pub else 0.0,
                    report=rep[0] if rep else None)
            try:
                items = drift.compute_drift(
                    desired=published, hosts=observations,
                    tags=drift.tag_observations(deployed=deployed, current=i.current_tags),
                    rejections=i.rejections, first_seen=i.first_seen, now=i.now, grace_seconds=i.grace_seconds)
            except NotImplementedError:
                items = None
        if items is not None and not i.observe_only and i.tree is not None:
            # in heal-mode environments, republish to hosts with drift (see reconciler.planner.healing)
            busy = {x.id for rep, _ in i.reports.values() for x in rep.instances
                    if x.status in (FAILED, BACKOFF, STARTING, STOPPING)}
            # only on a fresh report (not one restored from before a restart) of the current generation
            eligible = set()
            for name, state, _, _ in i.hosts:
                rep_at = i.reports.get(name)
                pub = i.published.get(name)
                if state == READY and name in i.fresh_reports and rep_at is not None \
                        and rep_at[0].observed_generation >= (pub[0].generation if pub else 0):
                    eligible.add(name)
            decision = healing.decide(
                items=items,
                heal_envs={n for n, e in i.tree.environments.items() if e.sync.mode == SyncMode.HEAL},
                eligible_hosts=eligible,
                busy_instances=busy,
                schedule=i.schedule,
                now=i.now,
                base=max(2.0, 2 * i.heartbeat),
            )
        return _Result(seq=i.seq, now=i.now, views=views, items=items, decision=decision, observe_only=i.observe_only)

    def _apply(self, result: _Result) -> None:
        if result.seq < self._applied_seq:
            return  # a later update was applied meanwhile
        self._applied_seq = result.seq
        now, views, observe_only = result.now, result.views, result.observe_only
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
        self._apply_drift(result)

    def _condition_states(self, view: AppView) -> dict[str, str]:
        rejected = self._revision.envs.rejected.get(view.env)  # only this environment's rejection
        ready = view.health == HEALTHY and view.sync == SYNCED and rejected is None
        return {
            "Ready": "True" if ready else "False",
            "Reconciling": "True" if view.health != HEALTHY or view.sync != SYNCED else "False",
            "Stalled": "True" if rejected is not None else "False",
        }

    def conditions(self, view: AppView) -> list[Condition]:
        mark = self.marks.get(f"{view.env}/{view.app}", {"conditions": {}})
        rejected = self._revision.envs.rejected.get(view.env)
        revision = self._revision.envs.applied_revision(view.env)
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
            "revision": self._revision.envs.applied_revision(env),
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
        """One per environment rejected (its own problems): a dev-only error is drift in dev only."""
        envs = self._revision.envs
        return [drift.Rejection(env=env, revision=rej.revision, applied_revision=envs.applied_revision(env),
                                errors=[e["text"] for e in rej.errors], since=rej.since)
                for env, rej in sorted(envs.rejected.items())]

    def _apply_drift(self, result: _Result) -> None:
        items, now, observe_only = result.items, result.now, result.observe_only
        if items is None:
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
        decision = result.decision
        if observe_only or decision is None:
            self.drift_items = items
            return
        self._heal_schedule = decision.schedule
        if decision.hosts:
            self.heals += len(decision.hosts)
            log.info("event=heal hosts=%s", ",".join(sorted(decision.hosts)))
            self._heal_hosts(decision.envs)
        self.drift_items = list(decision.items)
