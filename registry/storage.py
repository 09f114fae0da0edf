"""Storage behind a small interface: :class:`Storage` (a ``typing.Protocol``) and its drivers.

Keys are ``/``-separated strings (see :mod:`registry.layout`). Every driver guarantees that
:meth:`Storage.put` and :meth:`Writer.commit` make content visible atomically: a reader sees the old
content or the new, never a part. :class:`FilesystemStorage` writes a temp file, fsyncs it and
renames it into place; :class:`MemoryStorage` exists to prove the contract is driver-agnostic (the
storage test suite runs against both) and for tests.
"""

from __future__ import annotations

import io
import os
import shutil
import stat as stat_module
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True, slots=True)
class Stat:
    size: int
    modified: float  # seconds since the epoch


class Writer(Protocol):
    """Bytes on their way to a key. Nothing is visible at the key before :meth:`commit`."""

    @property
    def size(self) -> int: ...

    def write(self, data: bytes) -> None: ...

    def commit(self) -> None: ...

    def cancel(self) -> None: ...


class Storage(Protocol):
    #: True when every call is a network round trip (an object store): servers then make even the
    #: small calls (a manifest read, a stat) from a worker thread; local drivers answer in microseconds
    #: and are called inline, where a thread hop would cost more than the call.
    remote: bool

    def stat(self, key: str) -> Stat | None:
        """Size and modification time of a stored value, or None when absent (or a directory)."""

    def get(self, key: str) -> bytes:
        """The whole value; raises FileNotFoundError when absent."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` atomically (replacing what was there)."""

    def writer(self, key: str, *, append_at: int | None = None) -> Writer:
        """A writer for ``key``. With ``append_at``, keep the first ``append_at`` bytes already stored
        at ``key`` and write after them, in place (for upload sessions whose committed size is
        recorded elsewhere); commit then makes the appended bytes durable."""

    def reader(self, key: str) -> BinaryIO:
        """An open binary file for reading; raises FileNotFoundError."""

    def local_path(self, key: str) -> Path | None:
        """A local file path for zero-copy serving (sendfile), or None if the driver has none."""

    def list(self, prefix: str) -> list[str]:
        """Names of the direct children of ``prefix`` (values and sub-prefixes), sorted; [] if none."""

    def move(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` to ``dst`` (replacing ``dst``); raises FileNotFoundError."""

    def delete(self, key: str) -> bool:
        """Delete a value or a whole prefix; True if something was deleted."""


# --- filesystem ------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileWriter:
    """Temp file + fsync + rename (or in-place append for upload sessions)."""

    def __init__(self, storage: FilesystemStorage, key: str, append_at: int | None) -> None:
        self._final = storage.path(key)
        self._append = append_at is not None
        self._done = False
        if self._append:
            self._final.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._final, os.O_RDWR | os.O_CREAT, 0o644)
            self._file = os.fdopen(fd, "r+b", buffering=0)
            self._file.truncate(append_at)  # drop bytes past the committed size (a crash mid-write)
            self._file.seek(append_at or 0)
            self._size = append_at or 0
            self._tmp = self._final
        else:
            self._tmp = storage.temp_path()
            self._file = open(self._tmp, "wb", buffering=0)  # noqa: SIM115 - closed in commit/cancel
            self._size = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def fileno(self) -> int:
        return self._file.fileno()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            view = view[n:]
        self._size += len(data)

    def commit(self) -> None:
        if self._done:
            return
        os.fsync(self._file.fileno())
        self._file.close()
        self._done = True
        if not self._append:
            self._final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, self._final)
            _fsync_dir(self._final.parent)

    def cancel(self) -> None:
        if self._done:
            return
        self._file.close()
        self._done = True
        if not self._append:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass


class FilesystemStorage:
    """Files under ``root``; the key is the relative path."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp_dir = self.root / "_tmp"
        self._tmp_dir.mkdir(exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def temp_path(self) -> Path:
        return self._tmp_dir / f"{uuid.uuid4().hex}.tmp"

    def clean_temp(self, *, older_than: float = 0.0) -> int:
        """Remove temp files left by a crash (older than ``older_than`` seconds); returns how many."""
        removed = 0
        cutoff = time.time() - older_than
        for p in self._tmp_dir.iterdir():
            try:
                if p.stat().st_mtime <= cutoff:
                    p.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def stat(self, key: str) -> Stat | None:
        try:
            st = os.stat(self.root / key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat_module.S_ISREG(st.st_mode):
            return None
        return Stat(st.st_size, st.st_mtime)

    def get(self, key: str) -> bytes:
        try:
            with open(self.root / key, "rb") as f:
                return f.read()
        except (IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(key) from None

    def put(self, key: str, data: bytes) -> None:
        if not data:  # an empty marker has no partial state: create it in place, skip the temp file
            target = self.root / key
            target.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
            _fsync_dir(target.parent)
            return
        w = _FileWriter(self, key, None)
        try:
            w.write(data)
            w.commit()
        except BaseException:
            w.cancel()
            raise

    def writer(self, key: str, *, append_at: int | None = None) -> _FileWriter:
        return _FileWriter(self, key, append_at)

    def reader(self, key: str) -> BinaryIO:
        try:
            return open(self.root / key, "rb")  # noqa: SIM115 - the caller closes it
        except (IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(key) from None

    def local_path(self, key: str) -> Path | None:
        return self.root / key

    def list(self, prefix: str) -> list[str]:
        try:
            return sorted(os.listdir(self.root / prefix))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def move(self, src: str, dst: str) -> None:
        target = self.root / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root / src, target)
        _fsync_dir(target.parent)

    def delete(self, key: str) -> bool:
        p = self.root / key
        try:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:
            return False
        return True


# --- memory ----------------------------------------------------------------------------------------


class _MemoryWriter:
    def __init__(self, storage: MemoryStorage, key: str, append_at: int | None) -> None:
        self._storage = storage
        self._key = key
        self._buf = bytearray()
        self._append = append_at is not None
        if self._append:
            self._buf += storage._values.get(key, (b"", 0.0))[0][: append_at or 0]
        self._done = False

    @property
    def size(self) -> int:
        return len(self._buf)

    def write(self, data: bytes) -> None:
        self._buf += data

    def commit(self) -> None:
        if not self._done:
            self._storage.put(self._key, bytes(self._buf))
            self._done = True

    def cancel(self) -> None:
        self._done = True


class MemoryStorage:
    """Everything in a dict; atomic because each operation holds one lock."""

    remote = False

    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def stat(self, key: str) -> Stat | None:
        v = self._values.get(key)
        return Stat(len(v[0]), v[1]) if v else None

    def get(self, key: str) -> bytes:
        try:
            return self._values[key][0]
        except KeyError:
            raise FileNotFoundError(key) from None

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._values[key] = (bytes(data), time.time())

    def writer(self, key: str, *, append_at: int | None = None) -> _MemoryWriter:
        return _MemoryWriter(self, key, append_at)

    def reader(self, key: str) -> BinaryIO:
        return io.BytesIO(self.get(key))

    def local_path(self, key: str) -> Path | None:
        return None

    def list(self, prefix: str) -> list[str]:
        start = prefix.rstrip("/") + "/"
        with self._lock:
            names = {k[len(start):].split("/", 1)[0] for k in self._values if k.startswith(start)}
        return sorted(names)

    def move(self, src: str, dst: str) -> None:
        with self._lock:
            try:
                self._values[dst] = self._values.pop(src)
            except KeyError:
                raise FileNotFoundError(src) from None

    def delete(self, key: str) -> bool:
        start = key.rstrip("/") + "/"
        with self._lock:
            doomed = [k for k in self._values if k == key or k.startswith(start)]
            for k in doomed:
                del self._values[k]
        return bool(doomed)
