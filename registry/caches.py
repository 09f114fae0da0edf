"""In-memory caches of what the registry reads from its storage, each bounded in size and in staleness.

On an object store every lookup is a round trip (and, with boto3, a millisecond of CPU), so a
manifest GET by tag — tag -> digest, is the revision linked, the manifest's bytes — cost three calls.
:class:`TtlCache` remembers such answers for ``ttl`` seconds (``--cache-ttl``, default 1 s on S3, off
on the filesystem, where a lookup costs microseconds):

- what this process writes or deletes updates or drops its own entries at once, so a client sees
  its own pushes and deletes;
- what *another* process (a worker of the same server, another replica, ``registry gc``) changes is
  seen here at most ``ttl`` seconds later: a moved tag may still answer the old digest, a deleted
  manifest or blob link may still be served, a cached tag listing may lack a new tag, for up to
  ``ttl``. Misses are never cached, so a new tag or manifest is found everywhere at once.

Content addressed by digest never changes, so the manifest bytes cache (in
:class:`~registry.store.Registry`) has no TTL; it is only reached after a TTL-bounded check that the
manifest is linked into the repository.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_REMOTE_TTL = 1.0  # seconds: the staleness bound across workers and replicas on S3
MAX_ENTRIES = 100_000  # per cache; the least recently used go first


class TtlCache(Generic[K, V]):
    """A thread-safe LRU map whose entries expire ``ttl`` seconds after they were stored (0: no caching)."""

    def __init__(self, *, ttl: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: K, value: V, *, stored_at: float | None = None) -> None:
        """Remember ``value``; ``stored_at`` (a ``time.monotonic()`` from before the read) dates it from
        when it was read, so a slow read cannot stretch the staleness bound."""
        if self.ttl <= 0:
            return
        expires = (time.monotonic() if stored_at is None else stored_at) + self.ttl
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
