"""What applying a manifests tree would change, host by host: instances to start, stop and update.

Runs the real planner over the reconciler's current inputs (hosts and the desired state last
published to each, from ``GET /api/v1/plan-inputs``) and compares the result with what is
published now. No I/O here: tag resolution is passed in.

    result = diff_tree(tree=tree, inputs=client.get("/api/v1/plan-inputs"),
                       resolve=lambda images: tags.resolve(images, registry_url=url), env="prod")
    result.changes   # [InstanceChange(action="update", host="aws-1", id="prod/hello/web/0", ...)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from model.types import ManifestTree, SecretRef
from reconciler.planner.placement import HostInfo, Unplaced, plan
from wire.control import InstanceSpec

Resolver = Callable[[Iterable[str]], Mapping[str, str]]

START, STOP, UPDATE = "start", "stop", "update"


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceChange:
    action: str  # "start" | "stop" | "update"
    host: str
    id: str
    env: str
    app: str
    component: str
    old_digest: str = ""
    new_digest: str = ""
    image: str = ""  # the pinned image that will run (start/update) or ran (stop)
    details: tuple[str, ...] = ()  # for updates: what changes, e.g. "config GREETING: 'hi' -> 'hello'"

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "host": self.host,
            "id": self.id,
            "env": self.env,
            "app": self.app,
            "component": self.component,
            "oldDigest": self.old_digest or None,
            "newDigest": self.new_digest or None,
            "image": self.image,
            "details": list(self.details),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DiffResult:
    revision: str | None  # what was diffed (None for a working tree)
    applied_revision: str | None  # what the reconciler runs now
    changes: tuple[InstanceChange, ...]
    unplaced: tuple[Unplaced, ...] = ()

    def counts(self) -> dict[str, int]:
        out = {START: 0, UPDATE: 0, STOP: 0}
        for c in self.changes:
            out[c.action] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "appliedRevision": self.applied_revision,
            "counts": self.counts(),
            "changes": [c.to_json() for c in self.changes],
            "unplaced": [u.to_json() for u in self.unplaced],
        }


def images_of(tree: ManifestTree) -> list[str]:
    return sorted(
        {c.image for apps in tree.applications.values() for a in apps.values() for c in a.components}
    )


def diff_tree(
    *,
    tree: ManifestTree,
    inputs: Mapping[str, Any],
    resolve: Resolver,
    env: str | None = None,
) -> DiffResult:
    """Plan ``tree`` on the reconciler's hosts and compare with what each host has now."""
    hosts = [
        HostInfo(
            name=str(h["name"]),
            labels=dict(h.get("labels") or {}),
            max_instances=int(h.get("maxInstances") or 1_000_000),
            state=str(h.get("state") or "Ready"),
            ingress_url=h.get("ingressUrl"),
            environments=frozenset(h["environments"]) if h.get("environments") is not None else None,  # enrollment
        )
        for h in inputs.get("hosts") or ()
    ]
    published: dict[str, tuple[InstanceSpec, ...]] = {
        name: tuple(InstanceSpec.from_json(i) for i in (doc or {}).get("instances") or ())
        for name, doc in (inputs.get("published") or {}).items()
    }
    digests = dict(resolve(images_of(tree)))
    registry = str(inputs.get("registry") or "")
    secrets = {str(k): str(v) for k, v in (inputs.get("secrets") or {}).items()}  # name -> fingerprint
    # an age value the reconciler has not decrypted yet (a new ciphertext; only it holds the key): a
    # fingerprint that says so, so the component shows as changing rather than unplaced
    for apps in tree.applications.values():
        for app in apps.values():
            for comp in app.components:
                for ref in comp.config.values():
                    if isinstance(ref, SecretRef) and ref.age is not None:
                        secrets.setdefault(ref.name, f"secret:{ref.name}:sha256:(new, encrypted)")
    result = plan(tree=tree, digests=digests, hosts=hosts, previous=published, registry=registry, secrets=secrets)
    changes = compare(before=published, after=result.desired, env=env)
    unplaced = tuple(u for u in result.unplaced if env is None or u.env == env)
    return DiffResult(
        revision=tree.revision,
        applied_revision=inputs.get("revision"),
        changes=tuple(changes),
        unplaced=unplaced,
    )


def compare(
    *,
    before: Mapping[str, Sequence[InstanceSpec]],
    after: Mapping[str, Sequence[InstanceSpec]],
    env: str | None = None,
) -> list[InstanceChange]:
    """Start/stop/update per host, sorted by host then instance id."""
    changes: list[InstanceChange] = []
    for host in sorted(set(before) | set(after)):
        old = {s.id: s for s in before.get(host, ()) if env is None or s.env == env}
        new = {s.id: s for s in after.get(host, ()) if env is None or s.env == env}
        for inst_id in sorted(set(old) | set(new)):
            o, n = old.get(inst_id), new.get(inst_id)
            if o is None and n is not None:
                changes.append(_change(START, host, n, new_digest=n.digest, image=n.image))
            elif n is None and o is not None:
                changes.append(_change(STOP, host, o, old_digest=o.digest, image=o.image))
            elif o is not None and n is not None:
                details = what_changed(o, n)
                if details:
                    changes.append(
                        _change(
                            UPDATE,
                            host,
                            n,
                            old_digest=o.digest,
                            new_digest=n.digest,
                            image=n.image,
                            details=details,
                        )
                    )
    return changes


def _change(action: str, host: str, spec: InstanceSpec, **kw: Any) -> InstanceChange:
    return InstanceChange(
        action=action, host=host, id=spec.id, env=spec.env, app=spec.app, component=spec.component, **kw
    )


def what_changed(old: InstanceSpec, new: InstanceSpec) -> tuple[str, ...]:
    out: list[str] = []
    if old.digest != new.digest:
        out.append(f"digest {_short(old.digest)} -> {_short(new.digest)}")
    elif old.image != new.image:
        out.append(f"image {old.image} -> {new.image}")
    for key in sorted(set(old.config) | set(new.config)):
        a, b = old.config.get(key), new.config.get(key)
        if a != b:
            out.append(f"config {key}: {_quoted(a)} -> {_quoted(b)}")
    if old.limits != new.limits:
        out.append(f"limits {old.limits.to_json()} -> {new.limits.to_json()}")
    if old.route != new.route:
        out.append(f"route {old.route or '-'} -> {new.route or '-'}")
    if tuple(old.capabilities) != tuple(new.capabilities):
        out.append(f"capabilities {list(old.capabilities)} -> {list(new.capabilities)}")
    if old.links != new.links:
        out.append(f"links {[x.to_json() for x in old.links]} -> {[x.to_json() for x in new.links]}")
    return tuple(out)


def _quoted(value: str | None) -> str:
    return "(unset)" if value is None else repr(value)


def _short(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest
