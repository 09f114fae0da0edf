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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from host.errors import DigestMismatch, HostError, PullError
from host.puller import RegistryAccess, pull_component
from host.runtime import ComponentInstance, RuntimeDefaults
from host.wasm_engine import WasmEngine
from wire.control import (
    BACKOFF,
    FAILED,
    RUNNING,
    STARTING,
    STOPPING,
    HostDesiredState,
    InstanceSpec,
    InstanceStatus,
)

log = logging.getLogger("driftless.host")

COMPLETED = "Completed"  # a job (wasi:cli/run) that finished successfully
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


def fingerprint(spec: InstanceSpec) -> Any:
    """What makes two specs run the same instance (a difference means a replacement)."""
    return (spec.image, spec.digest, tuple(sorted(spec.config.items())), spec.limits, spec.capabilities,
            spec.route, spec.links, spec.env, spec.app, spec.component)  # fmt: skip


@dataclass(eq=False)
class Entry:
    spec: InstanceSpec  # what this id should run
    managed: bool
    state: str = STARTING
    error: str | None = None
    instance: ComponentInstance | None = None  # what serves now (may still be the previous spec)
    restarts: int = 0  # traps of earlier instances of this id
    seq: int = 0  # start attempt counter: results of stale attempts are dropped
    retry_in: float = RETRY_FIRST_SECONDS
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
    ) -> None:
        self.engine = engine
        self.access = access
        self.defaults = defaults
        self.start_pool = start_pool  # pulls, compiles, instantiations: never starve the ingress's calls
        self.call_pool = call_pool
        self.drain_seconds = drain_seconds
        self.on_change = on_change
        self.max_instances = max_instances
        self.entries: dict[str, Entry] = {}
        self.draining: dict[int, ComponentInstance] = {}
        self.desired: HostDesiredState | None = None
        self.observed_generation = 0
        self._rr = itertools.count()
        self._oob = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.shutting_down = False  # SIGTERM: every instance is reported Stopping while it drains

    # -- desired state ---------------------------------------------------------------------------
    def apply(self, desired: HostDesiredState) -> None:
        """Converge to ``desired``: the instance set becomes exactly its instances."""
        self.desired = desired
        self.observed_generation = desired.generation
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
        entry.retry_in, entry.retry_at = RETRY_FIRST_SECONDS, None
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
        entry.retry_in, entry.retry_at = RETRY_FIRST_SECONDS, None
        log.info("started %s (%s)%s", spec.id, spec.digest[:19], f" at {spec.route}" if spec.route else "")
        self.on_change()
        if old is not None:
            self._drain(old)
        if instance.run_export and not instance.handler_export:
            await self._run_job(entry, instance)

    def _build(self, spec: InstanceSpec, managed: bool) -> ComponentInstance:
        def progress(message: str) -> None:
            log.info("%s: %s", spec.id, message)

        def fetch() -> bytes:
            data = pull_component(image=spec.image, digest=spec.digest, access=self.access, progress=progress)
            progress(f"pulled {len(data)} bytes; compiling")
            return data

        component = self.engine.load(digest=spec.digest, fetch=fetch, progress=progress)
        return ComponentInstance(
            spec=spec, component=component, engine=self.engine, links=self, defaults=self.defaults, managed=managed,
            on_trap=self._changed_from_thread,
        )  # fmt: skip

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
        transient = isinstance(exc, PullError) and not isinstance(exc, DigestMismatch)
        if transient:
            entry.retry_at = time.monotonic() + entry.retry_in
            entry.error += f"; retrying in {entry.retry_in:.0f}s"
            entry.retry_in = min(RETRY_MAX_SECONDS, entry.retry_in * 2)
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
        entry.retry_in, entry.retry_at = RETRY_FIRST_SECONDS, None
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

    def _drain(self, instance: ComponentInstance) -> None:
        instance.draining = True
        self.draining[id(instance)] = instance
        task = asyncio.get_running_loop().create_task(self._drain_task(instance))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain_task(self, instance: ComponentInstance) -> None:
        deadline = time.monotonic() + self.drain_seconds
        while instance.inflight and time.monotonic() < deadline:
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
    def serving(self) -> list[ComponentInstance]:
        return [e.instance for e in list(self.entries.values()) if e.instance is not None]

    def link_target(self, *, env: str, app: str, component: str) -> ComponentInstance | None:
        candidates = [
            i
            for i in self.serving()
            if i.spec.env == env and i.spec.app == app and i.spec.component == component and not i.in_backoff
        ]
        if not candidates:
            return None
        return candidates[next(self._rr) % len(candidates)]

    def route(self, path: str) -> tuple[str, list[ComponentInstance]] | None:
        """Instances serving the longest route that prefixes ``path`` (at a segment boundary)."""
        best: str | None = None
        found: list[ComponentInstance] = []
        for inst in self.serving():
            route = inst.spec.route
            if not route or not inst.handler_export or not _route_matches(route, path):
                continue
            if best is None or len(route) > len(best):
                best, found = route, [inst]
            elif route == best:
                found.append(inst)
        return (best, found) if best is not None else None

    def pick(self, instances: list[ComponentInstance]) -> ComponentInstance:
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
                    config=dict(e.spec.config),
                    route=e.spec.route,
                    managed=e.managed,
                    started_at=inst.started_at if inst is not None and current else None,
                )
            )
        for inst in list(self.draining.values()):
            if inst.spec.id in self.entries:
                continue  # replaced: the entry above reports the id
            out.append(
                InstanceStatus(
                    id=inst.spec.id, env=inst.spec.env, app=inst.spec.app, component=inst.spec.component,
                    digest=inst.spec.digest, status=STOPPING, restarts=inst.restarts, last_error=inst.last_error,
                    config=dict(inst.spec.config), route=inst.spec.route, managed=inst.managed,
                    started_at=inst.started_at,
                )
            )  # fmt: skip
        return out


def _route_matches(route: str, path: str) -> bool:
    if route in ("", "/"):
        return True
    route = "/" + route.strip("/")
    return path == route or path.startswith(route + "/") or path.startswith(route + "?")
