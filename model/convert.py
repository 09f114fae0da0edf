"""Schema-valid documents -> typed model objects (``types.py``).

``FIELD_MAP`` is the explicit bridge between the YAML spelling (camelCase paths in the schemas) and
the model (snake_case dataclass fields); a test walks both sides and fails when either drifts.
Conversion runs only on documents the schema accepted, so it needs no error handling of its own.
"""

from __future__ import annotations

from typing import Any

from model.rollout import to_rollout
from model.types import (
    DEFAULT_IDLE_TIMEOUT_S,
    Application,
    CommitStatusTarget,
    Component,
    Daemon,
    Environment,
    Grants,
    HostSelector,
    Limits,
    Link,
    Notification,
    PromotionPolicy,
    RolloutPolicy,
    RolloutStep,
    Scale,
    SecretRef,
    ShadowPolicy,
    Spread,
    SpreadRequirement,
    SyncMode,
    SyncPolicy,
    Threshold,
    approval_rule,
)
from shared.units import duration_seconds, memory_bytes

# schema path ("[]" = every item of a list) -> (model class, field name)
FIELD_MAP: dict[str, dict[str, tuple[type, str]]] = {
    "Environment": {
        "metadata.name": (Environment, "name"),
        "spec.hostSelector": (Environment, "host_selector"),
        "spec.hostSelector.matchLabels": (HostSelector, "match_labels"),
        "spec.registries": (Environment, "registries"),
        "spec.ingress.pathPrefix": (Environment, "ingress_path_prefix"),
        "spec.sync": (Environment, "sync"),
        "spec.sync.prune": (SyncPolicy, "prune"),
        "spec.sync.mode": (SyncPolicy, "mode"),
        "spec.promotion": (Environment, "promotion"),
        "spec.promotion.from": (PromotionPolicy, "from_env"),
        "spec.promotion.minSoak": (PromotionPolicy, "min_soak_seconds"),
        "spec.promotion.requireApproval": (PromotionPolicy, "require_approval"),
        "spec.notifications": (Environment, "notifications"),
        "spec.notifications[].url": (Notification, "url"),
        "spec.notifications[].format": (Notification, "format"),
        "spec.notifications[].events": (Notification, "events"),
        "spec.notifications[].secretName": (Notification, "secret_name"),
        "spec.commitStatus": (Environment, "commit_status"),
        "spec.commitStatus[].provider": (CommitStatusTarget, "provider"),
        "spec.commitStatus[].repository": (CommitStatusTarget, "repository"),
        "spec.commitStatus[].url": (CommitStatusTarget, "api_url"),
        "spec.commitStatus[].token.secretRef": (CommitStatusTarget, "token_secret"),
        "spec.commitStatus[].context": (CommitStatusTarget, "context"),
        "spec.commitStatus[].targetUrl": (CommitStatusTarget, "target_url"),
    },
    "Application": {
        "metadata.name": (Application, "name"),
        "metadata.labels": (Application, "labels"),
        "spec.components": (Application, "components"),
        "spec.components[].name": (Component, "name"),
        "spec.components[].image": (Component, "image"),
        "spec.components[].config": (Component, "config"),
        "spec.components[].placement": (Component, "placement"),
        "spec.components[].placement.spread.replicas": (Spread, "replicas"),
        "spec.components[].placement.spread.requirements": (Spread, "requirements"),
        "spec.components[].placement.spread.requirements[].labels": (SpreadRequirement, "labels"),
        "spec.components[].placement.spread.requirements[].weight": (SpreadRequirement, "weight"),
        "spec.components[].placement.daemon.perHost": (Daemon, "per_host"),
        "spec.components[].placement.daemon.labels": (Daemon, "labels"),
        "spec.components[].limits": (Component, "limits"),
        "spec.components[].limits.memory": (Limits, "memory_bytes"),
        "spec.components[].limits.fuel": (Limits, "fuel"),
        "spec.components[].limits.timeout": (Limits, "timeout_ms"),
        "spec.components[].limits.maxConcurrency": (Limits, "max_concurrency"),
        "spec.components[].capabilities": (Component, "capabilities"),
        "spec.components[].expose": (Component, "expose"),
        "spec.components[].scale": (Component, "scale"),
        "spec.components[].scale.minReplicas": (Scale, "min_replicas"),
        "spec.components[].scale.idleTimeout": (Scale, "idle_timeout_s"),
        "spec.components[].grants": (Component, "grants"),
        "spec.components[].grants.outboundHosts": (Grants, "outbound_hosts"),
        "spec.components[].grants.sockets": (Grants, "sockets"),
        "spec.links": (Application, "links"),
        "spec.links[].from": (Link, "from_component"),
        "spec.links[].to": (Link, "to_component"),
        "spec.links[].interface": (Link, "interface"),
        "spec.rollout": (Application, "rollout"),
        "spec.rollout.strategy": (RolloutPolicy, "strategy"),
        "spec.rollout.steps": (RolloutPolicy, "steps"),
        "spec.rollout.steps[].weight": (RolloutStep, "weight"),
        "spec.rollout.steps[].pause": (RolloutStep, "pause_s"),
        "spec.rollout.abortWhen": (RolloutPolicy, "abort_when"),
        "spec.rollout.shadow": (RolloutPolicy, "shadow"),
        "spec.rollout.shadow.sample": (ShadowPolicy, "sample"),
        "spec.rollout.shadow.compare": (ShadowPolicy, "compare"),
        "spec.rollout.shadow.minMatch": (ShadowPolicy, "min_match"),
        "spec.rollout.shadow.duration": (ShadowPolicy, "duration_s"),
    },
}

