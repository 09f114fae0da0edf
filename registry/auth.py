"""htpasswd (bcrypt) basic authentication.

The file has one ``user:hash`` line per user, as written by ``htpasswd -B`` (``$2y$``, ``$2b$`` or
``$2a$`` bcrypt hashes). A verified ``Authorization`` header is remembered (by its SHA-256) so bcrypt,
which is slow on purpose, runs once per credential rather than once per request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from pathlib import Path

from shared.errors import UsageError


class Htpasswd:
    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = users
        self._verified: dict[bytes, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> Htpasswd:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read htpasswd file {path}: {exc.strerror}") from None
        users: dict[str, bytes] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user or not hashed.startswith(("$2y$", "$2b$", "$2a$")):
                raise UsageError(
                    f"{path}:{number}: expected 'user:<bcrypt hash>'",
                    hint="create entries with `htpasswd -B FILE USER` (only bcrypt hashes are accepted)",
                )
            users[user] = hashed.encode()
        if not users:
            raise UsageError(f"htpasswd file {path} has no users", hint="add one with `htpasswd -B FILE USER`")
        return cls(users)

    def check(self, authorization: str | None) -> str | None:
        """The user name if ``authorization`` carries valid basic credentials, else None."""
        if not authorization or not authorization[:6].lower() == "basic ":
            return None
        fingerprint = hashlib.sha256(authorization.encode()).digest()
        user = self._verified.get(fingerprint)
        if user is not None:
            return user
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, sep, password = decoded.partition(":")
        hashed = self._users.get(name)
        if not sep or hashed is None:
            return None
        import bcrypt

        if not bcrypt.checkpw(password.encode(), hashed.replace(b"$2y$", b"$2b$", 1)):
            return None
        with self._lock:
            if len(self._verified) > 1024:
                self._verified.clear()
            self._verified[fingerprint] = name
        return name
