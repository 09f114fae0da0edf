"""The registry's request handler: OCI Distribution Spec v1.1 plus the ``/v2/_driftless/`` extension.

One low-level aiohttp handler routes by regex (no router or middleware on the hot path), checks who may
do what (registry.auth, registry.access) and translates requests into calls on the store
(registry.store); blobs are served with ``web.FileResponse`` (sendfile, ``Range``) or from a worker
thread (registry.transfer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from registry.access import AccessPolicy
from registry.auth import Authenticator, unauthorized
from registry.errors import RegistryError
from registry.manifests import OCI_INDEX
from registry.metrics import Metrics
from registry.options import ServerOptions
from registry.storage_s3 import SEGMENTED_META
from registry.storage_s3 import unavailable as storage_unavailable
from registry.store import (
    MAX_MANIFEST_BYTES,
    Registry,
    UploadState,
    check_digest,
    check_name,
    new_hasher,
)
from registry.transfer import (
    THREADED_SENDFILE_MIN,
    range_length,
    read_limited,
    sendfile_thread_free,
    stream_body,
    threaded_sendfile,
)
from registry.transfer_splice import presigned, splice_from_s3
from registry.transfer_splice import usable as splice_usable
from shared.errors import UsageError

T = TypeVar("T")
log = logging.getLogger("driftless.registry")

ROUTE = re.compile(
    r"^/v2/(?P<name>.+?)/(?:"
    r"(?P<kind>manifests|blobs|referrers)/(?P<ref>[^/]+)"
    r"|blobs/uploads/(?P<upload>[^/]*)"
    r"|tags/(?P<tags>list))$"
)
COMPONENTS_PREFIX = "/v2/_driftless/components/"
BASE_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
CLIENT_GONE = 499  # the metrics' status of a request whose client hung up (nginx's "client closed request")
RETRY_AFTER = "5"  # seconds, on a 503 when the storage (S3) is down or throttling


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None,
          content_type: str = "application/json") -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={**BASE_HEADERS, **(headers or {})}, content_type=content_type
    )


def _empty(status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, headers={**BASE_HEADERS, "Content-Length": "0", **headers})


def _error(exc: RegistryError) -> web.Response:
    return web.Response(
        body=exc.body(), status=exc.status, headers={**BASE_HEADERS, **exc.headers}, content_type="application/json"
    )


def _upload_headers(name: str, state: UploadState) -> dict[str, str]:
    return {
        "Location": f"/v2/{name}/blobs/uploads/{state.id}",
        "Range": f"0-{max(state.size - 1, 0)}",
        "Docker-Upload-UUID": state.id,
    }


def _route_of(path: str) -> str:
    """The metrics label of a path (for requests that failed before dispatch named it)."""
    if path.startswith(COMPONENTS_PREFIX):
        return "components"
    m = ROUTE.match(path)
    if m is None:
        return {"/v2/": "base", "/v2/_catalog": "catalog", "/metrics": "metrics"}.get(path, "other")
    if m["kind"] == "blobs":
        return "upload" if m["ref"] == "uploads" else "blob"
    if m["kind"]:
        return {"manifests": "manifest", "referrers": "referrers"}[m["kind"]]
    return "upload" if m["upload"] is not None else "tags"


def _page(items: list[str], query: Any) -> tuple[list[str], int | None]:
    """Apply ``n``/``last`` pagination; return the page and n (for the Link header) if more remain."""
    last = query.get("last")
    if last:
        items = [i for i in items if i > last]
    raw_n = query.get("n")
    if raw_n is None or raw_n == "":
        return items, None
    try:
        n = int(raw_n)
        if n < 0:
            raise ValueError
    except ValueError:
        raise RegistryError(
            "UNSUPPORTED", f"query parameter n={raw_n[:20]!r} must be a non-negative integer", status=400
        ) from None
    return items[:n], (n if len(items) > n else None)


class RegistryApp:
    """The request handler; one per server."""

    def __init__(self, registry: Registry, options: ServerOptions, *, metrics: Metrics) -> None:
        self.registry = registry
        self.options = options
        self.metrics = metrics
        self.auth = (
            Authenticator(options.htpasswd, failure_limit=options.auth_failure_limit,
                          cache_seconds=options.auth_cache_seconds)
            if options.htpasswd else None
        )
        self.policy = load_policy(options, self.auth)
        self._session_locks: dict[str, asyncio.Lock] = {}

    # -- entry --------------------------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        route = "other"
        try:
            route, response = await self._dispatch(request)
        except RegistryError as exc:
            route = _route_of(request.path)
            response = _error(exc)
        except asyncio.CancelledError:
            raise
        except ConnectionError as exc:
            route = _route_of(request.path)
            if request.transport is not None and not request.transport.is_closing():
                response = self._unexpected(request, exc)  # not the client's connection: some other one
            else:  # the client hung up (mid-body or mid-download): not our error
                log.debug("client went away during %s %s: %s", request.method, request.path, exc)
                response = web.Response(status=CLIENT_GONE)  # never sent: aiohttp stops at the closed transport
        except Exception as exc:
            route = _route_of(request.path)
            response = self._unexpected(request, exc)
        sent = getattr(response, "blob_bytes", None)  # a FileResponse knows its length only once prepared
        self.metrics.observe(
            route=route,
            method=request.method,
            status=response.status,
            seconds=time.perf_counter() - started,
            bytes_in=request.content_length or 0,
            bytes_out=(sent if sent is not None else response.content_length or 0) if request.method != "HEAD" else 0,
        )
        return response

    @staticmethod
    def _unexpected(request: web.BaseRequest, exc: Exception) -> web.Response:
        if storage_unavailable(exc):  # S3 down or throttling, after the driver's retries: a clean 503
            log.warning("storage unavailable on %s %s: %s", request.method, request.path, exc)
            return _error(RegistryError(
                "UNAVAILABLE", "the registry's storage is unavailable or throttling requests; retry later",
                headers={"Retry-After": RETRY_AFTER}))
        # a bug, not the client's mistake: log it, answer a clean 500
        log.error("internal error on %s %s", request.method, request.path, exc_info=exc)
        return web.Response(
            body=json.dumps({"errors": [{"code": "UNKNOWN", "message": "internal error", "detail": {}}]}).encode(),
            status=500,
            content_type="application/json",
        )

    # -- who may do what ----------------------------------------------------------------------------
    async def _identify(self, request: web.BaseRequest) -> str | None:
        """The authenticated user, or None for an anonymous caller (no Authorization header, or no
        htpasswd at all). Wrong credentials are a 401 even where anonymous callers are let in."""
        if self.auth is None:
            return None
        header = request.headers.get("Authorization")
        if not header:
            return None
        return await self.auth.user(header, request.remote)

    async def _registry_wide(self, request: web.BaseRequest) -> str | None:
        """/v2/, /v2/_catalog, /metrics: any user; anonymous callers only when the registry has no
        users or was started with --anonymous-pull (with a policy and users, the 401 tells clients
        to send their credentials)."""
        user = await self._identify(request)
        if user is None and self.auth is not None and not self.policy.anonymous_registry:
            raise unauthorized("valid basic-auth credentials are required (htpasswd)")
        return user

    def _require(self, user: str | None, repository: str, action: str, *, why: str = "") -> None:
        if self.policy.allows(user, repository, action):
            return
        what = f"{action} on repository {repository!r}{why}"
        if user is None and self.auth is not None:
            if self.options.access_policy is None:  # today's switches: any user may do everything
                raise unauthorized(f"valid basic-auth credentials are required (htpasswd) for {what}")
            raise unauthorized(f"anonymous access does not allow {what}: send the credentials of a user "
                               "the access policy allows")
        who = "anonymous callers" if user is None else f"user {user!r}"
        raise RegistryError("DENIED", f"the access policy does not give {who} {what}")

    async def _dispatch(self, request: web.BaseRequest) -> tuple[str, web.StreamResponse]:
        path = request.path
        method = request.method
        if path == "/metrics":
            await self._registry_wide(request)
            body = await asyncio.get_running_loop().run_in_executor(None, self.metrics.render)  # walks blobs/
            return "metrics", web.Response(body=body, headers={"Content-Type": self.metrics.content_type})
        if path in ("/v2/", "/v2"):
            await self._registry_wide(request)
            return "base", _json({})
        if not path.startswith("/v2/"):
            raise RegistryError("UNSUPPORTED", f"no such endpoint: {path[:200]}", status=404)
        if path == "/v2/_catalog":
            self._methods(method, ("GET",))
            user = await self._registry_wide(request)
            return "catalog", await self._catalog(request, user)
        user = await self._identify(request)
        if path.startswith(COMPONENTS_PREFIX):
            self._methods(method, ("GET", "HEAD"))
            tail = path[len(COMPONENTS_PREFIX):]
            self._require(user, check_name(tail.rpartition("/")[0]), "pull")
            return "components", await self._component(request, tail)
        m = ROUTE.match(path)
        if m is None:
            raise RegistryError("UNSUPPORTED", f"no such endpoint: {path[:200]}", status=404)
        name = check_name(m["name"])
        kind = m["kind"]
        if kind == "manifests":
            self._methods(method, ("GET", "HEAD", "PUT", "DELETE"))
            action = {"PUT": "push", "DELETE": "delete"}.get(method, "pull")
        elif kind == "blobs" and m["ref"] == "uploads":
            self._methods(method, ("POST",))
            action = "push"
        elif kind == "blobs":
            self._methods(method, ("GET", "HEAD", "DELETE"))
            action = "delete" if method == "DELETE" else "pull"
        elif m["upload"] is not None:
            self._methods(method, ("POST",) if m["upload"] == "" else ("GET", "PATCH", "PUT", "DELETE"))
            action = "push"
        else:  # tags, referrers
            self._methods(method, ("GET",))
            action = "pull"
        self._require(user, name, action)
        if action != "pull" and self.options.read_only:
            raise RegistryError("UNSUPPORTED", "this registry is read-only (started with --read-only)")
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            # authorised: tell the client to send the body (there is no router to do it for us)
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        loop = asyncio.get_running_loop()
        if kind == "manifests":
            if method in ("GET", "HEAD"):
                return "manifest", await self._get_manifest(name, m["ref"])
            if method == "PUT":
                return "manifest", await self._put_manifest(request, name, m["ref"])
            await loop.run_in_executor(None, self.registry.delete_manifest, name, m["ref"])
            return "manifest", _empty(202, {})
        if kind == "blobs" and m["ref"] == "uploads":
            return "upload", await self._start_upload(request, name, user)
        if kind == "blobs":
            digest = check_digest(m["ref"])
            if method == "DELETE":
                await loop.run_in_executor(None, self.registry.delete_blob, name, digest)
                return "blob", _empty(202, {})
            return "blob", await self._get_blob(request, name, digest)
        if m["upload"] is not None:
            if m["upload"] == "":
                return "upload", await self._start_upload(request, name, user)
            return "upload", await self._upload(request, name, m["upload"])
        if m["tags"] is not None:
            return "tags", await self._tags(request, name)
        return "referrers", await self._referrers(request, name, check_digest(m["ref"]))

    @staticmethod
    def _methods(method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            raise RegistryError(
                "UNSUPPORTED", f"method {method} is not allowed here; use {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
            )

    # -- manifests ----------------------------------------------------------------------------------
    async def _storage_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a small storage-backed function: inline on a local driver (microseconds), from a worker
        thread on a remote one (a round trip that must not hold the event loop)."""
        if self.registry.storage.remote:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        return fn(*args)

    async def _get_manifest(self, name: str, reference: str) -> web.Response:
        stored = self.registry.cached_manifest(name, reference)  # memory only: no thread hop when cached
        if stored is None:
            stored = await self._storage_call(self.registry.get_manifest, name, reference)
        return web.Response(
            body=stored.body,
            headers={**BASE_HEADERS, "Content-Type": stored.media_type, "Docker-Content-Digest": stored.digest},
        )

    async def _put_manifest(self, request: web.BaseRequest, name: str, reference: str) -> web.Response:
        if (request.content_length or 0) > MAX_MANIFEST_BYTES:
            raise RegistryError(
                "SIZE_INVALID",
                f"manifest is {request.content_length} bytes; the limit is {MAX_MANIFEST_BYTES} (4 MiB)",
                status=413,
            )
        body = await read_limited(request, MAX_MANIFEST_BYTES)
        tags = tuple(request.query.getall("tag", []))
        result = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: self.registry.put_manifest(
                name, reference, body, request.headers.get("Content-Type"), tags=tags
            ),
        )
        headers = {"Location": f"/v2/{name}/manifests/{result.digest}", "Docker-Content-Digest": result.digest}
        if result.subject:
            headers["OCI-Subject"] = result.subject
        response = _empty(201, headers)
        for tag in result.tags:  # one OCI-Tag per tag set (distribution-spec, next version)
            response.headers.add("OCI-Tag", tag)
        return response

    async def _tags(self, request: web.BaseRequest, name: str) -> web.Response:
        listed = self.registry.cached_tags(name)
        if listed is None:
            listed = await self._storage_call(self.registry.tag_list, name)
        tags, more = _page(listed, request.query)
        headers = {}
        if more is not None and tags:
            headers["Link"] = f'</v2/{name}/tags/list?n={more}&last={tags[-1]}>; rel="next"'
        return _json({"name": name, "tags": tags}, headers=headers)

    async def _referrers(self, request: web.BaseRequest, name: str, digest: str) -> web.Response:
        artifact_type = request.query.get("artifactType")
        descriptors = await asyncio.get_running_loop().run_in_executor(
            None, self.registry.referrers, name, digest, artifact_type)
        headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
        return _json(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors},
            headers=headers,
            content_type=OCI_INDEX,
        )

    async def _catalog(self, request: web.BaseRequest, user: str | None) -> web.Response:
        """The repositories ``user`` may pull (the catalog is a directory walk: off the loop)."""
        everything = await asyncio.get_running_loop().run_in_executor(None, self.registry.catalog)
        visible = [r for r in everything if self.policy.allows(user, r, "pull")]
        repos, more = _page(visible, request.query)
        headers = {}
        if more is not None and repos:
            headers["Link"] = f'</v2/_catalog?n={more}&last={repos[-1]}>; rel="next"'
        return _json({"repositories": repos}, headers=headers)

    async def _component(self, request: web.BaseRequest, tail: str) -> web.Response:
        name, _, reference = tail.rpartition("/")
        check_name(name)
        if not reference:
            raise RegistryError("MANIFEST_UNKNOWN", "add a tag or digest: /v2/_driftless/components/<name>/<reference>")
        record = await asyncio.get_running_loop().run_in_executor(None, self.registry.component, name, reference)
        return _json(record.to_json())

    # -- blobs --------------------------------------------------------------------------------------
    async def _get_blob(self, request: web.BaseRequest, name: str, digest: str) -> web.StreamResponse:
        st = self.registry.cached_blob_stat(name, digest)
        if st is None:
            st = await self._storage_call(self.registry.blob_stat, name, digest)
        headers = {**BASE_HEADERS, "Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
                   "ETag": f'"{digest}"'}
        storage_key = self.registry.blob_key(digest)
        path = self.registry.storage.local_path(storage_key)
        if path is not None:
            if (st.size >= THREADED_SENDFILE_MIN and request.method == "GET" and "Range" not in request.headers
                    and sendfile_thread_free()
                    and request.transport is not None and request.transport.get_extra_info("sslcontext") is None):
                return await threaded_sendfile(request, path, st.size, headers)
            file_response = web.FileResponse(path, headers=headers)
            file_response.blob_bytes = range_length(request, st.size)  # type: ignore[attr-defined]
            return file_response
        # a driver without local files (an object store): stream from its reader
        start, stop = 0, st.size
        status = 200
        if "Range" in request.headers:
            try:
                start, stop, _ = request.http_range.indices(st.size)
            except ValueError:
                start, stop = st.size, st.size
            if start >= stop:
                return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{st.size}"})
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{st.size}"
            status = 206
        chunks = None
        if request.method != "HEAD":
            url = presigned(self.registry.storage, storage_key)  # S3: big blobs go kernel to kernel
            open_stream = getattr(self.registry.storage, "open_stream", None)  # else S3 streams on the loop
            try:
                if url is not None and splice_usable(request, url, stop - start):
                    spliced = await splice_from_s3(request, url=url, start=start, stop=stop, status=status,
                                                   headers=headers, unless_header=SEGMENTED_META)
                    if spliced is not None:
                        return spliced
                chunks = await open_stream(storage_key, start, stop) if open_stream is not None else None
            except FileNotFoundError:  # gone since its stat was cached (gc in another process)
                self.registry.forget_blob(name, digest)
                raise RegistryError("BLOB_UNKNOWN", {"digest": digest}) from None
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = stop - start
        await response.prepare(request)
        if chunks is not None:
            try:
                async for chunk in chunks:
                    await response.write(chunk)
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]  # (an async generator) frees the S3 connection
        elif request.method != "HEAD":
            loop = asyncio.get_running_loop()
            # no local file (memory, S3): reads may wait on the network, so they run off the loop
            with await loop.run_in_executor(None, self.registry.storage.reader, storage_key) as f:
                await loop.run_in_executor(None, f.seek, start)
                remaining = stop - start
                while remaining > 0:
                    chunk = await loop.run_in_executor(None, f.read, min(1 << 20, remaining))
                    if not chunk:
                        break
                    await response.write(chunk)
                    remaining -= len(chunk)
        await response.write_eof()
        return response

    async def _start_upload(self, request: web.BaseRequest, name: str, user: str | None) -> web.Response:
        query = request.query
        mount = query.get("mount")
        loop = asyncio.get_running_loop()
        if mount is not None:
            digest = check_digest(mount)
            source = query.get("from")
            may_pull = None
            if source is not None:
                check_name(source)
                self._require(user, source, "pull", why=f" (to mount {digest} from it into {name!r})")
            elif self.options.access_policy is not None and not self.policy.is_admin(user):
                # mount= without from= looks registry-wide: only among the repositories the caller may pull
                def may_pull(repo: str) -> bool:
                    return self.policy.allows(user, repo, "pull")
            if await loop.run_in_executor(None, lambda: self.registry.mount(name, digest, source, may_pull=may_pull)):
                return _empty(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})
        digest_param = query.get("digest")
        if digest_param is not None:
            digest = check_digest(digest_param)
            await self._receive_blob(request, name, digest)
            return _empty(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})
        if self.registry.upload_secret_loaded:  # the common case: POST touches no disk
            state = self.registry.start_upload(name)
        else:  # the first upload reads (or creates and fsyncs) the key that signs upload ids
            state = await loop.run_in_executor(None, self.registry.start_upload, name)
        return _empty(202, _upload_headers(name, state))

    async def _receive_blob(self, request: web.BaseRequest, name: str, digest: str) -> None:
        """Stream the body into a temp file, hashing in the same pass; rename it into place if the digest matches."""
        writer = self.registry.blob_writer(digest)
        hasher = new_hasher(digest)
        try:
            await stream_body(request, writer, hasher)
        except BaseException:
            writer.cancel()
            raise
        actual = f"{digest.split(':')[0]}:{hasher.hexdigest()}"
        # shielded: once verified, the commit (fsync, rename, link) finishes even if the client leaves
        await asyncio.shield(
            asyncio.get_running_loop().run_in_executor(None, self.registry.commit_blob, name, writer, digest, actual))

    async def _upload(self, request: web.BaseRequest, name: str, upload_id: str) -> web.Response:
        method = request.method
        loop = asyncio.get_running_loop()
        lock = self._session_locks.setdefault(upload_id, asyncio.Lock())
        try:
            async with lock:
                state = await loop.run_in_executor(None, self.registry.upload, name, upload_id)
                if method == "GET":
                    return _empty(204, _upload_headers(name, state))
                if method == "DELETE":
                    await loop.run_in_executor(None, self.registry.cancel_upload, state)
                    return _empty(204, {})
                if method == "PATCH":
                    state = await self._append_chunk(request, state)
                    return _empty(202, _upload_headers(name, state))
                # PUT: the last chunk (optional) and the digest
                raw = request.query.get("digest")
                if raw is None:
                    raise RegistryError("DIGEST_INVALID", "add ?digest=<algorithm:hex> to the PUT that completes an upload")
                digest = check_digest(raw)
                has_body = (request.content_length or 0) > 0 or request.headers.get("Transfer-Encoding") == "chunked"
                if state.size == 0 and has_body and "Content-Range" not in request.headers:
                    await self._receive_blob(request, name, digest)  # monolithic: one pass, no copy
                    await loop.run_in_executor(None, self.registry.cancel_upload, state)
                else:
                    if has_body:
                        state = await self._append_chunk(request, state)
                    await loop.run_in_executor(None, self.registry.finish_upload, state, digest)
                return _empty(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._session_locks.pop(upload_id, None)

    async def _append_chunk(self, request: web.BaseRequest, state: UploadState) -> UploadState:
        expected_length = None
        content_range = request.headers.get("Content-Range")
        if content_range:
            m = re.match(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/\d+|/\*)?$", content_range.strip())
            if m is None:
                raise RegistryError(
                    "BLOB_UPLOAD_INVALID", f"Content-Range {content_range[:60]!r} must be <start>-<end>", status=416
                )
            start, end = int(m[1]), int(m[2])
            if start != state.size or end < start:
                raise RegistryError(
                    "BLOB_UPLOAD_INVALID",
                    f"chunk {start}-{end} is out of order: the upload has {state.size} bytes, so the next chunk starts at {state.size}",
                    status=416,
                    headers={**_upload_headers(state.repository, state)},
                )
            expected_length = end - start + 1
            if request.content_length is not None and request.content_length != expected_length:
                raise RegistryError(
                    "SIZE_INVALID",
                    f"Content-Range {content_range} is {expected_length} bytes but Content-Length is {request.content_length}",
                    status=416,
                )
        loop = asyncio.get_running_loop()
        hasher = await loop.run_in_executor(None, self.registry.upload_hasher, state)
        hasher = hasher.copy()  # the stored one stays valid if this chunk fails
        writer = await loop.run_in_executor(None, self.registry.chunk_writer, state)  # open + truncate
        try:
            await stream_body(request, writer, hasher)
        except BaseException:
            writer.cancel()
            raise
        if expected_length is not None and writer.size - state.size != expected_length:
            writer.cancel()
            raise RegistryError(
                "SIZE_INVALID",
                f"Content-Range announced {expected_length} bytes but {writer.size - state.size} arrived; the chunk was discarded",
            )
        # shielded: the chunk is complete, so it is recorded even if the client leaves now
        return await asyncio.shield(loop.run_in_executor(None, self.registry.commit_chunk, state, writer, hasher))


def load_policy(options: ServerOptions, auth: Authenticator | None) -> AccessPolicy:
    """The access policy of ``--access-policy``, checked against the htpasswd users; without one,
    today's switches (``--htpasswd``, ``--anonymous-pull``) as a policy."""
    if options.access_policy is None:
        return AccessPolicy.implicit(users=auth is not None, anonymous_pull=options.anonymous_pull)
    if options.anonymous_pull:
        raise UsageError("--anonymous-pull and --access-policy do not go together",
                         hint="give anonymous callers pull in the policy: anonymousPolicy: [pull]")
    policy = AccessPolicy.load(options.access_policy)
    if auth is None:
        if policy.names_any_user():
            raise UsageError(f"the access policy {options.access_policy} names users but there is no --htpasswd",
                             hint="add --htpasswd FILE with those users")
        return policy
    unknown = sorted(policy.named_users() - auth.users)
    if unknown:
        raise UsageError(
            f"the access policy {options.access_policy} names {', '.join(map(repr, unknown))}, "
            f"not in the htpasswd file {options.htpasswd}",
            hint="fix the name in the policy or add the user with `htpasswd -B FILE USER`",
        )
    return policy
