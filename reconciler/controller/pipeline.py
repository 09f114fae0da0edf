"""The controller: Git -> validated tree -> digests -> plan -> documents published to hosts.

A reconcile is an ordered list of same-signature steps (fetch, load, resolve, plan, publish, watch
tags), its outcome recorded in ``finally``. Load and resolve judge the revision per environment
(:mod:`.evaluation`; what each environment applied and rejected: :mod:`.env_revisions`), so a
problem in one environment's folder rejects that environment only. Errors are classified:
- stalled: the commit is invalid for an environment (schema, unknown image): rejected there, no
  retry until a new commit;
- transient: Git or the registry did not answer: retried with exponential backoff
  (:class:`shared.retry.Backoff`), one ``FetchFailed`` event per outage, not per retry;
- a commit naming an image the registry does not hold (yet) is rejected once for the environments
  naming it (one ``Rejected`` event per revision and environment) and retried for them with the same
  backoff: a push of the missing tag applies it;
- waiting: hosts converging: nothing to do but watch their reports.
Only the publish step changes what hosts run, and only when a host's document changes (or to heal).

Wired here, each in its own module: the fleet (:mod:`.hosts`: registrations, long-polls, lost
hosts), the status and drift tracker (:mod:`.tracker`), events (:mod:`.events`), the state store
(:mod:`.state`), the Git mirror (:mod:`.git_source`) and the data-dir lock (:mod:`.datadir`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Histogram

from model.types import ManifestTree
from reconciler.controller.boundaries import secret_uses
from reconciler.controller.commit_status import CommitStatuses
from reconciler.controller.datadir import lock_data_dir
from reconciler.controller.env_revisions import EnvRevisions
from reconciler.controller.evaluation import REGISTRY_TIMEOUT, Evaluation, Evaluator, Transient
from reconciler.controller.events import EventLog
from reconciler.controller.git_source import CommitInfo, GitError, GitSource
from reconciler.controller.hosts import HostRegistry
from reconciler.controller.notify import Notifier
from reconciler.controller.outbound import OutboundAllowList
from reconciler.controller.placing import place
from reconciler.controller.replication import leadership_for
from reconciler.controller.revisions import Rejected
from reconciler.controller.rollouts import Rollouts
from reconciler.controller.secrets import SecretStore
from reconciler.controller.signing_policy import SigningPolicy
from reconciler.controller.state import NotLeader
from reconciler.controller.stores import open_store
from reconciler.controller.tracker import StatusTracker
from reconciler.planner.placement import Plan, Unplaced
from reconciler.planner.rollout import without_canaries
from reconciler.settings import Settings
from shared import tags as tags_mod
from shared.errors import UsageError
from shared.redact import redact_text
from shared.retry import Backoff
from wire.control import HostDesiredState

log = logging.getLogger("driftless.reconciler")
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

__all__ = ["Context", "Controller", "Transient"]
RETRY_FIRST, RETRY_CAP = 0.5, 30.0  # backoff of transient failures and of commits waiting for an image
STATUS_COST_FACTOR = 3.0  # the status loop waits 3x the cost of its last update before the next one
REPLAN_BATCH_MAX = 1.0  # longest wait (s) gathering replans asked by hosts (registrations, lost hosts)


@dataclass(slots=True, kw_only=True)
class Context:
    """What one reconcile carries from step to step."""

    fetch: bool
    heal: dict[str, frozenset[str]] = field(default_factory=dict)  # host to republish -> environments it heals
    head: CommitInfo | None = None
    evaluation: Evaluation | None = None  # the head being judged per environment (controller/evaluation.py)
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
        self.secrets.set_fingerprint_key(self.store.fingerprint_key())  # keyed fingerprints, shared by replicas
        self.outbound = OutboundAllowList(settings.outbound_allow)  # URLs Git may name (webhooks, commit status)
        self.git = GitSource(url=settings.repo, branch=settings.branch, mirror=settings.data / "git" / "mirror.git")
        self.registry_host = tags_mod.registry_host(settings.registry)
        self.notifier = Notifier(environments=lambda: self.tree.environments if self.tree else {},
                                 secret=self.secrets.get_for, allowed=self.outbound.allows)
        self.leadership = leadership_for(settings, self.store)  # alone, or one of replicated reconcilers
        self.event = EventLog(self.store, listeners=(self.notifier,), leading=self.leadership.leading)
        self.fleet = HostRegistry(store=self.store, events=self.event, settings=settings,
                                  replan=self.trigger, status_changed=self._mark_status_dirty)
        self.tracker = StatusTracker(store=self.store, events=self.event, settings=settings, fleet=self.fleet,
                                     revision=self, heal=lambda envs: self.trigger(heal=envs))
        self.rollouts = Rollouts(store=self.store, events=self.event, fleet=self.fleet, tree=lambda: self.tree,
                                 replan=self.trigger)  # canary rollouts (controller/rollouts.py)
        self.commit_statuses = CommitStatuses(self, secret=self.secrets.get_for,  # spec.commitStatus
                                              allowed=self.outbound.allows)
        # --signature-policy: digests verified before a revision applies, the requirement passed to hosts
        self.signatures = SigningPolicy(settings.signature_policy, registry_url=settings.registry,
                                        timeout=REGISTRY_TIMEOUT, store=self.store)
        # the revisions: per environment what is applied and what was rejected (the composite tree: .tree)
        self.envs = EnvRevisions()
        self.current_tags: dict[str, str] = {}  # image -> digest its tag points to now
        self.head: CommitInfo | None = None
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
        self.evaluator = Evaluator(settings=settings, git=self.git, secrets=self.secrets, store=self.store,
                                   event=self.event, envs=self.envs, registry_host=self.registry_host,
                                   new_rejection=self._retry.reset, outbound=self.outbound,
                                   signatures=self.signatures)
        self._next_poll = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = False

    def _mark_status_dirty(self) -> None:
        self._status_dirty = True

    # ------------------------------------------------------------------ the revisions (controller/env_revisions.py)
    @property
    def tree(self) -> ManifestTree | None:
        """The composite tree: each environment's part from the revision it applied last."""
        return self.envs.tree

    @property
    def digests(self) -> dict[str, str]:
        return self.envs.merged

    @property
    def applied(self) -> dict[str, Any] | None:
        """The newest revision applied to any environment (per environment: ``envs.applied``)."""
        return self.envs.summary_applied()

    @property
    def rejected(self) -> Rejected | None:
        """The newest rejected revision with every environment's problems (per environment: ``envs.rejected``)."""
        return self.envs.summary_rejected()

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
        self.evaluator.close()
        self.notifier.close()
        self.commit_statuses.close()
        self.store.close()
        self._lock_file.close()

    def _restore(self) -> None:
        self.fleet.restore()
        self.tracker.restore()
        self.rollouts.restore()
        self.envs.read(self.store, load=self._try_load)  # per environment (an older single record migrated)
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

    def forget_requests(self) -> None:
        """A follower taking the lead: no heal or retry asked before counts, nor what it judged before
        (the shared state it reads says what each environment applied since)."""
        self._heal_requests.clear()
        self._retry_at = None
        self.evaluator.judged = None

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
        why = self.secrets.reload(required=secret_uses(self.tree) if self.tree is not None else {})
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
                    log.info("event=reconcile-retry in=%.1fs reason=waiting-for-image revision=%s envs=%s", delay,
                             self.head.revision[:12] if self.head else "",
                             ",".join(self.evaluator.waiting(self.head.revision if self.head else None)))
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
        """Environments are rejected at the Git head only for images the registry does not hold (a push can fix it)."""
        return bool(self.head and self.evaluator.waiting(self.head.revision))

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
        current, _, _ = await self.evaluator.resolve_tags(images)
        self.current_tags = current
        self._status_dirty = True

    async def _step_load(self, ctx: Context) -> None:
        """Load the head and run every check that can reject it, per environment (controller/evaluation.py)."""
        head = ctx.head
        if head is None:
            return
        if self.envs.missing_parts():  # a restart that could not read Git: the applied trees first
            await asyncio.to_thread(self._load_applied)
        ctx.evaluation = await self.evaluator.load(head, retry=ctx.fetch)
        if ctx.evaluation is None and self.envs.rejected_envs(head.revision):
            ctx.outcome = "rejected"  # stalled: no retry until a new commit (or a push of the missing image)

    def _load_applied(self) -> None:
        self.envs.load_missing(self.store, load=self._try_load)
        missing = self.envs.missing_parts()
        if missing:
            raise Transient("cannot load the applied revision(s) " + ", ".join(
                f"{env}: {rev[:12]}" for env, rev in sorted(missing.items())))

    def _try_load(self, revision: str) -> ManifestTree | None:
        try:
            return self.evaluator.load_tree(revision)
        except Exception as exc:  # keep serving the published documents; the next reconcile retries
            log.warning("event=restore-failed revision=%s error=%r", revision, exc)
            return None

    def load_tree(self, revision: str) -> ManifestTree:
        return self.evaluator.load_tree(revision)

    async def _step_resolve(self, ctx: Context) -> None:
        """Resolve tags, check against the registry, then apply or reject each environment."""
        if ctx.evaluation is None:
            return
        if await self.evaluator.resolve(ctx.evaluation):
            ctx.outcome = "rejected"

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
        if self.envs.missing_parts():
            return  # an applied tree is not loaded yet: publishing now would empty its hosts
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
                         secrets=secrets, signatures=self.signatures.requirements)  # the cyclic GC paused (placing.py)

        started = time.perf_counter()
        placed = await asyncio.to_thread(placement)
        placed = self.signatures.decorate(placed, hosts=self.fleet.hosts, carried=True)  # off hosts that can't verify
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
