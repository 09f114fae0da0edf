"""Reconciler state in PostgreSQL (``driftless reconcile --state postgresql://...``): the same
tables as the SQLite store (:mod:`.state`), shared by every reconciler of one platform, plus the
leader lease.

The URL carries no password: libpq finds it in ``PGPASSWORD``, ``PGPASSFILE`` or ``~/.pgpass``
(and ``PGSSLMODE`` etc. work as usual). A URL is shown redacted everywhere (``shared.redact``).

Fencing. One row, ``leader_lease`` (holder, url, epoch, expires_at), is the lease
(:class:`PostgresLease`): a reconciler takes it when it is free or expired, which increments the
epoch, and renews it while it leads. While leading, the store carries ``fence = (holder, epoch)``
and every write runs in a transaction whose first statement locks the lease row ``FOR SHARE`` and
checks that the holder and epoch are still ours and the lease unexpired: a deposed leader (its lease
expired while it was paused, the database gone, a takeover) gets :class:`~.state_types.Fenced` and writes
nothing; the lock makes the check and the write one atomic step against a takeover. A reconciler
that does not lead (``fence`` None) writes nothing either (:class:`~.state.NotLeader`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from reconciler.controller.state_types import FINGERPRINT_KEY_BYTES, Event, Fenced, HostRow, NotLeader
from shared.errors import UsageError
from shared.redact import redact_text, redact_url
from wire.control import HostDesiredState, HostRegistration, HostReport

log = logging.getLogger("driftless.reconciler")

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hosts (name TEXT PRIMARY KEY, registration TEXT NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS host_credentials (name TEXT PRIMARY KEY, hash TEXT NOT NULL,
    issued_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS published (host TEXT PRIMARY KEY, generation BIGINT NOT NULL,
    document TEXT NOT NULL, published_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS reports (host TEXT PRIMARY KEY, report TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS history (id BIGSERIAL PRIMARY KEY, env TEXT NOT NULL,
    revision TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL, message TEXT NOT NULL, author TEXT NOT NULL,
    apps TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tags (revision TEXT NOT NULL, image TEXT NOT NULL, digest TEXT NOT NULL,
    resolved_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (revision, image));
CREATE TABLE IF NOT EXISTS events (id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL,
    type TEXT NOT NULL, reason TEXT NOT NULL, env TEXT NOT NULL, app TEXT NOT NULL,
    host TEXT NOT NULL, message TEXT NOT NULL, revision TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_env ON events (env, id);
CREATE TABLE IF NOT EXISTS fingerprint_key (id INTEGER PRIMARY KEY CHECK (id = 1), key BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS leader_lease (id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL,
    url TEXT NOT NULL, epoch BIGINT NOT NULL, acquired_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL);
"""
SCHEMA_LOCK = 0x6472696674  # pg_advisory_xact_lock key: two reconcilers starting at once create the tables once
CONNECT_TIMEOUT = 3  # seconds; a database that does not answer is an error soon, not a hung reconciler
POOL_WAIT = 2.0  # seconds a call waits for a connection (some calls run on the event loop: keep it short)
STATEMENT_TIMEOUT_MS = 5000


