"""Public types of the manifest model (apiVersion ``driftless.dev/v1alpha1``).

These are plain, immutable values: the loader builds them from YAML, the planner, drift
and promotion read them. No I/O here. The JSON Schemas in ``schemas/`` describe the same
shapes in YAML spelling (camelCase); a test keeps the two in step.

YAML (see README "Manifest format")::

    kind: Environment                      kind: Application
    metadata: {name: prod}                 metadata: {name: hello, labels: {team: web}}
    spec:                                  spec:
      hostSelector: {matchLabels: {}}        components:
      registries: ["127.0.0.1:5000"]         - name: web
      ingress: {pathPrefix: /prod}             image: demo/hello:1.0.0
      sync: {prune: true, mode: heal}          config: {GREETING: hi}
      promotion:                               placement:
        from: staging                            spread:
        minSoak: 5m                                replicas: 3
        requireApproval: true                      requirements:
                                                   - {labels: {cloud: aws}, weight: 2}
                                                   - {labels: {cloud: gcp}, weight: 1}
                                               # or: daemon: {perHost: 1, labels: {tier: edge}}
                                               limits: {memory: 16Mi, fuel: 50000000,
                                                        timeout: 500ms, maxConcurrency: 16}
                                               capabilities: [wasi:cli/environment]
                                               expose: /hello
                                             links:
                                             - {from: web, to: greeter, interface: driftless:demo/greeter}
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

API_VERSION = "driftless.dev/v1alpha1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One validation finding, located in the source: file, 1-based line and column, JSON path."""

    level: Literal["error", "warning"]
    file: str
    line: int
    column: int
    path: str  # JSON path inside the document, e.g. "spec.components[0].image"; "" for the whole file
    message: str  # what is wrong and how to fix it
    code: str = "invalid"  # short stable id: "unknown-field", "yaml-syntax", "duplicate-name", ...

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"{self.file}:{self.line}:{self.column}: {self.level}: {self.message}{where}"

    def to_json(self) -> dict[str, object]:
        return {
            "level": self.level,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "code": self.code,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSelector:
    """Labels a host must carry (all of them, exact values). Empty selects every host."""

    match_labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items())


class SyncMode(StrEnum):
    HEAL = "heal"  # drift is reported and corrected
    REPORT = "report"  # drift is only reported


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncPolicy:
    prune: bool = True
    mode: SyncMode = SyncMode.HEAL


@dataclass(frozen=True, slots=True, kw_only=True)
class PromotionPolicy:
    from_env: str
    min_soak_seconds: float = 0.0
    require_approval: bool = False
    approvers: int = 1  # with require_approval: how many distinct users must approve
    distinct_from_promoter: bool = False  # four eyes: the promoter's own approval does not count


def approval_rule(value: Any) -> tuple[bool, int, bool]:
    """``requireApproval`` as written (a boolean, or ``{approvers, distinctFromPromoter}``, schema-checked):
    (required, approvers, distinct from the promoter)."""
    if isinstance(value, Mapping):
        return True, int(value.get("approvers", 1)), bool(value.get("distinctFromPromoter", False))
    return bool(value), 1, False


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """A webhook called when an event of ``events`` (empty: every one) happens in the environment;
    its body signed with the reconciler's secret named ``secret_name`` (the secret never is in Git)."""

    url: str
    format: Literal["generic", "slack"] = "generic"
    events: tuple[str, ...] = ()
    secret_name: str | None = None

    def wants(self, reason: str) -> bool:
        return not self.events or reason in self.events or ("Drift" in self.events and reason.startswith("Drift"))


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitStatusTarget:
    """Where the environment reports each pushed commit's outcome: a GitHub or GitLab commit status
    (reconciler/controller/commit_status.py). The token is a secret of the reconciler (``token_secret``,
    scoped to the environment), never in Git."""

    provider: Literal["github", "gitlab"]
    repository: str  # GitHub "owner/repo"; GitLab a project id or "group/project"
    api_url: str = ""  # "" = https://api.github.com or https://gitlab.com/api/v4
    token_secret: str | None = None
    context: str = ""  # "" = driftless/<env>
    target_url: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Environment:
    name: str
    host_selector: HostSelector = field(default_factory=HostSelector)
    registries: tuple[str, ...] = ()  # allowed registry hosts; short references are always allowed
    ingress_path_prefix: str = ""  # prepended to every component's expose path on the hosts
    sync: SyncPolicy = field(default_factory=SyncPolicy)
    promotion: PromotionPolicy | None = None
    notifications: tuple[Notification, ...] = ()
    commit_status: tuple[CommitStatusTarget, ...] = ()
    source: str = ""  # file the Environment came from, relative to the tree root


@dataclass(frozen=True, slots=True, kw_only=True)
class SpreadRequirement:
    labels: Mapping[str, str]
    weight: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Spread:
    """``replicas`` instances in total, split over requirement groups by weight.

    With no requirements, the replicas are spread over every host of the environment.
    """

    replicas: int
    requirements: tuple[SpreadRequirement, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Daemon:
    """``per_host`` instances on every host of the environment that carries ``labels``."""

    per_host: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)


Placement = Spread | Daemon


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    memory_bytes: int | None = None  # per instance linear memory
    fuel: int | None = None  # per call
    timeout_ms: int | None = None  # per call, wall time (epoch deadline)
    max_concurrency: int | None = None  # concurrent calls per instance


