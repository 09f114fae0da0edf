"""Drift: every difference between what Git declares and what runs. Pure functions, no I/O.

The reconciler calls :func:`compute_drift` after every host report and every reconcile, records
new items as events, exposes them at ``GET /api/v1/drift`` and as the ``driftless_drift_items``
metric, and (for environments with ``sync.mode: heal``) republishes desired state to correct them.

Categories (``DriftCategory``): Missing, Unexpected, VersionMismatch, ConfigMismatch, TagMoved,
HostLost, RevisionRejected, and Pending (still converging within the grace period: reported,
never counted as drift).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler.control import HostDesiredState, HostReport


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
    state: str  # "Ready" | "Lost"
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
    """
    raise NotImplementedError("being written (issue 7)")