def check_url(url: str) -> str:
    """A ``postgresql://`` URL without a password (the password comes from libpq's environment or files)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"--state {redact_url(url)} is not a PostgreSQL connection URL: {exc}") from None
    if not url.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"--state {redact_url(url)}: give a postgresql://USER@HOST:PORT/DATABASE URL")
    if info.get("password"):
        raise UsageError("--state must not carry a password (command lines are visible to every user of the machine)",
                         hint="set PGPASSWORD, or write it to a pgpass file (~/.pgpass or $PGPASSFILE, mode 0600)")
    return url


class PostgresStore:
    """:class:`~.state_types.StateStore` on PostgreSQL (psycopg 3, a small connection pool)."""

    def __init__(self, url: str, *, history_limit: int = 20, event_limit: int = 10_000,
                 open_timeout: float = 10.0) -> None:
        self.url = check_url(url)
        self.shown_url = redact_url(url)
        self.history_limit = history_limit
        self.event_limit = event_limit
        self.fence: tuple[str, int] | None = None  # (holder, epoch) while this reconciler leads
        self.pool = ConnectionPool(
            url, min_size=1, max_size=6, open=False, timeout=POOL_WAIT, name="driftless-state",
            kwargs={"connect_timeout": CONNECT_TIMEOUT, "application_name": "driftless-reconciler",
                    "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"},
            check=ConnectionPool.check_connection,
        )
        try:
            self.pool.open(wait=True, timeout=open_timeout)
            with self.pool.connection() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute(SCHEMA)
        except (PoolTimeout, psycopg.Error) as exc:
            self.pool.close()
            raise UsageError(f"cannot use the PostgreSQL state {self.shown_url}: {_reason(exc)}",
                             hint="check that the database runs and accepts this user (password from "
                                  "PGPASSWORD or ~/.pgpass)") from None

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        """A transaction that first proves this reconciler still leads (see the module's docstring)."""
        fence = self.fence
        if fence is None:
            raise NotLeader("this reconciler does not lead: it writes nothing to the shared state")
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT epoch FROM leader_lease WHERE id=1 AND holder=%s AND epoch=%s AND expires_at > now() FOR SHARE",
                fence).fetchone()
            if row is None:
                raise Fenced(f"write refused: epoch {fence[1]} no longer holds the leader lease")
            yield conn

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.pool.connection() as conn:
            return list(conn.execute(sql, args).fetchall())

    # key/value
    def get(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM kv WHERE key=%s", (key,))
        return json.loads(rows[0][0]) if rows else default

    def put(self, key: str, value: Any) -> None:
        with self._write() as db:
            db.execute("INSERT INTO kv (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value",
                       (key, json.dumps(value)))

    # hosts
    def save_host(self, reg: HostRegistration, *, registered_at: float, last_seen: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO hosts (name, registration, registered_at, last_seen) VALUES (%s,%s,%s,%s) "
                "ON CONFLICT (name) DO UPDATE SET registration=EXCLUDED.registration, "
                "registered_at=EXCLUDED.registered_at, last_seen=EXCLUDED.last_seen",
                (reg.name, json.dumps(reg.to_json()), registered_at, last_seen),
            )

    def touch_hosts(self, seen: Mapping[str, float]) -> None:
        if not seen:
            return
        with self._write() as db, db.cursor() as cur:
            cur.executemany("UPDATE hosts SET last_seen=%s WHERE name=%s", [(t, n) for n, t in seen.items()])

    def hosts(self) -> dict[str, HostRow]:
        out = {}
        for name, reg, registered_at, last_seen in self._query(
                "SELECT name, registration, registered_at, last_seen FROM hosts"):
            out[name] = HostRow(registration=HostRegistration.from_json(json.loads(reg)), registered_at=registered_at,
                                last_seen=last_seen)
        return out

    # host credentials: only their SHA-256 (hex), bound to the host name
    def save_credential(self, name: str, digest: str, *, issued_at: float) -> None:
        with self._write() as db:
            db.execute("INSERT INTO host_credentials (name, hash, issued_at) VALUES (%s,%s,%s) "
                       "ON CONFLICT (name) DO UPDATE SET hash=EXCLUDED.hash, issued_at=EXCLUDED.issued_at",
                       (name, digest, issued_at))

    def credentials(self) -> dict[str, str]:
        return {name: digest for name, digest in self._query("SELECT name, hash FROM host_credentials")}

    # published desired state
    def save_published(self, docs: Mapping[str, tuple[HostDesiredState, float]]) -> None:
        if not docs:
            return
        with self._write() as db, db.cursor() as cur:
            cur.executemany(
                "INSERT INTO published (host, generation, document, published_at) VALUES (%s,%s,%s,%s) "
                "ON CONFLICT (host) DO UPDATE SET generation=EXCLUDED.generation, document=EXCLUDED.document, "
                "published_at=EXCLUDED.published_at",
                [(h, d.generation, json.dumps(d.to_json()), at) for h, (d, at) in docs.items()],
            )

    def published(self) -> dict[str, tuple[HostDesiredState, float]]:
        return {
            host: (HostDesiredState.from_json(json.loads(doc)), at)
            for host, doc, at in self._query("SELECT host, document, published_at FROM published")
        }

    # reports
    def save_reports(self, reports: Mapping[str, tuple[HostReport, float]]) -> None:
        if not reports:
            return
        with self._write() as db, db.cursor() as cur:
            cur.executemany(
                "INSERT INTO reports (host, report, received_at) VALUES (%s,%s,%s) "
                "ON CONFLICT (host) DO UPDATE SET report=EXCLUDED.report, received_at=EXCLUDED.received_at",
                [(h, json.dumps(r.to_json()), at) for h, (r, at) in reports.items()],
            )

    def reports(self) -> dict[str, tuple[HostReport, float]]:
        return {
            host: (HostReport.from_json(json.loads(rep)), at)
            for host, rep, at in self._query("SELECT host, report, received_at FROM reports")
        }

    # tag resolutions
    def save_tags(self, revision: str, digests: Mapping[str, str], *, at: float) -> None:
        if not digests:
            return
        with self._write() as db, db.cursor() as cur:
            cur.executemany(
                "INSERT INTO tags (revision, image, digest, resolved_at) VALUES (%s,%s,%s,%s) "
                "ON CONFLICT (revision, image) DO UPDATE SET digest=EXCLUDED.digest, resolved_at=EXCLUDED.resolved_at",
                [(revision, image, digest, at) for image, digest in digests.items()],
            )

    def tags(self, revision: str) -> dict[str, str]:
        return {image: digest for image, digest in
                self._query("SELECT image, digest FROM tags WHERE revision=%s", (revision,))}

    # history of applied revisions
    def add_history(self, *, env: str, revision: str, applied_at: float, message: str, author: str,
                    apps: list[Any]) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO history (env, revision, applied_at, message, author, apps) VALUES (%s,%s,%s,%s,%s,%s)",
                (env, revision, applied_at, message, author, json.dumps(apps)),
            )
            db.execute(
                "DELETE FROM history WHERE env=%s AND id NOT IN "
                "(SELECT id FROM history WHERE env=%s ORDER BY id DESC LIMIT %s)",
                (env, env, self.history_limit),
            )

    def history(self, *, env: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql = "SELECT env, revision, applied_at, message, author, apps FROM history"
        args: tuple[Any, ...] = ()
        if env:
            sql += " WHERE env=%s"
            args = (env,)
        sql += " ORDER BY id DESC LIMIT %s"
        rows = self._query(sql, (*args, limit))
        return [
            {"revision": r, "env": e, "appliedAt": at, "message": m, "author": a, "apps": json.loads(apps)}
            for e, r, at, m, a, apps in rows
        ]

    # events
    def add_event(
        self, *, type: str = "Normal", reason: str, message: str, env: str = "", app: str = "", host: str = "",
        revision: str = "", at: float | None = None,
    ) -> Event:
        at = time.time() if at is None else at
        with self._write() as db:
            row = db.execute(
                "INSERT INTO events (at, type, reason, env, app, host, message, revision) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                (at, type, reason, env, app, host, message, revision),
            ).fetchone()
            event_id = int(row[0]) if row else 0
            if event_id % 500 == 0:  # trim now and then, not on every insert
                db.execute("DELETE FROM events WHERE id <= %s", (event_id - self.event_limit,))
        return Event(id=event_id, at=at, type=type, reason=reason, env=env, app=app, host=host, message=message,
                     revision=revision)

    def events(self, *, env: str | None = None, since: float | None = None, limit: int = 100) -> list[Event]:
        where: list[str] = []
        args: list[Any] = []
        if env:
            where.append("(env=%s OR env='')")
            args.append(env)
        if since is not None:
            where.append("at>%s")
            args.append(since)
        sql = "SELECT id, at, type, reason, env, app, host, message, revision FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT %s"
        rows = self._query(sql, (*args, limit))
        return [
            Event(id=i, at=at, type=t, reason=r, env=e, app=a, host=h, message=m, revision=rev)
            for i, at, t, r, e, a, h, m, rev in reversed(rows)
        ]


    # the key of secret fingerprints: not fenced (a follower needs it to show fingerprints, and the
    # first key written stays whoever writes it, so a deposed leader cannot change it)
    def fingerprint_key(self) -> bytes:
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO fingerprint_key (id, key) VALUES (1, %s) ON CONFLICT (id) DO NOTHING",
                         (os.urandom(FINGERPRINT_KEY_BYTES),))
            row = conn.execute("SELECT key FROM fingerprint_key WHERE id=1").fetchone()
        assert row is not None
        return bytes(row[0])