@dataclass(frozen=True, slots=True, kw_only=True)
class Scale:
    """Scale to zero: instances beyond the first ``min_replicas`` stop after ``idle_timeout_s``
    without requests and start again on the next one (which waits until it is ready)."""

    min_replicas: int
    idle_timeout_s: float = 300.0  # DEFAULT_IDLE_TIMEOUT_S


DEFAULT_IDLE_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Grants:
    """What a component may reach at run time, whatever WASI interfaces it imports."""

    outbound_hosts: tuple[str, ...] = ()  # outbound HTTP: "api.example.com", "api.example.com:443", "*.example.com"
    sockets: bool = False  # wasi:sockets (TCP, UDP, name lookup)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretRef:
    """A config value kept secret; the model keeps the reference or the ciphertext, never the value.
    ``{secretRef: name}`` names a value of the reconciler's secret store (``--secrets-file``);
    ``{age: "-----BEGIN AGE ENCRYPTED FILE-----..."}`` is the value encrypted with age to the
    reconciler's key (``--age-identity-file``), decrypted by the reconciler only. Its name is then
    ``age-`` and the first 16 hex of the ciphertext's SHA-256 (:meth:`from_age`)."""

    name: str
    age: str | None = None  # the ASCII-armored age ciphertext of an encrypted value

    @classmethod
    def from_age(cls, ciphertext: str) -> SecretRef:
        return cls(name="age-" + hashlib.sha256(ciphertext.encode()).hexdigest()[:16], age=ciphertext)


@dataclass(frozen=True, slots=True, kw_only=True)
class Component:
    name: str
    image: str  # as written: short ("demo/hello:1.0.0") or with registry; tag or @sha256 digest
    config: Mapping[str, str | SecretRef] = field(default_factory=dict)
    placement: Placement = field(default_factory=lambda: Spread(replicas=1))
    limits: Limits = field(default_factory=Limits)
    capabilities: tuple[str, ...] = ()  # in-process world only: WASI interfaces it may import (strict mode)
    expose: str | None = None  # HTTP path prefix on the host ingress
    scale: Scale | None = None  # None: every instance always runs
    grants: Grants = field(default_factory=Grants)


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    from_component: str
    to_component: str
    interface: str  # WIT interface, e.g. "driftless:demo/greeter"


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutStep:
    weight: int  # percent of the traffic the new digest gets during this step
    pause_s: float = 0.0  # how long the step lasts before the next one (while the new digest behaves)


@dataclass(frozen=True, slots=True, kw_only=True)
class Threshold:
    """An abort threshold: the metric above ``value`` (a fraction for errorRate, seconds for p99,
    a count for traps, fuel units per request for fuel), or with ``relative`` above ``value`` times
    the stable digest's figure."""

    text: str  # as written, e.g. "> 1.5x baseline"
    value: float
    relative: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowPolicy:
    """Mirror a ``sample`` of the stable digest's requests to the new one, compare the answers."""

    sample: float  # fraction 0-1 of the requests mirrored
    compare: Literal["status", "body"] = "status"
    min_match: float = 1.0  # fraction of mirrored answers that must match (default all)
    duration_s: float | None = None  # how long the shadow phase lasts (default: the first step's pause)


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutPolicy:
    """``spec.rollout``: how a new digest replaces the running one (model/rollout.py)."""

    strategy: Literal["rolling", "canary"] = "rolling"
    steps: tuple[RolloutStep, ...] = ()
    abort_when: Mapping[str, Threshold] = field(default_factory=dict)  # errorRate, p99, traps, fuel
    shadow: ShadowPolicy | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Application:
    name: str
    env: str  # the environment folder it lives in
    labels: Mapping[str, str] = field(default_factory=dict)
    components: tuple[Component, ...] = ()
    links: tuple[Link, ...] = ()
    rollout: RolloutPolicy | None = None  # None: rolling replacement
    source: str = ""  # file, relative to the tree root

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


@dataclass(slots=True, kw_only=True)
class ManifestTree:
    """Everything loaded from one tree (a directory or a Git revision), plus every problem found."""

    revision: str | None = None
    environments: dict[str, Environment] = field(default_factory=dict)
    applications: dict[str, dict[str, Application]] = field(default_factory=dict)  # env -> app name -> app
    problems: list[Problem] = field(default_factory=list)
    # where each node was written, for problems found after loading (e.g. registry checks):
    # "env:json.path" for an environment, "env/app:json.path" for an application -> (file, line, column)
    locations: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    def location(self, *, env: str, app: str | None = None, path: str = "") -> tuple[str, int, int]:
        """(file, line, column) of ``path`` in an environment's or application's document; the nearest
        located ancestor when ``path`` itself is not recorded."""
        prefix = f"{env}/{app}" if app is not None else env
        probe = path
        while True:
            found = self.locations.get(f"{prefix}:{probe}")
            if found is not None or not probe:
                break
            probe = probe[: max(probe.rfind("."), probe.rfind("["), 0)]
        if found is not None:
            return found
        source = self.applications.get(env, {}).get(app) if app is not None else self.environments.get(env)
        return (source.source if source is not None else env, 1, 1)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors
