"""Garbage collection and integrity checks over a registry's storage (``driftless registry gc|fsck``).

GC marks from every manifest of a repository — tagged or not: an environment that pinned a digest
must still be able to pull it after the tag moved on — and, with ``delete_untagged`` (``gc
--delete-untagged``, as distribution's ``--delete-untagged``), only from every tag. Marking follows
the children of an index, a manifest's config and layers, and every referrer whose subject is alive
(recursively); it sweeps the rest. Attached manifests are never roots of their own: a referrer (a
manifest with a ``subject``) and a cosign ``sha256-<hex>.sig`` tag live exactly as long as the
manifest they sign, so a signature is kept while its subject lives and swept with it. Anything written within
the grace period (blobs, manifest revisions, blob links) is kept, so a push in progress — blobs
uploaded, manifest not yet put — survives a GC run alongside a serving registry. Upload sessions in
progress are never touched; one that has received nothing for ``stale_upload_seconds`` (default a
day) is abandoned and removed, and the markers of closed ones expire with the grace period. fsck re-hashes every blob and moves corrupt ones to ``quarantine/``.

With replicas (several ``serve`` processes on one ``--storage`` bucket) the grace period is not
enough: a client may find an old, unreferenced blob still there (HEAD), skip its upload and put a
manifest naming it between GC's mark and its sweep. So, as distribution does, GC on shared storage
needs every writer stopped: each replica records itself under ``replicas/<id>.json`` (whether it
serves ``--read-only``, refreshed every :data:`REPLICA_HEARTBEAT` seconds, removed on a clean stop)
and :func:`collect_garbage` with ``require_read_only`` refuses while a writable replica was seen
within :data:`REPLICA_STALE` seconds (:func:`writable_replicas`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field

from registry.errors import RegistryError
from registry.layout import key
from registry.manifests import INDEX_MEDIA_TYPES
from registry.storage import Storage
from registry.store import HASHERS, Registry
from shared.reference import DIGEST_RE

REPLICAS = "replicas"  # replicas/<id>.json: a serving process on shared storage (see the module docstring)
REPLICA_HEARTBEAT = 10.0  # seconds between a replica's refreshes of its record
REPLICA_STALE = 3 * REPLICA_HEARTBEAT  # a record older than this is a replica that died without cleaning up


class Replica:
    """This process's record among the replicas of a shared storage."""

    def __init__(self, storage: Storage, *, read_only: bool, url: str = "") -> None:
        self.storage = storage
        self.key = f"{REPLICAS}/{uuid.uuid4().hex}.json"
        self.record = {"readOnly": read_only, "host": socket.gethostname(), "pid": os.getpid(), "url": url}

    def beat(self) -> None:
        self.storage.put(self.key, json.dumps({**self.record, "seen": time.time()}).encode())

    def remove(self) -> None:
        self.storage.delete(self.key)


def writable_replicas(storage: Storage, *, now: float | None = None) -> list[dict[str, object]]:
    """The records of replicas seen within REPLICA_STALE seconds that accept writes."""
    now = time.time() if now is None else now
    found = []
    for name in storage.list(REPLICAS):
        try:
            record = json.loads(storage.get(f"{REPLICAS}/{name}"))
        except (FileNotFoundError, ValueError):
            continue
        if isinstance(record, dict) and not record.get("readOnly") and now - float(record.get("seen", 0)) < REPLICA_STALE:
            found.append(record)
    return found


@dataclass
class GcReport:
    blobs: list[tuple[str, int]] = field(default_factory=list)  # (digest, size) deleted or to delete
    manifests: list[str] = field(default_factory=list)  # "repo@digest"
    links: list[str] = field(default_factory=list)  # "repo@digest" blob links
    uploads: list[str] = field(default_factory=list)  # "repo upload-id" sessions abandoned long ago
    kept_recent: int = 0
    kept_untagged: int = 0  # manifests no tag reaches, kept because delete_untagged was not asked
    dry_run: bool = False

    @property
    def freed_bytes(self) -> int:
        return sum(size for _, size in self.blobs)


def _digests_under(storage: Storage, prefix: str) -> list[str]:
    """Digests stored as <prefix>/<alg>/<hex> (links, revisions)."""
    out = []
    for alg in storage.list(prefix):
        if alg in HASHERS:
            out += [f"{alg}:{h}" for h in storage.list(f"{prefix}/{alg}") if DIGEST_RE.match(f"{alg}:{h}")]
    return out


