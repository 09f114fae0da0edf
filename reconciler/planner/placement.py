"""The planner: which component instances run on which host. Pure functions, no I/O.

    result = plan(tree=tree, digests=digests, hosts=hosts, previous=previous, registry="127.0.0.1:5000")
    result.desired["aws-1"]   # tuple[InstanceSpec, ...] sorted by id: the host's whole desired set
    result.unplaced           # replicas that found no host (no matching host, or all full)

Rules (wadm style):
- a host belongs to an environment when it is Ready, matches the environment's ``hostSelector`` and
  its enrollment allows the environment (``HostInfo.environments``: a host not enrolled for prod never
  gets a prod instance, whatever labels it carries);
  Lost hosts get nothing (an empty set), so their instances are placed elsewhere;
- ``spread``: ``replicas`` split over requirement groups by weight (largest remainder), then across
  the hosts of each group, least loaded first (and not twice on one host while another has room);
- ``daemon``: ``perHost`` instances on every host of the environment that carries its labels;
- every host's ``capacity.maxInstances`` is respected;
- assignments are stable: an instance that still fits where it runs stays there, with the same id,
  whatever else changed (a new digest keeps the id, so the host updates it in place);
- link targets are co-placed: a host running a link's source also runs its target;
- route = environment ingress ``pathPrefix`` + component ``expose``.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter

from model.types import Application, Component, Daemon, Environment, ManifestTree, SecretRef, Spread
from reconciler.planner.instance_specs import Shared, component_fields, stamp, stamps
from shared.interfaces import WASI_HTTP_HANDLER, unversioned
from shared.reference import ReferenceError, parse
from wire.control import InstanceGrants, InstanceLimits, InstanceLink, InstanceSpec, SignatureRequirement

READY = "Ready"
LOST = "Lost"


@dataclass(frozen=True, slots=True, kw_only=True)
class HostInfo:
    """What the planner needs to know of a host."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    max_instances: int = 1_000_000
    state: str = READY  # "Ready" | "Lost"
    ingress_url: str | None = None  # where the host serves routes and HTTP links
    environments: frozenset[str] | None = None  # the environments its enrollment allows; None: every one

    def may_serve(self, env: str) -> bool:
        return self.environments is None or env in self.environments


@dataclass(frozen=True, slots=True, kw_only=True)
class Unplaced:
    """Replicas of a component the planner could not place, and why."""

    env: str
    app: str
    component: str
    missing: int
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"env": self.env, "app": self.app, "component": self.component, "missing": self.missing, "reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    desired: dict[str, tuple[InstanceSpec, ...]]  # every known host (Lost ones map to ())
    unplaced: tuple[Unplaced, ...] = ()

    def instances(self) -> Iterable[tuple[str, InstanceSpec]]:
        for host, specs in self.desired.items():
            for spec in specs:
                yield host, spec


def instance_id(env: str, app: str, component: str, ordinal: str | int) -> str:
    return f"{env}/{app}/{component}/{ordinal}"


def pinned_image(image: str, *, digest: str, registry: str) -> str:
    """``demo/hello:1.0.0`` + digest -> ``127.0.0.1:5000/demo/hello@sha256:...``."""
    return str(parse(image).with_registry(registry).pinned(digest))


def route_for(env: Environment, component: Component) -> str | None:
    if not component.expose:
        return None
    prefix = env.ingress_path_prefix.rstrip("/")
    expose = component.expose if component.expose.startswith("/") else "/" + component.expose
    return (prefix + expose) if prefix else expose


def split_by_weight(total: int, weights: Sequence[int]) -> list[int]:
    """Largest remainder: ``total`` split proportionally to ``weights`` (ties go to the earlier group)."""
    if not weights:
        return []
    clean = [max(0, w) for w in weights]
    whole = sum(clean)
    if whole == 0:
        clean, whole = [1] * len(weights), len(weights)
    exact = [total * w / whole for w in clean]
    counts = [int(x) for x in exact]
    rest = total - sum(counts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return counts


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True, slots=True, eq=False)
class _Group:
    """Ready hosts of an environment that carry some labels (built once per distinct selector)."""

    key: tuple[str, tuple[tuple[str, str], ...]]
    hosts: tuple[str, ...]
    members: frozenset[str]


