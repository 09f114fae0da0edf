"""The host's instance set and its convergence: make what runs equal to the desired state.

Runs on the agent's asyncio loop; pulling, compiling and instantiating happen in worker threads.
Level-triggered: ``apply`` takes a whole HostDesiredState and converges to it idempotently
(unchanged instances are kept, changed ones replaced rolling - the new one serves before the old
one drains - and the rest removed). Out-of-band changes (admin API) stay until the next
generation arrives.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from host.access_check import AccessProofs
from host.cache import Artifact
from host.component_info import ComponentInfoStore
from host.compose import ADAPTER_ID, imports_config_store, with_config_from_env
from host.errors import DigestMismatch, HostError, Incompatible, PullError
from host.outbound import OutboundPolicy, imports_outgoing_handler, with_policy
from host.puller import RegistryAccess, pull_component
from host.runtime import ComponentInstance, RuntimeDefaults
from host.served import ServedInstance, ServeRuntime
from host.signature_check import SignatureRefused, check_signature
from host.tiers import FAST_COMPILER, ServedBuild, TierPolicy
from host.traffic import Traffic
from host.wasm_engine import WasmEngine
from host.wasmtime_cli import EngineFlags, ServeCaches
from shared.interfaces import DRIFTLESS_HTTP_HANDLER, WASI_CONFIG_STORE, WASI_HTTP_HANDLER, unversioned
from shared.retry import Backoff
from shared.wasm import WasmInfo, wasm_tools_path
from wire.control import (
    BACKOFF,
    COMPLETED,
    FAILED,
    IDLE,
    RUNNING,
    STARTING,
    STOPPING,
    HostDesiredState,
    InstanceSpec,
    InstanceStatus,
)

log = logging.getLogger("driftless.host")

RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


def fingerprint(spec: InstanceSpec) -> Any:
    """What makes two specs run the same instance (a difference means a replacement). Where an
    HTTP link's target runs is not part of it: callers follow a moved target without a restart."""
    links = tuple((link.interface, link.to_component) for link in spec.links)
    return (spec.image, spec.digest, tuple(sorted(spec.config.items())), spec.limits, spec.capabilities,
            spec.route, links, spec.grants, spec.idle_after_ms, spec.env, spec.app, spec.component,
            spec.signature)  # fmt: skip


class Instance(Protocol):
    """What the supervisor, the ingress and the admin API use of a running instance, whichever
    runtime runs it: in-process (:class:`ComponentInstance`) or a ``wasmtime serve`` process
    (:class:`ServedInstance`)."""

    spec: InstanceSpec
    tag: str
    managed: bool
    restarts: int
    last_error: str | None
    started_at: float
    draining: bool
    handler_export: str | None
    run_export: str | None
    runtime: str
    warnings: tuple[str, ...]

    @property
    def inflight(self) -> int: ...
    @property
    def in_backoff(self) -> bool: ...
    def close(self) -> None: ...
    def wait_idle(self, timeout: float) -> bool: ...


@dataclass(eq=False)
class Entry:
    spec: InstanceSpec  # what this id should run
    managed: bool
    state: str = STARTING
    error: str | None = None
    instance: Instance | None = None  # what serves now (may still be the previous spec)
    restarts: int = 0  # traps of earlier instances of this id
    seq: int = 0  # start attempt counter: results of stale attempts are dropped
    retry: Backoff = field(default_factory=lambda: Backoff(first=RETRY_FIRST_SECONDS, cap=RETRY_MAX_SECONDS, jitter=0.2))
    retry_at: float | None = None


