"""Drift: every difference between what Git declares and what runs. Pure functions, no I/O.

The reconciler calls :func:`compute_drift` after every host report and every reconcile, records
new items as events, exposes them at ``GET /api/v1/drift`` and as the ``driftless_drift_items``
metric, and (for environments with ``sync.mode: heal``) republishes desired state to correct them.

Categories (``DriftCategory``): Missing, Unexpected, VersionMismatch, ConfigMismatch, TagMoved,
HostLost, RevisionRejected, and Pending (still converging within the grace period: reported,
never counted as drift).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from wire.control import (
    STARTING,
    STOPPING,
    UP,
    HostDesiredState,
    HostReport,
    InstanceSpec,
    InstanceStatus,
)


class DriftCategory(StrEnum):
    MISSING = "Missing"  # declared, not running
    UNEXPECTED = "Unexpected"  # running but not declared, or not managed (started by hand)
    VERSION_MISMATCH = "VersionMismatch"  # running digest != declared digest
    CONFIG_MISMATCH = "ConfigMismatch"  # running config != declared config
    TAG_MOVED = "TagMoved"  # the registry tag now points to another digest than the deployed one
    HOST_LOST = "HostLost"  # a host of the environment stopped reporting
    REVISION_REJECTED = "RevisionRejected"  # Git head is invalid; an older revision stays applied
    PENDING = "Pending"  # converging within the grace period: not drift


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftItem:
    category: DriftCategory
    env: str
    app: str = ""
    component: str = ""
    host: str = ""
    instance: str = ""  # instance id when the item is about one instance
    expected: str = ""  # e.g. the declared digest, config, "running"
    actual: str = ""  # e.g. the running digest, config, "absent"
    since: float = 0.0  # unix seconds when first observed
    message: str = ""  # one line a person can act on
    healed_at: float | None = None  # set by the reconciler once heal mode corrected it

    @property
    def key(self) -> str:
        """Identity of the item across observations (to keep ``since`` stable)."""
        return "|".join((self.category, self.env, self.app, self.component, self.host, self.instance))

    @property
    def counted(self) -> bool:
        return self.category is not DriftCategory.PENDING

    def to_json(self) -> dict[str, Any]:
        return {
            "category": str(self.category),
            "env": self.env,
            "app": self.app,
            "component": self.component,
            "host": self.host,
            "instance": self.instance,
            "expected": self.expected,
            "actual": self.actual,
            "since": self.since,
            "message": self.message,
            "healedAt": self.healed_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HostObservation:
    """What the reconciler knows of one host."""

    name: str
    state: str  # "Ready" | "Lost" | "Revoked"
    labels: Mapping[str, str] = field(default_factory=dict)
    last_seen: float = 0.0
    published_generation: int = 0  # generation of the last desired state published to it
    published_at: float = 0.0  # when that generation was published
    report: HostReport | None = None  # its last report, if any


@dataclass(frozen=True, slots=True, kw_only=True)
class TagObservation:
    """A component declared by tag: the digest deployed vs. what the tag points to now."""

    env: str
    app: str
    component: str
    image: str  # as written in Git, e.g. "demo/hello:1.0.0"
    deployed_digest: str
    current_digest: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """The newest Git revision was invalid; ``applied_revision`` is still what runs."""

    env: str  # "" when the whole tree was rejected (e.g. YAML syntax error outside any env)
    revision: str
    applied_revision: str | None
    errors: Sequence[str] = ()  # "file:line:col: message"
    since: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeployedImage:
    """A component as applied: the image written in Git and the digest it was resolved to."""

    env: str
    app: str
    component: str
    image: str
    digest: str


def tag_observations(
    *, deployed: Sequence[DeployedImage], current: Mapping[str, str]
) -> list[TagObservation]:
    """TagObservations for every component declared by tag (not pinned) whose tag ``current`` knows.

    ``current`` maps an image as written (``demo/hello:1.0.0``) to the digest its tag points to
    now (e.g. ``shared.tags.resolve`` of the tagged images); pinned images are skipped.
    """
    out = []
    for d in deployed:
        if "@" in d.image or d.image not in current:
            continue
        out.append(
            TagObservation(
                env=d.env, app=d.app, component=d.component, image=d.image,
                deployed_digest=d.digest, current_digest=current[d.image],
            )
        )  # fmt: skip
    return out


def compute_drift(
    *,
    desired: Mapping[str, HostDesiredState],
    hosts: Mapping[str, HostObservation],
    tags: Sequence[TagObservation] = (),
    rejections: Sequence[Rejection] = (),
    first_seen: Mapping[str, float] | None = None,
    now: float,
    grace_seconds: float = 10.0,
) -> list[DriftItem]:
    """Every drift item, given the desired state per host and what the hosts report.

    ``desired`` maps host name to the desired state last published to it. ``first_seen`` maps
    :attr:`DriftItem.key` to when the item was first observed (the caller keeps it between calls);
    items not in it get ``since=now``. An instance whose host has not yet observed the published
    generation, and whose generation was published less than ``grace_seconds`` ago, is Pending.

    A Lost host yields one HostLost item per environment it served (its instances are not listed
    one by one: the host is the news). Items come sorted by env, app, component, host, category.
    """
    seen = first_seen or {}
    items: list[DriftItem] = []

    def add(category: DriftCategory, *, default_since: float | None = None, **fields: Any) -> None:
        key = "|".join(
            (category, *(fields.get(k, "") for k in ("env", "app", "component", "host", "instance")))
        )
        since = seen.get(key)
        if since is None:
            since = default_since if default_since else now
        items.append(DriftItem(category=category, since=since, **fields))

    for host_name in sorted(set(desired) | set(hosts)):
        state = desired.get(host_name)
        obs = hosts.get(host_name)
        if obs is not None and obs.state == "Lost":
            _host_lost(add, host_name=host_name, state=state, obs=obs)
            continue
        if obs is not None and obs.state == "Revoked":
            continue  # an admin revoked it: it reaches nothing of ours (no heal), its instances run elsewhere

        _host_instances(add, host_name=host_name, state=state, obs=obs, now=now, grace_seconds=grace_seconds)

    for tag in tags:
        if tag.current_digest and tag.current_digest != tag.deployed_digest:
            add(
                DriftCategory.TAG_MOVED,
                env=tag.env,
                app=tag.app,
                component=tag.component,
                expected=tag.deployed_digest,
                actual=tag.current_digest,
                message=(
                    f"tag {tag.image} now points to {_short(tag.current_digest)}, "
                    f"but {_short(tag.deployed_digest)} is deployed; pin the image to a digest in Git "
                    "or let the next reconcile roll out the new digest"
                ),
            )

    for rej in rejections:
        first_error = rej.errors[0] if rej.errors else "invalid manifests"
        more = f" (and {len(rej.errors) - 1} more)" if len(rej.errors) > 1 else ""
        applied = _short_rev(rej.applied_revision) if rej.applied_revision else "nothing"
        add(
            DriftCategory.REVISION_REJECTED,
            default_since=rej.since,
            env=rej.env,
            expected=rej.revision,
            actual=rej.applied_revision or "",
            message=(
                f"revision {_short_rev(rej.revision)} was rejected: {first_error}{more}; "
                f"{applied} stays applied; fix the manifests and push again"
            ),
        )

    items.sort(key=lambda i: (i.env, i.app, i.component, i.host, i.instance, str(i.category)))
    return items


class _Add(Protocol):
    def __call__(
        self, category: DriftCategory, *, default_since: float | None = None, **fields: Any
    ) -> None: ...


def _host_lost(add: _Add, *, host_name: str, state: HostDesiredState | None, obs: HostObservation) -> None:
    envs = {i.env for i in state.instances} if state else set()
    if obs.report:
        envs |= {i.env for i in obs.report.instances if i.managed}
    counts: dict[str, int] = {}
    for inst in state.instances if state else ():
        counts[inst.env] = counts.get(inst.env, 0) + 1
    for env in sorted(envs) or [""]:
        n = counts.get(env, 0)
        add(
            DriftCategory.HOST_LOST,
            default_since=obs.last_seen or None,
            env=env,
            host=host_name,
            expected="Ready",
            actual="Lost",
            message=(
                f"host {host_name} stopped reporting"
                + (f"; {n} instance(s) of {env} declared on it are not served" if n else "")
                + "; restart it, or remove it so the reconciler places its instances elsewhere"
            ),
        )


def _host_instances(
    add: _Add,
    *,
    host_name: str,
    state: HostDesiredState | None,
    obs: HostObservation | None,
    now: float,
    grace_seconds: float,
) -> None:
    report = obs.report if obs else None
    generation = state.generation if state else 0
    observed = report.observed_generation if report else 0
    published_at = obs.published_at if obs else 0.0
    # converging: the host has not yet acted on what was published, and it was published recently
    converging = observed < generation and (now - published_at) < grace_seconds
    reported: dict[str, InstanceStatus] = {}
    for inst in report.instances if report else ():
        if inst.managed:
            reported.setdefault(inst.id, inst)
        else:
            _unexpected(add, host_name=host_name, inst=inst, reason="started out of band (not managed)")

    wanted = {spec.id: spec for spec in state.instances} if state else {}
    for spec in wanted.values():
        _declared_instance(
            add, host_name=host_name, spec=spec, got=reported.get(spec.id), converging=converging,
            starting_grace=(now - published_at) < grace_seconds,
        )  # fmt: skip

    for inst_id, inst in reported.items():
        if inst_id in wanted:
            continue
        if converging or (inst.status == STOPPING and (now - published_at) < grace_seconds):
            add(
                DriftCategory.PENDING,
                env=inst.env, app=inst.app, component=inst.component, host=host_name, instance=inst.id,
                expected="absent", actual=inst.status,
                message=f"{inst.id} on {host_name} is being removed (generation {generation} not yet applied)",
            )  # fmt: skip
        else:
            _unexpected(add, host_name=host_name, inst=inst, reason="not declared in Git")


def _declared_instance(
    add: _Add,
    *,
    host_name: str,
    spec: InstanceSpec,
    got: InstanceStatus | None,
    converging: bool,
    starting_grace: bool,
) -> None:
    where: dict[str, Any] = dict(
        env=spec.env, app=spec.app, component=spec.component, host=host_name, instance=spec.id
    )
    if converging:
        if (
            got is None
            or got.digest != spec.digest
            or dict(got.config) != dict(spec.config)
            or got.status not in UP
        ):
            add(
                DriftCategory.PENDING, **where, expected=spec.digest, actual=_describe(got),
                message=f"{spec.id} on {host_name} is converging to {_short(spec.digest)}",
            )  # fmt: skip
        return
    if got is None or got.status not in UP:
        if got is not None and got.status == STARTING and starting_grace:
            add(
                DriftCategory.PENDING, **where, expected="Running", actual=got.status,
                message=f"{spec.id} on {host_name} is {got.status}",
            )  # fmt: skip
            return
        actual = _describe(got)
        reason = f": {got.last_error}" if got is not None and got.last_error else ""
        add(
            DriftCategory.MISSING, **where, expected=spec.digest, actual=actual,
            message=f"{spec.id} is declared on {host_name} but is {actual}{reason}",
        )  # fmt: skip
        return
    if got.digest != spec.digest:
        add(
            DriftCategory.VERSION_MISMATCH, **where, expected=spec.digest, actual=got.digest,
            message=f"{spec.id} on {host_name} runs {_short(got.digest)}, Git declares {_short(spec.digest)}",
        )  # fmt: skip
    if dict(got.config) != dict(spec.config):
        changed = sorted(
            k for k in set(got.config) | set(spec.config) if got.config.get(k) != spec.config.get(k)
        )
        add(
            DriftCategory.CONFIG_MISMATCH, **where, expected=_config(spec.config), actual=_config(got.config),
            message=f"{spec.id} on {host_name} runs with a different config ({', '.join(changed)})",
        )  # fmt: skip


def _unexpected(add: _Add, *, host_name: str, inst: InstanceStatus, reason: str) -> None:
    add(
        DriftCategory.UNEXPECTED,
        env=inst.env, app=inst.app, component=inst.component, host=host_name, instance=inst.id,
        expected="absent", actual=f"{inst.status} {_short(inst.digest)}".strip(),
        message=f"{inst.id} runs on {host_name} but is {reason}; stop it (`driftless host exec`) or declare it in Git",
    )  # fmt: skip


def _describe(got: InstanceStatus | None) -> str:
    if got is None:
        return "absent"
    return got.status


def _config(config: Mapping[str, str]) -> str:
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"))


def _short(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest


def _short_rev(revision: str) -> str:
    return revision[:12]