class _Load:
    """Instances per host during planning, and a least-loaded heap per host group.

    A heap entry is one int, ``load * width + rank`` (rank: the host's place in name order), not a
    ``(load, name)`` tuple: the same order (least loaded, ties by name), the same heaps, and the ~20
    comparisons of each of the 100,000 heap operations of a first plan at 10,000 hosts compare ints."""

    def __init__(self, hosts: Mapping[str, HostInfo]) -> None:
        self.hosts = hosts
        self.count: dict[str, int] = defaultdict(int)
        self.heaps: dict[tuple[str, tuple[tuple[str, str], ...]], list[int]] = {}
        self.names = list(hosts)  # by rank: ``hosts`` is in name order
        self.rank = {name: i for i, name in enumerate(self.names)}
        self.width = len(self.names) or 1
        self.capacity = [h.max_instances for h in hosts.values()]

    def room(self, host: str) -> bool:
        return self.count[host] < self.hosts[host].max_instances

    def add(self, host: str) -> None:
        self.count[host] += 1

    def take(self, group: _Group, avoid: set[str], n: int) -> list[str]:
        """Up to ``n`` hosts of ``group`` with room, one at a time each the least loaded (ties by
        name), preferring hosts not in ``avoid``; each gets one more instance and joins ``avoid``.
        Each host of the group has exactly one heap entry; one whose load is lower than the host's
        count (it got busier through another group) is corrected when met."""
        heap = self.heaps.get(group.key)
        count, names, capacity, width = self.count, self.names, self.capacity, self.width
        if heap is None:
            rank = self.rank
            heap = [count[h] * width + rank[h] for h in group.hosts]
            heapq.heapify(heap)
            self.heaps[group.key] = heap
        taken: list[str] = []
        while len(taken) < n and heap:
            key = heap[0]
            load, r = divmod(key, width)
            host = names[r]
            now = count[host]
            if load != now:  # stale entry: the host got busier since
                heapq.heapreplace(heap, now * width + r)
            elif now >= capacity[r]:
                heapq.heappop(heap)  # full for the rest of this plan: drop it from the group
            elif host in avoid:  # it runs one already: the next one that does not, if any
                chosen = self._next_avoiding(heap, avoid)
                if chosen is None:
                    break
                avoid.add(chosen)
                taken.append(chosen)
            else:
                count[host] = now + 1
                heapq.heapreplace(heap, key + width)  # its entry, up to date (one more instance)
                avoid.add(host)
                taken.append(host)
        return taken

    def _next_avoiding(self, heap: list[int], avoid: set[str]) -> str | None:
        """The least loaded host with room not in ``avoid``, else the least loaded with room, which
        gets one more instance (its heap entry kept up to date); None when no host has room."""
        count, names, capacity, width = self.count, self.names, self.capacity, self.width
        skipped: list[int] = []
        chosen: str | None = None
        while heap:
            load, r = divmod(heap[0], width)
            host = names[r]
            now = count[host]
            if load != now:
                heapq.heapreplace(heap, now * width + r)
            elif now >= capacity[r]:
                heapq.heappop(heap)
            elif host in avoid:
                skipped.append(heapq.heappop(heap))
            else:
                chosen = host
                count[host] = now + 1
                heapq.heapreplace(heap, (now + 1) * width + r)
                break
        if chosen is None and skipped:
            # every host with room already runs one of this component: the least loaded of those
            load, r = divmod(skipped.pop(0), width)
            chosen = names[r]
            count[chosen] = load + 1
            heapq.heappush(heap, (load + 1) * width + r)
        for item in skipped:
            heapq.heappush(heap, item)
        return chosen


@dataclass(slots=True)
class _Want:
    """One component's placement: the groups (tuples of host names) and how many instances each gets."""

    env: Environment
    app: Application
    component: Component
    groups: list[tuple[_Group, int]]
    daemon: bool
    per_host: int = 1
    # host -> ordinals; tuples of strings, which the cyclic garbage collector stops tracking at its
    # first look (lists it would rescan in every full collection: one per placed host and component)
    placed: dict[str, tuple[str, ...]] = field(default_factory=dict)