class Supervisor:
    def __init__(
        self,
        *,
        engine: WasmEngine,
        access: RegistryAccess,
        defaults: RuntimeDefaults,
        start_pool: ThreadPoolExecutor,
        call_pool: ThreadPoolExecutor,
        drain_seconds: float,
        on_change: Callable[[], None],
        max_instances: int,
        serve: ServeRuntime,
        serve_caches: Callable[[], ServeCaches],
        info_dir: Path,
        proofs_file: Path,
        self_url: str,
        tiers: TierPolicy | None = None,
    ) -> None:
        self.tiers = tiers or TierPolicy()
        self.engine = engine
        self.serve = serve
        self._serve_caches = serve_caches  # located lazily: a host without the wasmtime CLI still runs the rest
        self.info = ComponentInfoStore(info_dir)
        self.proofs = AccessProofs(path=proofs_file, access=access)  # builds shared by hosts: who may run them
        self.self_url = self_url.rstrip("/")
        self.http_links: dict[tuple[str, str, str], tuple[str, ...]] = {}  # (env, app, target) -> ingress URLs
        self.access = access
        self.defaults = defaults
        self.start_pool = start_pool  # pulls, compiles, instantiations: never starve the ingress's calls
        self.call_pool = call_pool
        self.drain_seconds = drain_seconds
        self.on_change = on_change
        self.max_instances = max_instances
        self.entries: dict[str, Entry] = {}
        self.draining: dict[int, Instance] = {}
        self.desired: HostDesiredState | None = None
        self.observed_generation = 0
        self._rr = itertools.count()
        self._oob = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.shutting_down = False  # SIGTERM: every instance is reported Stopping while it drains
        self.traffic = Traffic(on_report_due=on_change)  # canary splits and per-digest counters (host/traffic.py)
        # asked before an idle served instance stops (the native data plane stops sending it requests)
        self.idle_gate: Callable[[ServedInstance], bool] = lambda inst: True
        # awaited before a drained instance closes: the data plane sends it nothing any more
        self.drain_gate: Callable[..., Coroutine[Any, Any, None]] | None = None

    # -- desired state ---------------------------------------------------------------------------
    def apply(self, desired: HostDesiredState) -> None:
        """Converge to ``desired``: the instance set becomes exactly its instances."""
        self.desired = desired
        self.observed_generation = desired.generation
        self.http_links = {
            (spec.env, spec.app, link.to_component): link.endpoints
            for spec in desired.instances for link in spec.links if link.is_http
        }
        self.traffic.update(desired.instances)
        wanted = {spec.id: spec for spec in desired.instances}
        for instance_id in [i for i in self.entries if i not in wanted]:
            self.remove(instance_id)
        for spec in desired.instances[: self.max_instances]:
            self.ensure(spec, managed=True)
        for spec in desired.instances[self.max_instances :]:
            self.remove(spec.id)
            self.entries[spec.id] = Entry(
                spec=spec, managed=True, state=FAILED, error=f"host capacity of {self.max_instances} instances is full"
            )
        log.info("converging to generation %d (%d instances)", desired.generation, len(desired.instances))
        self.on_change()

    def ensure(self, spec: InstanceSpec, *, managed: bool) -> None:
        entry = self.entries.get(spec.id)
        if entry is not None and entry.managed == managed and fingerprint(entry.spec) == fingerprint(spec):
            if entry.state != FAILED:
                return  # idempotent: already running (or starting) exactly this
        if entry is None:
            entry = self.entries[spec.id] = Entry(spec=spec, managed=managed)
        entry.spec, entry.managed = spec, managed
        entry.retry.reset()
        entry.retry_at = None
        self._start(entry)

    def _start(self, entry: Entry) -> None:
        entry.seq += 1
        entry.state, entry.error = STARTING, None
        task = asyncio.get_running_loop().create_task(self._run_start(entry, entry.seq, entry.spec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _changed_from_thread(self) -> None:
        """A trap in a worker thread: report at once (restarts and lastError changed)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.on_change)

    async def _run_start(self, entry: Entry, seq: int, spec: InstanceSpec) -> None:
        loop = self._loop = asyncio.get_running_loop()
        try:
            instance = await loop.run_in_executor(self.start_pool, self._build, spec, entry.managed)
        except HostError as exc:
            if entry.seq == seq and self.entries.get(spec.id) is entry:
                self._failed(entry, exc)
            return
        except Exception as exc:  # a bug must not take the host down: report it on the instance
            log.exception("starting %s failed", spec.id)
            if entry.seq == seq and self.entries.get(spec.id) is entry:
                self._failed(entry, HostError(f"{type(exc).__name__}: {exc}"))
            return
        if entry.seq != seq or self.entries.get(spec.id) is not entry:
            instance.close()  # superseded while starting
            return
        old = entry.instance
        if old is not None and fingerprint(old.spec) == fingerprint(spec):
            entry.restarts += old.restarts
        entry.instance = instance  # the new one serves from now on; the old one drains
        entry.state, entry.error = RUNNING, None
        entry.retry.reset()
        entry.retry_at = None
        log.info("started %s (%s)%s%s", spec.id, spec.digest[:19], f" at {spec.route}" if spec.route else "",
                 f" from its {instance.tier} build" if isinstance(instance, ServedInstance) else "")
        self.on_change()
        if old is not None:
            self._drain(old)
        if isinstance(instance, ServedInstance) and instance.upgrade is not None:
            self._spawn_task(self._optimise(entry, seq, instance))
        if isinstance(instance, ComponentInstance) and instance.run_export and not instance.handler_export:
            await self._run_job(entry, instance)

    def _build(self, spec: InstanceSpec, managed: bool) -> Instance:
        def progress(message: str) -> None:
            log.info("%s: %s", spec.id, message)

        signed_by = check_signature(spec, access=self.access)  # before anything is compiled or run, cache or not
        if signed_by:
            progress(f"signature verified: {signed_by}")
        pulled: list[bytes] = []

        def fetch() -> bytes:
            if not pulled:  # one pull serves the world check and the compile
                data = pull_component(image=spec.image, digest=spec.digest, access=self.access, progress=progress)
                progress(f"pulled {len(data)} bytes")
                self.proofs.proven(image=spec.image, digest=spec.digest)
                pulled.append(data)
            return pulled[0]

        # the machine's shared builds and info may spare the pull: the registry still decides who runs it
        self.proofs.check(image=spec.image, digest=spec.digest)

        info = self.info.get(spec.digest, fetch)  # once per digest per machine
        exports = {unversioned(e) for e in info.exports}
        if WASI_HTTP_HANDLER in exports and DRIFTLESS_HTTP_HANDLER not in exports:
            return self._build_served(spec, managed, info, fetch)
        component = self.engine.load(digest=spec.digest, fetch=fetch, progress=progress)
        return ComponentInstance(
            spec=spec, component=component, engine=self.engine, links=self, defaults=self.defaults, managed=managed,
            on_trap=self._changed_from_thread,
        )  # fmt: skip

    def _build_served(self, spec: InstanceSpec, managed: bool, info: WasmInfo, fetch: Callable[[], bytes]) -> Instance:
        typed = [link.interface for link in spec.links if not link.is_http]
        if typed:
            raise Incompatible(f"{spec.env}/{spec.app}/{spec.component} is a wasi:http component: it reaches other "
                               f"components over HTTP links (interface {WASI_HTTP_HANDLER}), not typed links "
                               f"({', '.join(typed)})")
        imports = list(info.imports)
        key, source = spec.digest, fetch
        if imports_config_store(imports):
            # wasi:config/store from the environment (config never goes on a command line): the
            # composed component is compiled and cached under its own key
            key = f"{spec.digest}.config-{ADAPTER_ID}"
            imports = [i for i in imports if unversioned(i) != WASI_CONFIG_STORE]

            def source() -> bytes:
                return with_config_from_env(fetch(), wasm_tools=Path(wasm_tools_path()), imports=info.imports)

        if imports_outgoing_handler(imports):
            # deny by default: outbound HTTP only to grants.outboundHosts and the links, checked by
            # an adapter composed around the component's outgoing-handler (rules baked in: own key)
            policy = OutboundPolicy.of(spec, links_base=self.serve.links_base)
            key, source = f"{key}.outbound-{policy.key}", with_policy(source, policy=policy, imports=info.imports)
        memo: list[bytes] = []

        def composed() -> bytes:  # composed once, for whichever tiers compile
            if not memo:
                memo.append(source())
            return memo[0]

        build = ServedBuild(cli=self.serve.cli, caches=self._serve_caches(), key=key, source=composed,
                            size=lambda: self.info.size(spec.digest) or len(fetch()), fuel=spec.limits.fuel is not None, policy=self.tiers,
                            what=f"{spec.env}/{spec.app}/{spec.component}")
        instance = self._served_instance(spec, managed, imports, build, *build.first())
        if build.fast_refused:
            instance.warnings = (build.fast_refused,)
        if instance.tier == FAST_COMPILER:  # compiled off the request path, then swapped in (_optimise)
            instance.upgrade = lambda: self._served_instance(spec, managed, imports, build,
                                                             *build.optimised(background=True))
        return instance

    def _served_instance(self, spec: InstanceSpec, managed: bool, imports: list[str], build: ServedBuild,
                         artifact: Artifact, flags: EngineFlags) -> ServedInstance:
        for attempt in range(2):
            instance = ServedInstance(
                spec=spec, cwasm=artifact.path, flags=flags, imports=imports, serve=self.serve,
                timeout_ms=spec.limits.timeout_ms or self.defaults.timeout_ms,
                max_concurrency=spec.limits.max_concurrency or self.defaults.max_concurrency,
                managed=managed, on_change=self._changed_from_thread,
            )  # fmt: skip
            instance.artifact, instance.tier = artifact, flags.compiler  # released by close()
            try:
                instance.start()
                return instance
            except HostError as exc:
                instance.close()
                if attempt or artifact.compiled:
                    raise
                # a cached build that does not start (truncated, corrupt, foreign): compile it again, once
                log.warning("%s: cached build %s does not load (%s); compiling again", spec.id, artifact.path.name, exc)
                build.discard(flags)
                artifact = build.optimised()[0] if flags == build.optimised_flags else build.first()[0]
        raise AssertionError("unreachable")

    async def _optimise(self, entry: Entry, seq: int, fast: ServedInstance) -> None:
        """Swap a fast-tier instance for its optimised build once compiled, without losing a request:
        the new process serves before the fast one drains (as a rolling replacement)."""
        upgrade, fast.upgrade = fast.upgrade, None
        if upgrade is None:
            return
        try:
            better = await asyncio.get_running_loop().run_in_executor(self.start_pool, upgrade)
        except Exception as exc:  # a compile refusal, or a bug: the fast build keeps serving either way
            if self.shutting_down:
                return  # stopped with its host: not a failure
            if not isinstance(exc, HostError):
                log.exception("%s: building the optimised build failed", fast.spec.id)
            fast.last_error = f"optimised build failed, still serving the fast (Winch) build: {exc}"
            log.warning("%s: %s", fast.spec.id, fast.last_error)
            self.on_change()
            return
        if entry.seq != seq or entry.instance is not fast or self.entries.get(fast.spec.id) is not entry:
            better.close()  # replaced or removed meanwhile
            return
        entry.restarts += fast.restarts
        entry.instance = better
        log.info("%s: swapped to the optimised (%s) build of %s", fast.spec.id, better.tier, fast.spec.digest[:19])
        self.on_change()
        self._drain(fast)

    def reap_idle(self) -> None:
        """Scale to zero the served instances idle past their timeout."""
        now = time.monotonic()
        for inst in self.serving():
            if isinstance(inst, ServedInstance) and inst.idle_due(now) and self.idle_gate(inst) \
                    and inst.stop_idle(now):
                self.on_change()

    async def _run_job(self, entry: Entry, instance: ComponentInstance) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self.call_pool, instance.run_job)
        except HostError as exc:
            if entry.instance is instance:
                entry.state, entry.error = FAILED, str(exc)
        else:
            if entry.instance is instance:
                entry.state = COMPLETED
                log.info("job %s completed", entry.spec.id)
        self.on_change()

    def _failed(self, entry: Entry, exc: HostError) -> None:
        entry.state, entry.error = FAILED, str(exc)
        serving = entry.instance
        if serving is not None:
            entry.error += f" (still serving the previous version {serving.spec.digest[:19]})"
        # a refused signature is tried again too: signing the digest later lets it run (checked again then)
        transient = isinstance(exc, PullError | SignatureRefused) and not isinstance(exc, DigestMismatch)
        if transient:
            delay = entry.retry.next_delay()
            entry.retry_at = time.monotonic() + delay
            entry.error += f"; retrying in {delay:.0f}s"
        log.warning("%s: %s", entry.spec.id, entry.error)
        self.on_change()

    def retry_due(self) -> None:
        """Start again the instances whose transient failure (registry down) waited long enough."""
        now = time.monotonic()
        for entry in list(self.entries.values()):
            if entry.state == FAILED and entry.retry_at is not None and entry.retry_at <= now:
                entry.retry_at = None
                self._start(entry)

    # -- out of band (admin API) -----------------------------------------------------------------
    def start_unmanaged(self, spec: InstanceSpec) -> InstanceSpec:
        if not spec.id:
            spec = replace(spec, id=f"{spec.env}/{spec.app}/{spec.component}/oob-{next(self._oob)}")
        if spec.id in self.entries:
            raise HostError(f"instance {spec.id} already exists; stop it first or pick another id")
        self.ensure(spec, managed=False)
        self.on_change()
        return spec

    def set_config(self, instance_id: str, config: dict[str, str]) -> InstanceSpec:
        return self.change(instance_id, config=config)

    def change(
        self,
        instance_id: str,
        *,
        config: dict[str, str] | None = None,
        image: str | None = None,
        digest: str | None = None,
    ) -> InstanceSpec:
        """Out of band: run ``instance_id`` with another config and/or another pinned image (an
        emergency hotfix). Rolling replacement: what serves now keeps serving until the new spec
        does, and keeps serving if it fails. Lasts until the next desired generation."""
        entry = self.entries.get(instance_id)
        if entry is None:
            raise KeyError(instance_id)
        if (image is None) != (digest is None):
            raise ValueError("image and digest change together")
        spec = entry.spec
        if config is not None:
            spec = replace(spec, config=dict(config))
        if image is not None and digest is not None:
            spec = replace(spec, image=image, digest=digest)
        entry.spec = spec
        entry.retry.reset()
        entry.retry_at = None
        self._start(entry)
        if image is not None:
            log.warning("%s: out-of-band image %s (until the next desired generation)", instance_id, image)
        self.on_change()
        return entry.spec

    def remove(self, instance_id: str) -> bool:
        entry = self.entries.pop(instance_id, None)
        if entry is None:
            return False
        entry.seq += 1  # a start still running is dropped when it finishes
        if entry.instance is not None:
            self._drain(entry.instance)
        log.info("stopping %s", instance_id)
        self.on_change()
        return True

    def _drain(self, instance: Instance) -> None:
        instance.draining = True
        self.draining[id(instance)] = instance
        self._spawn_task(self._drain_task(instance))

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain_task(self, instance: Instance) -> None:
        deadline = time.monotonic() + self.drain_seconds
        while instance.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.drain_gate is not None and isinstance(instance, ServedInstance):
            await self.drain_gate(timeout=max(0.0, deadline - time.monotonic()))
            while instance.inflight and time.monotonic() < deadline:  # what the old workers still sent
                await asyncio.sleep(0.02)
        if instance.inflight:
            log.warning("%s: drain timed out with %d calls in flight", instance.spec.id, instance.inflight)
        instance.close()
        self.draining.pop(id(instance), None)
        self.on_change()

    async def drain_all(self, *, timeout: float) -> int:
        """Graceful stop: wait for every in-flight call (up to ``timeout``); returns calls left."""
        deadline = time.monotonic() + timeout
        everything = self.serving() + list(self.draining.values())
        while any(i.inflight for i in everything) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return sum(i.inflight for i in everything)

    # -- reads (also from worker threads: snapshot before iterating) ----------------------------
    def serving(self) -> list[Instance]:
        return [e.instance for e in list(self.entries.values()) if e.instance is not None]

    def link_target(self, *, env: str, app: str, component: str) -> ComponentInstance | None:
        """An in-process instance for a typed link (function calls stay on this host)."""
        candidates = [
            i
            for i in self.serving()
            if isinstance(i, ComponentInstance) and i.spec.env == env and i.spec.app == app
            and i.spec.component == component and not i.in_backoff
        ]
        if not candidates:
            return None
        # under a canary split, typed calls follow the weight too (no client to be sticky to)
        chosen, _, _ = self.traffic.choose(candidates, headers={}, cookies={},
                                           pick=lambda found: found[next(self._rr) % len(found)])
        return chosen

    def http_link_targets(self, *, env: str, app: str, component: str) -> list[Instance]:
        """Instances on this host that can answer an HTTP link to ``component`` (any HTTP world)."""
        return [
            i for i in self.serving()
            if i.handler_export and i.spec.env == env and i.spec.app == app and i.spec.component == component
        ]

    def remote_link_endpoints(self, *, env: str, app: str, component: str) -> list[str]:
        """Other hosts' ingress URLs that run ``component`` (from the newest desired state)."""
        return [url for url in self.http_links.get((env, app, component), ()) if url.rstrip("/") != self.self_url]

    def route(self, path: str) -> tuple[str, list[Instance]] | None:
        """Instances serving the longest route that prefixes ``path`` (at a segment boundary)."""
        best: str | None = None
        found: list[Instance] = []
        for inst in self.serving():
            route = inst.spec.route
            if not route or not inst.handler_export or not _route_matches(route, path):
                continue
            if best is None or len(route) > len(best):
                best, found = route, [inst]
            elif route == best:
                found.append(inst)
        return (best, found) if best is not None else None

    def pick(self, instances: list[Instance]) -> Instance:
        ready = [i for i in instances if not i.in_backoff] or instances
        return ready[next(self._rr) % len(ready)]

    def statuses(self) -> list[InstanceStatus]:
        out = []
        for instance_id, e in sorted(self.entries.items()):
            inst = e.instance
            current = inst is not None and fingerprint(inst.spec) == fingerprint(e.spec)
            state, error = e.state, e.error
            restarts = e.restarts + (inst.restarts if inst is not None and current else 0)
            if state == RUNNING and inst is not None:
                error = inst.last_error
                if inst.in_backoff:
                    state = BACKOFF
                elif isinstance(inst, ServedInstance) and inst.state == IDLE:
                    state = IDLE
            if self.shutting_down:
                state = STOPPING
            out.append(
                InstanceStatus(
                    id=instance_id,
                    env=e.spec.env,
                    app=e.spec.app,
                    component=e.spec.component,
                    digest=e.spec.digest,
                    status=state,
                    restarts=restarts,
                    last_error=error,
                    config=e.spec.reported_config(),  # a secret key's fingerprint, never its value
                    route=e.spec.route,
                    managed=e.managed,
                    started_at=inst.started_at if inst is not None and current else None,
                    runtime=inst.runtime if inst is not None and current else None,
                    warnings=inst.warnings if inst is not None and current else (),
                )
            )
        for inst in list(self.draining.values()):
            if inst.spec.id in self.entries:
                continue  # replaced: the entry above reports the id
            out.append(
                InstanceStatus(
                    id=inst.spec.id, env=inst.spec.env, app=inst.spec.app, component=inst.spec.component,
                    digest=inst.spec.digest, status=STOPPING, restarts=inst.restarts, last_error=inst.last_error,
                    config=inst.spec.reported_config(), route=inst.spec.route, managed=inst.managed,
                    started_at=inst.started_at,
                )
            )  # fmt: skip
        return out


def _route_matches(route: str, path: str) -> bool:
    if route in ("", "/"):
        return True
    route = "/" + route.strip("/")
    return path == route or path.startswith(route + "/") or path.startswith(route + "?")