def all_blob_digests(storage: Storage) -> list[str]:
    out = []
    for alg in storage.list(key("blobs")):
        if alg not in HASHERS:
            continue
        for shard in storage.list(f"blobs/{alg}"):
            out += [f"{alg}:{h}" for h in storage.list(f"blobs/{alg}/{shard}")]
    return out


ATTACHED_TAG_RE = re.compile(r"^(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})\.(sig|att|sbom)$")  # cosign's tags


def _attached_tags(registry: Registry, repo: str) -> dict[str, list[str]]:
    """Subject digest -> the targets of its cosign tags (``sha256-<hex>.sig``, ``.att``, ``.sbom``)."""
    out: dict[str, list[str]] = {}
    for t in registry.tags(repo):
        m = ATTACHED_TAG_RE.match(t)
        target = registry.tag_digest(repo, t) if m else None
        if m and target:
            out.setdefault(f"{m[1]}:{m[2]}", []).append(target)
    return out


def _has_subject(registry: Registry, digest: str) -> bool:
    try:
        manifest = json.loads(registry.storage.get(key("blob", digest=digest)))
    except (FileNotFoundError, ValueError):
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("subject"), dict)


def _mark(registry: Registry, repo: str, pending: list[str], live: set[str], marked: set[str],
          attached: dict[str, list[str]] | None = None) -> None:
    """Mark the manifests in ``pending`` (into ``live``) and what they reach: index children,
    referrers and cosign tags (into ``live``), configs and layers (into ``marked``)."""
    storage = registry.storage
    attached = attached or {}
    while pending:
        digest = pending.pop()
        if digest in live or not registry.has_manifest(repo, digest):
            continue
        live.add(digest)
        try:
            manifest = json.loads(storage.get(key("blob", digest=digest)))
        except (FileNotFoundError, ValueError):
            continue
        if not isinstance(manifest, dict):
            continue
        if manifest.get("mediaType") in INDEX_MEDIA_TYPES or "manifests" in manifest:
            pending += [c["digest"] for c in manifest.get("manifests") or [] if isinstance(c, dict) and "digest" in c]
        else:
            for desc in [manifest.get("config")] + list(manifest.get("layers") or []):
                if isinstance(desc, dict) and isinstance(desc.get("digest"), str):
                    marked.add(desc["digest"])
        pending += [r["digest"] for r in registry.referrers(repo, digest)]
        pending += attached.get(digest, [])