def plan(
    *,
    tree: ManifestTree,
    digests: Mapping[str, str],
    hosts: Sequence[HostInfo],
    previous: Mapping[str, Sequence[InstanceSpec]],
    registry: str,
    secrets: Mapping[str, str] | None = None,
    signatures: Mapping[str, SignatureRequirement] | None = None,
) -> Plan:
    """Per-host desired instance sets for ``tree``.

    ``digests`` maps an image as written in Git (``demo/hello:1.0.0``) to its manifest digest;
    images pinned with ``@sha256:...`` need no entry. ``previous`` is the instance set last
    published to each host (for stable assignments). ``registry`` is the platform registry host
    (``127.0.0.1:5000``) that short references resolve against. ``secrets`` maps a secret's name
    to its fingerprint: a ``{secretRef: name}`` config value becomes that fingerprint (never a value;
    a changed value is a changed fingerprint, so a new generation) and its key is listed in
    ``InstanceSpec.secrets``; a component naming a secret not in ``secrets`` is not placed.
    ``signatures`` maps an environment to the signatures its digests need (the operator's policy):
    its instances carry it (``InstanceSpec.signature``) from the start, so the controller's signature
    policy does not copy 100,000 specs to add it (controller/signing_policy.py ``decorate``).
    """
    by_name = {h.name: h for h in sorted(hosts, key=lambda h: h.name)}
    ready = [h for h in by_name.values() if h.state == READY]
    load = _Load(by_name)
    unplaced: list[Unplaced] = []
    group_cache: dict[tuple[str, tuple[tuple[str, str], ...]], _Group] = {}

    serving: dict[str, list[HostInfo]] = {}  # env -> its Ready hosts (selector, enrollment): once per env

    def group_of(env: Environment, labels: Mapping[str, str]) -> _Group:
        items = tuple(labels.items())
        key = (env.name, items if len(items) < 2 else tuple(sorted(items)))
        found = group_cache.get(key)
        if found is None:
            of_env = serving.get(env.name)
            if of_env is None:
                of_env = serving[env.name] = [h for h in ready
                                              if env.host_selector.matches(h.labels) and h.may_serve(env.name)]
            if len(key[1]) == 1:  # one label (the usual selector): compared inline
                ((k, v),) = key[1]
                names = tuple(h.name for h in of_env if h.labels.get(k) == v)
            else:
                names = tuple(h.name for h in of_env if _matches(labels, h.labels))
            found = group_cache[key] = _Group(key=key, hosts=names, members=frozenset(names))
        return found

    # where each instance ran last time: "env/app/component" -> [host, ordinal, host, ordinal, ...]
    # (flat, and the previous specs by component then ordinal: no container per instance, which
    # keeps the cyclic garbage collector's work proportional to components and hosts, not instances;
    # an ordinal is unique within its component, and a spec names no host: an unchanged one may be
    # reused wherever its ordinal lands)
    before: dict[str, list[str]] = {}
    previous_spec: dict[str, dict[str, InstanceSpec]] = {}
    for host, specs in previous.items():
        for spec in specs:
            prefix, _, ordinal = spec.id.rpartition("/")
            pairs = before.get(prefix)
            if pairs is None:
                before[prefix] = [host, ordinal]
                previous_spec[prefix] = {ordinal: spec}
            else:
                pairs += (host, ordinal)
                previous_spec[prefix][ordinal] = spec

    wants: list[_Want] = []
    splits: dict[tuple[int, ...], list[int]] = {}
    for env_name in sorted(tree.environments):
        env = tree.environments[env_name]
        apps = tree.applications.get(env_name, {})
        for app_name in sorted(apps):
            app = apps[app_name]
            for comp in app.components:
                placement = comp.placement
                if isinstance(placement, Daemon):
                    group = group_of(env, placement.labels)
                    wants.append(_Want(env, app, comp, [(group, placement.per_host)], True, placement.per_host))
                elif isinstance(placement, Spread):
                    reqs = placement.requirements
                    if not reqs:
                        wants.append(_Want(env, app, comp, [(group_of(env, {}), placement.replicas)], False))
                    else:
                        shape = (placement.replicas, *map(_weight, reqs))  # replicas, then weights
                        counts = splits.get(shape)
                        if counts is None:  # thousands of apps share a handful of shapes
                            counts = splits[shape] = split_by_weight(placement.replicas, shape[1:])
                        groups = [(group_of(env, r.labels), n) for r, n in zip(reqs, counts, strict=True)]
                        wants.append(_Want(env, app, comp, groups, False))

    # Phase 1: keep every instance that is still valid where it runs (stability first).
    count = load.count
    capacity = {name: h.max_instances for name, h in by_name.items()}
    for want in wants:
        was = before.get(f"{want.env.name}/{want.app.name}/{want.component.name}")
        if not was:
            continue
        if want.daemon:
            members = want.groups[0][0].members
            by_host: dict[str, list[str]] = {}
            for i in range(0, len(was), 2):
                by_host.setdefault(was[i], []).append(was[i + 1])
            for host in sorted(by_host):
                if host not in members:
                    continue
                keep = sorted(o for o in by_host[host] if not o.endswith(".link"))[: want.per_host]
                for ordinal in keep:
                    if load.room(host):
                        load.add(host)
                        want.placed[host] = want.placed.get(host, ()) + (ordinal,)
            continue
        # only numbered replicas ("<host>.link" link targets are recomputed below); on scale
        # down the highest ordinals go, so scaling up and down again lands where it started
        ordinals = was[1::2]
        if all(map(str.isdigit, ordinals)):  # no link target among them (the usual case): all at C speed
            numbered = sorted(zip(map(int, ordinals), was[0::2], strict=True))
        else:
            numbered = sorted((int(was[i + 1]), was[i]) for i in range(0, len(was), 2) if was[i + 1].isdigit())
        taken: set[str] = set()
        placed = want.placed
        for group, n in want.groups:
            members = group.members
            kept = 0
            for number, host in numbered:
                if kept >= n:
                    break
                if host not in members:
                    continue
                ordinal = str(number)
                if ordinal in taken or count[host] >= capacity[host]:  # no room
                    continue
                taken.add(ordinal)
                count[host] += 1
                placed[host] = placed.get(host, ()) + (ordinal,)
                kept += 1

    # Phase 2: place what is missing, least loaded host first.
    for want in wants:
        env_name, app_name, comp_name = want.env.name, want.app.name, want.component.name
        if want.daemon:
            group = want.groups[0][0]
            full = 0
            for host in group.hosts:
                on_host = list(want.placed.get(host, ()))
                i = 0
                while len(on_host) < want.per_host:
                    ordinal = f"{host}.{i}"
                    i += 1
                    if ordinal in on_host:
                        continue
                    if not load.room(host):
                        full += want.per_host - len(on_host)
                        break
                    load.add(host)
                    on_host.append(ordinal)
                want.placed[host] = tuple(on_host)
            if full:
                unplaced.append(Unplaced(env=env_name, app=app_name, component=comp_name, missing=full, reason="hosts are full (maxInstances)"))
            continue
        used: set[str] | None = None  # the ordinals taken (made when one is needed: not on most replans)
        next_ordinal = 0
        placed = want.placed
        for group, n in want.groups:
            members = group.members
            missing = n - (sum(len(o) for h, o in placed.items() if h in members) if placed else 0)
            if missing <= 0:
                continue
            if used is None:
                used = {o for ords in placed.values() for o in ords}
            for host in load.take(group, {h for h, o in placed.items() if o}, missing):
                ordinal = str(next_ordinal)
                next_ordinal += 1
                while ordinal in used:
                    ordinal = str(next_ordinal)
                    next_ordinal += 1
                used.add(ordinal)
                placed[host] = placed.get(host, ()) + (ordinal,)
                missing -= 1
            if missing > 0:
                reason = "no Ready host matches" if not group.hosts else "matching hosts are full (maxInstances)"
                unplaced.append(Unplaced(env=env_name, app=app_name, component=comp_name, missing=missing, reason=reason))

    # Link targets on every host that runs a link source.
    by_component = {(w.env.name, w.app.name, w.component.name): w for w in wants}
    for want in wants:
        for link in want.app.links:
            if link.from_component != want.component.name or unversioned(link.interface) == WASI_HTTP_HANDLER:
                continue  # HTTP links reach their target on any host: no co-location
            target = by_component.get((want.env.name, want.app.name, link.to_component))
            if target is None:
                continue
            for host, ords in want.placed.items():
                if not ords or target.placed.get(host):
                    continue
                if not load.room(host):
                    unplaced.append(
                        Unplaced(env=want.env.name, app=want.app.name, component=link.to_component, missing=1,
                                 reason=f"host {host} runs {link.from_component} but has no room for its link target")
                    )
                    continue
                load.add(host)
                target.placed[host] = target.placed.get(host, ()) + (f"{host}.link",)

    # Build the documents.
    desired: dict[str, list[InstanceSpec]] = {name: [] for name in by_name}
    no_config: dict[str, str] = {}
    limits_of: dict[object, InstanceLimits] = {}
    grants_of: dict[object, InstanceGrants] = {}
    fingerprints = secrets or {}
    required = signatures or {}
    pinned: dict[tuple[str, str], str] = {}
    for want in wants:
        env, app, comp = want.env, want.app, want.component
        digest = _digest_of(comp.image, digests)
        if digest is None:
            _give_back(want, load, unplaced, reason=f"image {comp.image} has no resolved digest")
            continue
        try:
            image = pinned.get((comp.image, digest)) or pinned.setdefault(
                (comp.image, digest), pinned_image(comp.image, digest=digest, registry=registry))
        except ReferenceError as exc:
            unplaced.append(Unplaced(env=env.name, app=app.name, component=comp.name, missing=0, reason=str(exc)))
            continue
        lacking = comp.config and sorted({v.name for v in comp.config.values() if isinstance(v, SecretRef)}
                                         - fingerprints.keys())
        if lacking:
            _give_back(want, load, unplaced, always=True,
                       reason=f"secret(s) {', '.join(lacking)} not in the reconciler's --secrets-file")
            continue
        # a component's values, each built once per distinct value (thousands of components share a
        # handful of limits and grants; most have no config, secrets or links)
        config = ({k: fingerprints[v.name] if isinstance(v, SecretRef) else v for k, v in comp.config.items()}
                  if comp.config else no_config)
        secret_keys = tuple(sorted(k for k, v in comp.config.items() if isinstance(v, SecretRef))) if comp.config else ()
        lim = comp.limits
        limits = limits_of.get(lim)
        if limits is None:
            limits = limits_of[lim] = InstanceLimits(memory_bytes=lim.memory_bytes, fuel=lim.fuel,
                                                     timeout_ms=lim.timeout_ms, max_concurrency=lim.max_concurrency)
        grants = grants_of.get(comp.grants)
        if grants is None:
            grants = grants_of[comp.grants] = InstanceGrants(outbound_hosts=comp.grants.outbound_hosts,
                                                              sockets=comp.grants.sockets)
        links = tuple(InstanceLink(interface=lk.interface, to_component=lk.to_component,
                                   endpoints=_endpoints(by_component.get((env.name, app.name, lk.to_component)),
                                                        by_name) if unversioned(lk.interface) == WASI_HTTP_HANDLER
                                   else ())
                      for lk in app.links if lk.from_component == comp.name) if app.links else ()
        scale = comp.scale
        idle_ms = round(scale.idle_timeout_s * 1000) if scale is not None else None
        route = route_for(env, comp)
        signature = required.get(env.name)
        env_name, app_name, comp_name, caps = env.name, app.name, comp.name, comp.capabilities
        prefix = f"{env_name}/{app_name}/{comp_name}/"
        olds = previous_spec.get(prefix[:-1])  # ordinal -> the spec it had
        if olds is None and scale is None:  # all new, none may idle (a first plan): stamped host by host
            values = component_fields(env=env_name, app=app_name, component=comp_name, image=image, digest=digest,
                                      config=config, limits=limits, capabilities=caps, route=route, links=links,
                                      grants=grants, secrets=secret_keys, signature=signature)
            for host, ords in want.placed.items():
                stamps(values, prefix, ords, None, desired[host])
            continue
        shared: Shared | None = None  # the values its new instances share: made once one is needed
        ref: InstanceSpec | None = None  # an old instance found equal to this component's values
        for host, ords in want.placed.items():
            append = desired[host].append
            for ordinal in ords:
                idle_after_ms = idle_ms if scale is not None and _may_idle(ordinal, scale.min_replicas) else None
                old = olds.get(ordinal) if olds is not None else None
                # reuse an unchanged spec: cheaper than building it, and the publish step's comparison
                # of old and new documents short-circuits on identity. The old instances of a component
                # share their values' objects (stamped): one is compared (dataclass __eq__ is a Python
                # call), its siblings by identity with it.
                if old is not None and old.idle_after_ms == idle_after_ms and (
                        (ref is not None and old.digest is ref.digest and old.config is ref.config
                         and old.limits is ref.limits and old.links is ref.links and old.grants is ref.grants
                         and old.image is ref.image and old.route is ref.route and old.capabilities is ref.capabilities
                         and old.secrets is ref.secrets and old.signature is ref.signature)
                        or (old.digest == digest and old.image == image and old.route == route
                            and old.capabilities == caps and old.secrets == secret_keys
                            and (old.signature is signature or old.signature == signature)
                            and old.config == config and old.limits == limits and old.links == links
                            and old.grants == grants)):
                    ref = old
                    append(old)
                    continue
                if shared is None:
                    shared = component_fields(env=env_name, app=app_name, component=comp_name, image=image,
                                              digest=digest, config=config, limits=limits, capabilities=caps,
                                              route=route, links=links, grants=grants, secrets=secret_keys,
                                              signature=signature)
                append(stamp(shared, prefix + ordinal, idle_after_ms))

    # sync.prune false: instances of components no longer declared stay where they run (carrying
    # their environment's signature requirement as it is now, when ``signatures`` are given).
    declared = set(by_component)
    for env_name, env in tree.environments.items():
        if env.sync.prune:
            continue
        wanted = required.get(env_name)
        for host, specs in previous.items():
            if host not in desired or by_name[host].state != READY or not by_name[host].may_serve(env_name):
                continue
            for spec in specs:
                if spec.env == env_name and (spec.env, spec.app, spec.component) not in declared:
                    if signatures is not None and spec.signature is not wanted and spec.signature != wanted:
                        spec = replace(spec, signature=wanted)
                    desired[host].append(spec)
    return Plan(
        desired={h: tuple(sorted(specs, key=_by_id)) for h, specs in desired.items()},
        unplaced=tuple(unplaced),
    )


