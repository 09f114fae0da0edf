"""The names every state store shares: the :class:`StateStore` interface, what it returns (:class:`Event`,
:class:`HostRow`) and how it refuses a write (:class:`NotLeader`, :class:`Fenced`). Both stores import
these (:mod:`.state` SQLite, :mod:`.state_postgres` PostgreSQL) and neither imports the other;
:mod:`.stores` picks one (``open_store``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from wire.control import HostDesiredState, HostRegistration, HostReport

FINGERPRINT_KEY_BYTES = 32  # the HMAC key of secret fingerprints (reconciler.controller.secrets)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    id: int
    at: float
    type: str  # "Normal" | "Warning"
    reason: str  # short CamelCase: "Applied", "Rejected", "HostLost", ...
    env: str
    app: str
    host: str
    message: str
    revision: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "type": self.type,
            "reason": self.reason,
            "env": self.env,
            "app": self.app,
            "host": self.host,
            "message": self.message,
            "revision": self.revision,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HostRow:
    registration: HostRegistration
    registered_at: float
    last_seen: float


class NotLeader(Exception):
    """A write by a reconciler that does not lead (a follower, or a leader whose lease ended): refused,
    nothing written. :class:`Fenced` when the database itself refused it (the epoch moved on)."""


class Fenced(NotLeader):
    """The database refused a write: it carried a fencing epoch that is no longer the leader's."""


class StateStore(Protocol):
    """What the controller keeps of its state: :class:`reconciler.controller.state.Store` (SQLite, embedded, the default) and
    :class:`reconciler.controller.state_postgres.PostgresStore` (shared by replicated reconcilers)
    implement it, and pass the same suite (tests/reconciler/test_state_store.py). Writes may raise
    :class:`NotLeader` on a store shared by several reconcilers."""

    history_limit: int

    def close(self) -> None: ...
    def get(self, key: str, default: Any = None) -> Any: ...
    def put(self, key: str, value: Any) -> None: ...
    def save_host(self, reg: HostRegistration, *, registered_at: float, last_seen: float) -> None: ...
    def touch_hosts(self, seen: Mapping[str, float]) -> None: ...
    def hosts(self) -> dict[str, HostRow]: ...
    def save_credential(self, name: str, digest: str, *, issued_at: float) -> None: ...
    def credentials(self) -> dict[str, str]: ...
    def save_published(self, docs: Mapping[str, tuple[HostDesiredState, float]]) -> None: ...
    def published(self) -> dict[str, tuple[HostDesiredState, float]]: ...
    def save_reports(self, reports: Mapping[str, tuple[HostReport, float]]) -> None: ...
    def reports(self) -> dict[str, tuple[HostReport, float]]: ...
    def save_tags(self, revision: str, digests: Mapping[str, str], *, at: float) -> None: ...
    def tags(self, revision: str) -> dict[str, str]: ...
    def add_history(self, *, env: str, revision: str, applied_at: float, message: str, author: str,
                    apps: list[Any]) -> None: ...
    def history(self, *, env: str | None = None, limit: int = 100) -> list[dict[str, Any]]: ...
    def add_event(self, *, type: str = "Normal", reason: str, message: str, env: str = "", app: str = "",
                  host: str = "", revision: str = "", at: float | None = None) -> Event: ...
    def events(self, *, env: str | None = None, since: float | None = None, limit: int = 100) -> list[Event]: ...
    def fingerprint_key(self) -> bytes:
        """The key of secret fingerprints: made once (FINGERPRINT_KEY_BYTES random bytes) by the first
        reconciler asking, the same for every reconciler of the store from then on. Never shown."""
        ...
