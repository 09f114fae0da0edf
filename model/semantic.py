"""Checks beyond the schema: names, links, placement, images, promotion, routes.

Input is every schema-valid object with the document it came from (for positions); output is
Problems. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from model.rollout import check_rollout
from model.schema_check import did_you_mean
from model.types import Application, Component, Daemon, Environment, Problem, Spread
from model.yamldoc import Document, PathKey
from shared.interfaces import WASI_HTTP_HANDLER, unversioned
from shared.reference import ReferenceError, parse

WASM_PAGE = 64 * 1024
MAX_WASM32_MEMORY = 4 * 1024**3


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvRecord:
    env: Environment
    doc: Document
    folder: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AppRecord:
    app: Application
    doc: Document
    component_paths: tuple[PathKey, ...]  # spec.components[i] of each component, in order


def compatible(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """True when one host could carry both label sets (no key with two different values)."""
    return all(b[k] == v for k, v in a.items() if k in b)


def check_environments(envs: Iterable[EnvRecord], *, folders: Iterable[str] = ()) -> list[Problem]:
    """``folders``: every environment folder, also those whose environment.yaml is invalid (their own
    error rejects them; an environment promoting from one is not rejected for it)."""
    records = list(envs)
    broken = set(folders) - {r.folder for r in records}
    problems: list[Problem] = []
    by_name = {r.env.name: r for r in records}
    for r in records:
        if r.env.name != r.folder:
            problems.append(r.doc.problem(
                ("metadata", "name"),
                f"environment name '{r.env.name}' differs from its folder '{r.folder}': rename one so they match",
                code="name-mismatch"))
        promotion = r.env.promotion
        if promotion is None:
            continue
        where = ("spec", "promotion", "from")
        if promotion.from_env == r.env.name:
            problems.append(r.doc.problem(where, f"environment '{r.env.name}' promotes from itself: "
                                                 "name the environment before it (e.g. staging for prod)",
                                          code="promotion-self"))
        elif promotion.from_env not in by_name and promotion.from_env not in broken:
            problems.append(r.doc.problem(where, f"promotion source '{promotion.from_env}' is not an environment "
                                                 f"of this tree{did_you_mean(promotion.from_env, by_name)}; "
                                                 f"known: {', '.join(sorted(by_name)) or 'none'}",
                                          code="promotion-unknown"))
    problems.extend(_promotion_cycles(by_name))
    return problems


def _promotion_cycles(by_name: dict[str, EnvRecord]) -> list[Problem]:
    problems: list[Problem] = []
    reported: set[str] = set()
    for start in sorted(by_name):
        chain = [start]
        current = by_name[start].env.promotion
        while current is not None and current.from_env in by_name and current.from_env != chain[-1]:
            nxt = current.from_env
            if nxt in chain:
                cycle = chain[chain.index(nxt):]
                if nxt == start and not reported.intersection(cycle):
                    reported.update(cycle)
                    text = " <- ".join([*cycle, nxt])
                    for name in cycle:
                        problems.append(by_name[name].doc.problem(
                            ("spec", "promotion", "from"),
                            f"promotion cycle {text}: promotions must flow one way (e.g. dev -> staging -> prod); "
                            f"remove 'promotion' from the first environment",
                            code="promotion-cycle"))
                break
            chain.append(nxt)
            current = by_name[nxt].env.promotion
    return problems


def check_routes(envs: Mapping[str, Environment], apps: Mapping[str, list[AppRecord]]) -> list[Problem]:
    """Two components claiming the same route (pathPrefix + expose) on hosts they could share."""
    problems: list[Problem] = []
    claimed: list[tuple[str, str, AppRecord, str]] = []  # (route, env, record, "app/component")
    for env_name in sorted(apps):
        env = envs.get(env_name)
        prefix = env.ingress_path_prefix if env else ""
        for record in apps[env_name]:
            for component, path in zip(record.app.components, record.component_paths, strict=True):
                if component.expose is None:
                    continue
                route = (prefix + component.expose).rstrip("/") or "/"
                who = f"{record.app.name}/{component.name}"
                clash = next((c for c in claimed if c[0] == route and _may_share_hosts(envs, c[1], env_name)), None)
                if clash is not None:
                    where = f"{clash[3]} in environment '{clash[1]}'" if clash[1] != env_name else clash[3]
                    problems.append(record.doc.problem(
                        (*path, "expose"),
                        f"route {route} is already served by {where} ({clash[2].doc.file}); each component needs "
                        "its own expose path (or the environments distinct ingress.pathPrefix values)",
                        code="route-collision"))
                else:
                    claimed.append((route, env_name, record, who))
    return problems


def _may_share_hosts(envs: Mapping[str, Environment], a: str, b: str) -> bool:
    if a == b:
        return True
    env_a, env_b = envs.get(a), envs.get(b)
    if env_a is None or env_b is None:
        return False
    return compatible(env_a.host_selector.match_labels, env_b.host_selector.match_labels)


RESERVED_PATH = ".driftless"  # the host ingress's own paths (/.driftless/links/...)


def check_applications(env: Environment | None, apps: list[AppRecord]) -> list[Problem]:
    """Problems of the applications of one environment (``env`` None when its environment.yaml is bad)."""
    problems: list[Problem] = []
    seen_apps: dict[str, AppRecord] = {}
    for record in apps:
        app = record.app
        first = seen_apps.get(app.name)
        if first is not None:
            problems.append(record.doc.problem(
                ("metadata", "name"),
                f"application '{app.name}' is already defined in {first.doc.file}:{first.doc.start[0]}; "
                "application names must be unique within an environment", code="duplicate-name"))
        else:
            seen_apps[app.name] = record
        problems.extend(_check_components(env, record))
        problems.extend(_check_links(record))
        problems.extend(check_rollout(app, record.doc))
    return problems


def _check_components(env: Environment | None, record: AppRecord) -> list[Problem]:
    problems: list[Problem] = []
    doc = record.doc
    seen: dict[str, PathKey] = {}
    for component, path in zip(record.app.components, record.component_paths, strict=True):
        if component.name in seen:
            problems.append(doc.problem((*path, "name"), f"component '{component.name}' appears twice in "
                                                         f"application '{record.app.name}'; rename one",
                                        code="duplicate-name"))
        seen.setdefault(component.name, path)
        problems.extend(_check_image(env, doc, component.image, (*path, "image")))
        problems.extend(_check_placement(env, doc, component, (*path, "placement")))
        problems.extend(_check_limits(doc, component, (*path, "limits")))
        problems.extend(_check_scale(record, component, path))
        if component.expose is not None and component.expose.split("/")[1:2] == [RESERVED_PATH]:
            problems.append(doc.problem((*path, "expose"), f"expose paths under /{RESERVED_PATH} are the host's own "
                                                           "(links); choose another path", code="reserved-path"))
        for i, capability in enumerate(component.capabilities):
            if not capability.startswith("wasi:"):
                problems.append(doc.problem(
                    (*path, "capabilities", i),
                    f"capability '{capability}' is not a WASI interface: capabilities grant WASI imports; "
                    "other imports are satisfied by links", code="not-wasi", level="warning"))
    return problems


def _check_scale(record: AppRecord, component: Component, path: PathKey) -> list[Problem]:
    scale, doc = component.scale, record.doc
    if scale is None:
        return []
    problems: list[Problem] = []
    replicas = component.placement.replicas if isinstance(component.placement, Spread) else None
    if replicas is not None and scale.min_replicas > replicas:
        problems.append(doc.problem((*path, "scale", "minReplicas"),
                                    f"minReplicas {scale.min_replicas} is above replicas {replicas}: every instance "
                                    "always runs, so nothing scales to zero", code="invalid-value", level="warning"))
    linked = any(link.to_component == component.name and unversioned(link.interface) == WASI_HTTP_HANDLER
                 for link in record.app.links)
    if scale.min_replicas == 0 and component.expose is None and not linked:
        problems.append(doc.problem((*path, "scale"),
                                    f"component '{component.name}' may idle at zero but nothing can wake it: a "
                                    "request to its expose path or an HTTP link (interface "
                                    f"{WASI_HTTP_HANDLER}) starts it; add one, or minReplicas: 1",
                                    code="unreachable-idle"))
    if scale.idle_timeout_s < 1:
        problems.append(doc.problem((*path, "scale", "idleTimeout"), "idleTimeout is under 1s: instances would stop "
                                                                     "between requests; use e.g. 30s",
                                    code="invalid-value"))
    return problems


def check_raw_images(env: Environment | None, doc: Document) -> list[Problem]:
    """Image problems of an Application the schema refused, so one run still shows them all."""
    spec = doc.data.get("spec") if isinstance(doc.data, dict) else None
    components = spec.get("components") if isinstance(spec, dict) else None
    if not isinstance(components, list):
        return []
    problems: list[Problem] = []
    for i, component in enumerate(components):
        image = component.get("image") if isinstance(component, dict) else None
        if isinstance(image, str) and image:
            problems.extend(_check_image(env, doc, image, ("spec", "components", i, "image")))
    return problems


def _check_image(env: Environment | None, doc: Document, image: str, path: PathKey) -> list[Problem]:
    try:
        ref = parse(image)
    except ReferenceError as exc:
        return [doc.problem(path, f"invalid image reference: {exc}", code="bad-image")]
    if ref.digest is None and (ref.tag is None or ref.tag == "latest"):
        what = "':latest'" if ref.tag else "no tag"
        return [doc.problem(path, f"image '{image}' has {what}: pin a version tag or an @sha256 digest "
                                  f"(e.g. {ref.repository}:1.0.0) so every host runs the same build",
                            code="unpinned-image")]
    if ref.registry is not None and env is not None and ref.registry not in env.registries:
        allowed = ", ".join(env.registries) or "none"
        return [doc.problem(path, f"registry '{ref.registry}' is not allowed in environment '{env.name}' "
                                  f"(allowed: {allowed}); add it to spec.registries of {env.source or 'the environment'}"
                                  " or use a short reference such as "
                                  f"{ref.repository}:{ref.tag or '1.0.0'} for the platform registry",
                            code="disallowed-registry")]
    return []


def _check_placement(env: Environment | None, doc: Document, component: Component, path: PathKey) -> list[Problem]:
    problems: list[Problem] = []
    selector = env.host_selector.match_labels if env else {}
    placement = component.placement
    if isinstance(placement, Daemon):
        if not compatible(placement.labels, selector):
            problems.append(doc.problem((*path, "daemon", "labels"), _selector_conflict(env), code="unreachable-labels",
                                        level="warning"))
        return problems
    assert isinstance(placement, Spread)
    spread_path = (*path, "spread")
    if placement.replicas == 0:
        problems.append(doc.problem((*spread_path, "replicas"),
                                    f"replicas is 0: component '{component.name}' will not run anywhere",
                                    code="zero-replicas", level="warning"))
    requirements = placement.requirements
    if requirements and placement.replicas > 0 and all(r.weight == 0 for r in requirements):
        problems.append(doc.problem((*spread_path, "requirements"),
                                    "every spread requirement has weight 0, so no group can receive the replicas: "
                                    "give at least one a positive weight", code="zero-weights"))
    for i, req in enumerate(requirements):
        req_path = (*spread_path, "requirements", i)
        for j in range(i):
            if compatible(requirements[j].labels, req.labels):
                problems.append(doc.problem(
                    (*req_path, "labels"),
                    f"spread requirements {j} ({_labels(requirements[j].labels)}) and {i} ({_labels(req.labels)}) "
                    "overlap: one host could satisfy both, so the split is ambiguous; give each group a label "
                    "value the other excludes (e.g. cloud: aws and cloud: gcp)", code="overlapping-requirements"))
                break
        if not compatible(req.labels, selector):
            problems.append(doc.problem((*req_path, "labels"), _selector_conflict(env), code="unreachable-labels",
                                        level="warning"))
    return problems


def _selector_conflict(env: Environment | None) -> str:
    selector = _labels(env.host_selector.match_labels) if env else ""
    return (f"these labels contradict the hostSelector of environment '{env.name if env else '?'}' ({selector}): "
            "no host of the environment can match them")


def _labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "any host"


def _check_limits(doc: Document, component: Component, path: PathKey) -> list[Problem]:
    problems: list[Problem] = []
    limits = component.limits
    if limits.memory_bytes is not None and limits.memory_bytes < WASM_PAGE:
        problems.append(doc.problem((*path, "memory"), "memory is below one Wasm page (64Ki): the component could not "
                                                       "even start; use at least 64Ki", code="invalid-value"))
    if limits.memory_bytes is not None and limits.memory_bytes > MAX_WASM32_MEMORY:
        problems.append(doc.problem((*path, "memory"), "memory is above 4Gi, the most a 32-bit Wasm memory can "
                                                       "address: use at most 4Gi", code="invalid-value"))
    if limits.timeout_ms is not None and limits.timeout_ms == 0:
        problems.append(doc.problem((*path, "timeout"), "timeout is under 1ms: every call would fail; use e.g. 500ms",
                                    code="invalid-value"))
    return problems


def _check_links(record: AppRecord) -> list[Problem]:
    problems: list[Problem] = []
    app, doc = record.app, record.doc
    names = list(dict.fromkeys(c.name for c in app.components))
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    for i, link in enumerate(app.links):
        path: PathKey = ("spec", "links", i)
        for side, name in (("from", link.from_component), ("to", link.to_component)):
            if name not in names:
                problems.append(doc.problem((*path, side), f"link {side} '{name}': application '{app.name}' has no such "
                                                           f"component{did_you_mean(name, names)}; "
                                                           f"components: {', '.join(names)}",
                                            code="unknown-component"))
        if link.from_component == link.to_component:
            problems.append(doc.problem(path, f"link from '{link.from_component}' to itself: a component cannot "
                                              "satisfy its own import", code="self-link"))
        # a component imports a typed interface from one component; it may call many over HTTP
        http = unversioned(link.interface) == WASI_HTTP_HANDLER
        key = (link.from_component, link.interface + (f"->{link.to_component}" if http else ""))
        if key in seen:
            j, target = seen[key]
            if target == link.to_component:
                problems.append(doc.problem(path, f"link {i} repeats link {j}", code="duplicate-link", level="warning"))
            else:
                problems.append(doc.problem(path, f"'{link.from_component}' imports {link.interface} from both "
                                                  f"'{target}' (link {j}) and '{link.to_component}' (link {i}): "
                                                  "an import is wired to one component; remove one link",
                                            code="ambiguous-link"))
        else:
            seen[key] = (i, link.to_component)
    return problems
