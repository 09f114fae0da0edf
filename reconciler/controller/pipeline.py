"""The controller: Git -> validated tree -> digests -> plan -> documents published to hosts.

A reconcile is an ordered list of same-signature steps (fetch, load, resolve, plan, publish, watch
tags), its outcome recorded in ``finally``. Errors are classified:
- stalled: the commit is invalid (schema, unknown image): rejected, no retry until a new commit;
- transient: Git or the registry did not answer: retried with exponential backoff
  (:class:`shared.retry.Backoff`), one ``FetchFailed`` event per outage, not per retry;
- a commit naming an image the registry does not hold (yet) is rejected once (one ``Rejected``
  event per revision) and retried with the same backoff: a push of the missing tag applies it;
- waiting: hosts converging: nothing to do but watch their reports.
Only the publish step changes what hosts run, and only when a host's document changes (or to heal).

Wired here, each in its own module: the fleet (:mod:`.hosts`: registrations, long-polls, lost
hosts), the status and drift tracker (:mod:`.tracker`), events (:mod:`.events`), the state store
(:mod:`.state`), the Git mirror (:mod:`.git_source`) and the data-dir lock (:mod:`.datadir`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Histogram

from model.types import ManifestTree
from reconciler.controller.commit_status import CommitStatuses
from reconciler.controller.datadir import lock_data_dir
from reconciler.controller.events import EventLog
from reconciler.controller.git_source import CommitInfo, GitError, GitSource
from reconciler.controller.hosts import HostRegistry
from reconciler.controller.notify import Notifier, commit_event
from reconciler.controller.placing import place
from reconciler.controller.replication import leadership_for
from reconciler.controller.revisions import (
    Rejected,
    env_changed,
    error_json,
    locate_image,
    locate_secrets,
    problem_json,
    secret_refs,
)
from reconciler.controller.rollouts import Rollouts
from reconciler.controller.secrets import SecretStore
from reconciler.controller.signing_policy import SigningPolicy
from reconciler.controller.state import NotLeader, open_store
from reconciler.controller.tracker import StatusTracker
from reconciler.planner.placement import Plan, Unplaced
from reconciler.planner.rollout import without_canaries
from reconciler.settings import Settings
from shared import registry_client
from shared import tags as tags_mod
from shared.errors import NotReachable, UsageError
from shared.redact import redact_text
from shared.reference import parse
from shared.retry import Backoff
from shared.units import seconds_from_env
from wire.control import HostDesiredState

log = logging.getLogger("driftless.reconciler")
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)



REGISTRY_TIMEOUT = seconds_from_env("DRIFTLESS_REGISTRY_TIMEOUT", 5.0)  # one registry request (connect, each read)
RESOLVE_DEADLINE = 6 * REGISTRY_TIMEOUT  # all the tags of a revision, resolved concurrently
RESOLVE_WORKERS = 8  # registry requests in flight at once
RETRY_FIRST, RETRY_CAP = 0.5, 30.0  # backoff of transient failures and of commits waiting for an image
STATUS_COST_FACTOR = 3.0  # the status loop waits 3x the cost of its last update before the next one
REPLAN_BATCH_MAX = 1.0  # longest wait (s) gathering replans asked by hosts (registrations, lost hosts)


class Transient(Exception):
    """Git or the registry did not answer; the reconcile is retried with backoff."""


@dataclass(slots=True, kw_only=True)
class Context:
    """What one reconcile carries from step to step."""

    fetch: bool
    heal: dict[str, frozenset[str]] = field(default_factory=dict)  # host to republish -> environments it heals
    head: CommitInfo | None = None
    new_tree: ManifestTree | None = None
    plan: Plan | None = None
    plan_inputs: tuple[Any, ...] | None = None  # what ``plan`` was computed from (Controller._same_plan_inputs)
    outcome: str = "success"


class Controller:
    _plan_seconds = 0.0  # how long the last placement took: replans asked by hosts wait as long, to batch them

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # before the lock: a bad file is a usage error
        self.secrets = SecretStore(settings.secrets_file, age_identity_file=settings.age_identity_file)
        self._lock_file = lock_data_dir(settings.data)
        try:
            self.store = open_store(settings.state, path=settings.data / "state.db", history_limit=settings.history_limit)
        except UsageError:
            self._lock_file.close()
            raise
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise UsageError(f"cannot open the reconciler state {settings.data / 'state.db'}: {exc}",
                             hint="give a writable --data directory") from exc
        self.git = GitSource(url=settings.repo, branch=settings.branch, mirror=settings.data / "git" / "mirror.git")
        self.registry_host = tags_mod.registry_host(settings.registry)
        self.notifier = Notifier(environments=lambda: self.tree.environments if self.tree else {},
                                 secrets_file=settings.notification_secrets_file)
        self.leadership = leadership_for(settings, self.store)  # alone, or one of replicated reconcilers
        self.event = EventLog(self.store, listeners=(self.notifier,), leading=self.leadership.leading)
        self.fleet = HostRegistry(store=self.store, events=self.event, settings=settings,
                                  replan=self.trigger, status_changed=self._mark_status_dirty)
        self.tracker = StatusTracker(store=self.store, events=self.event, settings=settings, fleet=self.fleet,
                                     revision=self, heal=lambda envs: self.trigger(heal=envs))
        self.rollouts = Rollouts(store=self.store, events=self.event, fleet=self.fleet, tree=lambda: self.tree,
                                 replan=self.trigger)  # canary rollouts (controller/rollouts.py)
        self.commit_statuses = CommitStatuses(self, secret=self.secrets.get)  # spec.commitStatus
        # --signature-policy: digests verified before a revision applies, the requirement passed to hosts
        self.signatures = SigningPolicy(settings.signature_policy, registry_url=settings.registry,
                                        timeout=REGISTRY_TIMEOUT, store=self.store)
        # the revision: what is applied, what was rejected, where tags point
        self.tree: ManifestTree | None = None
        self.digests: dict[str, str] = {}
        self.current_tags: dict[str, str] = {}  # image -> digest its tag points to now
        self.applied: dict[str, Any] | None = None  # {"revision","message","author","appliedAt"}
        self.head: CommitInfo | None = None
        self.rejected: Rejected | None = None
        self.unplaced: tuple[Unplaced, ...] = ()
        self.last_error: str | None = None
        self.last_reconcile: dict[str, Any] = {}
        # metrics
        self.reconcile_seconds = Histogram(  # unregistered: reconciler.api.prometheus collects it per scrape
            "driftless_reconcile_duration_seconds", "Duration of a reconcile (fetch, load, resolve, plan, publish).",
            buckets=RECONCILE_BUCKETS, registry=None)
        self.reconciles: dict[str, int] = {}
        self.git_fetches = 0
        self.git_fetch_errors = 0
        self.generations_published = 0
        self.plans = 0  # placements computed
        self.plans_skipped = 0  # placements skipped: none of their inputs changed since the last one
        self._plan_inputs: tuple[Any, ...] | None = None  # what the last placement was computed from
        # machinery
        self._wake = asyncio.Event()
        self._want_fetch = True
        self._heal_requests: dict[str, frozenset[str]] = {}
        self._status_dirty = True
        self._retry_at: float | None = None
        self._retry = Backoff(first=RETRY_FIRST, cap=max(1.0, min(settings.interval, RETRY_CAP)))
        self._failing: str | None = None  # the outage being retried (one FetchFailed event for it)
        self._resolver = concurrent.futures.ThreadPoolExecutor(max_workers=RESOLVE_WORKERS,
                                                               thread_name_prefix="resolve-tags")
        self._next_poll = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = False
        self._component_api: bool | None = None

    def _mark_status_dirty(self) -> None:
        self._status_dirty = True

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.leadership.replicated:  # follows, and leads once elected (reconciler.controller.replication)
            self.git.watch(self._on_git_change)
            self._tasks = [asyncio.create_task(self.leadership.run(self), name="replication")]
            return
        await asyncio.to_thread(self._restore)
        if self.git.watch(self._on_git_change):
            pass
        self._tasks = self.leader_tasks()

    def leader_tasks(self) -> list[asyncio.Task[None]]:
        """Start the loops only a leader runs: always, alone on SQLite; while it holds the lease,
        replicated (reconciler.controller.replication starts and cancels them)."""
        return [
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self._status_loop(), name="status"),
            asyncio.create_task(self.rollouts.run(), name="rollouts"),
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
        with contextlib.suppress(NotLeader):  # a follower has nothing of its own to save
            self.fleet.flush()
        await asyncio.to_thread(self.git.close)
        self._resolver.shutdown(wait=False, cancel_futures=True)
        self.notifier.close()
        self.commit_statuses.close()
        self.store.close()
        self._lock_file.close()

    def _restore(self) -> None:
        self.fleet.restore()
        self.tracker.restore()
        self.rollouts.restore()
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
        log.info("event=restored hosts=%d published=%d applied=%s", len(self.fleet.hosts), len(self.fleet.published),
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
            if not self._want_fetch:
                # a replan for hosts coming and going: wait as long as the last placement took (~0.6 s at 10,000
                # hosts, milliseconds at a few), so a registration storm is planned in batches, not once per host
                await asyncio.sleep(min(REPLAN_BATCH_MAX, self._plan_seconds))
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

    def _reload_secrets(self) -> None:
        """Read --secrets-file again when it changed: new values replan (a new fingerprint is a new
        generation for the hosts that run it) and retry a revision rejected for a missing secret."""
        why = self.secrets.reload(required=secret_refs(self.tree) if self.tree is not None else frozenset())
        if why is None:
            return
        if why:
            self.event(type="Warning", reason="SecretsRefused", message=why)
            return
        self.event(reason="SecretsReloaded", message=f"--secrets-file re-read: {len(self.secrets.names())} secret(s)")
        self.trigger(fetch=True)

    async def reconcile(self, ctx: Context) -> None:
        self._reload_secrets()
        started = time.perf_counter()
        steps: list[Callable[[Context], Awaitable[None]]] = [
            self._step_fetch, self._step_load, self._step_resolve, self._step_plan, self._step_publish,
            self._step_watch_tags,
        ]
        try:
            for step in steps:
                await step(ctx)
            if self._waiting_for_image():
                # a commit naming an image not pushed yet: tried again with backoff, not at every event
                if ctx.fetch or self._retry_at is None:
                    delay = self._retry.next_delay()
                    self._retry_at = time.monotonic() + delay
                    log.info("event=reconcile-retry in=%.1fs reason=waiting-for-image revision=%s", delay,
                             self.rejected.revision[:12] if self.rejected else "")
            else:
                self._retry_at = None
                self._retry.reset()
            self.last_error = None
        except Transient as exc:
            ctx.outcome = "error"
            self.last_error = redact_text(str(exc))
            delay = self._retry.next_delay()
            self._retry_at = time.monotonic() + delay
            log.warning("event=reconcile-retry in=%.1fs error=%s", delay, self.last_error)
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

    def _waiting_for_image(self) -> bool:
        """The Git head is rejected only for images the registry does not hold (a push can fix it)."""
        rejected = self.rejected
        return bool(rejected and self.head and rejected.revision == self.head.revision and rejected.errors
                    and all(e.get("code") == "unknown-image" for e in rejected.errors))

    async def _step_fetch(self, ctx: Context) -> None:
        if not ctx.fetch:
            return
        self.git_fetches += 1
        try:
            ctx.head = await asyncio.to_thread(self.git.fetch)
        except GitError as exc:
            self.git_fetch_errors += 1
            message = redact_text(str(exc))
            if message != self._failing:  # one event per outage (and per new error), not per retry
                self._failing = message
                self.event(type="Warning", reason="FetchFailed", message=message)
            raise Transient(message) from exc
        self._failing = None
        self.head = ctx.head

    async def _step_watch_tags(self, ctx: Context) -> None:
        """Where the applied revision's tags point now (for TagMoved drift); never fails the reconcile."""
        tree = self.tree
        if tree is None or not ctx.fetch:
            return
        images = {c.image for apps in tree.applications.values() for a in apps.values() for c in a.components
                  if "@" not in c.image}
        current, _, _ = await self._resolve_tags(images)
        self.current_tags = current
        self._status_dirty = True

    async def _resolve_tags(self, images: Iterable[str]) -> tuple[
            dict[str, str], dict[str, tags_mod.UnknownImage], tags_mod.RegistryUnreachable | None]:
        """Resolve each tag on its own (at most RESOLVE_WORKERS requests at once, the whole within
        RESOLVE_DEADLINE seconds): the digests found, the images the registry does not hold, and why
        the registry could not be asked (None when it answered for every image)."""
        loop = asyncio.get_running_loop()
        futures = {
            image: loop.run_in_executor(self._resolver, functools.partial(
                tags_mod.resolve, [image], registry_url=self.settings.registry, timeout=REGISTRY_TIMEOUT,
                auth=self.settings.registry_auth()))
            for image in sorted(set(images))
        }
        if not futures:
            return {}, {}, None
        _, pending = await asyncio.wait(futures.values(), timeout=RESOLVE_DEADLINE)
        for future in pending:
            future.cancel()
        digests: dict[str, str] = {}
        unknown: dict[str, tags_mod.UnknownImage] = {}
        unreachable: tags_mod.RegistryUnreachable | None = None
        for image, future in futures.items():
            if future.cancelled():
                unreachable = unreachable or tags_mod.RegistryUnreachable(
                    f"registry {self.registry_host} did not resolve {image} within {RESOLVE_DEADLINE:g}s")
                continue
            exc = future.exception()
            if exc is None:
                digests.update(future.result())
            elif isinstance(exc, tags_mod.UnknownImage):
                unknown[image] = exc
            elif isinstance(exc, tags_mod.RegistryUnreachable):
                unreachable = unreachable or exc
            else:
                unreachable = unreachable or tags_mod.RegistryUnreachable(f"cannot resolve {image}: {exc!r}")
        return digests, unknown, unreachable

    async def _step_load(self, ctx: Context) -> None:
        head = ctx.head
        if head is None or (self.applied and head.revision == self.applied["revision"] and self.tree is not None):
            return
        if self.rejected and head.revision == self.rejected.revision:
            # stalled: no retry until a new commit; except a missing image, which a push to the
            # registry can fix: that commit is tried again at each poll, sync or webhook
            # (or a secret: adding it to --secrets-file retries the revision)
            # (or a signature: `driftless sign` of the digest retries the revision too)
            waiting_for_image = all(e.get("code") in ("unknown-image", "unknown-secret", "unsigned")
                                    for e in self.rejected.errors)
            if not (waiting_for_image and ctx.fetch):
                ctx.outcome = "rejected"
                return
        signers = self.settings.allowed_signers
        if signers is not None:
            why = await asyncio.to_thread(self.git.verify_signature, head.revision, allowed_signers=signers)
            if why is not None:
                self._reject(head, [error_json("", 0, f"commit {head.revision[:12]} is not signed by an allowed key "
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
            self._reject(head, [problem_json(p) for p in tree.errors])
            ctx.outcome = "rejected"
            return
        undecryptable = await asyncio.to_thread(self.secrets.decrypt, tree)  # age values kept in Git
        if undecryptable:  # every one at its file:line; the last good state stays
            self._reject(head, undecryptable)
            ctx.outcome = "rejected"
            return
        unknown_secrets = locate_secrets(tree, self.secrets.names())
        if unknown_secrets:  # like an unknown image: every reference at its file:line, the last good state stays
            self._reject(head, unknown_secrets)
            ctx.outcome = "rejected"
            return
        ctx.new_tree = tree

    def _load(self, revision: str) -> ManifestTree:
        from model.loader import load_revision, load_tree

        # `git archive` + load_tree is ~15x faster than reading blob by blob through gitpython
        # (1000 files: 0.9 s instead of 15 s); trees with links go the careful way.
        with tempfile.TemporaryDirectory(dir=self.settings.data, prefix="checkout-") as tmp:
            try:
                root = self.git.export(revision, self.settings.path, Path(tmp))
            except (GitError, tarfile.TarError):
                tree: ManifestTree = load_revision(self.git.mirror, revision, subdir=self.settings.path)
            else:
                tree = load_tree(root)
        tree.revision = revision
        # age values kept in Git: decrypted wherever a tree is loaded (a restart, a follower taking the
        # lead); a value that cannot be is logged here and rejected with file:line by _step_load
        self.secrets.decrypt(tree)
        return tree

    async def _step_resolve(self, ctx: Context) -> None:
        tree, head = ctx.new_tree, ctx.head
        if tree is None or head is None:
            return
        images = [c.image for apps in tree.applications.values() for a in apps.values() for c in a.components]
        digests, unknown, unreachable = await self._resolve_tags(images)
        if unknown:  # the commit names images the registry does not hold: every one of them, at its file:line
            self._reject(head, [locate_image(tree, image, str(exc)) for image, exc in sorted(unknown.items())])
            ctx.outcome = "rejected"
            return
        if unreachable is not None:
            raise Transient(str(unreachable)) from unreachable
        try:  # --signature-policy: an unsigned or wrongly signed digest rejects, at its image's file:line
            unsigned = await asyncio.to_thread(self.signatures.check, tree, digests)
        except NotReachable as exc:
            raise Transient(f"registry {self.settings.registry} could not answer the signature checks: {exc}") from exc
        if unsigned:
            self._reject(head, unsigned)
            ctx.outcome = "rejected"
            return
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
        from model.registry_check import check_registry

        try:
            problems = [p for p in check_registry(tree, registry_url=self.settings.registry) if p.level == "error"]
        except Exception as exc:
            raise Transient(f"registry check failed: {exc!r}") from exc
        # the registry not answering (or not describing an image) says nothing about the commit: retry
        unreachable = [p for p in problems if p.code == "registry-unreachable"]
        if unreachable:
            raise Transient(f"registry {self.settings.registry} could not answer the component checks: "
                            f"{unreachable[0].message}")
        return [problem_json(p) for p in problems]

    def _speaks_component_api(self, digests: dict[str, str]) -> bool:
        if self._component_api is not None:
            return self._component_api
        for image, digest in digests.items():
            ref = parse(image)
            if ref.registry not in (None, self.registry_host):
                continue
            session = registry_client.Session(self.settings.registry, timeout=REGISTRY_TIMEOUT)
            try:
                status, _, _ = session.request("GET", f"/v2/_driftless/components/{ref.repository}/{digest}",
                                               ok=tuple(range(200, 600)))
            except NotReachable as exc:
                raise Transient(f"registry {self.settings.registry} not reachable: {exc}") from exc
            self._component_api = status == 200
            return self._component_api
        return False

    def _reject(self, head: CommitInfo, errors: list[dict[str, Any]]) -> None:
        previous = self.rejected
        if previous is not None and previous.revision == head.revision:
            if previous.errors == errors:
                return  # a retry that found the same: the revision's Rejected event was emitted once
        else:
            self._retry.reset()  # a new revision waiting for an image starts retrying soon
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
            if previous_tree is None or env_changed(previous_tree, tree, env_name):
                self.event(reason="Applied", env=env_name, revision=head.revision,
                           message=f"revision {head.revision[:12]} applied: {head.message}")
        found = commit_event(head.message)  # a promotion's or rollback's commit, now applied
        if found is not None and found[1] in tree.environments:
            reason, env, app, message = found
            self.event(reason=reason, env=env, app=app, revision=head.revision, message=message)

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

    def _same_plan_inputs(self, tree: ManifestTree | None, secrets: dict[str, str]) -> tuple[Any, ...] | None:
        """What a placement reads, cheaply (O(1) but for the digests and secrets: one entry per image and
        per secret): the tree and the fleet by identity and version (``HostRegistry.version`` moves when a
        host registers, is Lost or back, or a document is published), the digests and the secrets'
        fingerprints by value. None when the last placement was computed from the same: a Git poll that
        finds the same revision, a heartbeat, a status update cost no placement. Only when no rollout
        is tracked (a rollout's plan also depends on time and on the hosts' traffic)."""
        fleet = self.fleet
        inputs = (tree, fleet.hosts, fleet.published, fleet.version, len(fleet.hosts), dict(self.digests), secrets,
                  self.registry_host)
        last = self._plan_inputs
        if last is not None and tree is not None and self.rollouts.idle(tree) and all(
                a is b if i < 3 else a == b for i, (a, b) in enumerate(zip(inputs, last, strict=True))):
            return None
        return inputs

    async def _step_plan(self, ctx: Context) -> None:
        if self.tree is None and self.applied:
            return  # the applied tree is not loaded yet: publishing now would empty the hosts
        secrets = self.secrets.fingerprints()
        inputs = self._same_plan_inputs(self.tree, secrets)
        if inputs is None:
            if not ctx.heal:  # nothing changed: the published documents are this plan's already
                self.plans_skipped += 1
                return
            inputs = self._plan_inputs  # a heal republishes the same plan
        self._plan_inputs = None  # until this plan is published: one that fails is not skipped next time
        tree = self.tree or ManifestTree()
        published = list(self.fleet.published.items())  # a snapshot: the loop may publish while the thread plans
        hosts = self.fleet.infos()

        def placement() -> Plan:  # pure, and ~0.5 s of CPU at 10,000 hosts: in a thread (hack/bench/control_plane.py)
            previous = {h: without_canaries(doc.instances) for h, (doc, _) in published}
            return place(tree=tree, digests=self.digests, hosts=hosts, previous=previous, registry=self.registry_host,
                         secrets=secrets)  # the cyclic GC paused meanwhile (placing.py)

        started = time.perf_counter()
        placed = await asyncio.to_thread(placement)
        placed = self.signatures.decorate(placed, hosts=self.fleet.hosts)  # --signature-policy
        self._plan_seconds = time.perf_counter() - started
        self.plans += 1
        ctx.plan = self.rollouts.plan(placed, tree)
        ctx.plan_inputs = inputs

    async def _step_publish(self, ctx: Context) -> None:
        if ctx.plan is None:
            return
        now = time.time()
        revision = (self.applied or {}).get("revision")
        changed: dict[str, tuple[HostDesiredState, float]] = {}
        for host, instances in ctx.plan.desired.items():
            current = self.fleet.published.get(host)
            if current is not None and current[0].instances == instances and host not in ctx.heal:
                continue
            generation = (current[0].generation if current else 0) + 1
            doc = HostDesiredState(host=host, generation=generation, revision=revision, instances=instances)
            changed[host] = (doc, now)
        self.unplaced = ctx.plan.unplaced
        if not changed:
            self._plan_inputs = ctx.plan_inputs  # published as planned: the same inputs need no placement
            return
        # in the same step as the tree and unplaced: status never sees a new tree with old documents
        self.leadership.check()  # replicated: a deposed leader publishes nothing (its writes are fenced too)
        await self.fleet.publish(changed)
        self.generations_published += len(changed)
        for host, (doc, _) in sorted(changed.items()):
            why = "heal" if host in ctx.heal else "plan"
            log.info("event=published host=%s generation=%d instances=%d reason=%s", host, doc.generation,
                     len(doc.instances), why)
        self._publish_events(changed, heal=ctx.heal, revision=revision or "")
        # not remembered: the publication moved fleet.version, the next reconcile plans once more (and
        # finds nothing to change), after which polls and heartbeats skip the placement

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

    # ------------------------------------------------------------------ status
    async def _status_loop(self) -> None:
        last_flush = time.monotonic()
        next_status = next_lost = 0.0
        # a tenth of the Lost window is precision enough (~2 ms a check at 10,000 hosts, not 10 times a second)
        lost_every = min(1.0, self.settings.heartbeat * self.settings.lost_after / 10)
        while True:
            await asyncio.sleep(0.1)
            try:
                if time.monotonic() >= next_lost:
                    next_lost = time.monotonic() + lost_every
                    self.fleet.check_lost()
                if time.monotonic() - last_flush > 1.0:
                    self._reload_secrets()
                if self._status_dirty and time.monotonic() >= next_status:
                    self._status_dirty = False
                    started = time.monotonic()
                    # ~0.1-0.3 s of CPU at 10,000 hosts: computed in a thread on inputs taken on the loop (results
                    # applied on the loop); it still takes the GIL the loop needs, so while reports keep changing
                    # at most a quarter of the time goes to it (hack/bench/control_plane.py)
                    await self.tracker.update_in_thread()
                    next_status = time.monotonic() + STATUS_COST_FACTOR * (time.monotonic() - started)
                self.commit_statuses.update()
                if time.monotonic() - last_flush > 1.0:
                    last_flush = time.monotonic()
                    await asyncio.to_thread(self.fleet.flush)
            except Exception as exc:  # status must keep flowing
                log.exception("event=status-failed error=%r", exc)