def collect_garbage(storage: Storage, *, grace_seconds: float = 600.0, dry_run: bool = False,
                    stale_upload_seconds: float = 86400.0, delete_untagged: bool = False,
                    require_read_only: bool = False) -> GcReport:
    """Mark and sweep (see the module docstring). With ``require_read_only`` (shared storage), refuse
    with UNSUPPORTED while a replica that accepts writes is serving it."""
    if require_read_only and not dry_run:
        writers = writable_replicas(storage)
        if writers:
            names = ", ".join(f"{w.get('host')} pid {w.get('pid')} {w.get('url') or ''}".strip() for w in writers)
            raise RegistryError(
                "UNSUPPORTED",
                f"{len(writers)} registry replica(s) on this storage accept writes ({names}): garbage collection "
                "on shared storage needs every replica read-only. Restart them with --read-only (or stop them), "
                f"run gc, then restart them without it (a replica that died is forgotten after {REPLICA_STALE:.0f} s)",
            )
    registry = Registry(storage)
    report = GcReport(dry_run=dry_run)
    cutoff = time.time() - grace_seconds

    def recent(k: str) -> bool:
        st = storage.stat(k)
        return st is not None and st.modified > cutoff

    marked: set[str] = set()
    for repo in registry.catalog():
        live: set[str] = set()
        attached = _attached_tags(registry, repo)
        signatures = {d for targets in attached.values() for d in targets}
        roots = [d for t in registry.tags(repo) if not ATTACHED_TAG_RE.match(t) and (d := registry.tag_digest(repo, t))]
        _mark(registry, repo, roots, live, marked, attached)
        revisions = _digests_under(storage, key("revisions", repo=repo))
        if not delete_untagged:  # every manifest is a root: a digest pinned somewhere stays pullable
            untagged = [d for d in revisions if d not in live and d not in signatures
                        and not _has_subject(registry, d)]  # attached ones live through their subject
            _mark(registry, repo, list(untagged), live, marked, attached)
            report.kept_untagged += len(untagged)
        # untagged, unreferenced manifests go (with delete_untagged), unless just pushed
        for digest in revisions:
            if digest in live:
                continue
            if recent(key("revision", repo=repo, digest=digest)):
                report.kept_recent += 1
                live.add(digest)
                # a recent manifest keeps what it references, like a tagged one
                try:
                    manifest = json.loads(storage.get(key("blob", digest=digest)))
                    for desc in [manifest.get("config")] + list(manifest.get("layers") or []) + list(manifest.get("manifests") or []):
                        if isinstance(desc, dict) and isinstance(desc.get("digest"), str):
                            marked.add(desc["digest"])
                except (FileNotFoundError, ValueError, TypeError):
                    pass
                continue
            report.manifests.append(f"{repo}@{digest}")
            if not dry_run:
                registry.delete_manifest(repo, digest)
        marked |= live
        for digest in _digests_under(storage, key("layer-links", repo=repo)):
            link = key("layer-link", repo=repo, digest=digest)
            if digest in marked:
                continue
            if recent(link):
                report.kept_recent += 1
                marked.add(digest)
                continue
            report.links.append(f"{repo}@{digest}")
            if not dry_run:
                storage.delete(link)
    # markers of closed upload sessions (they stop a completed id being reused) expire with the grace;
    # a session that has not received a byte for stale_upload_seconds is abandoned, not in progress
    stale_cutoff = time.time() - max(stale_upload_seconds, grace_seconds)
    for upload_id in registry.upload_ids():
        closed = key("upload-closed", upload=upload_id)
        if storage.stat(closed) is not None:
            if not recent(closed) and not dry_run:
                storage.delete(key("upload", upload=upload_id))
            continue
        state = storage.stat(key("upload-state", upload=upload_id))
        if state is not None and state.modified < stale_cutoff:
            try:
                repo = json.loads(storage.get(key("upload-state", upload=upload_id))).get("repository", "?")
            except (FileNotFoundError, ValueError, AttributeError):
                repo = "?"
            report.uploads.append(f"{repo} {upload_id}")
            if not dry_run:
                storage.delete(key("upload", upload=upload_id))
    for digest in all_blob_digests(storage):
        if digest in marked:
            continue
        blob = key("blob", digest=digest)
        st = storage.stat(blob)
        if st is None:
            continue
        if st.modified > cutoff:
            report.kept_recent += 1
            continue
        report.blobs.append((digest, st.size))
        if not dry_run:
            storage.delete(blob)
            storage.delete(key("component", digest=digest))
    return report


@dataclass
class FsckReport:
    checked: int = 0
    corrupt: list[str] = field(default_factory=list)  # digests moved to quarantine/
    missing: list[str] = field(default_factory=list)  # "repo@digest: what" references to absent content

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing


def check_storage(storage: Storage) -> FsckReport:
    registry = Registry(storage)
    report = FsckReport()
    for digest in all_blob_digests(storage):
        alg = digest.split(":")[0]
        hasher = HASHERS[alg]()
        blob = key("blob", digest=digest)
        try:
            with storage.reader(blob) as f:
                while chunk := f.read(1 << 20):
                    hasher.update(chunk)
        except FileNotFoundError:
            continue
        report.checked += 1
        if f"{alg}:{hasher.hexdigest()}" != digest:
            report.corrupt.append(digest)
            storage.move(blob, key("quarantine", digest=digest))
            storage.delete(key("component", digest=digest))
    for repo in registry.catalog():
        for digest in _digests_under(storage, key("revisions", repo=repo)):
            if not registry.has_blob(digest):
                report.missing.append(f"{repo}@{digest}: manifest content is missing")
        for tag in registry.tags(repo):
            target = registry.tag_digest(repo, tag)
            if not target or not registry.has_manifest(repo, target):
                report.missing.append(f"{repo}:{tag}: tag points to missing manifest {target}")
        for digest in _digests_under(storage, key("layer-links", repo=repo)):
            if not registry.has_blob(digest):
                report.missing.append(f"{repo}@{digest}: linked blob is missing")
    return report