_by_id = attrgetter("id")
_weight = attrgetter("weight")


def _give_back(want: _Want, load: _Load, unplaced: list[Unplaced], *, reason: str, always: bool = False) -> None:
    """A placed component that cannot run after all: its slots go back to the hosts, and it is
    reported unplaced (when it had instances, or ``always``)."""
    n = sum(len(o) for o in want.placed.values())
    if n or always:
        unplaced.append(Unplaced(env=want.env.name, app=want.app.name, component=want.component.name, missing=n,
                                 reason=reason))
    for host, ords in want.placed.items():
        load.count[host] -= len(ords)


def _may_idle(ordinal: str, min_replicas: int) -> bool:
    """Ordinals below ``min_replicas`` always run; the rest (and co-located link targets) may idle."""
    return not ordinal.isdigit() or int(ordinal) >= min_replicas


def _endpoints(target: _Want | None, hosts: Mapping[str, HostInfo]) -> tuple[str, ...]:
    """Ingress URLs of the Ready hosts where an HTTP link's target runs (sorted: a stable document)."""
    if target is None:
        return ()
    return tuple(sorted(
        url for host, ords in target.placed.items()
        if ords and (info := hosts.get(host)) is not None and info.state == READY and (url := info.ingress_url)
    ))


def _digest_of(image: str, digests: Mapping[str, str]) -> str | None:
    if image in digests:
        return digests[image]
    if "@" in image:
        return image.split("@", 1)[1]
    return None
