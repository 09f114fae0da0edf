"""Who may do what on the reconciler's API: users, roles, bearer credentials (a small Argo CD RBAC).

The users file (``driftless reconcile --users-file FILE``, YAML or JSON) lists the people and robots
that may call the API::

    users:                       # or the list alone, at the top level
    - name: alice
      email: alice@example.com   # the commit author is "alice <alice@example.com>"
      role: admin                # viewer | operator | admin
      tokenSha256: 9f86d0...     # hex SHA-256 of the bearer token (the token itself is never stored)
    - name: deploy-bot
      role: operator
      environments: [staging]    # operators only; default: every environment

viewer reads; operator reads and writes (promote, rollback, sync, approve) in its environments;
admin does everything. The file is re-read when it changes; a file that no longer loads leaves no
user at all (fail closed) until it is fixed. Tokens are compared in constant time (their SHA-256,
against every user's) and never logged.

The token of ``--read-token-file`` stays valid for reads only (role viewer). The hosts' join token
grants nothing here: it only registers hosts (``POST /api/v1/hosts/register``), and is refused with
a message that says so.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.errors import UsageError

log = logging.getLogger("driftless.reconciler.auth")

ROLES = ("viewer", "operator", "admin")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    name: str
    role: str  # viewer | operator | admin
    email: str
    token_sha256: str = ""  # hex; "" for the read token (not a user of the file)
    environments: tuple[str, ...] | None = None  # operators: where they may write; None = everywhere

    @property
    def identity(self) -> str:
        """``Name <email>``: the Git author of this user's commits."""
        return f"{self.name} <{self.email}>"

    def may_write(self, env: str | None) -> bool:
        """Whether this user may change ``env`` (None: every environment, e.g. a sync reconciles them all)."""
        if self.role == "admin":
            return True
        if self.role != "operator":
            return False
        return self.environments is None or (env is not None and env in self.environments)

    def describe(self) -> str:
        where = "" if self.role != "operator" or self.environments is None else f" of {', '.join(self.environments)}"
        return f"user {self.name!r} (role {self.role}{where})"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_users(text: str, *, source: str) -> list[User]:
    """The users of a users file's text; UsageError naming the first problem."""
    try:
        doc = yaml.safe_load(text) if text.strip() else []
    except yaml.YAMLError as exc:
        raise UsageError(f"{source} is not valid YAML/JSON: {exc}") from None
    entries = doc.get("users") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise UsageError(f"{source}: expected a list of users (or {{users: [...]}})",
                         hint="each user: {name, tokenSha256, role: viewer|operator|admin, environments?, email?}")
    users: list[User] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for i, raw in enumerate(entries):
        where = f"{source}: users[{i}]"
        if not isinstance(raw, dict):
            raise UsageError(f"{where} must be a mapping")
        unknown = sorted(set(raw) - {"name", "tokenSha256", "role", "environments", "email"})
        if unknown:
            raise UsageError(f"{where}: unknown field(s) {', '.join(unknown)}",
                             hint="fields: name, tokenSha256, role, environments, email")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip() or any(c in name for c in "<>\n"):
            raise UsageError(f"{where}.name must be a non-empty string without <, > or newlines")
        digest = raw.get("tokenSha256")
        if not isinstance(digest, str) or not _HEX64.match(digest.lower()):
            raise UsageError(f"{where} ({name}).tokenSha256 must be the hex SHA-256 of the token (64 hex digits)",
                             hint="sha256sum of the token: printf %s \"$TOKEN\" | sha256sum")
        role = raw.get("role")
        if role not in ROLES:
            raise UsageError(f"{where} ({name}).role must be one of {', '.join(ROLES)}, not {role!r}")
        envs = raw.get("environments")
        if envs is not None:
            if role != "operator":
                raise UsageError(f"{where} ({name}).environments applies to operators only (role {role})")
            if not isinstance(envs, list) or not all(isinstance(e, str) and e for e in envs):
                raise UsageError(f"{where} ({name}).environments must be a list of environment names")
        email = raw.get("email", f"{name}@driftless.local")
        if not isinstance(email, str) or not email or any(c in email for c in "<> \n"):
            raise UsageError(f"{where} ({name}).email must be an address without spaces, < or >")
        if name in names:
            raise UsageError(f"{where}: user {name!r} is listed twice")
        if digest.lower() in hashes:
            raise UsageError(f"{where} ({name}): the same token as another user; give each user its own")
        names.add(name)
        hashes.add(digest.lower())
        users.append(User(name=name.strip(), role=role, email=email, token_sha256=digest.lower(),
                          environments=tuple(envs) if envs is not None else None))
    return users