class PostgresLease:
    """The leader lease of the reconcilers sharing ``store`` (one row; see the module's docstring).

    ``try_acquire`` and ``renew`` run in a thread (they block on the database); ``leading`` is a
    local check, no I/O: true only while the last successful acquire or renew, counted from *before*
    its request was sent, is younger than the lease minus a margin. A process paused past its lease
    (SIGSTOP, a long GC, a VM migration) therefore knows it no longer leads the moment it runs again,
    before asking anyone; the database's fencing catches the writes that were already under way."""

    def __init__(self, store: PostgresStore, *, url: str, lease_seconds: float = 3.0,
                 holder: str | None = None) -> None:
        self.store = store
        self.url = url
        self.lease_seconds = lease_seconds
        self.margin = min(0.5, lease_seconds / 4)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.epoch: int | None = None
        self._valid_until = 0.0
        self._lock = threading.Lock()  # epoch changes: a renewal answering late must not revive a lost lease

    def leading(self, *, margin: float = 0.0) -> bool:
        return self.epoch is not None and time.monotonic() + margin < self._valid_until

    def _held(self, epoch: int, sent_at: float) -> None:
        self.epoch = epoch
        self._valid_until = sent_at + self.lease_seconds - self.margin
        self.store.fence = (self.holder, epoch)

    def lose(self) -> None:
        """Forget the lease here (the store then refuses every write)."""
        with self._lock:
            self.epoch = None
            self._valid_until = 0.0
            self.store.fence = None

    def try_acquire(self) -> bool:
        """Take the lease when nobody holds it or it expired (a new epoch). True when taken."""
        sent_at = time.monotonic()
        with self.store.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO leader_lease AS l (id, holder, url, epoch, acquired_at, expires_at) "
                "VALUES (1, %(holder)s, %(url)s, 1, now(), now() + make_interval(secs => %(lease)s)) "
                "ON CONFLICT (id) DO UPDATE SET holder=EXCLUDED.holder, url=EXCLUDED.url, epoch=l.epoch + 1, "
                "acquired_at=now(), expires_at=EXCLUDED.expires_at WHERE l.expires_at <= now() "
                "RETURNING epoch",
                {"holder": self.holder, "url": self.url, "lease": self.lease_seconds}).fetchone()
        if row is None:
            return False
        with self._lock:
            self._held(int(row[0]), sent_at)
        return True

    def renew(self) -> bool:
        """Extend our lease; False when it is no longer ours (another reconciler took it)."""
        return self.renew_epoch(self.epoch)

    def renew_epoch(self, epoch: int | None) -> bool:
        """Extend the lease of ``epoch`` if it is still ours here and in the database."""
        if epoch is None:
            return False
        sent_at = time.monotonic()
        with self.store.pool.connection() as conn:
            row = conn.execute(
                "UPDATE leader_lease SET expires_at = now() + make_interval(secs => %s) "
                "WHERE id=1 AND holder=%s AND epoch=%s RETURNING epoch",
                (self.lease_seconds, self.holder, epoch)).fetchone()
        if row is None:
            self.lose()
            return False
        with self._lock:
            if self.epoch != epoch:  # lost here meanwhile (the renewal answered too late)
                return False
            self._held(epoch, sent_at)
        return True

    def release(self) -> None:
        """Give the lease up at once (a clean stop): a follower takes over without waiting for it to expire."""
        with self._lock:
            epoch, self.epoch = self.epoch, None
            self._valid_until = 0.0
            self.store.fence = None
        if epoch is None:
            return
        with self.store.pool.connection() as conn:
            conn.execute("UPDATE leader_lease SET expires_at = now() WHERE id=1 AND holder=%s AND epoch=%s",
                         (self.holder, epoch))

    def current(self) -> dict[str, Any] | None:
        """Who holds the lease, as the database says: {"holder", "url", "epoch", "acquiredAt", "expiresIn"}."""
        rows = self.store._query(
            "SELECT holder, url, epoch, extract(epoch FROM acquired_at), "
            "extract(epoch FROM expires_at - now()) FROM leader_lease WHERE id=1")
        if not rows:
            return None
        holder, url, epoch, acquired, expires_in = rows[0]
        return {"holder": holder, "url": url, "epoch": int(epoch), "acquiredAt": float(acquired),
                "expiresIn": float(expires_in)}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact_text(text[0]) if text else type(exc).__name__
