"""htpasswd (bcrypt) basic authentication, off the event loop, cached and rate-limited.

The file has one ``user:hash`` line per user, as written by ``htpasswd -B`` (``$2y$``, ``$2b$`` or
``$2a$`` bcrypt hashes). bcrypt is slow on purpose (a quarter to a whole second per check at the
usual cost), so :class:`Authenticator`:

- runs every check in its own small thread pool, never on the event loop (bcrypt releases the GIL),
  so requests that need no password check are not slowed down by those that do;
- remembers a successful check for ``cache_seconds``, keyed by a SHA-256 of user and password (the
  password itself is not kept), and forgets every remembered check when the htpasswd file changes
  (looked at, off the loop, at most once a second);
- shares one check between concurrent requests carrying the same credentials;
- limits failed attempts: more than ``failure_limit`` failures for one user from one address within
  ``failure_window`` seconds (or five times as many from one address, whatever the user) answer
  ``429 TOOMANYREQUESTS`` with ``Retry-After`` before any bcrypt runs. A remembered good credential
  still works while its address is limited, so an attacker cannot lock a logged-in client out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import math
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from registry.errors import RegistryError
from shared.errors import UsageError

log = logging.getLogger("driftless.registry")

CHALLENGE = {"WWW-Authenticate": 'Basic realm="driftless registry"'}
RELOAD_CHECK_SECONDS = 1.0


def unauthorized(detail: str) -> RegistryError:
    return RegistryError("UNAUTHORIZED", detail, headers=dict(CHALLENGE))


class Htpasswd:
    """The users of an htpasswd file and a (blocking) bcrypt check of a password."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = users
        self._dummy: bytes | None = None
        self._lock = threading.Lock()

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._users)

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
            users[user] = hashed.replace("$2y$", "$2b$", 1).encode()
        if not users:
            raise UsageError(f"htpasswd file {path} has no users", hint="add one with `htpasswd -B FILE USER`")
        return cls(users)

    def verify(self, user: str, password: str) -> bool:
        """bcrypt: blocking and slow, call it from a worker thread. An unknown user costs a check
        too, so timing does not tell which users exist."""
        import bcrypt

        hashed = self._users.get(user)
        if hashed is None:
            bcrypt.checkpw(password.encode(), self._dummy_hash())
            return False
        try:
            return bool(bcrypt.checkpw(password.encode(), hashed))
        except ValueError:  # a malformed hash in the file
            return False

    def _dummy_hash(self) -> bytes:
        with self._lock:
            if self._dummy is None:
                import bcrypt

                sample = next(iter(self._users.values()), b"$2b$12$")
                try:
                    rounds = int(sample.split(b"$")[2])
                except (IndexError, ValueError):
                    rounds = 12
                self._dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds=min(max(rounds, 4), 31)))
            return self._dummy


