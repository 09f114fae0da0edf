"""Who leads: one reconciler alone (SQLite, :class:`Leadership`), or several on one PostgreSQL
database (:class:`ReplicatedLeadership`), of which one leads and the others follow.

The leader reconciles, publishes to hosts, serves the hosts, sends notifications and writes Git; it
renews its lease (:class:`~.state_postgres.PostgresLease`) every third of the lease and steps down
when it cannot (the lease taken, the database gone, a renewal that does not answer before the lease
ends): its reconcile and status loops are cancelled and it follows again. Every write it makes is
fenced by its epoch in the database, and before a Git push it checks that its lease still has
``PUSH_MARGIN`` seconds to run (:func:`reconciler.gitops.working_copy.push_guard`).

A follower writes nothing. Every ``FOLLOW_EVERY`` seconds it reads the shared state (hosts, published
documents, reports, the applied revision, health marks, drift first-seen times) and computes the same
views as the leader (``StatusTracker.update(observe_only=True)``), so status, events, history, drift
and the dashboard answer from it; it fetches Git only to load a revision the leader applied. It
tries to take the lease every ``ACQUIRE_EVERY`` seconds; when it does, it reads the state again as
the new leader (every known host gets the restart grace before it can be Lost, generations continue
from the database) and starts reconciling. Host calls and writes reaching a follower are refused
by the API with 503 naming the leader (:mod:`reconciler.api.replication`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from model.types import ManifestTree
from reconciler.controller.env_revisions import EnvRevisions
from reconciler.controller.events import EventLog
from reconciler.controller.git_source import CommitInfo, GitSource
from reconciler.controller.hosts import HostRegistry, HostState
from reconciler.controller.rollouts import Rollouts
from reconciler.controller.state import HostRow, NotLeader, StateStore
from reconciler.controller.tracker import StatusTracker
from reconciler.planner.placement import LOST, READY, Unplaced
from reconciler.settings import Settings
from shared.redact import redact_text
from wire.control import HostDesiredState, HostReport

if TYPE_CHECKING:
    from reconciler.controller.state_postgres import PostgresLease

log = logging.getLogger("driftless.reconciler")

FOLLOW_EVERY = 1.0  # a follower reads the shared state this often
ACQUIRE_EVERY = 0.25  # and tries to take the lease this often (one small UPDATE)
PUSH_MARGIN = 1.0  # a Git push needs the lease to run at least this long still
UNPLACED_KEY = "unplaced"  # the leader's unplaced replicas, for the followers' status


class Controller(Protocol):
    """What leading and following drive of the controller (reconciler.controller.pipeline.Controller;
    a protocol, so this module does not import the pipeline that imports it)."""

    settings: Settings
    store: StateStore
    fleet: HostRegistry
    tracker: StatusTracker
    rollouts: Rollouts
    envs: EnvRevisions
    git: GitSource
    event: EventLog
    unplaced: tuple[Unplaced, ...]
    ready: bool
    head: CommitInfo | None

    def load_tree(self, revision: str) -> ManifestTree: ...

    def leader_tasks(self) -> list[asyncio.Task[None]]: ...

    def trigger(self, *, fetch: bool = False, heal: Mapping[str, frozenset[str]] | None = None) -> None: ...

    def forget_requests(self) -> None: ...


class Leadership:
    """One reconciler alone (SQLite): it always leads."""

    replicated = False

    def __init__(self, url: str | None) -> None:
        self.url = url

    def leading(self, *, margin: float = 0.0) -> bool:
        return True

    def check(self, *, margin: float = 0.0) -> None:
        """Raise NotLeader unless this reconciler leads (with ``margin`` seconds of lease left)."""

    def leader_url(self) -> str | None:
        return self.url

    def to_json(self) -> dict[str, Any]:
        return {"mode": "single", "role": "leader", "url": self.url, "leader": {"url": self.url}}

    async def run(self, controller: Controller) -> None:
        raise NotImplementedError


@dataclass(slots=True, kw_only=True)
class Snapshot:
    """The shared state as one reconciler reads it (in a thread; applied on the event loop)."""

    hosts: dict[str, HostRow]
    published: dict[str, tuple[HostDesiredState, float]]
    reports: dict[str, tuple[HostReport, float]]
    envs: EnvRevisions  # per environment: applied, rejected, the trees (controller/env_revisions.py)
    marks: dict[str, Any]
    first_seen: dict[str, float]
    lease: dict[str, Any] | None
    rollouts: dict[str, Any]
    read_at: float  # monotonic, before the lease row was read
    unplaced: tuple[Unplaced, ...]


class ReplicatedLeadership(Leadership):
    """Several reconcilers on one PostgreSQL database (see the module's docstring)."""

    replicated = True

    def __init__(self, lease: PostgresLease) -> None:
        super().__init__(lease.url)
        self.lease = lease
        self.current: dict[str, Any] | None = None  # the lease row as last read: who leads
        self._current_until = 0.0  # monotonic time its lease ends, as read
        self.elected_at: float | None = None
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._db_error: str | None = None
        self._trees: dict[str, ManifestTree] = {}  # the applied revisions' trees, loaded once
        self._saved_unplaced: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ questions
    def leading(self, *, margin: float = 0.0) -> bool:
        return self.lease.leading(margin=margin)

    def check(self, *, margin: float = 0.0) -> None:
        if not self.lease.leading(margin=margin):
            raise NotLeader(f"this reconciler ({self.url}) does not lead"
                            + (f" with {margin:g}s of lease left" if margin else "")
                            + f"; the leader is {self.leader_url() or 'not known yet'}")

    def _known_leader(self) -> dict[str, Any] | None:
        """The leader as last read from the database, while its lease runs."""
        current = self.current
        if current is None or time.monotonic() >= self._current_until:
            return None
        return current

    def leader_url(self) -> str | None:
        if self.leading():
            return self.url
        current = self._known_leader()
        return str(current["url"]) if current is not None else None

    def to_json(self) -> dict[str, Any]:
        leading = self.leading()
        current = self._known_leader()
        leader = None
        if leading:
            leader = {"url": self.url, "epoch": self.lease.epoch, "since": self.elected_at}
        elif current is not None:
            leader = {"url": current["url"], "epoch": current["epoch"], "since": current["acquiredAt"]}
        return {"mode": "replicated", "role": "leader" if leading else "follower", "url": self.url,
                "leader": leader, "leaseSeconds": self.lease.lease_seconds,
                **({"databaseError": self._db_error} if self._db_error else {})}

    # ------------------------------------------------------------------ the loop
    async def run(self, controller: Controller) -> None:
        next_follow = 0.0
        try:
            while True:
                try:
                    if self.lease.epoch is not None:
                        if not self._leader_tasks:  # just taken (also by an acquire that answered after its timeout)
                            await self._take_over(controller)
                            continue
                        await self._renew(controller)
                        await asyncio.sleep(self.lease.lease_seconds / 3)
                        continue
                    if await self._try_acquire():
                        continue
                    if time.monotonic() >= next_follow:
                        next_follow = time.monotonic() + FOLLOW_EVERY
                        await self._follow(controller)
                    await asyncio.sleep(ACQUIRE_EVERY)
                except Exception as exc:  # never let the election die: step down, follow, try again
                    log.exception("event=replication-failed error=%r", exc)
                    await self._stop_leading(controller, why=f"failed: {exc!r}", release=False)
                    await asyncio.sleep(ACQUIRE_EVERY)
        finally:
            await self._stop_leading(controller, why="stopping", release=True)

    def _database_error(self, what: str, exc: BaseException) -> None:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer in time"
        message = redact_text(f"{what}: {type(exc).__name__}: {detail}")
        if message != self._db_error:
            log.warning("event=state-unavailable error=%s", message)
        self._db_error = message

    async def _try_acquire(self) -> bool:
        try:
            taken = await asyncio.wait_for(asyncio.to_thread(self.lease.try_acquire), timeout=5.0)
        except Exception as exc:  # the database away: keep following what we know
            self._database_error("cannot reach the shared state", exc)
            return False
        self._db_error = None
        return taken

    async def _renew(self, controller: Controller) -> None:
        remaining = max(0.05, self.lease._valid_until - time.monotonic())
        epoch = self.lease.epoch
        try:
            renewed = await asyncio.wait_for(asyncio.to_thread(self.lease.renew_epoch, epoch), timeout=remaining)
            why = "another reconciler holds the lease"
        except Exception as exc:  # TimeoutError: the database did not answer before the lease ends
            self._database_error("cannot renew the leader lease", exc)
            renewed, why = False, self._db_error or repr(exc)
        if renewed and self.lease.leading():
            self._db_error = None
            await self._save_unplaced(controller)
            return
        await self._stop_leading(controller, why=why, release=False, epoch=epoch)

    async def _save_unplaced(self, c: Controller) -> None:
        """What the leader's plan could not place (not otherwise stored): followers show it too."""
        unplaced = [u.to_json() for u in c.unplaced]
        if unplaced == self._saved_unplaced:
            return
        try:
            await asyncio.to_thread(c.store.put, UNPLACED_KEY, unplaced)
        except Exception as exc:  # fenced, or the database away: the renewal decides
            log.warning("event=state-write-failed key=%s error=%r", UNPLACED_KEY, exc)
            return
        self._saved_unplaced = unplaced

    async def _take_over(self, controller: Controller) -> None:
        epoch = self.lease.epoch
        log.info("event=leader-elected url=%s epoch=%s", self.url, epoch)
        try:
            snap = await asyncio.to_thread(self._snapshot, controller)
        except Exception as exc:
            self._database_error("cannot read the shared state to lead", exc)
            await self._stop_leading(controller, why="cannot read the shared state", release=True)
            return
        c = controller
        fleet = c.fleet
        fleet.hosts.clear()
        fleet.fresh_reports.clear()
        fleet._reports_dirty.clear()
        fleet._seen_dirty = False
        try:
            fleet.restore()  # every known host gets the restart grace; generations go on from the database
            c.tracker.restore()
            c.rollouts.restore()
        except Exception as exc:
            self._database_error("cannot read the shared state to lead", exc)
            await self._stop_leading(controller, why="cannot read the shared state", release=True)
            return
        self._apply_revision(c, snap)
        c.unplaced = snap.unplaced  # until the first plan
        self._saved_unplaced = None
        c.forget_requests()
        # status as the leader sees it, before the first request: promotion gates read it. No App*
        # events for what only the follower's older view said (its views are dropped)
        c.tracker.views = {}
        try:
            c.tracker.update()
        except Exception as exc:
            log.exception("event=status-failed error=%r", exc)
        c.ready = True
        self.elected_at = time.time()
        self.current = None
        c.trigger(fetch=True)
        self._leader_tasks = c.leader_tasks()
        c.event(reason="LeaderElected", message=f"reconciler {self.url} leads (epoch {epoch})")

    async def _stop_leading(self, controller: Controller, *, why: str, release: bool, epoch: int | None = None) -> None:
        was = self.lease.epoch if epoch is None else epoch
        tasks, self._leader_tasks = self._leader_tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if release and was is not None and self.lease.leading():
            with contextlib.suppress(Exception):  # the last reports and last-seen times, then hand over at once
                await asyncio.wait_for(asyncio.to_thread(controller.fleet.flush), timeout=2.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(self.lease.release), timeout=2.0)
        self.lease.lose()
        self.elected_at = None
        if was is not None:
            log.warning("event=leader-stepped-down url=%s epoch=%s why=%r", self.url, was, why)

    async def _follow(self, controller: Controller) -> None:
        try:
            snap = await asyncio.to_thread(self._snapshot, controller)
        except Exception as exc:
            self._database_error("cannot read the shared state", exc)
            return
        if self.lease.epoch is not None:  # took the lease meanwhile: the take-over reads it again
            return
        self._db_error = None
        c = controller
        now = time.time()
        # the leader writes last-seen times every second, read here every FOLLOW_EVERY: allow for both
        limit = c.settings.heartbeat * c.settings.lost_after + FOLLOW_EVERY + 1.0
        c.fleet.hosts = {
            name: HostState(registration=row.registration, registered_at=row.registered_at, last_seen=row.last_seen,
                            state=LOST if now - row.last_seen > limit else READY)
            for name, row in snap.hosts.items()
        }
        c.fleet.published = snap.published
        c.fleet.reports = snap.reports
        c.unplaced = snap.unplaced
        c.tracker.marks = snap.marks
        c.tracker.first_seen = snap.first_seen
        c.rollouts.states, c.rollouts._saved = snap.rollouts, {}
        self._apply_revision(c, snap)
        self.current = snap.lease
        self._current_until = snap.read_at + float((snap.lease or {}).get("expiresIn", 0.0))
        try:
            c.tracker.update(observe_only=True)
        except Exception as exc:
            log.exception("event=follower-status-failed error=%r", exc)
        c.ready = True

    # ------------------------------------------------------------------ reading the shared state
    def _snapshot(self, c: Controller) -> Snapshot:
        """Read everything (in a thread); load the applied revisions' trees not loaded yet."""
        store = c.store
        read_at = time.monotonic()
        envs = EnvRevisions()
        envs.read(store, load=lambda revision: self._tree(c, revision), write=False)
        self._trees = {r: t for r, t in self._trees.items() if r in {a["revision"] for a in envs.applied.values()}}
        return Snapshot(
            hosts=store.hosts(), published=store.published(), reports=store.reports(), envs=envs,
            marks=store.get("marks", {}), first_seen=store.get("drift_first_seen", {}),
            lease=self.lease.current(), rollouts=self._rollouts(store),
            read_at=read_at,
            unplaced=tuple(Unplaced(**u) for u in store.get(UNPLACED_KEY, None) or ()),
        )

    @staticmethod
    def _rollouts(store: StateStore) -> dict[str, Any]:
        from reconciler.controller.rollouts import STORE_KEY
        from reconciler.planner.rollout import RolloutState

        return {k: RolloutState.from_json(v) for k, v in (store.get(STORE_KEY, {}) or {}).items()}

    def _tree(self, c: Controller, revision: str) -> ManifestTree | None:
        if revision not in self._trees:
            tree = self._load_tree(c, revision)
            if tree is None:
                return None
            self._trees[revision] = tree
        return self._trees[revision]

    def _load_tree(self, c: Controller, revision: str) -> ManifestTree | None:
        from reconciler.controller.git_source import GitError

        for attempt in range(2):
            try:
                return c.load_tree(revision)
            except Exception as exc:
                if attempt:
                    log.warning("event=follower-load-failed revision=%s error=%s", revision[:12],
                                redact_text(repr(exc)))
                    return None
            try:  # the leader applied a revision this mirror has not fetched yet
                c.head = c.git.fetch()
            except GitError as exc:
                log.warning("event=follower-fetch-failed error=%s", redact_text(str(exc)))
                return None
        return None

    def _apply_revision(self, c: Controller, snap: Snapshot) -> None:
        c.envs.adopt(snap.envs)


def leadership_for(settings: Settings, store: StateStore) -> Leadership:
    """Alone on SQLite; replicated (a lease in the database) on PostgreSQL."""
    from reconciler.controller.state_postgres import PostgresLease, PostgresStore

    if not isinstance(store, PostgresStore):
        return Leadership(settings.advertise_url)
    return ReplicatedLeadership(PostgresLease(store, url=settings.advertise_url or "", lease_seconds=settings.lease_seconds))
