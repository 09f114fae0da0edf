"""Which hosts to republish to, to correct drift, without thrashing. Pure functions, no I/O.

A host is healed when, in an environment with ``sync.mode: heal``, it has counted drift the
reconciler can correct by republishing (Missing, VersionMismatch, ConfigMismatch, Unexpected),
it is Ready, it has reported the current generation (so the drift is not just convergence in
flight), and the drifting instance is not crash-looping or starting (the host's own restart
backoff handles those). Each host is healed at most once per backoff, which doubles while the
drift persists (from ``base`` up to ``ceiling``) and resets when the host is clean again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from reconciler.planner.drift import DriftItem

HEALABLE = frozenset({"Missing", "VersionMismatch", "ConfigMismatch", "Unexpected"})


@dataclass(frozen=True, slots=True, kw_only=True)
class HealSchedule:
    """Per host: not before when it may be healed again, and the next backoff."""

    not_before: float
    backoff: float


@dataclass(frozen=True, slots=True, kw_only=True)
class HealDecision:
    hosts: frozenset[str]  # republish to these now
    envs: dict[str, frozenset[str]]  # per host republished now: the environments whose drift it corrects
    items: tuple[DriftItem, ...]  # the items, with ``healed_at`` set on those being healed
    schedule: dict[str, HealSchedule]  # to keep for the next call


def healable(item: DriftItem, *, heal_envs: Set[str]) -> bool:
    return bool(item.host) and item.env in heal_envs and str(item.category) in HEALABLE


def decide(
    *,
    items: Iterable[DriftItem],
    heal_envs: Set[str],
    eligible_hosts: Set[str],
    busy_instances: Set[str],
    schedule: Mapping[str, HealSchedule],
    now: float,
    base: float = 2.0,
    ceiling: float = 300.0,
) -> HealDecision:
    """``eligible_hosts``: Ready hosts whose fresh report observed their current generation;
    ``busy_instances``: instance ids reported Starting, BackOff or Failed (left to the host)."""
    items = tuple(items)
    drifting: dict[str, set[str]] = {}  # host -> environments with correctable drift there
    for i in items:
        if healable(i, heal_envs=heal_envs) and i.host in eligible_hosts and i.instance not in busy_instances:
            drifting.setdefault(i.host, set()).add(i.env)
    hosts: set[str] = set()
    next_schedule: dict[str, HealSchedule] = {}
    for host in drifting:
        entry = schedule.get(host, HealSchedule(not_before=0.0, backoff=base))
        if now >= entry.not_before:
            hosts.add(host)
            entry = HealSchedule(not_before=now + entry.backoff, backoff=min(entry.backoff * 2, ceiling))
        next_schedule[host] = entry  # hosts no longer drifting drop out: their backoff resets
    marked = tuple(
        dataclasses.replace(i, healed_at=now) if i.host in hosts and healable(i, heal_envs=heal_envs) else i
        for i in items
    )
    return HealDecision(hosts=frozenset(hosts), envs={h: frozenset(drifting[h]) for h in sorted(hosts)}, items=marked,
                        schedule=next_schedule)