def load_users(path: Path) -> list[User]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"--users-file {path}: {exc.strerror or exc}") from None
    return parse_users(text, source=f"--users-file {path}")


def dump_users(users: Sequence[dict[str, Any]]) -> str:
    """A users file's text (what ``driftless up`` writes)."""
    return yaml.safe_dump({"users": list(users)}, sort_keys=False)


class Authenticator:
    """Turns a bearer token into a :class:`User`; re-reads the users file when it changes."""

    def __init__(self, *, users_file: Path | None, read_token: str | None, join_token: str | None,
                 open_reads: bool) -> None:
        self.users_file = users_file
        self.read_token = read_token
        self.join_token = join_token
        self.open_reads = open_reads
        self.users: list[User] = []
        self.error: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        if users_file is not None:
            self.users = load_users(users_file)  # a bad file at start is a usage error
            self._stamp = self._stat()

    @property
    def reads_open(self) -> bool:
        """Reads without a credential: on purpose (--open-reads), or a reconciler with no credential at all."""
        return self.open_reads or (self.users_file is None and self.read_token is None)

    def _stat(self) -> tuple[int, int, int] | None:
        assert self.users_file is not None
        try:
            st = os.stat(self.users_file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _refresh(self) -> None:
        if self.users_file is None:
            return
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.users = load_users(self.users_file)
            self.error = None
            log.info("event=users_reloaded file=%s users=%d", self.users_file, len(self.users))
        except UsageError as exc:
            self.users, self.error = [], str(exc)  # fail closed until the file is fixed
            log.error("event=users_invalid file=%s error=%s", self.users_file, json.dumps(str(exc)))

    def authenticate(self, token: str | None) -> User | None:
        """The user the token belongs to, or None. Constant time in the token: every hash is compared."""
        if not token:
            return None
        self._refresh()
        digest = token_sha256(token).encode()
        found: User | None = None
        for user in self.users:
            if hmac.compare_digest(digest, user.token_sha256.encode()) and found is None:
                found = user
        if found is not None:
            return found
        if self.read_token is not None and hmac.compare_digest(token.encode(), self.read_token.encode()):
            return User(name="read-token", role="viewer", email="read-token@driftless.local")
        return None

    def is_join_token(self, token: str | None) -> bool:
        """Whether ``token`` is the hosts' join token (refused here: it only registers hosts)."""
        return bool(token) and self.join_token is not None and hmac.compare_digest(
            (token or "").encode(), self.join_token.encode())

    def unauthenticated_message(self, token: str | None, *, what: str) -> str:
        if self.error:
            return f"the reconciler's users file is invalid, so nobody is authenticated ({self.error})"
        if self.users_file is None and what != "read":
            return (f"{what} needs a user credential, and this reconciler has no users: start it with "
                    "--users-file (driftless up does) and send 'Authorization: Bearer <token>'")
        if self.is_join_token(token):
            return (f"{what}: the join token only registers hosts (POST /api/v1/hosts/register); "
                    "send a user's credential (--users-file) instead")
        if token:
            return f"{what}: the bearer token matches no user of this reconciler"
        return f"{what} needs a credential: send 'Authorization: Bearer <token>' (driftless --token-file FILE)"