class FailureLimiter:
    """Failed attempts per (user, address) and per address in a sliding window."""

    def __init__(self, limit: int, window: float, *, address_factor: int = 5, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.address_limit = limit * address_factor
        self.max_keys = max_keys
        self._failures: dict[tuple[str, ...], deque[float]] = {}

    def _keys(self, user: str, address: str) -> list[tuple[tuple[str, ...], int]]:
        return [(("user", user, address), self.limit), (("address", address), self.address_limit)]

    def retry_after(self, user: str, address: str, now: float) -> int | None:
        """Seconds until another attempt is allowed, or None if one is allowed now."""
        if self.limit <= 0:
            return None
        wait = 0.0
        for k, limit in self._keys(user, address):
            times = self._failures.get(k)
            if not times:
                continue
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= limit:
                wait = max(wait, times[len(times) - limit] + self.window - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, user: str, address: str, now: float) -> None:
        if self.limit <= 0:
            return
        if len(self._failures) > self.max_keys:
            self._prune(now)
        for k, limit in self._keys(user, address):
            times = self._failures.setdefault(k, deque())
            times.append(now)
            while len(times) > limit:
                times.popleft()

    def succeeded(self, user: str, address: str) -> None:
        self._failures.pop(("user", user, address), None)

    def _prune(self, now: float) -> None:
        for k in [k for k, times in self._failures.items() if not times or times[-1] <= now - self.window]:
            del self._failures[k]
        if len(self._failures) > self.max_keys:  # still full: forget the oldest half
            oldest = sorted(self._failures, key=lambda k: self._failures[k][-1])
            for k in oldest[: len(oldest) // 2]:
                del self._failures[k]


class Authenticator:
    """Basic credentials -> user name, against an htpasswd file (see the module docstring)."""

    def __init__(self, path: Path, *, cache_seconds: float = 60.0, failure_limit: int = 10,
                 failure_window: float = 60.0, workers: int = 2) -> None:
        self.path = Path(path)
        self._signature = self._file_signature()
        self.htpasswd = Htpasswd.load(self.path)
        self.cache_seconds = cache_seconds
        self.limiter = FailureLimiter(failure_limit, failure_window)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="driftless-bcrypt")
        self._cache: dict[bytes, tuple[str, float]] = {}
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}
        self._generation = 0
        self._next_reload_check = time.monotonic() + RELOAD_CHECK_SECONDS
        self._reloading = False

    @property
    def users(self) -> frozenset[str]:
        return self.htpasswd.users

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def user(self, authorization: str, address: str | None) -> str | None:
        """The user whose basic credentials ``authorization`` carries; UNAUTHORIZED if they are wrong,
        TOOMANYREQUESTS when too many attempts failed lately. Empty credentials (``Basic Og==``, what
        containers/image sends once it saw a Basic challenge and has no credentials) are anonymous."""
        if authorization[:6].lower() != "basic ":
            raise unauthorized("only HTTP basic authentication is supported (Authorization: Basic ...)")
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized("the Authorization header is not valid base64 of user:password") from None
        name, sep, password = decoded.partition(":")
        if sep and not name and not password:
            return None
        if not sep or not name:
            raise unauthorized("the Authorization header must carry user:password")
        await self._reload_if_changed()
        fingerprint = hashlib.sha256(f"{len(name)}:{name}:{password}".encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(fingerprint)
        if cached is not None and cached[1] > now and cached[0] == name:
            return name
        address = address or "?"
        wait = self.limiter.retry_after(name, address, now)
        if wait is not None:
            raise RegistryError(
                "TOOMANYREQUESTS",
                f"too many failed logins for user {name!r} from {address}; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        generation = self._generation
        ok = await self._verify(fingerprint, name, password)
        if not ok:
            self.limiter.failed(name, address, time.monotonic())
            raise unauthorized(f"wrong user name or password for {name!r}")
        self.limiter.succeeded(name, address)
        if generation == self._generation:  # the file did not change during the check
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[fingerprint] = (name, time.monotonic() + self.cache_seconds)
        return name

    async def _verify(self, fingerprint: bytes, name: str, password: str) -> bool:
        future = self._inflight.get(fingerprint)
        if future is None:
            loop = asyncio.get_running_loop()
            future = asyncio.ensure_future(loop.run_in_executor(self._pool, self.htpasswd.verify, name, password))
            self._inflight[fingerprint] = future
            future.add_done_callback(lambda _: self._inflight.pop(fingerprint, None))
        # shielded: a client that leaves must not cancel a check others share
        return await asyncio.shield(future)

    def _file_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now < self._next_reload_check or self._reloading:
            return
        self._reloading = True
        try:
            signature = await asyncio.get_running_loop().run_in_executor(None, self._file_signature)
            if signature != self._signature:
                try:
                    fresh = await asyncio.get_running_loop().run_in_executor(None, Htpasswd.load, self.path)
                except UsageError as exc:  # fail closed: a broken file lets nobody in until it is fixed
                    log.error("htpasswd file %s changed and cannot be used (%s): every login fails until it is fixed",
                              self.path, exc)
                    fresh = Htpasswd({})
                self.htpasswd = fresh
                self._signature = signature
                self._generation += 1
                self._cache.clear()
                log.info("htpasswd file %s changed: %d users, remembered logins forgotten", self.path, len(fresh.users))
        finally:
            self._next_reload_check = time.monotonic() + RELOAD_CHECK_SECONDS
            self._reloading = False
