"""Garbage collection and integrity checks over a registry's storage (``driftless registry gc|fsck``).

GC marks from every manifest of a repository — tagged or not: an environment that pinned a digest
must still be able to pull it after the tag moved on — and, with ``delete_untagged`` (``gc
--delete-untagged``, as distribution's ``--delete-untagged``), only from every tag. Marking follows
the children of an index, a manifest's config and layers, and every referrer whose subject is alive
(recursively); it sweeps the rest. Anything written within
the grace period (blobs, manifest revisions, blob links) is kept, so a push in progress — blobs
uploaded, manifest not yet put — survives a GC run alongside a serving registry. Upload sessions in
progress are never touched; one that has received nothing for ``stale_upload_seconds`` (default a
day) is abandoned and removed, and the markers of closed ones expire with the grace period. fsck re-hashes every blob and moves corrupt ones to ``quarantine/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from registry.layout import key
from registry.storage import Storage
from registry.store import HASHERS, INDEX_MEDIA_TYPES, Registry
from shared.reference import DIGEST_RE


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


def _mark(registry: Registry, repo: str, pending: list[str], live: set[str], marked: set[str]) -> None:
    """Mark the manifests in ``pending`` (into ``live``) and what they reach: index children and
    referrers (into ``live``), configs and layers (into ``marked``)."""
    storage = registry.storage
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


def collect_garbage(storage: Storage, *, grace_seconds: float = 600.0, dry_run: bool = False,
                    stale_upload_seconds: float = 86400.0, delete_untagged: bool = False) -> GcReport:
    registry = Registry(storage)
    report = GcReport(dry_run=dry_run)
    cutoff = time.time() - grace_seconds

    def recent(k: str) -> bool:
        st = storage.stat(k)
        return st is not None and st.modified > cutoff

    marked: set[str] = set()
    for repo in registry.catalog():
        live: set[str] = set()
        _mark(registry, repo, [d for t in registry.tags(repo) if (d := registry.tag_digest(repo, t))], live, marked)
        revisions = _digests_under(storage, key("revisions", repo=repo))
        if not delete_untagged:  # every manifest is a root: a digest pinned somewhere stays pullable
            untagged = [d for d in revisions if d not in live]
            _mark(registry, repo, list(untagged), live, marked)
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


