"""The rollout controller: acts on :mod:`reconciler.planner.rollout`'s decisions.

At each plan it tracks Git's digests against what runs (a new canary, a hold-back, a cancelled
rollout) and lays the rollouts over the plan's documents. Every ``TICK`` seconds it asks the
planner what each active rollout does next (wait for the canary, measure, advance, abort, complete)
and, when the documents change, asks for a reconcile (which publishes at once: an abort reaches
the hosts within a long-poll round trip). Rollouts are saved in the state store (``rollouts``), so
a restarted reconciler resumes them where they were.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from model.types import ManifestTree, RolloutPolicy
from reconciler.controller.events import EventLog
from reconciler.controller.hosts import HostRegistry
from reconciler.planner import rollout as planner
from reconciler.planner.placement import LOST, Plan
from wire.traffic import FEATURE_TRAFFIC_SPLIT

log = logging.getLogger("driftless.reconciler")

TICK = 0.25  # seconds between decisions
STORE_KEY = "rollouts"


class KeyValues(Protocol):
    """What the rollouts use of the state store: its key-value get and put."""

    def get(self, key: str, default: Any = None) -> Any: ...
    def put(self, key: str, value: Any) -> None: ...


class Rollouts:
    def __init__(self, *, store: KeyValues, events: EventLog, fleet: HostRegistry, tree: Callable[[], ManifestTree | None],
                 replan: Callable[[], None]) -> None:
        self._store = store
        self._event = events
        self._fleet = fleet
        self._tree = tree
        self._replan = replan
        self.states: dict[str, planner.RolloutState] = {}
        self._saved: dict[str, Any] = {}
        self._overlaid = True  # published documents may carry splits (at start: maybe, from before a restart)
        self.full: dict[str, list[str]] = {}  # rollout -> its hosts without room for a canary (at the last plan)
        self.aborts = 0  # rollouts aborted since this reconciler started (driftless_rollout_aborts_total)

    def restore(self) -> None:
        saved = self._store.get(STORE_KEY, {}) or {}
        self.states = {k: planner.RolloutState.from_json(v) for k, v in saved.items()}
        self._saved = saved

    def _save(self) -> None:
        doc = {k: s.to_json() for k, s in sorted(self.states.items())}
        if doc != self._saved:
            self._store.put(STORE_KEY, doc)
            self._saved = doc

    def policies(self) -> dict[str, RolloutPolicy]:
        tree = self._tree()
        if tree is None:
            return {}
        return {f"{env}/{name}": app.rollout for env, apps in tree.applications.items() for name, app in apps.items()
                if app.rollout is not None}

    # ------------------------------------------------------------------ at each plan
    def idle(self, tree: ManifestTree) -> bool:
        """No rollout to track or lay over (no canary in ``tree``, none in progress or held back): then
        :meth:`plan` returns the placement as it is, and depends on nothing but it."""
        canaries = any(app.rollout is not None and app.rollout.strategy == "canary"
                       for apps in tree.applications.values() for app in apps.values())
        return not canaries and not self.states and not self._overlaid

    def plan(self, plan: Plan, tree: ManifestTree) -> Plan:
        """Track Git's digests against what runs, then lay the rollouts over the plan's documents."""
        if self.idle(tree):
            return plan  # nothing to track, nothing to lay over (the common case, at any scale)
        now = time.time()
        runs = planner.running({h: d for h, (d, _) in self._fleet.published.items()})
        git = planner.planned(plan.desired)
        states: dict[str, planner.RolloutState] = {}
        for env, apps in sorted(tree.applications.items()):
            for name, app in sorted(apps.items()):
                key = f"{env}/{name}"
                state, event = planner.track(self.states.get(key), env=env, app=name, policy=app.rollout,
                                             git=git.get((env, name), {}), runs=runs.get((env, name), {}), now=now)
                if event is not None:
                    self._emit(env, name, event)
                if state is not None:
                    states[key] = state
        self.states = states
        self._save()
        self._overlaid = bool(states)
        # canary instances count against each host's maxInstances: a rollout without room waits (tick)
        capacity = {n: h.registration.capacity.max_instances for n, h in self._fleet.hosts.items()}
        self.full = planner.no_room(plan.desired, states, capacity)
        return replace(plan, desired=planner.overlay(plan.desired, states, self.policies(), capacity))

    # ------------------------------------------------------------------ every tick
    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tick()
            except Exception as exc:  # rollouts must keep being watched
                log.exception("event=rollout-tick-failed error=%r", exc)

    def tick(self, now: float | None = None) -> None:
        if not any(s.active for s in self.states.values()):
            return
        now = time.time() if now is None else now
        policies = self.policies()
        published = {h: d for h, (d, _) in self._fleet.published.items()}
        # counters only for what we placed on each host: a host cannot vote on another's canary
        reports = planner.placed_traffic(published, {h: r for h, (r, _) in self._fleet.reports.items()})
        republish = False
        for key, state in list(self.states.items()):
            policy = policies.get(key)
            if not state.active or policy is None:
                continue
            hosts = planner.hosts_of({h: d.instances for h, d in published.items()}, state)
            incapable = [h for h in hosts if h in self._fleet.hosts
                         and FEATURE_TRAFFIC_SPLIT not in self._fleet.hosts[h].registration.features]
            # its canaries run on no host that reports (its hosts Lost, the app placed nowhere else): the
            # reports left are stale, and a step must not pass on them
            reporting = [h for h in hosts if h in self._fleet.hosts and self._fleet.hosts[h].state != LOST]
            lost = [] if reporting else sorted(
                h for h, rep in reports.items() if h in self._fleet.hosts and self._fleet.hosts[h].state == LOST
                and any(i.env == state.env and i.app == state.app for i in rep.instances))
            decision = planner.decide(state, policy, now=now, incapable=incapable,
                                      ready=planner.canary_ready(published, reports, state), reports=reports,
                                      full=self.full.get(key, ()), lost=lost)
            if decision.state is not state:
                self.states[key] = decision.state
                if decision.state.phase == planner.ABORTED:
                    self.aborts += 1
            if decision.event is not None:
                self._emit(state.env, state.app, decision.event)
            republish = republish or decision.republish
        self._save()
        if republish:
            self._replan()

    def _emit(self, env: str, app: str, event: planner.Event) -> None:
        self._event(type="Warning" if event.warning else "Normal", reason=event.reason, env=env, app=app,
                    message=event.message)

    # ------------------------------------------------------------------ reads
    def status(self, env: str, app: str) -> dict[str, Any] | None:
        state = self.states.get(f"{env}/{app}")
        if state is None:
            return None
        tree = self._tree()
        found = tree.applications.get(env, {}).get(app) if tree is not None else None
        return state.status_json(found.rollout if found is not None else None)

    def all(self) -> Mapping[str, planner.RolloutState]:
        return self.states
