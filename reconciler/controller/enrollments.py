"""The enrollments of the reconciler and the hosts bound to them, kept in the state store's key/value
table (``enrollments``: id -> enrollment, ``host-enrollments``: host -> enrollment id or
:data:`~.enrollment.JOIN_TOKEN_ID`), so both stores (SQLite, PostgreSQL) keep them unchanged.

A token is ``enr-<8 hex>.<secret>``: its id finds the enrollment, its SHA-256 is compared in constant
time; the token itself is shown once, to the admin who creates it, and never stored or logged.

A host is bound to the enrollment whose token first registered it; its own credential never carries
more than those bounds, and no other token can register its name until an admin revokes the host
(or the enrollment). Hosts that registered with the join token (or before enrollments existed) are
bound to the join token's bounds (the operator's ``--join-*`` options).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from reconciler.controller.enrollment import JOIN_TOKEN_ID, Bounds, Enrollment, valid_id

ENROLLMENTS_KEY = "enrollments"
BINDINGS_KEY = "host-enrollments"
NOTHING = Bounds(labels={}, environments=())  # a revoked or vanished enrollment allows nothing


class KeyValues(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def put(self, key: str, value: Any) -> None: ...


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class EnrollmentBook:
    def __init__(self, *, store: KeyValues, join: Callable[[], Bounds]) -> None:
        self._store = store
        self._join = join  # the join token's bounds (the reconciler's options)
        self.enrollments: dict[str, Enrollment] = {}
        self.bindings: dict[str, str] = {}  # host -> enrollment id | JOIN_TOKEN_ID

    def restore(self) -> None:
        saved = self._store.get(ENROLLMENTS_KEY, {}) or {}
        self.enrollments = {k: Enrollment.from_json(v) for k, v in saved.items()}
        self.bindings = dict(self._store.get(BINDINGS_KEY, {}) or {})

    def _save(self) -> None:
        self._store.put(ENROLLMENTS_KEY, {k: e.to_json(stored=True) for k, e in sorted(self.enrollments.items())})

    def _save_bindings(self) -> None:
        self._store.put(BINDINGS_KEY, dict(sorted(self.bindings.items())))

    # ------------------------------------------------------------------ admin
    def create(self, *, bounds: Bounds, created_by: str, now: float, description: str = "", host: str | None = None,
               expires_at: float | None = None, max_uses: int | None = None) -> tuple[Enrollment, str]:
        """A new enrollment and its token (shown once)."""
        while True:
            ident = f"enr-{secrets.token_hex(4)}"
            if ident not in self.enrollments:
                break
        token = f"{ident}.{secrets.token_urlsafe(32)}"
        enrollment = Enrollment(id=ident, bounds=bounds, token_sha256=_sha256(token), created_at=now,
                                created_by=created_by, description=description, host=host, expires_at=expires_at,
                                max_uses=max_uses)
        self.enrollments = {**self.enrollments, ident: enrollment}
        self._save()
        return enrollment, token

    def listing(self) -> list[Enrollment]:
        return [replace(e, hosts=self.hosts_of(e.id)) for _, e in sorted(self.enrollments.items())]

    def get(self, ident: str) -> Enrollment | None:
        found = self.enrollments.get(ident)
        return replace(found, hosts=self.hosts_of(ident)) if found is not None else None

    def hosts_of(self, ident: str) -> tuple[str, ...]:
        return tuple(sorted(h for h, e in self.bindings.items() if e == ident))

    def revoke(self, ident: str, *, now: float) -> tuple[str, ...]:
        """Revoke an enrollment: its token stops working; the hosts it enrolled (returned) are unbound
        here, the caller revokes their credentials."""
        found = self.enrollments[ident]
        if found.revoked_at is None:
            self.enrollments = {**self.enrollments, ident: replace(found, revoked_at=now)}
            self._save()
        hosts = self.hosts_of(ident)
        for host in hosts:
            self.unbind(host, save=False)
        if hosts:
            self._save_bindings()
        return hosts

    # ------------------------------------------------------------------ registration
    def match(self, token: str | None) -> Enrollment | None:
        """The enrollment ``token`` is the token of (revoked, expired and used up ones included)."""
        if not token or "." not in token:
            return None
        ident = token.split(".", 1)[0]
        found = self.enrollments.get(ident) if valid_id(ident) else None
        if found is None or not hmac.compare_digest(_sha256(token), found.token_sha256):
            return None
        return found

    def binding(self, host: str) -> str | None:
        return self.bindings.get(host)

    def bounds_for(self, host: str) -> Bounds:
        """What ``host`` may be: its enrollment's bounds, the join token's when it registered with that
        (or before enrollments existed)."""
        ident = self.bindings.get(host, JOIN_TOKEN_ID)
        if ident == JOIN_TOKEN_ID:
            return self._join()
        found = self.enrollments.get(ident)
        return found.bounds if found is not None and found.revoked_at is None else NOTHING

    def bounds_of(self, ident: str) -> Bounds:
        if ident == JOIN_TOKEN_ID:
            return self._join()
        found = self.enrollments.get(ident)
        return found.bounds if found is not None else NOTHING

    def bind(self, host: str, ident: str) -> None:
        """``host`` was issued a credential through ``ident``'s token: bind it, count a use."""
        found = self.enrollments.get(ident)
        if found is not None:
            self.enrollments = {**self.enrollments, ident: replace(found, uses=found.uses + 1)}
            self._save()
        if self.bindings.get(host) != ident:
            self.bindings[host] = ident
            self._save_bindings()

    def unbind(self, host: str, *, save: bool = True) -> None:
        if self.bindings.pop(host, None) is not None and save:
            self._save_bindings()
