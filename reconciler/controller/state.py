"""Reconciler state in SQLite (``DATA/state.db``): what a restarted reconciler resumes from.

Tables: hosts (registration, last seen), host_credentials (SHA-256 of each host's credential, never
the credential itself), published (desired document + generation per host),
reports (last report per host), history (applied revisions per environment, last N),
tags (tag -> digest resolutions per revision), events, and a small key/value table (applied
revision, rejection, drift first-seen times, health bookkeeping).

``StateStore`` is the interface (:mod:`.state_types`); ``open_store`` (:mod:`.stores`) picks SQLite
(this module, the default) or PostgreSQL (:mod:`.state_postgres`, for replicated reconcilers).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# the shared names, importable from here as before
from reconciler.controller.state_types import (
    FINGERPRINT_KEY_BYTES,
    Event,
    Fenced,
    HostRow,
    NotLeader,
    StateStore,
)
from wire.control import HostDesiredState, HostRegistration, HostReport

__all__ = ["Event", "Fenced", "HostRow", "NotLeader", "StateStore", "Store"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hosts (name TEXT PRIMARY KEY, registration TEXT NOT NULL,
    registered_at REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS host_credentials (name TEXT PRIMARY KEY, hash TEXT NOT NULL, issued_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS published (host TEXT PRIMARY KEY, generation INTEGER NOT NULL,
    document TEXT NOT NULL, published_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS reports (host TEXT PRIMARY KEY, report TEXT NOT NULL, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY AUTOINCREMENT, env TEXT NOT NULL,
    revision TEXT NOT NULL, applied_at REAL NOT NULL, message TEXT NOT NULL, author TEXT NOT NULL,
    apps TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tags (revision TEXT NOT NULL, image TEXT NOT NULL, digest TEXT NOT NULL,
    resolved_at REAL NOT NULL, PRIMARY KEY (revision, image));
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
    type TEXT NOT NULL, reason TEXT NOT NULL, env TEXT NOT NULL, app TEXT NOT NULL,
    host TEXT NOT NULL, message TEXT NOT NULL, revision TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_env ON events (env, id);
CREATE TABLE IF NOT EXISTS fingerprint_key (id INTEGER PRIMARY KEY CHECK (id = 1), key BLOB NOT NULL);
"""


class Store:
    """The embedded store: SQLite in WAL mode, one reconciler per data directory."""

    def __init__(self, path: Path, *, history_limit: int = 20, event_limit: int = 10_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.history_limit = history_limit
        self.event_limit = event_limit
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args))

    # key/value
    def get(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM kv WHERE key=?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def put(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # hosts
    def save_host(self, reg: HostRegistration, *, registered_at: float, last_seen: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO hosts (name, registration, registered_at, last_seen) VALUES (?,?,?,?)",
                (reg.name, json.dumps(reg.to_json()), registered_at, last_seen),
            )

    def touch_hosts(self, seen: Mapping[str, float]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE hosts SET last_seen=? WHERE name=?", [(t, n) for n, t in seen.items()])

    def hosts(self) -> dict[str, HostRow]:
        out = {}
        for name, reg, registered_at, last_seen in self._query("SELECT name, registration, registered_at, last_seen FROM hosts"):
            out[name] = HostRow(
                registration=HostRegistration.from_json(json.loads(reg)), registered_at=registered_at, last_seen=last_seen
            )
        return out

    # host credentials: only their SHA-256 (hex), bound to the host name
    def save_credential(self, name: str, digest: str, *, issued_at: float) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO host_credentials (name, hash, issued_at) VALUES (?,?,?)",
                       (name, digest, issued_at))

    def credentials(self) -> dict[str, str]:
        return dict(self._query("SELECT name, hash FROM host_credentials"))  # type: ignore[arg-type]

    # published desired state
    def save_published(self, docs: Mapping[str, tuple[HostDesiredState, float]]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO published (host, generation, document, published_at) VALUES (?,?,?,?)",
                [(h, d.generation, json.dumps(d.to_json()), at) for h, (d, at) in docs.items()],
            )

    def published(self) -> dict[str, tuple[HostDesiredState, float]]:
        return {
            host: (HostDesiredState.from_json(json.loads(doc)), at)
            for host, doc, at in self._query("SELECT host, document, published_at FROM published")
        }

    # reports
    def save_reports(self, reports: Mapping[str, tuple[HostReport, float]]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO reports (host, report, received_at) VALUES (?,?,?)",
                [(h, json.dumps(r.to_json()), at) for h, (r, at) in reports.items()],
            )

    def reports(self) -> dict[str, tuple[HostReport, float]]:
        return {
            host: (HostReport.from_json(json.loads(rep)), at)
            for host, rep, at in self._query("SELECT host, report, received_at FROM reports")
        }

    # tag resolutions
    def save_tags(self, revision: str, digests: Mapping[str, str], *, at: float) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO tags (revision, image, digest, resolved_at) VALUES (?,?,?,?)",
                [(revision, image, digest, at) for image, digest in digests.items()],
            )

    def tags(self, revision: str) -> dict[str, str]:
        return dict(self._query("SELECT image, digest FROM tags WHERE revision=?", (revision,)))  # type: ignore[arg-type]

    # history of applied revisions
    def add_history(self, *, env: str, revision: str, applied_at: float, message: str, author: str, apps: list[Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO history (env, revision, applied_at, message, author, apps) VALUES (?,?,?,?,?,?)",
                (env, revision, applied_at, message, author, json.dumps(apps)),
            )
            db.execute(
                "DELETE FROM history WHERE env=? AND id NOT IN (SELECT id FROM history WHERE env=? ORDER BY id DESC LIMIT ?)",
                (env, env, self.history_limit),
            )

    def history(self, *, env: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql = "SELECT env, revision, applied_at, message, author, apps FROM history"
        args: tuple[Any, ...] = ()
        if env:
            sql += " WHERE env=?"
            args = (env,)
        sql += " ORDER BY id DESC LIMIT ?"
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
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO events (at, type, reason, env, app, host, message, revision) VALUES (?,?,?,?,?,?,?,?)",
                (at, type, reason, env, app, host, message, revision),
            )
            event_id = int(cur.lastrowid or 0)
            if event_id % 500 == 0:  # trim now and then, not on every insert
                db.execute("DELETE FROM events WHERE id <= ?", (event_id - self.event_limit,))
        return Event(id=event_id, at=at, type=type, reason=reason, env=env, app=app, host=host, message=message, revision=revision)

    def events(self, *, env: str | None = None, since: float | None = None, limit: int = 100) -> list[Event]:
        where: list[str] = []
        args: list[Any] = []
        if env:
            where.append("(env=? OR env='')")
            args.append(env)
        if since is not None:
            where.append("at>?")
            args.append(since)
        sql = "SELECT id, at, type, reason, env, app, host, message, revision FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self._query(sql, (*args, limit))
        return [
            Event(id=i, at=at, type=t, reason=r, env=e, app=a, host=h, message=m, revision=rev)
            for i, at, t, r, e, a, h, m, rev in reversed(rows)
        ]

    # the key of secret fingerprints: the first one written stays
    def fingerprint_key(self) -> bytes:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO fingerprint_key (id, key) VALUES (1, ?)",
                       (os.urandom(FINGERPRINT_KEY_BYTES),))
            row = db.execute("SELECT key FROM fingerprint_key WHERE id=1").fetchone()
        return bytes(row[0])
