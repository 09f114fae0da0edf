"""The compiled-component cache on disk: ``<data>/cache/<engine key>/<digest>.cwasm``.

Compiled code is only valid for the wasmtime version and engine settings that produced it, so both
are part of the key. The cache is bounded: after each write the least recently used files (by
mtime, bumped on every hit) are removed until the total fits ``max_bytes``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path


class CompiledCache:
    def __init__(self, *, root: Path, engine_key: str, max_bytes: int) -> None:
        self.dir = root / hashlib.sha256(engine_key.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "ENGINE").write_text(engine_key + "\n")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def path_for(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        return self.dir / f"{algorithm}-{hexpart}.cwasm"

    def lookup(self, digest: str) -> Path | None:
        """The cached compiled file for ``digest`` (marked as just used), or None."""
        path = self.path_for(digest)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def store(self, digest: str, data: bytes) -> Path:
        path = self.path_for(digest)
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: a crash never leaves half a file under the real name
        self.evict(keep=path)
        return path

    def install(self, digest: str, compiled: Path) -> Path:
        """Move a file compiled elsewhere (``wasmtime compile -o``) into the cache, atomically."""
        path = self.path_for(digest)
        with open(compiled, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(compiled, path)  # same filesystem: compiled under the cache directory
        self.evict(keep=path)
        return path

    def evict(self, *, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until the cache fits; never ``keep``."""
        with self._lock:
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
                p.unlink(missing_ok=True)
                total -= size
                removed.append(p)
            return removed

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("*.cwasm"))

    def entries(self) -> int:
        return sum(1 for _ in self.dir.glob("*.cwasm"))
