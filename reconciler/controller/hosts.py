"""The fleet: which hosts are registered, what was published to each, what each reported, and
which are lost. Serves the hosts' long-polls. Knows nothing of Git or manifests.

Level-triggered: a host long-polls ``wait_desired`` for a generation newer than its own; a host
that misses heartbeats for ``heartbeat * lost_after`` seconds is marked Lost (and the planner moves
its instances). Reports and last-seen times are written to the store in batches (``flush``).

Host identity: the join token only bootstraps. ``register`` hands each host a credential (random,
kept here and in the store only as its SHA-256, bound to the name); ``identify`` tells which host a
bearer credential belongs to. A name held by a host that is not Lost is refused to anyone without
that host's credential (``Conflict``), unless the reconciler allows takeovers.

Host enrollment (:mod:`.enrollment`, :mod:`.enrollments`): ``enroll`` checks a registration against
the bounds of the token the host enrolled with (labels, ingress URL) and binds the host to it;
``infos`` tells the planner the environments each host may serve and ``publish`` checks them again.
``revoke`` ends a host's credential (state Revoked: its instances are placed elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from reconciler.controller.enrollment import JOIN_TOKEN_ID, Bounds, join_bounds, registration_problems
from reconciler.controller.enrollments import EnrollmentBook
from reconciler.controller.events import EventLog
from reconciler.controller.state import StateStore
from reconciler.planner import drift
from reconciler.planner.placement import LOST, READY, HostInfo
from reconciler.settings import Settings
from shared.errors import DriftlessError
from wire.control import HostDesiredState, HostRegistration, HostReport

# Generations stay below this: exact in every JSON client (2**53), and far enough below SQLite's
# integer limit (2**63) that no bump or later publication can overflow the state store.
MAX_GENERATION = 2**53


class Conflict(DriftlessError):
    """The name is held by another host that is not Lost (409)."""


class Forbidden(DriftlessError):
    """The credential belongs to another host (403)."""


class OutsideEnrollment(Forbidden):
    """The registration asks for more than the host's enrollment allows (403, nothing changes)."""


REVOKED = "Revoked"  # an admin revoked the host (or its enrollment): no credential, no instances
REVOKED_MARK = "revoked"  # stored in place of a revoked host's credential hash (matches no credential)


