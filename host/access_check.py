"""Whether this host may run a digest it did not pull itself (Kubernetes' AlwaysPullImages question).

Compiled builds and component info are shared by every host on a machine (the compile cache, keyed by
digest), so a host could start a digest named at a registry that would refuse it (another environment's
private registry, a repository its credential does not open) because another host compiled the same
bytes. Before running a reference no pull of its own proved, the host asks the image's registry for the
manifest with its own credential for that registry (one small GET) and checks the digest.

A proof lasts :data:`PROOF_SECONDS` in the process, and is kept in ``DATA/verified-references`` so that
an unreachable registry is forgiven for a reference this host proved before (an edge host restarted
offline runs what it ran; logged as a warning). A refusal (401/403) or a 404 is never forgiven.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from host.errors import RegistryUnreachable
from host.puller import RegistryAccess, fetch_manifest, registry_session

log = logging.getLogger("driftless.host")
PROOF_SECONDS = 300.0


class AccessProofs:
    def __init__(self, *, path: Path, access: RegistryAccess) -> None:
        self._path = path
        self._access = access
        self._lock = threading.Lock()
        self._recent: dict[str, float] = {}  # reference -> when proven (monotonic)
        try:
            self._kept = set(path.read_text().split())
        except OSError:
            self._kept = set()

    def proven(self, *, image: str, digest: str) -> None:
        """Record a proof: a pull of ``image`` at ``digest`` by this host succeeded."""
        reference = _reference(image, digest)
        with self._lock:
            self._recent[reference] = time.monotonic()
            if reference in self._kept:
                return
            self._kept.add(reference)
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_text("".join(f"{r}\n" for r in sorted(self._kept)))
            tmp.replace(self._path)

    def check(self, *, image: str, digest: str) -> None:
        """Raise the registry's refusal (PullError) unless this host may pull ``image`` at ``digest``."""
        reference = _reference(image, digest)
        with self._lock:
            when = self._recent.get(reference)
            if when is not None and time.monotonic() - when < PROOF_SECONDS:
                return
            kept = reference in self._kept
        try:
            with registry_session(image=image, access=self._access) as s:
                fetch_manifest(s.get, image=image, digest=digest, repository=s.repository, base=s.base)
        except RegistryUnreachable as exc:
            if not kept:
                raise
            log.warning("%s: %s; running the build this host pulled and proved before", reference[:80], exc)
            return
        self.proven(image=image, digest=digest)


def _reference(image: str, digest: str) -> str:
    name = image.split("@", 1)[0]
    return f"{name}@{digest}"
