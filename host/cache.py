"""The compiled-component cache on disk, shared by every host on a machine:
``<compile-cache>/<hash of the engine key>/<key>.cwasm``.

Compiled code is only valid for the wasmtime version and engine settings that produced it, so both
are part of the directory; the file name is the content key (the component's digest, plus whatever
else changes the code: the adapters composed around it). Hosts on one machine point ``--compile-cache``
at one directory and compile each key once:

- a miss takes an exclusive ``flock`` on ``locks/<key>.lock`` (works across processes and threads),
  looks again (another host may have compiled it while this one waited), else compiles into a temp
  file, fsyncs it and renames it into place: no reader ever sees half a file;
- a user of an artifact holds a shared ``flock`` on the artifact itself for as long as it uses it
  (an instance: until it closes), and eviction skips any file it cannot lock exclusively, so LRU
  eviction never removes what a host is loading or a ``wasmtime serve`` process may (re)start from.
  Once loaded, unlinking would be harmless anyway (an mmapped or open file lives on), but a served
  instance restarts from the path.

The cache is bounded: after each compile the least recently used files (by mtime, bumped on every
hit) are removed until the total fits ``max_bytes`` or only files in use are left.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("driftless.host")

STALE_TEMP_SECONDS = 3600.0  # longer than any compile may run (wasmtime_cli.COMPILE_TIMEOUT_SECONDS)


class Artifact:
    """A compiled file held open with a shared lock: eviction leaves it alone until :meth:`close`."""

    def __init__(self, *, path: Path, file: BinaryIO, compiled: bool, waited: bool) -> None:
        self.path = path
        self._file: BinaryIO | None = file
        self.compiled = compiled  # this call compiled it
        self.waited = waited  # this call waited for another compile of the same key (maybe another host's)

    @property
    def fd(self) -> int:
        assert self._file is not None
        return self._file.fileno()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # releases the shared lock
            self._file = None

    def __enter__(self) -> Artifact:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CompiledCache:
    def __init__(self, *, root: Path, engine_key: str, max_bytes: int) -> None:
        self.engine_key = engine_key
        self.dir = root / hashlib.sha256(engine_key.encode()).hexdigest()[:16]
        (self.dir / "locks").mkdir(parents=True, exist_ok=True)
        engine_file = self.dir / "ENGINE"
        if not engine_file.exists():
            _atomic_write(engine_file, (engine_key + "\n").encode())
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # what this process did with the cache (GET /api/v1/status, tests, the cold-start benchmark)
        self.compiled = 0
        self.waited = 0
        self.hits = 0

    def path_for(self, key: str) -> Path:
        algorithm, _, rest = key.partition(":")
        return self.dir / f"{algorithm}-{rest}.cwasm"

    def lock_path(self, key: str) -> Path:
        return self.dir / "locks" / (self.path_for(key).stem + ".lock")

    # -- the shared path: open, or compile once ---------------------------------------------------
    def open(self, key: str) -> Artifact | None:
        """The cached artifact for ``key``, opened and share-locked (marked as just used), or None."""
        path = self.path_for(key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - held by the Artifact
        except FileNotFoundError:
            return None
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        try:
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # evicted or replaced between our open and our lock
            f.close()
            return self.open(key)
        with contextlib.suppress(OSError):
            os.utime(path)
        return Artifact(path=path, file=f, compiled=False, waited=False)

    def obtain(self, key: str, *, compile: Callable[[Path], None], what: str = "") -> Artifact:
        """The artifact for ``key``: from the cache, else compiled once on this machine. ``compile(out)``
        writes the compiled file to ``out`` (a temp path in the cache directory) or raises; while it
        runs, every other host and thread wanting ``key`` waits for it and then loads its result."""
        found = self.open(key)
        if found is not None:
            with self._lock:
                self.hits += 1
            return found
        started = time.monotonic()
        with self.key_lock(key):
            found = self.open(key)
            if found is not None:  # compiled by another host (or thread) while we waited for the lock
                with self._lock:
                    self.waited += 1
                log.info("%s: %s was compiled by another host; waited %.1f s for it", what or "compile cache",
                         key[:40], time.monotonic() - started)
                found.waited = True
                return found
            path = self.path_for(key)
            tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
            try:
                compile(tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, path)  # atomic: a crash never leaves half a file under the real name
                _fsync_dir(self.dir)
            finally:
                tmp.unlink(missing_ok=True)
            with self._lock:
                self.compiled += 1
            artifact = self.open(key)
            assert artifact is not None  # we hold the key lock: nobody evicts it
            artifact.compiled = True
        self.evict(keep=path)
        return artifact

    @contextlib.contextmanager
    def key_lock(self, key: str, *, wait: bool = True) -> Iterator[bool]:
        """The per-key compile lock (exclusive flock on ``locks/<key>.lock``). With ``wait=False``
        yields False at once when someone else holds it."""
        with open(self.lock_path(key), "a+b") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                yield False
                return
            yield True  # closing the file releases the lock

    # -- kept for the in-process engine's bytes and for tools ---------------------------------------
    def lookup(self, key: str) -> Path | None:
        """The cached compiled file for ``key`` (marked as just used), or None."""
        path = self.path_for(key)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def store(self, key: str, data: bytes) -> Path:
        path = self.path_for(key)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
        _atomic_write(path, data, tmp=tmp)
        self.evict(keep=path)
        return path

    def discard(self, key: str) -> None:
        """Remove an unusable (corrupt, foreign) entry so the next :meth:`obtain` compiles again."""
        with self.key_lock(key):
            self.path_for(key).unlink(missing_ok=True)

    def evict(self, *, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until the cache fits; never ``keep``, never a file in
        use (share-locked by an :class:`Artifact` in any process) or being compiled."""
        with self._lock:
            self._sweep_stale()
            entries = []
            for p in self.dir.glob("*.cwasm"):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, p))
            total = sum(size for _, size, _ in entries)
            removed = []
            for _, size, p in sorted(entries):
                if total <= self.max_bytes:
                    break
                if p == keep:
                    continue
                if self._remove_unused(p):
                    total -= size
                    removed.append(p)
            if total > self.max_bytes:
                log.info("compile cache %s holds %d bytes over its bound of %d: the rest is in use", self.dir,
                         total - self.max_bytes, self.max_bytes)
            return removed

    def _sweep_stale(self) -> None:
        """Temp files and compile directories of hosts that died while compiling (older than any
        compile may take)."""
        limit = time.time() - STALE_TEMP_SECONDS
        for p in [*self.dir.glob("*.cwasm.tmp*"), *self.dir.glob("compile-*")]:
            try:
                if p.stat().st_mtime > limit:
                    continue
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
            except OSError:
                continue

    def _remove_unused(self, path: Path) -> bool:
        key_lock = self.dir / "locks" / (path.stem + ".lock")
        try:
            lock_file = open(key_lock, "a+b")  # noqa: SIM115
        except OSError:
            return False
        with lock_file:
            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # not while it is compiled
            except OSError:
                return False
            try:
                f = open(path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                return False
            with f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # not while anyone holds it
                except OSError:
                    return False
                path.unlink(missing_ok=True)
                return True

    def size_bytes(self) -> int:
        total = 0
        for p in self.dir.glob("*.cwasm"):
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total

    def entries(self) -> int:
        return sum(1 for _ in self.dir.glob("*.cwasm"))

    def counters(self) -> dict[str, int]:
        return {"compiled": self.compiled, "waited": self.waited, "hits": self.hits}


def default_compile_cache() -> Path:
    """Where hosts on this machine share compiled code unless told otherwise: ``$DRIFTLESS_COMPILE_CACHE``,
    else ``/var/cache/driftless/compiled`` for root, else ``$XDG_CACHE_HOME/driftless/compiled``
    (``~/.cache/driftless/compiled``)."""
    if os.environ.get("DRIFTLESS_COMPILE_CACHE"):
        return Path(os.environ["DRIFTLESS_COMPILE_CACHE"])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/cache/driftless/compiled")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "driftless" / "compiled"


def _atomic_write(path: Path, data: bytes, *, tmp: Path | None = None) -> None:
    tmp = tmp or path.with_name(f"{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