def credential_hash(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


def new_credential() -> str:
    return secrets.token_urlsafe(32)


@dataclass(slots=True, kw_only=True)
class HostState:
    registration: HostRegistration
    registered_at: float
    last_seen: float
    state: str = READY


def _kv(d: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


class HostRegistry:
    def __init__(self, *, store: StateStore, events: EventLog, settings: Settings,
                 replan: Callable[[], None], status_changed: Callable[[], None]) -> None:
        self._store = store
        self._event = events
        self._settings = settings
        self._replan = replan  # placement inputs changed: ask for a reconcile
        self._status_changed = status_changed
        self.hosts: dict[str, HostState] = {}
        self.published: dict[str, tuple[HostDesiredState, float]] = {}
        self.reports: dict[str, tuple[HostReport, float]] = {}
        self.fresh_reports: set[str] = set()  # hosts that reported to this process (not restored)
        # bumped whenever what the planner reads of the fleet may have changed (a host registered, Lost or
        # back, a document published): the pipeline skips a placement whose inputs did not change
        self.version = 0
        self._waiters: dict[str, asyncio.Event] = {}
        self._reports_dirty: set[str] = set()
        self._seen_dirty = False
        self._seen: set[str] = set()  # hosts that reported since the last flush: only their last_seen is written
        self._restart_grace_until = 0.0
        self._credentials: dict[str, str] = {}  # host name -> SHA-256 (hex) of its credential
        self._owners: dict[str, str] = {}  # SHA-256 (hex) -> host name
        self._refused_at: dict[str, float] = {}  # host name -> last HostRegistrationRefused event
        bounds = join_bounds(labels=settings.join_labels, environments=settings.join_environments,
                             ingress=settings.join_ingress)
        self.join_bounds = bounds
        self.enrollments = EnrollmentBook(store=store, join=lambda: bounds)

    def restore(self) -> None:
        now = time.time()
        self._restart_grace_until = now + max(15.0, 3 * self._settings.heartbeat * self._settings.lost_after)
        for name, row in self._store.hosts().items():
            # every known host gets a fresh grace period: a restart must not declare them Lost
            self.hosts[name] = HostState(registration=row.registration, registered_at=row.registered_at, last_seen=now)
        self.published = self._store.published()
        self.reports = self._store.reports()
        self._credentials = self._store.credentials()
        self._owners = {digest: name for name, digest in self._credentials.items() if digest != REVOKED_MARK}
        for name, digest in self._credentials.items():
            if digest == REVOKED_MARK and name in self.hosts:
                self.hosts[name].state = REVOKED
        self.enrollments.restore()
        self.version += 1

    # ------------------------------------------------------------------ identity
    def identify(self, credential: str | None) -> str | None:
        """The host ``credential`` belongs to, or None."""
        if not credential:
            return None
        digest = credential_hash(credential)
        name = self._owners.get(digest)
        if name is None or not hmac.compare_digest(self._credentials.get(name, ""), digest):
            return None
        return name

    def admit(self, name: str, *, credential: str | None, join: bool) -> str:
        """Who may register as ``name``: its own credential (a restart: the same credential back), or
        the join token when the name is free, its host Lost, or takeovers are allowed (a new
        credential; the old one is revoked). Raises Forbidden or Conflict."""
        owner = self.identify(credential)
        if owner == name:
            assert credential is not None
            return credential
        if owner is not None:
            raise Forbidden(f"this credential belongs to host {owner!r}: it cannot register as {name!r}",
                            hint="each host registers under its own name with its own credential")
        if not join:
            raise Forbidden("unknown host credential", hint="register with the join token")
        known = self.hosts.get(name)
        held = name in self._credentials and known is not None and known.state == READY
        if held and not self._settings.allow_host_takeover:
            assert known is not None
            ago = max(0.0, time.time() - known.last_seen)
            now = time.time()
            if now - self._refused_at.get(name, 0.0) > 60:
                self._refused_at[name] = now
                self._event(type="Warning", reason="HostRegistrationRefused", host=name,
                            message=f"a registration as {name} with the join token was refused: the name is held "
                                    f"by a {known.state} host (last seen {ago:.0f}s ago)")
            limit = self._settings.heartbeat * self._settings.lost_after
            raise Conflict(
                f"host name {name!r} is held by a registered host ({known.state}, last seen {ago:.0f}s ago): "
                "only that host's own credential can register it again",
                hint=f"a restarted host presents the credential in its data directory (host-credential); if the "
                     f"old host is gone, its name is free once it is Lost ({limit:g}s without heartbeats), "
                     "or start the reconciler with --allow-host-takeover",
            )
        fresh = new_credential()
        digest = credential_hash(fresh)
        old = self._credentials.get(name)
        if old is not None:
            self._owners.pop(old, None)
            if old == REVOKED_MARK:
                self._event(reason="HostReenrolled", host=name,
                            message=f"host {name} was revoked and registered again with a join token")
            elif held:
                self._event(type="Warning", reason="HostTakenOver", host=name,
                            message=f"host name {name} was taken over with the join token (--allow-host-takeover); "
                                    "the previous host's credential is revoked")
            elif known is not None:
                self._event(reason="HostCredentialReplaced", host=name,
                            message=f"host {name} was Lost and registered again with the join token; "
                                    "its previous credential is revoked")
        self._credentials[name] = digest
        self._owners[digest] = name
        self._store.save_credential(name, digest, issued_at=time.time())
        return fresh

    def enroll(self, reg: HostRegistration, *, credential: str | None, via: str | None) -> str:
        """Admit ``reg`` within the bounds of the host's enrollment: with its own credential, the bounds
        it enrolled with; with a join token (``via``: :data:`JOIN_TOKEN_ID` or an enrollment's id), that
        token's, provided the name is not bound to another one. Raises OutsideEnrollment, Forbidden or
        Conflict before anything changes; the host's credential (a new one for a token)."""
        name = reg.name
        if self.identify(credential) == name:
            via, token = self.enrollments.binding(name) or JOIN_TOKEN_ID, None
            bounds = self.enrollments.bounds_for(name)
        elif via is not None:
            token = via
            bound = self.enrollments.binding(name)
            if bound is None and name in self.hosts and self.hosts[name].state != REVOKED:
                bound = JOIN_TOKEN_ID  # registered before enrollments existed
            if bound is not None and bound != via:
                self._refused(name, f"a registration as {name} with {_token_name(via)} was refused: the host is "
                                    f"enrolled by {_token_name(bound)}")
                raise Forbidden(f"host {name!r} is enrolled by {_token_name(bound)}: {_token_name(via)} cannot "
                                "register it again (its bounds stay those of its enrollment)",
                                hint=f"the host registers with its own credential or {_token_name(bound)}; an "
                                     f"admin can revoke it (driftless hosts revoke --host {name}) to enroll it anew")
            if via != JOIN_TOKEN_ID and (why := self.enrollments.enrollments[via].refusal(name=name, now=time.time())):
                raise Forbidden(f"host {name!r}: {why}", hint="ask an admin for a new enrollment (driftless hosts "
                                                               "enroll)")
            bounds = self.enrollments.bounds_of(via)
        else:
            return self.admit(name, credential=credential, join=False)  # refused: no credential of this host
        problems = registration_problems(reg, bounds)
        if problems:
            self._refused(name, f"the registration of host {name} was refused: {'; '.join(problems)}")
            raise OutsideEnrollment(
                f"host {name!r} is refused: {'; '.join(problems)}",
                hint=f"its {_token_name(via)} allows {bounds.describe()}; register within it, or an admin "
                     "enrolls the host for more (driftless hosts enroll) and revokes this one")
        issued = self.admit(name, credential=credential, join=token is not None)
        if token is not None and issued != credential:
            self.enrollments.bind(name, token)
        return issued

    def _refused(self, name: str, message: str) -> None:
        now = time.time()
        if now - self._refused_at.get(name, 0.0) > 60:  # a host retrying with backoff: one event a minute
            self._refused_at[name] = now
            self._event(type="Warning", reason="HostRegistrationRefused", host=name, message=message)

    def revoke(self, name: str, *, why: str) -> None:
        """``name``'s credential stops working, it gets no instances (they are placed elsewhere) and is
        unbound from its enrollment (a join token may enroll it anew)."""
        old = self._credentials.get(name)
        if old is not None:
            self._owners.pop(old, None)
        self._credentials[name] = REVOKED_MARK
        self._store.save_credential(name, REVOKED_MARK, issued_at=time.time())
        self.enrollments.unbind(name)
        known = self.hosts.get(name)
        if known is not None and known.state != REVOKED:
            known.state = REVOKED
            self.version += 1
            self._replan()
            self._status_changed()
        self._event(type="Warning", reason="HostRevoked", host=name,
                    message=f"host {name} was revoked ({why}): its credential no longer works, its instances "
                            "are placed elsewhere")

    def bounds(self, name: str) -> Bounds:
        return self.enrollments.bounds_for(name)

    # ------------------------------------------------------------------ host calls
    def register(self, reg: HostRegistration) -> None:
        now = time.time()
        known = self.hosts.get(reg.name)
        returning = known is not None and known.state != READY
        self.hosts[reg.name] = HostState(registration=reg, registered_at=now, last_seen=now, state=READY)
        self.version += 1
        self._store.save_host(reg, registered_at=now, last_seen=now)
        if known is None:
            self._event(reason="HostRegistered", host=reg.name,
                        message=f"host {reg.name} registered with labels {_kv(reg.labels)}")
        elif returning:
            self._event(reason="HostReturned", host=reg.name, message=f"host {reg.name} is back")
        if known is None or returning or known.registration.labels != reg.labels or \
                known.registration.capacity != reg.capacity or \
                known.registration.ingress_url != reg.ingress_url or reg.name not in self.published:
            self._replan()
        self._status_changed()

    def report(self, rep: HostReport) -> int:
        now = time.time()
        host = self.hosts[rep.name]
        host.last_seen = now
        self._seen_dirty = True
        self._seen.add(rep.name)
        if host.state == LOST:
            host.state = READY
            self.version += 1
            self._event(reason="HostReturned", host=rep.name, message=f"host {rep.name} reports again")
            self._replan()
        self.fresh_reports.add(rep.name)
        previous = self.reports.get(rep.name)
        if previous is None or previous[0] != rep:
            self._reports_dirty.add(rep.name)
            self._status_changed()
        self.reports[rep.name] = (rep, now)
        return self.generation(rep.name)

    def generation(self, host: str) -> int:
        doc = self.published.get(host)
        return doc[0].generation if doc else 0

    def ensure_generation_above(self, host: str, after: int) -> None:
        """A host that saw a newer generation than we know (state lost) must still get our document."""
        current = self.published.get(host)
        if current is None or after <= current[0].generation or not 0 <= after < MAX_GENERATION:
            return  # out of range: the API refuses it; never store a generation that cannot grow
        doc = current[0]
        bumped = HostDesiredState(host=host, generation=after + 1, revision=doc.revision, instances=doc.instances)
        self.published[host] = (bumped, time.time())
        self._store.save_published({host: self.published[host]})

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

    # ------------------------------------------------------------------ publishing
    async def publish(self, changed: Mapping[str, tuple[HostDesiredState, float]]) -> None:
        """Memory first (status never sees a new tree with old documents), then the store; hosts
        are told only once the documents are on disk. A second check behind the planner's: no host
        gets an instance of an environment its enrollment does not allow (nor its secrets)."""
        changed = {host: self._within_enrollment(host, doc, at) for host, (doc, at) in changed.items()}
        self.published.update(changed)
        self.version += 1
        await asyncio.to_thread(self._store.save_published, dict(changed))
        for host in changed:
            waiter = self._waiters.pop(host, None)
            if waiter is not None:
                waiter.set()

    def _within_enrollment(self, host: str, doc: HostDesiredState, at: float) -> tuple[HostDesiredState, float]:
        known = self.hosts.get(host)
        if known is not None and known.state == REVOKED and doc.instances:  # planned just before its revocation
            return replace(doc, instances=()), at
        bounds = self.enrollments.bounds_for(host)
        if bounds.environment_set() is None:
            return doc, at
        refused = sorted({s.env for s in doc.instances if not bounds.allows_env(s.env)})
        if not refused:
            return doc, at
        self._event(type="Warning", reason="PublishRefused", host=host,
                    message=f"instances of {', '.join(refused)} were not published to host {host}: its enrollment "
                            f"allows {bounds.describe()}")
        return replace(doc, instances=tuple(s for s in doc.instances if bounds.allows_env(s.env))), at

    # ------------------------------------------------------------------ liveness
    def check_lost(self) -> None:
        limit = self._settings.heartbeat * self._settings.lost_after
        now = time.time()
        # after a restart, hosts reconnect with their own retry backoff: give the ones we knew a
        # longer grace before moving their instances (which would restart them elsewhere)
        restarting = now < self._restart_grace_until
        lost = [n for n, h in self.hosts.items() if h.state == READY and now - h.last_seen > limit
                and not (restarting and n not in self.fresh_reports)]
        for name in lost:
            self.hosts[name].state = LOST
            self.version += 1
            self._event(type="Warning", reason="HostLost", host=name,
                        message=f"host {name} missed heartbeats for {limit:g}s; its instances are rescheduled")
        if lost:
            self._status_changed()
            self._replan()

    def flush(self) -> None:
        if self._reports_dirty:
            dirty, self._reports_dirty = self._reports_dirty, set()
            self._store.save_reports({h: self.reports[h] for h in dirty if h in self.reports})
        if self._seen_dirty:
            # runs in a thread while the loop registers hosts: it never iterates self.hosts (which may grow
            # meanwhile), and writes the hosts that reported (~hosts/heartbeat a second), not all of them
            self._seen_dirty = False
            seen, self._seen = self._seen, set()
            hosts = self.hosts
            self._store.touch_hosts({n: h.last_seen for n in seen if (h := hosts.get(n)) is not None})

    # ------------------------------------------------------------------ views for the planner and the tracker
    def states(self) -> dict[str, str]:
        return {n: h.state for n, h in self.hosts.items()}

    def infos(self) -> list[HostInfo]:
        bounds_for = self.enrollments.bounds_for
        return [
            HostInfo(name=n, labels=h.registration.labels, max_instances=h.registration.capacity.max_instances,
                     state=h.state, ingress_url=h.registration.ingress_url,
                     environments=bounds_for(n).environment_set())
            for n, h in self.hosts.items()
        ]

    def observations(self) -> dict[str, drift.HostObservation]:
        out = {}
        for name, h in self.hosts.items():
            pub = self.published.get(name)
            rep = self.reports.get(name)
            out[name] = drift.HostObservation(
                name=name, state=h.state, labels=dict(h.registration.labels), last_seen=h.last_seen,
                published_generation=pub[0].generation if pub else 0, published_at=pub[1] if pub else 0.0,
                report=rep[0] if rep else None,
            )
        return out


def _token_name(via: str) -> str:
    return "the join token (--token-file)" if via == JOIN_TOKEN_ID else f"enrollment {via}"
