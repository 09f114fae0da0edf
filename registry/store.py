"""The registry's content model over a :class:`~registry.storage.Storage`: blobs, upload sessions,
manifests, tags, referrers, repositories and component inspections.

Everything here is synchronous and raises :class:`~registry.errors.RegistryError` for client
mistakes; the HTTP server (``registry.server``) only translates requests. Write order keeps every
crash harmless: content first, then the links that make it reachable (revision, referrer, tag).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from registry.caches import DEFAULT_REMOTE_TTL, TtlCache
from registry.errors import RegistryError
from registry.layout import key
from registry.manifests import INDEX_MEDIA_TYPES, parse_manifest
from registry.storage import Stat, Storage, Writer
from registry.validation import (  # noqa: F401 - also imported from here by the handler, gc and tests
    HASHERS,
    MAX_NAME_LENGTH,
    check_digest,
    check_name,
    check_tag,
    digest_of,
    is_digest_like,
    new_hasher,
)
from shared.reference import DIGEST_RE, TAG_RE
from shared.wasm import WASM_LAYER_MEDIA_TYPES, InvalidWasm, WasmInfo, inspect_wasm, inspect_wasm_file

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_TAG_PARAMETERS = 100  # ?tag= parameters of one manifest push
# 32 hex random, 8 hex start time, 24 hex HMAC over both and the repository
UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{64}$")


# --- public types ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadState:
    id: str
    repository: str
    size: int
    started: float


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: str
    media_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class PutResult:
    digest: str
    subject: str | None
    tags: tuple[str, ...] = ()  # every tag the push set (the reference if a tag, then each ?tag=), for OCI-Tag


@dataclass(frozen=True, slots=True)
class ComponentRecord:
    repository: str
    reference: str
    manifest_digest: str
    layer_digest: str
    layer_media_type: str
    info: WasmInfo

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "reference": self.reference,
            "manifestDigest": self.manifest_digest,
            "layerDigest": self.layer_digest,
            "layerMediaType": self.layer_media_type,
            **self.info.to_json(),
        }


# --- the registry ----------------------------------------------------------------------------------


class Registry:
    def __init__(self, storage: Storage, *, manifest_cache_bytes: int = 64 * 1024 * 1024,
                 cache_ttl: float | None = None) -> None:
        self.storage = storage
        # what other processes may change (tags, revision and blob links) is cached for cache_ttl seconds
        # (registry.caches): 1 s on a remote store by default, nothing on a local one
        self.cache_ttl = cache_ttl if cache_ttl is not None else (DEFAULT_REMOTE_TTL if storage.remote else 0.0)
        self._tag_cache: TtlCache[tuple[str, str], str] = TtlCache(ttl=self.cache_ttl)
        self._revision_cache: TtlCache[tuple[str, str], str] = TtlCache(ttl=self.cache_ttl)  # -> media type
        self._blob_cache: TtlCache[tuple[str, str], Stat] = TtlCache(ttl=self.cache_ttl)
        self._tags_cache: TtlCache[str, list[str]] = TtlCache(ttl=self.cache_ttl, max_entries=10_000)
        # manifests are immutable by digest, so caching their bytes is always correct
        self._manifest_cache: OrderedDict[str, bytes] = OrderedDict()
        self._manifest_cache_budget = manifest_cache_bytes
        self._manifest_cache_used = 0
        self._cache_lock = threading.Lock()
        # running sha256 of upload sessions in this process: id -> (size hashed, hasher)
        self._upload_hashers: dict[str, tuple[int, Any]] = {}
        self._secret: bytes | None = None
        self._secret_lock = threading.Lock()

    # -- repositories -------------------------------------------------------------------------------
    def repository_exists(self, repo: str) -> bool:
        return bool(self.storage.list(key("repository", repo=repo)))

    def catalog(self) -> list[str]:
        found: list[str] = []

        def walk(prefix: str, name: str) -> None:
            children = self.storage.list(prefix)
            # listed once it holds a manifest: a push the registry refused leaves only blob links
            if "_manifests" in children and self._has_revision(name):
                found.append(name)
            for child in children:
                if not child.startswith("_"):
                    walk(f"{prefix}/{child}", f"{name}/{child}" if name else child)

        walk(key("repositories"), "")
        return sorted(found)

    def _has_revision(self, repo: str) -> bool:
        revisions = key("revisions", repo=repo)
        return any(self.storage.list(f"{revisions}/{alg}") for alg in self.storage.list(revisions))

    # -- blobs --------------------------------------------------------------------------------------
    def blob_stat(self, repo: str, digest: str) -> Stat:
        """Size of a blob linked into ``repo``; BLOB_UNKNOWN otherwise."""
        cached = self._blob_cache.get((repo, digest))
        if cached is not None:
            return cached
        read_at = time.monotonic()
        if self.storage.stat(key("layer-link", repo=repo, digest=digest)) is not None:
            st = self.storage.stat(key("blob", digest=digest))
            if st is not None:
                self._blob_cache.put((repo, digest), st, stored_at=read_at)
                return st
        raise RegistryError("BLOB_UNKNOWN", {"digest": digest})

    def cached_blob_stat(self, repo: str, digest: str) -> Stat | None:
        """:meth:`blob_stat` from memory only (None: ask the storage), for the event loop."""
        return self._blob_cache.get((repo, digest))

    def forget_blob(self, repo: str, digest: str) -> None:
        """Drop a cached blob stat (the blob turned out to be gone: gc in another process)."""
        self._blob_cache.pop((repo, digest))

    def blob_key(self, digest: str) -> str:
        return key("blob", digest=digest)

    def has_blob(self, digest: str) -> bool:
        return self.storage.stat(key("blob", digest=digest)) is not None

    def link_blob(self, repo: str, digest: str) -> None:
        link = key("layer-link", repo=repo, digest=digest)
        if self.storage.stat(link) is None:
            self.storage.put(link, b"")

    def delete_blob(self, repo: str, digest: str) -> None:
        """Unlink the blob from ``repo``; the content goes when GC finds nothing else uses it."""
        self.blob_stat(repo, digest)
        self.storage.delete(key("layer-link", repo=repo, digest=digest))
        self._blob_cache.pop((repo, digest))

    def mount(self, repo: str, digest: str, from_repo: str | None, *,
              may_pull: Callable[[str], bool] | None = None) -> bool:
        """Cross-repository mount: link a blob of ``from_repo``, or, without it, any stored blob — or,
        with ``may_pull``, a blob linked into some repository ``may_pull`` accepts (a catalog walk)."""
        if from_repo is not None:
            if self.storage.stat(key("layer-link", repo=from_repo, digest=digest)) is None:
                return False
        if not self.has_blob(digest):
            return False
        if from_repo is None and may_pull is not None and not any(
            may_pull(r) and self.storage.stat(key("layer-link", repo=r, digest=digest)) is not None
            for r in self.catalog()
        ):
            return False
        self.link_blob(repo, digest)
        return True

    def blob_writer(self, digest: str) -> Writer:
        """A temp-file writer whose commit puts the blob at its content address."""
        return self.storage.writer(key("blob", digest=digest))

    def commit_blob(self, repo: str, writer: Writer, digest: str, actual: str) -> None:
        if actual != digest:
            writer.cancel()
            raise RegistryError("DIGEST_INVALID", f"the content's digest is {actual}, not {digest}; nothing was stored")
        writer.commit()
        self.link_blob(repo, digest)

    def put_blob(self, repo: str, data: bytes, *, digest: str | None = None) -> str:
        actual = digest_of(data, digest.split(":")[0] if digest else "sha256")
        w = self.blob_writer(actual)
        w.write(data)
        self.commit_blob(repo, w, digest or actual, actual)
        return actual

    # -- upload sessions ----------------------------------------------------------------------------
    @property
    def upload_secret_loaded(self) -> bool:
        """True once the key that signs upload ids is in memory (start_upload then touches no disk)."""
        return self._secret is not None

    def upload_secret(self) -> bytes:
        """The key that signs upload ids, created in the storage if it has none yet."""
        return self._upload_secret()

    def _upload_secret(self) -> bytes:
        with self._secret_lock:  # one creator per process (another process may still race: see _signed())
            if self._secret is None:
                try:
                    self._secret = self.storage.get(key("upload-secret"))
                except FileNotFoundError:
                    self.storage.put(key("upload-secret"), secrets.token_bytes(32))
                    self._secret = self.storage.get(key("upload-secret"))  # another process may have won
            return self._secret

    def _sign(self, repo: str, nonce_and_time: str) -> str:
        mac = hmac.new(self._upload_secret(), f"{repo}\n{nonce_and_time}".encode(), hashlib.sha256)
        return mac.hexdigest()[:24]

    def start_upload(self, repo: str) -> UploadState:
        """A new session. Nothing is written: until its first chunk a session is its signed id, so
        it survives restarts for free and POST costs no disk round trip."""
        started = int(time.time())
        body = f"{uuid.uuid4().hex}{started:08x}"
        return UploadState(id=body + self._sign(repo, body), repository=repo, size=0, started=float(started))

    def _save_upload(self, state: UploadState) -> None:
        self.storage.put(
            key("upload-state", upload=state.id),
            json.dumps({"repository": state.repository, "size": state.size, "started": state.started}).encode(),
        )

    def _signed(self, repo: str, upload_id: str) -> bool:
        if not UPLOAD_ID_RE.match(upload_id):
            return False
        if hmac.compare_digest(upload_id[40:], self._sign(repo, upload_id[:40])):
            return True
        held, self._secret = self._secret, None  # two processes created the key at once: the stored one won
        return self._upload_secret() != held and hmac.compare_digest(upload_id[40:], self._sign(repo, upload_id[:40]))

    def upload(self, repo: str, upload_id: str) -> UploadState:
        if self._signed(repo, upload_id):
            if self.storage.stat(key("upload-closed", upload=upload_id)) is None:
                try:
                    data = json.loads(self.storage.get(key("upload-state", upload=upload_id)))
                    return UploadState(upload_id, repo, int(data["size"]), float(data["started"]))
                except FileNotFoundError:  # no chunk yet
                    return UploadState(upload_id, repo, 0, float(int(upload_id[32:40], 16)))
                except (ValueError, KeyError, TypeError):
                    pass
        raise RegistryError("BLOB_UPLOAD_UNKNOWN", {"repository": repo, "upload": upload_id[:64]})

    def upload_ids(self) -> list[str]:
        return [u for u in self.storage.list(key("uploads")) if UPLOAD_ID_RE.match(u)]

    def chunk_writer(self, state: UploadState) -> Writer:
        """Append after the committed bytes of the session (bytes past them are a crash's leftovers)."""
        return self.storage.writer(key("upload-data", upload=state.id), append_at=state.size)

    def upload_hasher(self, state: UploadState) -> Any:
        """The running sha256 of the session, continued from where it stopped (re-read after a restart)."""
        held = self._upload_hashers.get(state.id)
        if held is not None and held[0] == state.size:
            return held[1]
        h = hashlib.sha256()
        if state.size == 0:
            return h
        self._hash_stored(key("upload-data", upload=state.id), h, limit=state.size)
        return h

    def commit_chunk(self, state: UploadState, writer: Writer, hasher: Any) -> UploadState:
        writer.commit()
        new = UploadState(state.id, state.repository, writer.size, state.started)
        self._save_upload(new)
        if len(self._upload_hashers) > 10_000:  # abandoned sessions: forget them, a resume re-reads the bytes
            self._upload_hashers.clear()
        self._upload_hashers[state.id] = (new.size, hasher)
        return new

    def finish_upload(self, state: UploadState, digest: str) -> None:
        """Verify the session's bytes against ``digest`` and move them to the blob's content address."""
        if digest.startswith("sha256:"):
            hexdigest = self.upload_hasher(state).hexdigest()
        else:
            h = new_hasher(digest)
            self._hash_stored(key("upload-data", upload=state.id), h, limit=state.size)
            hexdigest = h.hexdigest()
        actual = f"{digest.split(':')[0]}:{hexdigest}"
        if actual != digest:
            raise RegistryError(
                "DIGEST_INVALID",
                f"the uploaded content's digest is {actual}, not {digest}; the upload session is kept, "
                "so you can send the rest or start over",
            )
        data_key = key("upload-data", upload=state.id)
        st = self.storage.stat(data_key)
        if st is None:  # an empty blob: the session never received a chunk
            self.storage.put(key("blob", digest=digest), b"")
        else:
            if st.size > state.size:  # leftovers of a crash after the last commit
                self.storage.writer(data_key, append_at=state.size).commit()
            self.storage.move(data_key, key("blob", digest=digest))
        self.link_blob(state.repository, digest)
        self.cancel_upload(state)

    def cancel_upload(self, state: UploadState) -> None:
        """Close the session (completed or cancelled): its bytes go, a marker stops the id from being reused."""
        self._upload_hashers.pop(state.id, None)
        self.storage.delete(key("upload-data", upload=state.id))
        self.storage.delete(key("upload-state", upload=state.id))
        self.storage.put(key("upload-closed", upload=state.id), b"")

    def _hash_stored(self, k: str, hasher: Any, *, limit: int | None = None) -> None:
        if limit == 0:  # nothing to read (a session with no chunk has no data file)
            return
        remaining = limit
        with self.storage.reader(k) as f:
            while remaining is None or remaining > 0:
                chunk = f.read(1 << 20 if remaining is None else min(1 << 20, remaining))
                if not chunk:
                    break
                hasher.update(chunk)
                if remaining is not None:
                    remaining -= len(chunk)

    # -- manifests ----------------------------------------------------------------------------------
    def resolve(self, repo: str, reference: str) -> str:
        """Tag or digest -> manifest digest present in ``repo`` (MANIFEST_UNKNOWN / NAME_UNKNOWN otherwise)."""
        if is_digest_like(reference):
            digest = check_digest(reference)
        else:
            check_tag(reference, code="MANIFEST_UNKNOWN")
            cached = self._tag_cache.get((repo, reference))
            if cached is not None:
                return cached
            read_at = time.monotonic()
            try:
                digest = self.storage.get(key("tag", repo=repo, tag=reference)).decode()
            except FileNotFoundError:
                raise self._unknown_manifest(repo, reference) from None
            self._tag_cache.put((repo, reference), digest, stored_at=read_at)
        return digest

    def cached_manifest(self, repo: str, reference: str) -> StoredManifest | None:
        """:meth:`get_manifest` from memory only (None: ask the storage), for the event loop."""
        if (digest := reference if is_digest_like(reference) else self._tag_cache.get((repo, reference))) is None:
            return None
        media_type, body = self._revision_cache.get((repo, digest)), self._manifest_cache.get(digest)
        return StoredManifest(digest=digest, media_type=media_type, body=body) if media_type and body else None

    def _unknown_manifest(self, repo: str, reference: str) -> RegistryError:
        if not self.repository_exists(repo):
            return RegistryError("NAME_UNKNOWN", {"name": repo})
        return RegistryError("MANIFEST_UNKNOWN", {"name": repo, "reference": reference})

    def get_manifest(self, repo: str, reference: str) -> StoredManifest:
        digest = self.resolve(repo, reference)
        media_type = self._revision_cache.get((repo, digest))
        if media_type is None:
            read_at = time.monotonic()
            try:
                media_type = self.storage.get(key("revision", repo=repo, digest=digest)).decode()
            except FileNotFoundError:
                raise self._unknown_manifest(repo, reference) from None
            self._revision_cache.put((repo, digest), media_type, stored_at=read_at)
        body = self._manifest_cache.get(digest)
        if body is None:
            try:
                body = self.storage.get(key("blob", digest=digest))
            except FileNotFoundError:
                raise self._unknown_manifest(repo, reference) from None
            if len(body) <= self._manifest_cache_budget // 16:  # a few huge manifests must not flush the rest
                with self._cache_lock:  # the component endpoint reads manifests from worker threads
                    if digest not in self._manifest_cache:
                        self._manifest_cache[digest] = body
                        self._manifest_cache_used += len(body)
                    while self._manifest_cache_used > self._manifest_cache_budget:
                        _, evicted = self._manifest_cache.popitem(last=False)
                        self._manifest_cache_used -= len(evicted)
        return StoredManifest(digest=digest, media_type=media_type, body=body)

    def has_manifest(self, repo: str, digest: str) -> bool:
        return self.storage.stat(key("revision", repo=repo, digest=digest)) is not None

    def put_manifest(self, repo: str, reference: str, body: bytes, content_type: str | None,
                     *, tags: tuple[str, ...] = ()) -> PutResult:
        if len(body) > MAX_MANIFEST_BYTES:
            raise RegistryError(
                "SIZE_INVALID", f"manifest is {len(body)} bytes; the limit is {MAX_MANIFEST_BYTES} (4 MiB)", status=413
            )
        if is_digest_like(reference):
            check_digest(reference)
            digest = digest_of(body, reference.split(":")[0])
            if digest != reference:
                raise RegistryError("DIGEST_INVALID", f"the manifest's digest is {digest}, not {reference}")
        else:
            check_tag(reference)
            digest = digest_of(body)
        if len(tags) > MAX_TAG_PARAMETERS:
            raise RegistryError(
                "MANIFEST_INVALID", f"{len(tags)} tag parameters; at most {MAX_TAG_PARAMETERS} tags can be set in one push"
            )
        for t in tags:  # every tag is checked before anything is written: all of them are set, or none
            check_tag(t)
        applied = tuple(dict.fromkeys((() if is_digest_like(reference) else (reference,)) + tuple(tags)))
        manifest = parse_manifest(body, content_type)
        media_type = manifest["mediaType"]
        self._check_references(repo, manifest)
        subject = manifest.get("subject")
        # content, then the links that make it reachable: a crash in between leaves only garbage for GC
        if not self.has_blob(digest):
            self.storage.put(key("blob", digest=digest), body)
        self.storage.put(key("revision", repo=repo, digest=digest), media_type.encode())
        if subject:
            descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(body)}
            artifact_type = manifest.get("artifactType") or (manifest.get("config") or {}).get("mediaType")
            if artifact_type:
                descriptor["artifactType"] = artifact_type
            if manifest.get("annotations"):
                descriptor["annotations"] = manifest["annotations"]
            self.storage.put(
                key("referrer", repo=repo, subject=subject["digest"], digest=digest), json.dumps(descriptor).encode()
            )
        self._revision_cache.put((repo, digest), media_type)
        for t in applied:
            self.storage.put(key("tag", repo=repo, tag=t), digest.encode())
            self._tag_cache.put((repo, t), digest)
        if applied:
            self._tags_cache.pop(repo)
        return PutResult(digest=digest, subject=subject["digest"] if subject else None, tags=applied)

    def _check_references(self, repo: str, manifest: dict[str, Any]) -> None:
        if manifest["mediaType"] in INDEX_MEDIA_TYPES:
            for child in manifest["manifests"]:
                if not self.has_manifest(repo, child["digest"]):
                    raise RegistryError(
                        "MANIFEST_BLOB_UNKNOWN",
                        f"the index references manifest {child['digest']}, which is not in {repo}: push it first",
                    )
            return
        for role, desc in [("config", manifest["config"])] + [("layer", d) for d in manifest["layers"]]:
            if desc.get("urls"):  # a non-distributable layer lives elsewhere
                continue
            try:
                st = self.blob_stat(repo, desc["digest"])
            except RegistryError:
                raise RegistryError(
                    "MANIFEST_BLOB_UNKNOWN",
                    f"the manifest's {role} {desc['digest']} is not in {repo}: push the blob before the manifest",
                ) from None
            if st.size != desc["size"]:
                raise RegistryError(
                    "MANIFEST_INVALID",
                    f"the manifest says {role} {desc['digest']} has {desc['size']} bytes; the stored blob has {st.size}",
                )
            if role == "layer" and desc["mediaType"] in WASM_LAYER_MEDIA_TYPES:
                self.wasm_info(desc["digest"], media_type=desc["mediaType"])

    def wasm_info(self, layer_digest: str, *, media_type: str) -> WasmInfo:
        """Inspection of a Wasm layer (kind, imports, exports, worlds), recorded once per layer digest
        (MANIFEST_INVALID if not Wasm). Blocking (a wasm-tools subprocess): the server calls it from a
        worker thread. Records written before ``worlds`` existed get them inferred when read."""
        record_key = key("component", digest=layer_digest)
        try:
            return WasmInfo.from_json(json.loads(self.storage.get(record_key)))
        except (FileNotFoundError, ValueError, KeyError):
            pass
        blob_key = key("blob", digest=layer_digest)
        path = self.storage.local_path(blob_key)
        try:
            # wasm-tools reads the file itself: the blob (tens of MB for componentize-py) stays out of this process
            info = inspect_wasm_file(path) if path is not None else inspect_wasm(self.storage.get(blob_key))
        except InvalidWasm as exc:
            raise RegistryError(
                "MANIFEST_INVALID",
                f"layer {layer_digest} has media type {media_type} but is not a valid Wasm component or module: {exc}",
            ) from None
        self.storage.put(record_key, json.dumps(info.to_json()).encode())
        return info

    def delete_manifest(self, repo: str, reference: str) -> None:
        if not is_digest_like(reference):
            check_tag(reference, code="MANIFEST_UNKNOWN")
            self._tag_cache.pop((repo, reference))
            self._tags_cache.pop(repo)
            if not self.storage.delete(key("tag", repo=repo, tag=reference)):
                raise self._unknown_manifest(repo, reference)
            return
        stored = self.get_manifest(repo, reference)
        for t in self.tags(repo):
            try:
                if self.storage.get(key("tag", repo=repo, tag=t)).decode() == stored.digest:
                    self.storage.delete(key("tag", repo=repo, tag=t))
                    self._tag_cache.pop((repo, t))
            except FileNotFoundError:
                pass
        try:
            subject = (json.loads(stored.body).get("subject") or {}).get("digest")
        except (ValueError, AttributeError):
            subject = None
        if isinstance(subject, str) and DIGEST_RE.match(subject):
            self.storage.delete(key("referrer", repo=repo, subject=subject, digest=stored.digest))
        self.storage.delete(key("revision", repo=repo, digest=stored.digest))
        self._revision_cache.pop((repo, stored.digest))
        self._tags_cache.pop(repo)
        with self._cache_lock:
            evicted = self._manifest_cache.pop(stored.digest, None)
            if evicted is not None:
                self._manifest_cache_used -= len(evicted)

    def tags(self, repo: str) -> list[str]:
        cached = self._tags_cache.get(repo)
        if cached is not None:
            return cached
        read_at = time.monotonic()
        found = [t for t in self.storage.list(key("tags", repo=repo)) if TAG_RE.match(t)]
        if found:
            self._tags_cache.put(repo, found, stored_at=read_at)
        return found

    def cached_tags(self, repo: str) -> list[str] | None:
        """:meth:`tags` from memory only (None: ask the storage), for the event loop."""
        return self._tags_cache.get(repo)

    def tag_list(self, repo: str) -> list[str]:
        """The tags of ``repo`` (one list call); NAME_UNKNOWN when the repository does not exist."""
        found = self.tags(repo)
        if not found and not self.repository_exists(repo):
            raise RegistryError("NAME_UNKNOWN", {"name": repo})
        return found

    def tag_digest(self, repo: str, tag: str) -> str | None:
        try:
            return self.storage.get(key("tag", repo=repo, tag=tag)).decode()
        except FileNotFoundError:
            return None

    def referrers(self, repo: str, subject: str, artifact_type: str | None = None) -> list[dict[str, Any]]:
        out = []
        prefix = key("referrers", repo=repo, subject=subject)
        for name in self.storage.list(prefix):
            try:
                descriptor = json.loads(self.storage.get(f"{prefix}/{name}"))
            except (FileNotFoundError, ValueError):
                continue
            if not self.has_manifest(repo, descriptor.get("digest", "")):
                continue
            if artifact_type is None or descriptor.get("artifactType") == artifact_type:
                out.append(descriptor)
        return out

    def component(self, repo: str, reference: str) -> ComponentRecord:
        stored = self.get_manifest(repo, reference)
        manifest = json.loads(stored.body)
        for layer in manifest.get("layers") or []:
            if layer.get("mediaType") in WASM_LAYER_MEDIA_TYPES:
                info = self.wasm_info(layer["digest"], media_type=layer["mediaType"])
                return ComponentRecord(repo, reference, stored.digest, layer["digest"], layer["mediaType"], info)
        raise RegistryError(
            "MANIFEST_UNKNOWN",
            f"{repo}@{stored.digest} has no Wasm layer (media types: {', '.join(sorted(WASM_LAYER_MEDIA_TYPES))})",
        )
