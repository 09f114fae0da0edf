"""The reconciler's machinery: Git -> validated tree -> digests -> plan -> published host documents,
and host registrations/reports -> host states, app status, drift, healing.

A reconcile is an ordered list of same-signature steps (fetch, load, resolve, plan, publish), its
outcome recorded in ``finally``. Errors are classified:
- stalled: the commit is invalid (schema, unknown image): rejected, no retry until a new commit;
- transient: Git or the registry did not answer: retried with exponential backoff;
- waiting: hosts converging: nothing to do but watch their reports.
Only the publish step changes what hosts run, and only when a host's document changes (or to heal).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import sqlite3
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from driftless.errors import UsageError
from driftless.reference import parse
from reconciler import drift as drift_mod
from reconciler import healing
from reconciler import tags as tags_mod
from reconciler.control import (
    BACKOFF,
    FAILED,
    STARTING,
    STOPPING,
    HostDesiredState,
    HostRegistration,
    HostReport,
)
from reconciler.git_source import CommitInfo, GitError, GitSource
from reconciler.metrics import Histogram
from reconciler.model.types import ManifestTree, SyncMode
from reconciler.planner import LOST, READY, HostInfo, Plan, Unplaced, plan
from reconciler.settings import Settings
from reconciler.status import DEGRADED, HEALTHY, SYNCED, AppView, Condition, app_views
from reconciler.store import Store

log = logging.getLogger("driftless.reconciler")

class Transient(Exception):
    """Git or the registry did not answer; the reconcile is retried with backoff."""


@dataclass(slots=True, kw_only=True)
class HostState:
    registration: HostRegistration
    registered_at: float
    last_seen: float
    state: str = READY


@dataclass(slots=True, kw_only=True)
class Rejected:
    revision: str
    errors: list[dict[str, Any]]  # Problem.to_json() plus "text": "file:line:col: message"
    since: float
    message: str = ""
    author: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "errors": self.errors, "since": self.since,
                "message": self.message, "author": self.author}


@dataclass(slots=True, kw_only=True)
class Context:
    """What one reconcile carries from step to step."""

    fetch: bool
    heal: dict[str, frozenset[str]] = field(default_factory=dict)  # host to republish -> environments it heals
    head: CommitInfo | None = None
    new_tree: ManifestTree | None = None
    plan: Plan | None = None
    outcome: str = "success"


def _kv(d: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock_file = _lock_data_dir(settings.data)
        try:
            self.store = Store(settings.data / "state.db", history_limit=settings.history_limit)
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise UsageError(f"cannot open the reconciler state {settings.data / 'state.db'}: {exc}",
                             hint="give a writable --data directory") from exc
        self.git = GitSource(url=settings.repo, branch=settings.branch, mirror=settings.data / "git" / "mirror.git")
        self.registry_host = tags_mod.registry_host(settings.registry)
        # state
        self.hosts: dict[str, HostState] = {}
        self.published: dict[str, tuple[HostDesiredState, float]] = {}
        self.reports: dict[str, tuple[HostReport, float]] = {}
        self.tree: ManifestTree | None = None
        self.digests: dict[str, str] = {}
        self.current_tags: dict[str, str] = {}  # image -> digest its tag points to now
        self.applied: dict[str, Any] | None = None  # {"revision","message","author","appliedAt"}
        self.head: CommitInfo | None = None
        self.rejected: Rejected | None = None
        self.unplaced: tuple[Unplaced, ...] = ()
        self.views: dict[tuple[str, str], AppView] = {}
        self.marks: dict[str, dict[str, Any]] = {}  # "env/app" -> healthySince, digests, conditions
        self.first_seen: dict[str, float] = {}
        self.drift_items: list[drift_mod.DriftItem] = []
        self.drift_available = True
        self.last_error: str | None = None
        self.last_reconcile: dict[str, Any] = {}
        # metrics
        self.reconcile_seconds = Histogram()
        self.reconciles: dict[str, int] = {}
        self.git_fetches = 0
        self.git_fetch_errors = 0
        self.generations_published = 0
        self.heals = 0
        # machinery
        self._wake = asyncio.Event()
        self._want_fetch = True
        self._heal_requests: dict[str, frozenset[str]] = {}
        self._status_dirty = True
        self._reports_dirty: set[str] = set()
        self._seen_dirty = False
        self._waiters: dict[str, asyncio.Event] = {}
        self._heal_schedule: dict[str, healing.HealSchedule] = {}
        self._retry_at: float | None = None
        self._retry_backoff = 0.5
        self._next_poll = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = False
        self._component_api: bool | None = None
        self._fresh_reports: set[str] = set()  # hosts that reported to this process
        self._restart_grace_until = 0.0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._restore)
        if self.git.watch(self._on_git_change):
            pass
        self._tasks = [
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self._status_loop(), name="status"),
        ]

    async def halt(self) -> None:
        """Stop reconciling (first, before the API goes away: hosts that cannot report while we shut
        down must not be declared Lost and emptied)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def stop(self) -> None:
        await self.halt()
        self._flush()
        await asyncio.to_thread(self.git.close)
        self.store.close()
        self._lock_file.close()

    def _restore(self) -> None:
        now = time.time()
        self._restart_grace_until = now + max(15.0, 3 * self.settings.heartbeat * self.settings.lost_after)
        for name, row in self.store.hosts().items():
            # every known host gets a fresh grace period: a restart must not declare them Lost
            self.hosts[name] = HostState(registration=row.registration, registered_at=row.registered_at, last_seen=now)
        self.published = self.store.published()
        self.reports = self.store.reports()
        self.marks = self.store.get("marks", {})
        self.first_seen = self.store.get("drift_first_seen", {})
        rej = self.store.get("rejected")
        self.rejected = Rejected(**rej) if rej else None
        self.applied = self.store.get("applied")
        if self.applied:
            revision = self.applied["revision"]
            self.digests = self.store.tags(revision)
            try:
                self.tree = self._load(revision)
            except Exception as exc:  # keep serving the published documents; the next reconcile retries
                log.warning("event=restore-failed revision=%s error=%r", revision, exc)
        log.info("event=restored hosts=%d published=%d applied=%s", len(self.hosts), len(self.published),
                 (self.applied or {}).get("revision"))

    # ------------------------------------------------------------------ triggers
    def trigger(self, *, fetch: bool = False, heal: Mapping[str, frozenset[str]] | None = None) -> None:
        """Ask for a reconcile soon (thread-safe from the event loop thread only); ``heal``: hosts to
        republish even if their document is unchanged, each with the environments whose drift it corrects."""
        if fetch:
            self._want_fetch = True
        for host, envs in (heal or {}).items():
            self._heal_requests[host] = self._heal_requests.get(host, frozenset()) | envs
        self._wake.set()

    def _on_git_change(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: self.trigger(fetch=True))

    # ------------------------------------------------------------------ reconcile
    async def _reconcile_loop(self) -> None:
        while True:
            now = time.monotonic()
            deadlines = [self._next_poll]
            if self._retry_at is not None:
                deadlines.append(self._retry_at)
            timeout = max(0.0, min(deadlines) - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            self._wake.clear()
            await asyncio.sleep(0.01)  # coalesce bursts (a push touches several refs)
            self._wake.clear()
            now = time.monotonic()
            fetch = self._want_fetch or now >= self._next_poll or (self._retry_at is not None and now >= self._retry_at)
            self._want_fetch = False
            heal, self._heal_requests = self._heal_requests, {}
            if fetch:
                self._next_poll = now + self.settings.interval
            try:
                await self.reconcile(Context(fetch=fetch, heal=heal))
            except Exception as exc:  # never let the loop die
                log.exception("event=reconcile-crashed error=%r", exc)
                await asyncio.sleep(1)

    async def reconcile(self, ctx: Context) -> None:
        started = time.perf_counter()
        steps: list[Callable[[Context], Awaitable[None]]] = [
            self._step_fetch, self._step_load, self._step_resolve, self._step_plan, self._step_publish,
            self._step_watch_tags,
        ]
        try:
            for step in steps:
                await step(ctx)
            self._retry_at, self._retry_backoff = None, 0.5
            self.last_error = None
        except Transient as exc:
            ctx.outcome = "error"
            self.last_error = str(exc)
            self._retry_at = time.monotonic() + self._retry_backoff
            log.warning("event=reconcile-retry in=%.1fs error=%s", self._retry_backoff, exc)
            self._retry_backoff = min(self._retry_backoff * 2, max(self.settings.interval, 1.0))
            # hosts still need a plan even when Git or the registry is away
            if ctx.plan is None:
                with contextlib.suppress(Transient):
                    await self._step_plan(ctx)
                    await self._step_publish(ctx)
        finally:
            elapsed = time.perf_counter() - started
            self.reconcile_seconds.observe(elapsed)
            self.reconciles[ctx.outcome] = self.reconciles.get(ctx.outcome, 0) + 1
            self.last_reconcile = {"at": time.time(), "seconds": elapsed, "outcome": ctx.outcome,
                                   "error": self.last_error}
            self._status_dirty = True
            self.ready = True

    async def _step_fetch(self, ctx: Context) -> None:
        if not ctx.fetch:
            return
        self.git_fetches += 1
        try:
            ctx.head = await asyncio.to_thread(self.git.fetch)
        except GitError as exc:
            self.git_fetch_errors += 1
            self.event(type="Warning", reason="FetchFailed", message=str(exc))
            raise Transient(str(exc)) from exc
        self.head = ctx.head

    async def _step_watch_tags(self, ctx: Context) -> None:
        """Where the applied revision's tags point now (for TagMoved drift); never fails the reconcile."""
        tree = self.tree
        if tree is None or not ctx.fetch:
            return
        images = {c.image for apps in tree.applications.values() for a in apps.values() for c in a.components
                  if "@" not in c.image}
        current: dict[str, str] = {}
        for image in sorted(images):
            try:
                current.update(await asyncio.to_thread(tags_mod.resolve, [image], registry_url=self.settings.registry))
            except (tags_mod.UnknownImage, tags_mod.RegistryUnreachable):
                continue
        self.current_tags = current
        self._status_dirty = True

    async def _step_load(self, ctx: Context) -> None:
        head = ctx.head
        if head is None or (self.applied and head.revision == self.applied["revision"] and self.tree is not None):
            return
        if self.rejected and head.revision == self.rejected.revision:
            # stalled: no retry until a new commit; except a missing image, which a push to the
            # registry can fix: that commit is tried again at each poll, sync or webhook
            waiting_for_image = all(e.get("code") == "unknown-image" for e in self.rejected.errors)
            if not (waiting_for_image and ctx.fetch):
                ctx.outcome = "rejected"
                return
        signers = self.settings.allowed_signers
        if signers is not None:
            why = await asyncio.to_thread(self.git.verify_signature, head.revision, allowed_signers=signers)
            if why is not None:
                self._reject(head, [_error_json("", 0, f"commit {head.revision[:12]} is not signed by an allowed key "
                                                       f"(--allowed-signers {signers}): {why}", code="unsigned")])
                ctx.outcome = "rejected"
                return
        try:
            tree = await asyncio.to_thread(self._load, head.revision)
        except Transient:
            raise
        except Exception as exc:
            raise Transient(f"cannot load revision {head.revision[:12]}: {exc!r}") from exc
        if not tree.ok:
            self._reject(head, [_problem_json(p) for p in tree.errors])
            ctx.outcome = "rejected"
            return
        ctx.new_tree = tree

    def _load(self, revision: str) -> ManifestTree:
        from reconciler.model.loader import load_revision, load_tree

        # `git archive` + load_tree is ~15x faster than reading blob by blob through gitpython
        # (1000 files: 0.9 s instead of 15 s); trees with links go the careful way.
        with tempfile.TemporaryDirectory(dir=self.settings.data, prefix="checkout-") as tmp:
            try:
                root = self.git.export(revision, self.settings.path, Path(tmp))
            except (GitError, tarfile.TarError):
                return load_revision(self.git.mirror, revision, subdir=self.settings.path)
            tree: ManifestTree = load_tree(root)
        tree.revision = revision
        return tree

    async def _step_resolve(self, ctx: Context) -> None:
        tree, head = ctx.new_tree, ctx.head
        if tree is None or head is None:
            return
        images = [c.image for apps in tree.applications.values() for a in apps.values() for c in a.components]
        try:
            digests = await asyncio.to_thread(tags_mod.resolve, images, registry_url=self.settings.registry)
        except tags_mod.UnknownImage as exc:
            self._reject(head, [self._locate(tree, exc.image, str(exc))])
            ctx.outcome = "rejected"
            return
        except tags_mod.RegistryUnreachable as exc:
            raise Transient(str(exc)) from exc
        problems = await asyncio.to_thread(self._check_registry, tree, digests)
        if problems:
            self._reject(head, problems)
            ctx.outcome = "rejected"
            return
        self._apply(head, tree, digests)

    def _check_registry(self, tree: ManifestTree, digests: dict[str, str]) -> list[dict[str, Any]]:
        """The manifest library's registry checks (imports/exports vs links), when the registry is
        a Driftless registry (it records component info); plain OCI registries are not asked."""
        if not self._speaks_component_api(digests):
            return []
        from reconciler.model.registry_check import check_registry

        try:
            problems = [p for p in check_registry(tree, registry_url=self.settings.registry) if p.level == "error"]
        except Exception as exc:
            raise Transient(f"registry check failed: {exc!r}") from exc
        # the registry not answering (or not describing an image) says nothing about the commit: retry
        unreachable = [p for p in problems if p.code == "registry-unreachable"]
        if unreachable:
            raise Transient(f"registry {self.settings.registry} could not answer the component checks: "
                            f"{unreachable[0].message}")
        return [_problem_json(p) for p in problems]

    def _speaks_component_api(self, digests: dict[str, str]) -> bool:
        if self._component_api is not None:
            return self._component_api
        for image, digest in digests.items():
            ref = parse(image)
            if ref.registry not in (None, self.registry_host):
                continue
            url = f"{self.settings.registry.rstrip('/')}/v2/_driftless/components/{ref.repository}/{digest}"
            try:
                with urllib.request.urlopen(url, timeout=5):
                    self._component_api = True
            except urllib.error.HTTPError:
                self._component_api = False
            except OSError as exc:
                raise Transient(f"registry {self.settings.registry} not reachable: {exc}") from exc
            return self._component_api
        return False

    def _locate(self, tree: ManifestTree, image: str, message: str) -> dict[str, Any]:
        """file:line of ``image`` in the tree (for a clear rejection message)."""
        for env, apps in tree.applications.items():
            for app in apps.values():
                for i, comp in enumerate(app.components):
                    if comp.image == image:
                        path = f"spec.components[{i}].image"
                        file, line, column = tree.location(env=env, app=app.name, path=path)
                        return _error_json(file, line, f"{message} at {path}", code="unknown-image", column=column)
        return _error_json("", 0, message, code="unknown-image")

    def _reject(self, head: CommitInfo, errors: list[dict[str, Any]]) -> None:
        self.rejected = Rejected(revision=head.revision, errors=errors, since=time.time(), message=head.message,
                                 author=head.author)
        self.store.put("rejected", self.rejected.to_json())
        kept = (self.applied or {}).get("revision")
        first = errors[0]["text"] if errors else "invalid"
        self.event(type="Warning", reason="Rejected", revision=head.revision,
                   message=f"revision {head.revision[:12]} rejected ({len(errors)} error(s)); "
                           f"{kept[:12] + ' stays applied' if kept else 'nothing applied yet'}: {first}")

    def _apply(self, head: CommitInfo, tree: ManifestTree, digests: dict[str, str]) -> None:
        now = time.time()
        previous_tree = self.tree
        self.tree, self.digests = tree, digests
        self.applied = {"revision": head.revision, "message": head.message, "author": head.author, "appliedAt": now}
        self.store.save_tags(head.revision, digests, at=now)
        self.store.put("applied", self.applied)
        if self.rejected:
            self.rejected = None
            self.store.put("rejected", None)
        for image, digest in sorted(digests.items()):
            if "@" not in image:
                log.info("event=tag-resolved image=%s digest=%s revision=%s", image, digest, head.revision[:12])
        for env_name in sorted(tree.environments):
            apps = self.app_summaries_for_history(tree, env_name)
            last = self.store.history(env=env_name, limit=1)
            if not last or last[0]["apps"] != apps:
                self.store.add_history(env=env_name, revision=head.revision, applied_at=now, message=head.message,
                                       author=head.author, apps=apps)
            if previous_tree is None or _env_changed(previous_tree, tree, env_name):
                self.event(reason="Applied", env=env_name, revision=head.revision,
                           message=f"revision {head.revision[:12]} applied: {head.message}")

    def app_summaries_for_history(self, tree: ManifestTree, env: str) -> list[dict[str, Any]]:
        return [
            {
                "name": app.name,
                "components": [
                    {"name": c.name, "image": c.image, "digest": self.digests.get(c.image, c.image.partition("@")[2])}
                    for c in app.components
                ],
            }
            for _, app in sorted(tree.applications.get(env, {}).items())
        ]

    async def _step_plan(self, ctx: Context) -> None:
        if self.tree is None and self.applied:
            return  # the applied tree is not loaded yet: publishing now would empty the hosts
        tree = self.tree or ManifestTree()
        infos = [
            HostInfo(name=n, labels=h.registration.labels, max_instances=h.registration.capacity.max_instances,
                     state=h.state)
            for n, h in self.hosts.items()
        ]
        previous = {h: doc.instances for h, (doc, _) in self.published.items()}
        ctx.plan = plan(tree=tree, digests=self.digests, hosts=infos, previous=previous, registry=self.registry_host)

    async def _step_publish(self, ctx: Context) -> None:
        if ctx.plan is None:
            return
        now = time.time()
        revision = (self.applied or {}).get("revision")
        changed: dict[str, tuple[HostDesiredState, float]] = {}
        for host, instances in ctx.plan.desired.items():
            current = self.published.get(host)
            if current is not None and current[0].instances == instances and host not in ctx.heal:
                continue
            generation = (current[0].generation if current else 0) + 1
            doc = HostDesiredState(host=host, generation=generation, revision=revision, instances=instances)
            changed[host] = (doc, now)
        self.unplaced = ctx.plan.unplaced
        if not changed:
            return
        # memory first, in the same step as the tree and unplaced: status never sees a new tree
        # with the old documents; hosts are told only once the documents are on disk
        self.published.update(changed)
        await asyncio.to_thread(self.store.save_published, changed)
        self.generations_published += len(changed)
        for host, (doc, _) in sorted(changed.items()):
            self._notify(host)
            why = "heal" if host in ctx.heal else "plan"
            log.info("event=published host=%s generation=%d instances=%d reason=%s", host, doc.generation,
                     len(doc.instances), why)
        self._publish_events(changed, heal=ctx.heal, revision=revision or "")

    def _publish_events(self, changed: Mapping[str, tuple[HostDesiredState, float]], *,
                        heal: Mapping[str, frozenset[str]], revision: str) -> None:
        """One ``Healed`` event per environment healed (so each environment's event list shows its own
        heals), one ``Published`` event for the documents the plan changed."""

        def listing(hosts: Iterable[str]) -> str:
            shown = sorted(hosts)
            return f"{len(shown)} host(s): " + ", ".join(
                f"{h} (generation {changed[h][0].generation}, {len(changed[h][0].instances)} instances)"
                for h in shown[:10])

        by_env: dict[str, set[str]] = {}
        for host in changed:
            for env in heal.get(host, ()):
                by_env.setdefault(env, set()).add(host)
        for env, hosts in sorted(by_env.items()):
            self.event(reason="Healed", env=env, revision=revision,
                       message=f"republished desired state to correct drift in {env}: {listing(hosts)}")
        planned = [h for h in changed if not heal.get(h)]
        if planned:
            self.event(reason="Published", revision=revision, message=f"published desired state to {listing(planned)}")

    # ------------------------------------------------------------------ hosts
    def register(self, reg: HostRegistration) -> None:
        now = time.time()
        known = self.hosts.get(reg.name)
        returning = known is not None and known.state == LOST
        self.hosts[reg.name] = HostState(registration=reg, registered_at=now, last_seen=now, state=READY)
        self.store.save_host(reg, registered_at=now, last_seen=now)
        if known is None:
            self.event(reason="HostRegistered", host=reg.name,
                       message=f"host {reg.name} registered with labels {_kv(dict(reg.labels))}")
        elif returning:
            self.event(reason="HostReturned", host=reg.name, message=f"host {reg.name} is back")
        if known is None or returning or known.registration.labels != reg.labels or \
                known.registration.capacity != reg.capacity or reg.name not in self.published:
            self.trigger()
        self._status_dirty = True

    def report(self, rep: HostReport) -> int:
        now = time.time()
        host = self.hosts[rep.name]
        host.last_seen = now
        self._seen_dirty = True
        if host.state == LOST:
            host.state = READY
            self.event(reason="HostReturned", host=rep.name, message=f"host {rep.name} reports again")
            self.trigger()
        self._fresh_reports.add(rep.name)
        previous = self.reports.get(rep.name)
        if previous is None or previous[0] != rep:
            self._reports_dirty.add(rep.name)
            self._status_dirty = True
        self.reports[rep.name] = (rep, now)
        return self.generation(rep.name)

    def generation(self, host: str) -> int:
        doc = self.published.get(host)
        return doc[0].generation if doc else 0

    def ensure_generation_above(self, host: str, after: int) -> None:
        """A host that saw a newer generation than we know (state lost) must still get our document."""
        current = self.published.get(host)
        if current is None or after <= current[0].generation:
            return
        doc = current[0]
        bumped = HostDesiredState(host=host, generation=after + 1, revision=doc.revision, instances=doc.instances)
        self.published[host] = (bumped, time.time())
        self.store.save_published({host: self.published[host]})

    async def wait_desired(self, host: str, *, after: int, wait: float) -> HostDesiredState | None:
        deadline = time.monotonic() + wait
        while True:
            current = self.published.get(host)
            if current is not None and current[0].generation > after:
                return current[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            waiter = self._waiters.setdefault(host, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout=remaining)

    def _notify(self, host: str) -> None:
        waiter = self._waiters.pop(host, None)
        if waiter is not None:
            waiter.set()

    # ------------------------------------------------------------------ status
    async def _status_loop(self) -> None:
        last_flush = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            try:
                self._check_lost()
                if self._status_dirty:
                    self._status_dirty = False
                    self._update_status()
                if time.monotonic() - last_flush > 1.0:
                    last_flush = time.monotonic()
                    await asyncio.to_thread(self._flush)
            except Exception as exc:  # status must keep flowing
                log.exception("event=status-failed error=%r", exc)

    def _flush(self) -> None:
        if self._reports_dirty:
            dirty, self._reports_dirty = self._reports_dirty, set()
            self.store.save_reports({h: self.reports[h] for h in dirty if h in self.reports})
        if self._seen_dirty:
            self._seen_dirty = False
            self.store.touch_hosts({n: h.last_seen for n, h in self.hosts.items()})

    def _check_lost(self) -> None:
        limit = self.settings.heartbeat * self.settings.lost_after
        now = time.time()
        # after a restart, hosts reconnect with their own retry backoff: give the ones we knew a
        # longer grace before moving their instances (which would restart them elsewhere)
        restarting = now < self._restart_grace_until
        lost = [n for n, h in self.hosts.items() if h.state == READY and now - h.last_seen > limit
                and not (restarting and n not in self._fresh_reports)]
        for name in lost:
            self.hosts[name].state = LOST
            self.event(type="Warning", reason="HostLost", host=name,
                       message=f"host {name} missed heartbeats for {limit:g}s; its instances are rescheduled")
        if lost:
            self._status_dirty = True
            self.trigger()

    def host_states(self) -> dict[str, str]:
        return {n: h.state for n, h in self.hosts.items()}

    def _update_status(self) -> None:
        now = time.time()
        views = app_views(
            tree=self.tree,
            digests=self.digests,
            published={h: d for h, (d, _) in self.published.items()},
            reports={h: r for h, (r, _) in self.reports.items()},
            host_states=self.host_states(),
            unplaced=self.unplaced,
        )
        marks_changed = False
        for key, view in views.items():
            mark_key = f"{key[0]}/{key[1]}"
            mark = self.marks.setdefault(mark_key, {"healthySince": None, "digests": {}, "conditions": {}})
            old = self.views.get(key)
            if old is None or old.health != view.health:
                if old is not None or view.health == DEGRADED:
                    self.event(type="Warning" if view.health == DEGRADED else "Normal", reason=f"App{view.health}",
                               env=view.env, app=view.app, message=f"{view.app} is {view.health}: {view.message}")
            good = view.health == HEALTHY and view.sync == SYNCED
            if good and (mark["healthySince"] is None or mark["digests"] != dict(view.digests)):
                mark["healthySince"], mark["digests"] = now, dict(view.digests)
                marks_changed = True
            elif not good and mark["healthySince"] is not None:
                mark["healthySince"] = None
                marks_changed = True
            for ctype, status in self._condition_states(view).items():
                seen = mark["conditions"].get(ctype)
                if seen is None or seen[0] != status:
                    mark["conditions"][ctype] = [status, now]
                    marks_changed = True
        for gone in set(self.views) - set(views):
            self.marks.pop(f"{gone[0]}/{gone[1]}", None)
            marks_changed = True
        self.views = views
        if marks_changed:
            self.store.put("marks", self.marks)
        self._update_drift(now)

    def _condition_states(self, view: AppView) -> dict[str, str]:
        ready = view.health == HEALTHY and view.sync == SYNCED and self.rejected is None
        return {
            "Ready": "True" if ready else "False",
            "Reconciling": "True" if view.health != HEALTHY or view.sync != SYNCED else "False",
            "Stalled": "True" if self.rejected is not None else "False",
        }

    def conditions(self, view: AppView) -> list[Condition]:
        mark = self.marks.get(f"{view.env}/{view.app}", {"conditions": {}})
        revision = (self.applied or {}).get("revision")
        out = []
        for ctype, status in self._condition_states(view).items():
            since = (mark["conditions"].get(ctype) or [status, time.time()])[1]
            if ctype == "Ready":
                if status == "True":
                    reason, message = "ReconciliationSucceeded", f"applied revision {revision}"
                elif self.rejected is not None and view.health == HEALTHY and view.sync == SYNCED:
                    reason, message = "RevisionRejected", self._rejection_message()
                else:
                    reason, message = view.reason or "Progressing", view.message
            elif ctype == "Reconciling":
                reason, message = ("Progressing", view.message) if status == "True" else ("Converged", "")
            else:
                reason, message = ("ValidationFailed", self._rejection_message()) if status == "True" else ("", "")
            out.append(Condition(type=ctype, status=status, reason=reason, message=message,
                                 observed_revision=revision, last_transition_time=since))
        return out

    def _rejection_message(self) -> str:
        rej = self.rejected
        if rej is None:
            return ""
        errors = "; ".join(e["text"] for e in rej.errors[:5])
        return f"revision {rej.revision[:12]} rejected: {errors}"

    # ------------------------------------------------------------------ drift
    def _observations(self) -> dict[str, drift_mod.HostObservation]:
        out = {}
        for name, h in self.hosts.items():
            pub = self.published.get(name)
            rep = self.reports.get(name)
            out[name] = drift_mod.HostObservation(
                name=name, state=h.state, labels=dict(h.registration.labels), last_seen=h.last_seen,
                published_generation=pub[0].generation if pub else 0, published_at=pub[1] if pub else 0.0,
                report=rep[0] if rep else None,
            )
        return out

    def _rejections(self) -> list[drift_mod.Rejection]:
        rej = self.rejected
        if rej is None:
            return []
        applied = (self.applied or {}).get("revision")
        envs = sorted(self.tree.environments) if self.tree else []
        texts = [e["text"] for e in rej.errors]
        return [drift_mod.Rejection(env=e, revision=rej.revision, applied_revision=applied, errors=texts,
                                    since=rej.since) for e in envs or [""]]  # "": before any environment is known

    def _update_drift(self, now: float) -> None:
        if not self.drift_available:
            return
        try:
            deployed = [
                drift_mod.DeployedImage(env=env, app=app.name, component=c.name, image=c.image,
                                        digest=self.digests.get(c.image, ""))
                for env, apps in (self.tree.applications.items() if self.tree else ())
                for app in apps.values() for c in app.components
            ]
            items = drift_mod.compute_drift(
                desired={h: d for h, (d, _) in self.published.items()},
                hosts=self._observations(),
                tags=drift_mod.tag_observations(deployed=deployed, current=self.current_tags),
                rejections=self._rejections(),
                first_seen=self.first_seen,
                now=now,
                grace_seconds=self.settings.grace_seconds,
            )
        except NotImplementedError:
            self.drift_available = False
            return
        keys = {i.key for i in items}
        new = [i for i in items if i.key not in self.first_seen and i.counted]
        fs_changed = bool(new) or bool(set(self.first_seen) - keys)
        self.first_seen = {k: self.first_seen.get(k, now) for k in keys}
        for item in new:
            self.event(type="Warning", reason=f"Drift{item.category}", env=item.env, app=item.app, host=item.host,
                       message=item.message or f"{item.category} {item.instance or item.component}")
        if fs_changed:
            self.store.put("drift_first_seen", self.first_seen)
        self.drift_items = self._heal(items, now)

    def _heal(self, items: list[drift_mod.DriftItem], now: float) -> list[drift_mod.DriftItem]:
        """In heal-mode environments, republish to hosts with drift (see reconciler.healing)."""
        if self.tree is None:
            return items
        busy = {i.id for rep, _ in self.reports.values() for i in rep.instances
                if i.status in (FAILED, BACKOFF, STARTING, STOPPING)}
        # only on a fresh report (not one restored from before a restart) of the current generation
        eligible = {
            name for name, h in self.hosts.items()
            if h.state == READY and name in self._fresh_reports and name in self.reports
            and self.reports[name][0].observed_generation >= self.generation(name)
        }  # fmt: skip
        decision = healing.decide(
            items=items,
            heal_envs={n for n, e in self.tree.environments.items() if e.sync.mode == SyncMode.HEAL},
            eligible_hosts=eligible,
            busy_instances=busy,
            schedule=self._heal_schedule,
            now=now,
            base=max(2.0, 2 * self.settings.heartbeat),
        )
        self._heal_schedule = decision.schedule
        if decision.hosts:
            self.heals += len(decision.hosts)
            log.info("event=heal hosts=%s", ",".join(sorted(decision.hosts)))
            self.trigger(heal=decision.envs)
        return list(decision.items)

    # ------------------------------------------------------------------ events
    def event(self, *, reason: str, message: str, type: str = "Normal", env: str = "", app: str = "",
              host: str = "", revision: str = "") -> None:
        self.store.add_event(type=type, reason=reason, message=message, env=env, app=app, host=host,
                             revision=revision)
        fields = {"event": reason, "type": type, "env": env, "app": app, "host": host,
                  "revision": revision[:12]}
        shown = " ".join(f"{k}={v}" for k, v in fields.items() if v)
        log.log(logging.WARNING if type == "Warning" else logging.INFO, "%s message=%r", shown, message)


def _lock_data_dir(data: Path) -> IO[str]:
    """One reconciler per data directory: two would publish conflicting generations."""
    try:
        data.mkdir(parents=True, exist_ok=True)
        lock = open(data / "reconciler.lock", "a+")
    except OSError as exc:
        raise UsageError(f"cannot use --data {data}: {exc.strerror or exc}", hint="give a writable directory") from exc
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        lock.close()
        raise UsageError(f"another reconciler is using --data {data}",
                         hint="stop it, or give this one its own data directory") from exc
    return lock


def _error_json(file: str, line: int, message: str, *, code: str = "invalid", column: int = 1) -> dict[str, Any]:
    where = f"{file}:{line}:{column}: " if file else ""
    return {"level": "error", "file": file, "line": line, "column": column if line else 0, "path": "",
            "message": message, "code": code, "text": f"{where}{message}"}


def _problem_json(p: Any) -> dict[str, Any]:
    d = dict(p.to_json())
    d["text"] = str(p)
    return d


def _env_changed(old: ManifestTree, new: ManifestTree, env: str) -> bool:
    return old.environments.get(env) != new.environments.get(env) or \
        old.applications.get(env) != new.applications.get(env)
