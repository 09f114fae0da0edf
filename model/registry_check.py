"""Checks that need the registry: each image exists, and each component's imports and exports fit its
links, capabilities and route, using the WIT names and standard worlds the registry recorded when the
component was pushed (``GET /v2/_driftless/components/<name>/<reference>``).

Worlds (``shared.wasm.infer_worlds``): a component with ``expose`` must target an HTTP world
(``wasi:http/proxy`` or ``driftless:http``); a component must target some world or export an interface
a link can use, else nothing could ever run it.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from model.types import Application, Component, ManifestTree, Problem
from shared.errors import NotReachable
from shared.interfaces import (
    ALWAYS_ALLOWED_WASI,
    DRIFTLESS_HTTP_HANDLER,
    WASI_HTTP_HANDLER,
    WASI_HTTP_OUTGOING,
    unversioned,
)
from shared.reference import ReferenceError, parse
from shared.registry_client import Credentials, RegistryClientError, Session
from shared.wasm import HTTP_WORLDS, WASI_HTTP_PROXY, infer_worlds

HOST_PROVIDED_NAMESPACE = "driftless:http/"  # types, config, log, handler: the host supplies these to every component
TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class ComponentInfo:
    kind: str
    imports: tuple[str, ...]
    exports: tuple[str, ...]
    worlds: tuple[str, ...] = ()  # standard worlds it targets: wasi:http/proxy, wasi:cli/command, driftless:http



def interface_matches(declared: str, recorded: str) -> bool:
    """``driftless:demo/greeter`` matches ``driftless:demo/greeter@0.1.0``; a declared version matches a
    semver-compatible recorded one, as the component model links them (``wasi:http/types@0.2.0`` is
    satisfied by ``@0.2.6``: same 0.minor, or same major from 1.0, and not older)."""
    if recorded == declared:
        return True
    name, _, want = declared.partition("@")
    have_name, _, have = recorded.partition("@")
    if name != have_name:
        return False
    if not want:
        return True
    try:
        w, h = _semver(want), _semver(have)
    except ValueError:
        return False
    track = (lambda v: v[:2]) if w[0] == 0 else (lambda v: v[:1])
    return track(w) == track(h) and h >= w


def _semver(text: str) -> tuple[int, int, int]:
    core = text.split("-", 1)[0].split("+", 1)[0]
    major, minor, patch = (core.split(".") + ["0", "0"])[:3]
    return int(major), int(minor), int(patch)


class _Registry:
    def __init__(self, url: str, *, credentials: Credentials | None) -> None:
        self.url = url.rstrip("/")
        self.host = urllib.parse.urlsplit(self.url).netloc
        self.session = Session(self.url, credentials=credentials, timeout=TIMEOUT_SECONDS)
        self.down: str | None = None  # why the registry could not be reached; stop asking once it is down
        self.cache: dict[tuple[str, str], ComponentInfo | str] = {}

    def info(self, repository: str, identifier: str) -> ComponentInfo | str:
        """The recorded info, "not-found", or a sentence saying why there is none."""
        key = (repository, identifier)
        if key not in self.cache:
            self.cache[key] = self._fetch(repository, identifier)
        return self.cache[key]

    def _fetch(self, repository: str, identifier: str) -> ComponentInfo | str:
        if self.down:
            return self.down
        try:
            _, _, body = self.session.request("GET", f"/v2/_driftless/components/{repository}/{identifier}",
                                              ok=(200, 404))
        except NotReachable as exc:
            reason = str(exc).split(": ", 1)[-1]
            self.down = f"registry {self.url} is not reachable ({reason}): start it or fix --registry"
            return self.down
        except RegistryClientError as exc:
            if exc.status in (401, 403):
                self.down = f"registry {self.url} refused access ({exc.status}): {exc.hint or 'give credentials'}"
                return self.down
            return f"registry {self.url} could not describe {repository}:{identifier}: {exc}"
        try:
            data: dict[str, Any] = json.loads(body)
        except ValueError:
            return f"registry {self.url} sent a component record that is not JSON"
        if "errors" in data or "kind" not in data:
            return "not-found"  # the 404 body
        kind = str(data.get("kind", ""))
        exports = tuple(str(e) for e in data.get("exports") or ())
        worlds = data.get("worlds")
        if not isinstance(worlds, list):  # a registry from before worlds were recorded
            worlds = infer_worlds(exports) if kind == "component" else []
        return ComponentInfo(
            kind=kind,
            imports=tuple(str(i) for i in data.get("imports") or ()),
            exports=exports,
            worlds=tuple(str(w) for w in worlds),
        )


def check_registry(
    tree: ManifestTree, *, registry_url: str, credentials: Credentials | None = None
) -> list[Problem]:
    """Problems found by asking the registry at ``registry_url`` about every image of ``tree``.

    Short references and references naming this registry's host are checked; images on other
    registries get a warning that they were not checked. ``credentials`` default to
    ``DRIFTLESS_REGISTRY_USER`` / ``DRIFTLESS_REGISTRY_PASSWORD``.
    """
    registry = _Registry(registry_url, credentials=credentials)
    problems: list[Problem] = []
    for env, apps in sorted(tree.applications.items()):
        for app in apps.values():
            infos: dict[str, ComponentInfo] = {}
            for i, component in enumerate(app.components):
                info = _check_image(tree, registry, env, app, i, component, problems)
                if info is not None:
                    infos[component.name] = info
            problems.extend(_check_wiring(tree, env, app, infos))
    return problems


def _problem(tree: ManifestTree, env: str, app: Application, path: str, message: str, *, code: str,
             level: str = "error") -> Problem:
    file, line, column = tree.location(env=env, app=app.name, path=path)
    return Problem(level=level, file=file, line=line, column=column, path=path, message=message,  # type: ignore[arg-type]
                   code=code)


def _check_image(tree: ManifestTree, registry: _Registry, env: str, app: Application, index: int,
                 component: Component, problems: list[Problem]) -> ComponentInfo | None:
    path = f"spec.components[{index}].image"
    try:
        ref = parse(component.image)
    except ReferenceError:
        return None  # already reported by the loader
    if ref.registry is not None and ref.registry != registry.host:
        problems.append(_problem(tree, env, app, path, f"image {component.image} is on another registry than "
                                                       f"{registry.url}; it was not checked", code="not-checked",
                                 level="warning"))
        return None
    if registry.down:
        return None  # said once already, at the first image
    info = registry.info(ref.repository, ref.identifier)
    if info == "not-found":
        problems.append(_problem(tree, env, app, path, f"image {component.image} does not exist in {registry.url}: "
                                                       "push it (driftless push) or fix the tag",
                                 code="image-not-found"))
        return None
    if isinstance(info, str):
        problems.append(_problem(tree, env, app, path, info, code="registry-unreachable"))
        return None
    if info.kind and info.kind != "component":
        problems.append(_problem(tree, env, app, path, f"image {component.image} is a core Wasm {info.kind}, "
                                                       "not a component: build it as a component",
                                 code="not-a-component"))
        return None
    return info


def _check_wiring(tree: ManifestTree, env: str, app: Application, infos: dict[str, ComponentInfo]) -> list[Problem]:
    problems: list[Problem] = []
    for i, link in enumerate(app.links):
        path = f"spec.links[{i}].interface"
        target = infos.get(link.to_component)
        if target is not None and not any(interface_matches(link.interface, e) for e in target.exports):
            exported = ", ".join(e for e in target.exports if ":" in e) or "no interfaces"
            problems.append(_problem(tree, env, app, path, f"'{link.to_component}' does not export {link.interface} "
                                                           f"(it exports {exported})", code="interface-not-exported"))
        source = infos.get(link.from_component)
        if unversioned(link.interface) == WASI_HTTP_HANDLER:
            # an HTTP link: the caller sends requests (wasi:http/outgoing-handler) to <TO>_URL
            if source is not None and not any(unversioned(m) == WASI_HTTP_OUTGOING for m in source.imports):
                problems.append(_problem(tree, env, app, path, f"'{link.from_component}' cannot send HTTP requests "
                                                               f"(it does not import {WASI_HTTP_OUTGOING}): the HTTP link "
                                                               "would be unused", code="interface-not-imported"))
        elif source is not None and not any(interface_matches(link.interface, m) for m in source.imports):
            imported = ", ".join(m for m in source.imports if ":" in m) or "no interfaces"
            problems.append(_problem(tree, env, app, path, f"'{link.from_component}' does not import {link.interface} "
                                                           f"(it imports {imported}): the link would be unused",
                                     code="interface-not-imported"))
    for index, component in enumerate(app.components):
        info = infos.get(component.name)
        if info is None:
            continue
        base = f"spec.components[{index}]"
        linked = [link.interface for link in app.links if link.from_component == component.name]
        for name in info.imports:
            if name.startswith(HOST_PROVIDED_NAMESPACE) or ":" not in name:
                continue
            if name.startswith("wasi:"):
                if WASI_HTTP_PROXY in info.worlds:
                    # capabilities govern the in-process world only; a wasi:http/proxy component is served by a
                    # wasmtime-serve runtime that provides its WASI imports (what it may reach: `grants`)
                    continue
                if not component.capabilities:
                    continue  # grants, not import lists: WASI imports are linked (strict only with capabilities)
                granted = {unversioned(c) for c in component.capabilities} | ALWAYS_ALLOWED_WASI
                if unversioned(name) not in granted:
                    problems.append(_problem(
                        tree, env, app, f"{base}.capabilities",
                        f"'{component.name}' imports {name}, which its capabilities do not grant: the host will "
                        f"refuse to start it; add {name.split('@', 1)[0]} to capabilities", code="missing-capability"))
            elif not any(interface_matches(i, name) for i in linked):
                problems.append(_problem(
                    tree, env, app, base,
                    f"'{component.name}' imports {name}, but no link provides it: add a link from "
                    f"'{component.name}' to a component exporting it", code="unlinked-import"))
        if component.expose is not None and not HTTP_WORLDS.intersection(info.worlds):
            problems.append(_problem(tree, env, app, f"{base}.expose",
                                     f"'{component.name}' exposes {component.expose} but targets no HTTP world: it "
                                     f"exports neither wasi:http/incoming-handler@0.2.x (world wasi:http/proxy) nor "
                                     f"{DRIFTLESS_HTTP_HANDLER} (world driftless:http), so it cannot serve HTTP "
                                     f"(it exports {_listed(info.exports)})", code="not-http-handler"))
        elif not info.worlds and not any(_is_interface(e) for e in info.exports):
            problems.append(_problem(tree, env, app, f"{base}.image",
                                     f"'{component.name}' ({component.image}) exports no HTTP handler "
                                     f"(wasi:http/incoming-handler or {DRIFTLESS_HTTP_HANDLER}), no wasi:cli/run and no interface "
                                     f"a link could use (it exports {_listed(info.exports)}): nothing could run it; "
                                     "build it for the wasi:http/proxy, wasi:cli/command or driftless:http world, or "
                                     "export a WIT interface", code="nothing-to-run"))
    return problems


def _is_interface(name: str) -> bool:
    """``ns:pkg/iface[@ver]``: a name a link can use (not a plain function or unnamed instance)."""
    return ":" in name and "/" in name


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names) if names else "nothing"
