"""Canary rollouts: what to publish and when to advance or abort. Pure functions, no I/O.

The controller (:mod:`reconciler.controller.rollouts`) keeps one :class:`RolloutState` per
application under ``spec.rollout.strategy: canary`` and acts on these decisions:

- :func:`track`, at each plan: Git changed a component's digest (compared with the stable digest
  that runs) -> a new rollout; Git went back to the stable digest -> the rollout is dropped; Git
  still names a digest that was aborted -> it stays held back (the stable digest keeps running)
  until Git changes again, as Argo Rollouts does. Git stays the source of truth: nothing is written
  to it; the held-back state is shown in status and is not drift (the published documents name the
  stable digest, and drift compares the hosts with them).
- :func:`overlay`: the plan's documents with the rollout applied: the stable digest on the
  planned instances, plus one canary instance beside them on each host, all carrying the same
  :class:`wire.traffic.TrafficSplit` (weight, shadow sample). The canary instances count against
  each host's ``maxInstances`` (:func:`no_room`): a rollout whose canaries do not fit on every one
  of its hosts gets none, and :func:`decide` makes it wait (``NoCapacity``) rather than overcommit.
- :func:`decide`, at each tick: wait for the canary to run, measure both digests over the step's
  window (counter differences from the hosts' reports), abort when ``abortWhen`` is exceeded,
  advance after the pause, complete at weight 100 (the canary becomes the stable digest).
- :func:`placed_traffic`, before measuring: a host's traffic counters count only for the instances
  the reconciler placed on it (a host reporting figures for a component it does not run moves no
  verdict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from model.types import RolloutPolicy, Threshold
from wire.control import UP, HostDesiredState, HostReport, InstanceSpec
from wire.traffic import FEATURE_TRAFFIC_SPLIT, DigestTraffic, TrafficSplit, Window, since

SHADOW, PROGRESSING, WAITING, COMPLETED, ABORTED = "Shadow", "Progressing", "Waiting", "Completed", "Aborted"
ACTIVE = frozenset({SHADOW, PROGRESSING, WAITING})
CANARY_ORDINAL = "canary-"
MIN_REQUESTS = 10  # canary requests in a window before its error rate is judged (and before a step ends)
MIN_LATENCY_SAMPLES = 20  # requests (each digest) before p99 is judged
# relative thresholds ("> 2x baseline") never compare with less than these: an idle or perfect
# stable digest must not turn noise into an abort
BASELINE_FLOOR = {"errorRate": 0.01, "p99": 0.005, "traps": 1.0, "fuel": 1.0}


@dataclass(frozen=True, slots=True, kw_only=True)
class Ref:
    image: str  # fully qualified and pinned, as in InstanceSpec
    digest: str

    def to_json(self) -> dict[str, str]:
        return {"image": self.image, "digest": self.digest}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Ref:
        return cls(image=str(d["image"]), digest=str(d["digest"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutState:
    env: str
    app: str
    stable: Mapping[str, Ref]  # component -> what ran before (and runs again after an abort)
    canary: Mapping[str, Ref]  # component -> the new digest Git names
    phase: str = PROGRESSING
    step: int = 0  # index in spec.rollout.steps; -1 during the shadow phase
    weight: int = 0  # percent of the traffic on the canary now
    started_at: float = 0.0
    step_started_at: float | None = None  # None: waiting for the canary instances to run
    baseline: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # counters at the window's start
    measured: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # {"stable": Window, "canary": Window}
    reason: str = ""
    message: str = ""
    updated_at: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.env}/{self.app}"

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env, "app": self.app,
            "stable": {c: r.to_json() for c, r in sorted(self.stable.items())},
            "canary": {c: r.to_json() for c, r in sorted(self.canary.items())},
            "phase": self.phase, "step": self.step, "weight": self.weight, "startedAt": self.started_at,
            "stepStartedAt": self.step_started_at, "baseline": dict(self.baseline), "measured": dict(self.measured),
            "reason": self.reason, "message": self.message, "updatedAt": self.updated_at,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RolloutState:
        return cls(
            env=d["env"], app=d["app"],
            stable={c: Ref.from_json(r) for c, r in (d.get("stable") or {}).items()},
            canary={c: Ref.from_json(r) for c, r in (d.get("canary") or {}).items()},
            phase=d.get("phase", PROGRESSING), step=int(d.get("step", 0)), weight=int(d.get("weight", 0)),
            started_at=float(d.get("startedAt", 0.0)), step_started_at=d.get("stepStartedAt"),
            baseline=dict(d.get("baseline") or {}), measured=dict(d.get("measured") or {}),
            reason=d.get("reason", ""), message=d.get("message", ""), updated_at=float(d.get("updatedAt", 0.0)),
        )  # fmt: skip

    def status_json(self, policy: RolloutPolicy | None) -> dict[str, Any]:
        """What status shows (``GET /api/v1/environments/{env}/apps/{app}`` ``rollout``)."""
        steps = len(policy.steps) if policy is not None else 0
        pause = _pause(policy, self.step) if policy is not None else 0.0
        return {
            "strategy": "canary", "phase": self.phase,
            "step": self.step + 1 if self.step >= 0 else 0, "steps": steps,
            "shadow": self.step < 0, "weight": self.weight,
            "stable": {c: r.digest for c, r in sorted(self.stable.items())},
            "canary": {c: r.digest for c, r in sorted(self.canary.items())},
            "startedAt": self.started_at, "stepStartedAt": self.step_started_at,
            "pauseSeconds": pause, "measured": dict(self.measured),
            "heldBack": self.phase == ABORTED,
            "condition": {"type": "Rollout", "status": "True" if self.active else "False",
                          "reason": self.reason, "message": self.message, "lastTransitionTime": self.updated_at},
        }  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    reason: str  # RolloutStarted, RolloutAdvanced, RolloutWaiting, RolloutAborted, RolloutCompleted, ...
    message: str
    warning: bool = False


# ---------------------------------------------------------------- what runs
def is_canary(spec: InstanceSpec) -> bool:
    return spec.id.rpartition("/")[2].startswith(CANARY_ORDINAL)


def without_canaries(specs: Sequence[InstanceSpec]) -> tuple[InstanceSpec, ...]:
    """The planned instances of a published document (the canary instances are the rollout's). A
    document without any (a substring test per instance: 4x cheaper than parsing each id, at every
    replan of 100,000 instances) is returned as it is."""
    for spec in specs:
        if _CANARY_MARK in spec.id:
            return tuple(s for s in specs if not is_canary(s))
    return specs if isinstance(specs, tuple) else tuple(specs)


_CANARY_MARK = "/" + CANARY_ORDINAL  # in the id of every canary instance (and of few others)


def running(published: Mapping[str, HostDesiredState]) -> dict[tuple[str, str], dict[str, Ref]]:
    """(env, app) -> component -> the digest its planned instances run (what a new digest replaces)."""
    out: dict[tuple[str, str], dict[str, Ref]] = {}
    for _, doc in sorted(published.items()):
        for spec in doc.instances:
            if not is_canary(spec):
                out.setdefault((spec.env, spec.app), {}).setdefault(spec.component, Ref(image=spec.image,
                                                                                         digest=spec.digest))
    return out


def planned(desired: Mapping[str, Sequence[InstanceSpec]]) -> dict[tuple[str, str], dict[str, Ref]]:
    """(env, app) -> component -> the digest Git names (from a plan's documents)."""
    out: dict[tuple[str, str], dict[str, Ref]] = {}
    for _, specs in sorted(desired.items()):
        for spec in specs:
            out.setdefault((spec.env, spec.app), {}).setdefault(spec.component, Ref(image=spec.image,
                                                                                     digest=spec.digest))
    return out


def track(state: RolloutState | None, *, env: str, app: str, policy: RolloutPolicy | None, git: Mapping[str, Ref],
          runs: Mapping[str, Ref], now: float) -> tuple[RolloutState | None, Event | None]:
    """The rollout of one application after Git (``git``: what it names) changed or not; ``runs``:
    what its planned instances run now (the stable digests while a rollout or a hold-back lasts)."""
    if policy is None or policy.strategy != "canary":
        if state is not None and state.active:
            return None, Event(reason="RolloutCancelled", message=f"{app}: spec.rollout is no longer a canary; "
                                                                   "Git's digests roll out at once")
        return None, None
    if state is not None and state.phase == COMPLETED:
        runs = {**runs, **state.canary}  # completed: its canary is the stable digest (published from now on)
    changed = {c: ref for c, ref in git.items() if c in runs and runs[c].digest != ref.digest}
    if state is not None and (state.active or state.phase == ABORTED):
        if changed and all(git.get(c) is not None and git[c].digest == ref.digest for c, ref in state.canary.items()) \
                and set(changed) <= set(state.canary):
            return state, None  # the same rollout (or the same held-back digest)
        if state.active and not any(c in git and c in runs for c in state.canary):
            # the plan places none of its components now (their hosts are Lost): Git did not go back,
            # so the rollout is kept (it measures nothing new until its hosts report again)
            return state, None
        if not changed:
            what = "the aborted digest is no longer held back" if state.phase == ABORTED else "rollout cancelled"
            return None, Event(reason="RolloutCancelled", message=f"{app}: Git names the stable digest again: {what}")
    elif not changed:
        return state, None
    stable = {c: runs[c] for c in changed}
    new = RolloutState(env=env, app=app, stable=stable, canary=changed, started_at=now, updated_at=now,
                       step=-1 if policy.shadow is not None else 0,
                       phase=SHADOW if policy.shadow is not None else PROGRESSING,
                       weight=0 if policy.shadow is not None else policy.steps[0].weight if policy.steps else 100,
                       reason="RolloutStarted", message=f"canary {_digests(changed)} replacing {_digests(stable)}")
    if new.phase == PROGRESSING and new.weight >= 100:
        return None, None  # nothing to split: a plain rolling replacement
    first = "shadow traffic" if new.phase == SHADOW else f"step 1/{len(policy.steps)} at weight {new.weight}%"
    return new, Event(reason="RolloutStarted", message=f"{app}: canary {_digests(changed)} replacing "
                                                       f"{_digests(stable)}: {first}")


def no_room(desired: Mapping[str, Sequence[InstanceSpec]], states: Mapping[str, RolloutState],
            capacity: Mapping[str, int]) -> dict[str, list[str]]:
    """Rollouts (by key) whose canary instances do not fit: for each, its hosts without room, as
    ``"h1 (2 planned + 1 canary > maxInstances 2)"``. One canary per component of a rollout per host
    that runs it; rollouts take the room left in key order, all of their canaries or none."""
    used = {h: len(specs) for h, specs in desired.items()}
    wanted: dict[str, dict[str, set[str]]] = {}  # rollout -> host -> its components there
    for host, specs in desired.items():
        for spec in specs:
            state = states.get(f"{spec.env}/{spec.app}")
            if state is not None and state.active and spec.component in state.canary:
                wanted.setdefault(state.key, {}).setdefault(host, set()).add(spec.component)
    out: dict[str, list[str]] = {}
    for key in sorted(wanted):
        full = [f"{h} ({used[h]} planned + {len(c)} canary > maxInstances {capacity[h]})"
                for h, c in sorted(wanted[key].items()) if h in capacity and used[h] + len(c) > capacity[h]]
        if full:
            out[key] = full
            continue
        for h, c in wanted[key].items():
            used[h] += len(c)
    return out


def overlay(desired: Mapping[str, Sequence[InstanceSpec]], states: Mapping[str, RolloutState],
            policies: Mapping[str, RolloutPolicy],
            capacity: Mapping[str, int] | None = None) -> dict[str, tuple[InstanceSpec, ...]]:
    """The plan's documents with every rollout applied (see the module's docstring); ``capacity``:
    each host's maxInstances (a rollout whose canaries do not fit runs its stable digest alone)."""
    full = no_room(desired, states, capacity) if capacity is not None else {}
    out: dict[str, tuple[InstanceSpec, ...]] = {}
    for host, specs in desired.items():
        result: list[InstanceSpec] = []
        canaried: set[tuple[str, str, str]] = set()
        for spec in specs:
            state = states.get(f"{spec.env}/{spec.app}")
            held = state is not None and (state.active or state.phase == ABORTED) and spec.component in state.stable
            if not held or state is None:
                result.append(spec if spec.traffic is None else replace(spec, traffic=None))
                continue
            stable, canary = state.stable[spec.component], state.canary[spec.component]
            split = None
            if state.phase in (SHADOW, PROGRESSING) and state.key not in full:
                shadow = policies[state.key].shadow if state.key in policies else None
                split = TrafficSplit(stable=stable.digest, canary=canary.digest, weight=state.weight,
                                     shadow_sample=shadow.sample if shadow is not None and state.phase == SHADOW
                                     else 0.0, shadow_compare=shadow.compare if shadow is not None else "status")
            result.append(replace(spec, image=stable.image, digest=stable.digest, traffic=split))
            key = (spec.env, spec.app, spec.component)
            if split is not None and key not in canaried:
                canaried.add(key)
                ordinal = spec.id.rpartition("/")[2]
                result.append(replace(spec, id=f"{spec.env}/{spec.app}/{spec.component}/{CANARY_ORDINAL}{ordinal}",
                                      image=canary.image, digest=canary.digest, traffic=split, idle_after_ms=None))
        out[host] = tuple(sorted(result, key=lambda s: s.id))
    return out


def hosts_of(desired: Mapping[str, Sequence[InstanceSpec]], state: RolloutState) -> list[str]:
    """Hosts that run a component of the rollout."""
    return sorted(h for h, specs in desired.items()
                  if any(s.env == state.env and s.app == state.app and s.component in state.stable for s in specs))


def canary_ready(published: Mapping[str, HostDesiredState], reports: Mapping[str, HostReport],
                 state: RolloutState) -> bool:
    """Every canary instance published for the rollout runs its digest, reported by its host."""
    wanted = [(h, s) for h, doc in published.items() for s in doc.instances
              if is_canary(s) and s.env == state.env and s.app == state.app and s.component in state.canary]
    if not wanted:
        return False
    for host, spec in wanted:
        rep = reports.get(host)
        if rep is None or rep.observed_generation < published[host].generation:
            return False
        found = next((i for i in rep.instances if i.id == spec.id), None)
        if found is None or found.status not in UP or found.digest != spec.digest:
            return False
    return True


# ---------------------------------------------------------------- measuring
def placed_traffic(published: Mapping[str, HostDesiredState],
                   reports: Mapping[str, HostReport]) -> dict[str, HostReport]:
    """``reports`` keeping only the traffic of a component and digest the reconciler placed on the
    reporting host (its published document has an instance of it); a report of anything else is
    dropped: any host can send counters, only the ones we gave the instance are evidence."""
    out: dict[str, HostReport] = {}
    for host, rep in reports.items():
        if rep.traffic:
            doc = published.get(host)
            placed = {(s.env, s.app, s.component, s.digest) for s in doc.instances} if doc is not None else set()
            kept = tuple(t for t in rep.traffic if t.key in placed)
            if len(kept) != len(rep.traffic):
                rep = replace(rep, traffic=kept)
        out[host] = rep
    return out


def snapshot(reports: Mapping[str, HostReport], state: RolloutState) -> dict[str, dict[str, Any]]:
    """The counters of the rollout's digests on every host now (a window's start)."""
    digests = {r.digest for r in state.stable.values()} | {r.digest for r in state.canary.values()}
    return {
        f"{host}|{t.component}|{t.digest}": t.to_json()
        for host, rep in sorted(reports.items()) for t in rep.traffic
        if t.env == state.env and t.app == state.app and t.component in state.stable and t.digest in digests
    }


def measure(reports: Mapping[str, HostReport], state: RolloutState) -> tuple[Window, Window]:
    """(stable, canary) over the window that began at ``state.baseline``, summed over hosts."""
    stable_digests = {c: r.digest for c, r in state.stable.items()}
    canary_digests = {c: r.digest for c, r in state.canary.items()}
    stable, canary = Window(), Window()
    for key, now in snapshot(reports, state).items():
        current = DigestTraffic.from_json(now)
        before = state.baseline.get(key)
        window = since(current, DigestTraffic.from_json(before) if before else None)
        if stable_digests.get(current.component) == current.digest:
            stable = stable.plus(window)
        elif canary_digests.get(current.component) == current.digest:
            canary = canary.plus(window)
    return stable, canary


def breaches(policy: RolloutPolicy, stable: Window, canary: Window) -> list[str]:
    """Why the canary must be aborted (empty: within abortWhen), each with the numbers."""
    out: list[str] = []
    for metric, threshold in sorted(policy.abort_when.items()):
        value, base, enough = _figures(metric, stable, canary)
        if not enough or value is None or (metric == "fuel" and threshold.relative and base is None):
            continue  # fuel against a baseline needs the stable digest's measured too (no floor means anything)
        limit = threshold.value * max(base or 0.0, BASELINE_FLOOR[metric]) if threshold.relative else threshold.value
        if value > limit:
            out.append(f"{metric} {_show(metric, value)} {_vs(threshold, metric, base, limit)}")
    shadow = policy.shadow
    if shadow is not None and canary.shadow_requests:
        match = 1 - canary.shadow_mismatches / canary.shadow_requests
        if match < shadow.min_match:
            out.append(f"shadow {shadow.compare} match {match:.1%} ({canary.shadow_mismatches} of "
                       f"{canary.shadow_requests} mirrored answers differ) < minMatch {shadow.min_match:.0%}")
    return out


def _figures(metric: str, stable: Window, canary: Window) -> tuple[float | None, float | None, bool]:
    if metric == "errorRate":
        return canary.error_rate, stable.error_rate if stable.requests else None, canary.requests >= MIN_REQUESTS
    if metric == "p99":
        enough = canary.requests >= MIN_LATENCY_SAMPLES
        return canary.p99(), stable.p99() if stable.requests >= MIN_LATENCY_SAMPLES else None, enough
    if metric == "fuel":  # mean per measured request; unmeasured (`wasmtime serve`): never judged
        return (canary.fuel_per_request, stable.fuel_per_request if stable.fuel_requests >= MIN_REQUESTS else None,
                canary.fuel_requests >= MIN_REQUESTS)
    return float(canary.traps), float(stable.traps), True


def _show(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == "errorRate":
        return f"{value:.1%}"
    if metric == "p99":
        return f"{value * 1000:.1f}ms"
    if metric == "fuel":
        return f"{value:.0f}/req"
    return f"{value:g}"


def fuel_figures(stable: Window, canary: Window) -> str:
    """``fuel 1234/req vs 1200/req stable (1.03x)``, or ``fuel unmeasured`` (a runtime that cannot count it)."""
    c, s = canary.fuel_per_request, stable.fuel_per_request
    if c is None:
        return "fuel unmeasured" if canary.requests else "fuel -"
    if s is None:
        return f"fuel {c:.0f}/req"
    ratio = f" ({c / s:.2f}x)" if s else ""
    return f"fuel {c:.0f}/req vs {s:.0f}/req stable{ratio}"


def _vs(threshold: Threshold, metric: str, base: float | None, limit: float) -> str:
    if threshold.relative:
        return f"> {threshold.value:g}x baseline {_show(metric, base)} (limit {_show(metric, limit)})"
    return f"{threshold.text} (stable {_show(metric, base)})"


# ---------------------------------------------------------------- deciding
@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    state: RolloutState
    event: Event | None = None
    republish: bool = False  # the documents change (weight, canary instances, abort, completion)


def decide(state: RolloutState, policy: RolloutPolicy, *, now: float, incapable: Sequence[str], ready: bool,
           reports: Mapping[str, HostReport], full: Sequence[str] = (), lost: Sequence[str] = ()) -> Decision:
    """The next state of an active rollout. ``incapable``: hosts of the rollout that cannot split
    traffic (an older agent); ``full``: hosts without room for its canary instances
    (:func:`no_room`); ``lost``: hosts of the rollout that are Lost (their last reports are stale);
    ``ready``: every canary instance runs; ``reports``: the hosts' reports."""
    if not state.active:
        return Decision(state=state)
    if incapable or full or lost:
        reason = "HostCannotSplit" if incapable else "NoCapacity" if full else "HostLost"
        if state.phase == WAITING and state.reason == reason:
            return Decision(state=state)
        if lost:
            # never judged on missing data: the step starts again, measured afresh, once they report
            message = (f"host(s) {', '.join(lost)} Lost: no measurements from them; the rollout waits and its step "
                       "starts again when they report")
        elif incapable:
            message = (f"host(s) {', '.join(incapable)} cannot split traffic (no {FEATURE_TRAFFIC_SPLIT} in their "
                       "registration: an older agent); the rollout waits, the stable digest serves everything")
        else:
            message = (f"no room for the canary instances on host(s) {', '.join(full)}: the rollout waits rather "
                       "than overcommit, the stable digest serves everything (raise --max-instances or add hosts)")
        return Decision(state=replace(state, phase=WAITING, step_started_at=None, reason=reason,
                                      message=message, updated_at=now),
                        event=Event(reason="RolloutWaiting", message=f"{state.app}: {message}", warning=True),
                        republish=True)
    if state.phase == WAITING:
        phase = SHADOW if state.step < 0 else PROGRESSING
        resumed = {"NoCapacity": "every host has room for the canary",
                   "HostLost": "every host of the rollout reports again"}.get(state.reason,
                                                                              "every host can split traffic")
        return Decision(state=replace(state, phase=phase, reason="RolloutResumed", updated_at=now,
                                      message=f"{resumed}: {_where(state, policy)}"),
                        event=Event(reason="RolloutResumed", message=f"{state.app}: {resumed}"),
                        republish=True)
    if state.step_started_at is None:
        if not ready:
            return Decision(state=state)
        started = replace(state, step_started_at=now, baseline=snapshot(reports, state), updated_at=now,
                          measured={}, message=f"{_where(state, policy)}: measuring")
        return Decision(state=started)
    stable, canary = measure(reports, state)
    measured = {"stable": stable.to_json(), "canary": canary.to_json()}
    found = breaches(policy, stable, canary)
    if found:
        numbers = (f"canary {canary.requests} requests, {canary.errors} errors ({canary.error_rate:.1%}), "
                   f"{canary.traps} traps; stable {stable.requests} requests, {stable.errors} errors "
                   f"({stable.error_rate:.1%})")
        if "fuel" in policy.abort_when or canary.fuel_requests:
            numbers += f"; {fuel_figures(stable, canary)}"
        message = (f"aborted at {_where(state, policy)}: {'; '.join(found)} ({numbers}); 100% back to "
                   f"{_digests(state.stable)}; {_digests(state.canary)} is held back until Git changes")
        reason = "ShadowMismatch" if any(f.startswith("shadow ") for f in found) else "AbortThresholdExceeded"
        return Decision(state=replace(state, phase=ABORTED, weight=0, measured=measured, reason=reason,
                                      message=message, updated_at=now),
                        event=Event(reason="RolloutAborted", message=f"{state.app}: {message}", warning=True),
                        republish=True)
    pause = _pause(policy, state.step)
    if now - state.step_started_at < pause:
        if measured != state.measured:
            return Decision(state=replace(state, measured=measured))
        return Decision(state=state)
    if canary.requests < MIN_REQUESTS:  # a quiet step is not judged on nothing: it lasts until there is traffic
        waiting = f"{_where(state, policy)}: pause over, waiting for {MIN_REQUESTS} canary requests ({canary.requests} so far)"
        if measured != state.measured or waiting != state.message:
            return Decision(state=replace(state, measured=measured, message=waiting))
        return Decision(state=state)
    following = state.step + 1
    weight = policy.steps[following].weight if following < len(policy.steps) else 100
    fuel = f", {fuel_figures(stable, canary)}" if "fuel" in policy.abort_when else ""
    passed = f"{_where(state, policy)} passed ({canary.requests} canary requests, {canary.errors} errors{fuel})"
    if weight >= 100:
        message = f"{passed}; {_digests(state.canary)} serves 100% and is the stable digest now"
        return Decision(state=replace(state, phase=COMPLETED, step=min(following, len(policy.steps) - 1), weight=100,
                                      measured=measured, reason="RolloutCompleted", message=message, updated_at=now),
                        event=Event(reason="RolloutCompleted", message=f"{state.app}: {message}"), republish=True)
    advanced = replace(state, phase=PROGRESSING, step=following, weight=weight, step_started_at=now,
                       baseline=snapshot(reports, state), measured={}, reason="RolloutAdvanced", updated_at=now)
    advanced = replace(advanced, message=f"{passed}; now {_where(advanced, policy)}")
    return Decision(state=advanced, event=Event(reason="RolloutAdvanced", message=f"{state.app}: {advanced.message}"),
                    republish=True)


def _pause(policy: RolloutPolicy, step: int) -> float:
    if step < 0:
        shadow = policy.shadow
        if shadow is not None and shadow.duration_s is not None:
            return shadow.duration_s
        return policy.steps[0].pause_s if policy.steps else 0.0
    return policy.steps[step].pause_s if step < len(policy.steps) else 0.0


def _where(state: RolloutState, policy: RolloutPolicy) -> str:
    if state.step < 0:
        return "shadow traffic"
    return f"step {state.step + 1}/{len(policy.steps)} (weight {state.weight}%)"


def _digests(refs: Mapping[str, Ref]) -> str:
    return ", ".join(f"{c}@{r.digest[:19]}" for c, r in sorted(refs.items()))
