"""Status of applications, Flux style: sync (Synced/OutOfSync), health (Healthy/Progressing/Degraded),
per-component instance counts, and conditions. Pure functions over what was published and reported.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from model.types import ManifestTree
from reconciler.planner.placement import Unplaced
from wire.control import BACKOFF, FAILED, UP, HostDesiredState, HostReport, InstanceStatus

SYNCED, OUT_OF_SYNC = "Synced", "OutOfSync"
HEALTHY, PROGRESSING, DEGRADED = "Healthy", "Progressing", "Degraded"


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    type: str  # "Ready" | "Reconciling" | "Stalled"
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    observed_revision: str | None
    last_transition_time: float

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "observedRevision": self.observed_revision,
            "lastTransitionTime": self.last_transition_time,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ComponentCounts:
    name: str
    image: str  # as written in Git
    digest: str
    desired: int
    ready: int
    hosts: tuple[str, ...]
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # what the hosts say they cannot do (e.g. enforce a grant), deduplicated

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "digest": self.digest,
            "desired": self.desired,
            "ready": self.ready,
            "hosts": list(self.hosts),
            "errors": list(self.errors),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AppView:
    """What the hosts say about one application, before conditions are stamped with times."""

    env: str
    app: str
    sync: str
    health: str
    reason: str  # why it is not Ready ("" when Ready)
    message: str
    components: tuple[ComponentCounts, ...] = ()
    digests: Mapping[str, str] = field(default_factory=dict)  # component -> digest (for healthySince)


def app_views(
    *,
    tree: ManifestTree | None,
    digests: Mapping[str, str],
    published: Mapping[str, HostDesiredState],
    reports: Mapping[str, HostReport],
    host_states: Mapping[str, str],
    unplaced: Sequence[Unplaced] = (),
) -> dict[tuple[str, str], AppView]:
    """One view per (env, app) of ``tree``."""
    if tree is None:
        return {}
    # index: (env, app, component) -> [(host, spec)]
    placed: dict[tuple[str, str, str], list[tuple[str, Any]]] = defaultdict(list)
    published_ids: dict[str, set[str]] = {}
    for host, doc in published.items():
        ids = set()
        for spec in doc.instances:
            placed[(spec.env, spec.app, spec.component)].append((host, spec))
            ids.add(spec.id)
        published_ids[host] = ids
    running: dict[str, dict[str, InstanceStatus]] = {
        host: {i.id: i for i in rep.instances} for host, rep in reports.items()
    }
    leftovers: dict[tuple[str, str], int] = defaultdict(int)  # managed instances being pruned
    for host, rep in reports.items():
        ids = published_ids.get(host, set())
        for inst in rep.instances:
            if inst.managed and inst.id not in ids and inst.env and host_states.get(host) == "Ready":
                leftovers[(inst.env, inst.app)] += 1
    missing: dict[tuple[str, str], list[Unplaced]] = defaultdict(list)
    for u in unplaced:
        missing[(u.env, u.app)].append(u)
    behind = {
        host
        for host, doc in published.items()
        if host_states.get(host) == "Ready" and (reports.get(host) is None or reports[host].observed_generation < doc.generation)
    }

    any_ready = any(state == "Ready" for state in host_states.values())
    views: dict[tuple[str, str], AppView] = {}
    for env_name, apps in tree.applications.items():
        for app_name, app in apps.items():
            comps: list[ComponentCounts] = []
            in_sync = True
            degraded: list[str] = []
            progressing: list[str] = []
            comp_digests: dict[str, str] = {}
            for comp in app.components:
                entries = placed.get((env_name, app_name, comp.name), [])
                digest = entries[0][1].digest if entries else digests.get(comp.image, comp.image.partition("@")[2])
                comp_digests[comp.name] = digest
                ready = 0
                errors: list[str] = []
                warnings: dict[str, None] = {}
                for host, spec in entries:
                    found = running.get(host, {}).get(spec.id)
                    if host_states.get(host) != "Ready" or found is None:
                        in_sync = False
                        continue
                    inst = found
                    warnings.update(dict.fromkeys(inst.warnings))
                    if inst.digest != spec.digest or dict(inst.config) != dict(spec.config):
                        in_sync = False
                    if inst.status in UP and inst.digest == spec.digest:
                        ready += 1
                    elif inst.status in (FAILED, BACKOFF):
                        errors.append(f"{spec.id} on {host}: {inst.status}: {inst.last_error or 'no error given'}")
                    if host in behind:
                        in_sync = False
                desired = len(entries)
                if errors:
                    degraded.extend(errors)
                elif ready < desired:
                    progressing.append(f"{comp.name}: {ready}/{desired} ready")
                comps.append(
                    ComponentCounts(
                        name=comp.name,
                        image=comp.image,
                        digest=digest,
                        desired=desired,
                        ready=ready,
                        hosts=tuple(sorted({h for h, _ in entries})),
                        errors=tuple(errors),
                        warnings=tuple(warnings),
                    )
                )
            for u in missing.get((env_name, app_name), []):
                in_sync = False
                if u.missing and not any_ready:
                    progressing.append(f"{u.component}: waiting for hosts to register")
                elif u.missing:
                    degraded.append(f"{u.component}: {u.missing} replica(s) not placed: {u.reason}")
            if leftovers.get((env_name, app_name)):
                in_sync = False
                progressing.append(f"{leftovers[(env_name, app_name)]} instance(s) being removed")
            if degraded:
                health, reason, message = DEGRADED, "Degraded", "; ".join(degraded)
            elif progressing:
                health, reason, message = PROGRESSING, "Progressing", "; ".join(progressing)
            else:
                health, reason, message = HEALTHY, "", "all instances ready"
            sync = SYNCED if in_sync else OUT_OF_SYNC
            if health == HEALTHY and sync == OUT_OF_SYNC:
                reason, message = "OutOfSync", "hosts have not converged to the desired state yet"
            views[(env_name, app_name)] = AppView(
                env=env_name,
                app=app_name,
                sync=sync,
                health=health,
                reason=reason,
                message=message,
                components=tuple(comps),
                digests=comp_digests,
            )
    return views