# schema properties that only group others (no model field of their own)
STRUCTURAL: dict[str, frozenset[str]] = {
    "Environment": frozenset({"apiVersion", "kind", "metadata", "spec", "spec.ingress", "spec.commitStatus[].token"}),
    "Application": frozenset({
        "apiVersion", "kind", "metadata", "spec",
        "spec.components[].placement.spread", "spec.components[].placement.daemon",
        # thresholds by metric (model.rollout.METRICS): one Mapping field, abort_when
        "spec.rollout.abortWhen.errorRate", "spec.rollout.abortWhen.p99", "spec.rollout.abortWhen.traps",
        "spec.rollout.abortWhen.fuel",
    }),
}

# model fields that do not come from a schema property: where they come from instead
DERIVED: frozenset[tuple[type, str]] = frozenset({
    (Environment, "source"),  # the file it was read from
    (Application, "source"),
    (Application, "env"),  # the folder it lives in
    (SecretRef, "name"),  # a config value {secretRef: name} (spec.components[].config.*.secretRef)
    (SecretRef, "age"),  # a config value {age: ciphertext} (spec.components[].config.*.age)
    (Threshold, "text"),  # spec.rollout.abortWhen.<metric>, parsed by model.rollout.parse_threshold
    (Threshold, "value"),
    (Threshold, "relative"),
    # spec.promotion.requireApproval written as {approvers, distinctFromPromoter} (a oneOf branch), by approval_rule
    (PromotionPolicy, "approvers"),
    (PromotionPolicy, "distinct_from_promoter"),
})


def to_environment(data: dict[str, Any], *, source: str) -> Environment:
    spec = data.get("spec") or {}
    selector = spec.get("hostSelector") or {}
    sync = spec.get("sync") or {}
    promotion = spec.get("promotion")
    approval = approval_rule((promotion or {}).get("requireApproval", False))
    return Environment(
        name=data["metadata"]["name"],
        host_selector=HostSelector(match_labels=dict(selector.get("matchLabels") or {})),
        registries=tuple(spec.get("registries") or ()),
        ingress_path_prefix=(spec.get("ingress") or {}).get("pathPrefix", ""),
        sync=SyncPolicy(prune=sync.get("prune", True), mode=SyncMode(sync.get("mode", "heal"))),
        promotion=None if promotion is None else PromotionPolicy(
            from_env=promotion["from"],
            min_soak_seconds=duration_seconds(promotion["minSoak"]) if "minSoak" in promotion else 0.0,
            require_approval=approval[0], approvers=approval[1], distinct_from_promoter=approval[2],
        ),
        notifications=tuple(
            Notification(url=n["url"], format=n.get("format", "generic"), events=tuple(n.get("events") or ()),
                         secret_name=n.get("secretName"))
            for n in spec.get("notifications") or ()
        ),
        commit_status=tuple(
            CommitStatusTarget(provider=c["provider"], repository=c["repository"], api_url=c.get("url", ""),
                               token_secret=c["token"].get("secretRef"),
                               context=c.get("context", ""), target_url=c.get("targetUrl", ""))
            for c in spec.get("commitStatus") or ()
        ),
        source=source,
    )


def to_application(data: dict[str, Any], *, env: str, source: str) -> Application:
    spec = data["spec"]
    return Application(
        name=data["metadata"]["name"],
        env=env,
        labels=dict(data["metadata"].get("labels") or {}),
        components=tuple(_component(c) for c in spec["components"]),
        links=tuple(
            Link(from_component=link["from"], to_component=link["to"], interface=link["interface"])
            for link in spec.get("links") or ()
        ),
        rollout=to_rollout(spec.get("rollout")),
        source=source,
    )


def _component(data: dict[str, Any]) -> Component:
    limits = data.get("limits") or {}
    grants = data.get("grants") or {}
    return Component(
        name=data["name"],
        image=data["image"],
        config={k: _config_value(v) for k, v in (data.get("config") or {}).items()},
        placement=_placement(data.get("placement")),
        limits=Limits(
            memory_bytes=memory_bytes(limits["memory"]) if "memory" in limits else None,
            fuel=limits.get("fuel"),
            timeout_ms=round(duration_seconds(limits["timeout"]) * 1000) if "timeout" in limits else None,
            max_concurrency=limits.get("maxConcurrency"),
        ),
        capabilities=tuple(data.get("capabilities") or ()),
        expose=data.get("expose"),
        scale=_scale(data.get("scale")),
        grants=Grants(outbound_hosts=tuple(grants.get("outboundHosts") or ()), sockets=grants.get("sockets", False)),
    )


def _config_value(value: str | dict[str, str]) -> str | SecretRef:
    if not isinstance(value, dict):
        return value
    if "age" in value:
        return SecretRef.from_age(value["age"])
    return SecretRef(name=value["secretRef"])


def _scale(data: dict[str, Any] | None) -> Scale | None:
    if data is None:
        return None
    idle = duration_seconds(data["idleTimeout"]) if "idleTimeout" in data else DEFAULT_IDLE_TIMEOUT_S
    return Scale(min_replicas=data.get("minReplicas", 0), idle_timeout_s=idle)


def _placement(data: dict[str, Any] | None) -> Spread | Daemon:
    if not data:
        return Spread(replicas=1)
    if "daemon" in data:
        daemon = data["daemon"]
        return Daemon(per_host=daemon.get("perHost", 1), labels=dict(daemon.get("labels") or {}))
    spread = data["spread"]
    return Spread(
        replicas=spread["replicas"],
        requirements=tuple(
            SpreadRequirement(labels=dict(r["labels"] or {}), weight=r.get("weight", 1))
            for r in spread.get("requirements") or ()
        ),
    )
