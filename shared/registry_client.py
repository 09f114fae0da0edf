"""A small synchronous OCI client for the rest of Driftless (host agent, reconciler, ``driftless up``).

    from shared import registry_client as client
    digest = client.push_component("127.0.0.1:5000/demo/hello:1.0.0", wasm_bytes)
    client.resolve("demo/hello:1.0.0", registry_url="http://127.0.0.1:5000")   # "sha256:..." or None
    m = client.fetch_manifest("demo/hello@sha256:...")                           # Manifest(digest, media_type, body)
    data = client.fetch_blob("demo/hello", m.layers[0]["digest"])                # verified against the digest
    info = client.component_info("demo/hello:1.0.0")                              # /v2/_driftless/components/...

References may be full (``host:port/repo:tag``) or short (``repo:tag``, against ``registry_url``, else
``$DRIFTLESS_REGISTRY``, else ``http://127.0.0.1:5000``; the CLI passes the one ``driftless up`` recorded). Loopback registries are spoken to over plain HTTP,
others over HTTPS. Credentials: with ``auth`` (a :class:`CredentialPolicy`, e.g.
``shared.registry_auth.RegistryAuth``) what it gives that registry, or none; else the ``credentials``
argument, else ``DRIFTLESS_REGISTRY_USER`` / ``DRIFTLESS_REGISTRY_PASSWORD``. HTTP goes through :mod:`shared.http` (httpx).

Tag resolution for the reconciler and the CLI's diff/drift (what ``shared.tags`` re-exports):

    client.resolve_tags(["demo/hello:1.0.0"], registry_url="http://127.0.0.1:5000")  # {image: digest}
    # raises UnknownImage (the tag or repository does not exist: the commit is wrong)
    #     or RegistryUnreachable (transient: retried)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

import httpx

from shared import http
from shared import reference as refs
from shared.errors import DriftlessError, NotReachable, Refused, UsageError

DEFAULT_REGISTRY = "http://127.0.0.1:5000"
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
WASM_CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
WASM_LAYER_MEDIA_TYPE = "application/wasm"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class RegistryClientError(DriftlessError):
    """The registry answered with an error; ``code`` is the OCI error code when it sent one."""

    def __init__(self, message: str, *, status: int, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str

    @classmethod
    def from_env(cls) -> Credentials | None:
        user = os.environ.get("DRIFTLESS_REGISTRY_USER")
        password = os.environ.get("DRIFTLESS_REGISTRY_PASSWORD")
        return cls(user, password or "") if user else None

    def header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


class CredentialPolicy(Protocol):
    """Which credential goes to which registry (:class:`shared.registry_auth.RegistryAuth`)."""

    def for_url(self, base_url: str) -> Credentials | None: ...


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.json.get("layers") or [])


@dataclass(frozen=True, slots=True)
class Target:
    """Where a reference lives: the registry's base URL and the parsed reference."""

    base_url: str
    ref: refs.Reference


def target(ref: str | refs.Reference, *, registry_url: str | None = None) -> Target:
    parsed = refs.parse(ref) if isinstance(ref, str) else ref
    if parsed.registry is None:
        base = (registry_url or os.environ.get("DRIFTLESS_REGISTRY") or DEFAULT_REGISTRY).rstrip("/")
        netloc = urllib.parse.urlsplit(base).netloc
        return Target(base, parsed.with_registry(netloc))
    if registry_url and urllib.parse.urlsplit(registry_url).netloc == parsed.registry:
        return Target(registry_url.rstrip("/"), parsed)
    host = parsed.registry.rsplit(":", 1)[0] if not parsed.registry.startswith("[") else parsed.registry.split("]")[0] + "]"
    scheme = "http" if host in LOOPBACK_HOSTS or host.startswith("127.") else "https"
    return Target(f"{scheme}://{parsed.registry}", parsed)


class Session:
    """HTTP to one registry, with basic auth when credentials are given.

    Each request opens its own connection, unless the session is used as a context manager
    (``with Session(...) as s:``), which keeps one connection pool until the block ends.
    """

    def __init__(self, base_url: str, *, credentials: Credentials | None = None, timeout: float = 60.0,
                 insecure: bool = False, auth: CredentialPolicy | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        # ``auth`` decides alone (None: anonymous); else the credentials given, else the environment's
        self.credentials = (auth.for_url(self.base_url) if auth is not None
                            else credentials if credentials is not None else Credentials.from_env())
        self.timeout = timeout
        self.insecure = insecure
        self._client: httpx.Client | None = None

    def _new_client(self) -> httpx.Client:
        return http.client(timeout=self.timeout, verify=not self.insecure)

    def __enter__(self) -> Session:
        if self._client is None:
            self._client = self._new_client()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def request(self, method: str, path_or_url: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200,)) -> tuple[int, Any, bytes]:
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        all_headers = dict(headers or {})
        if self.credentials:
            all_headers["Authorization"] = self.credentials.header()
        # reads follow redirects (registries send blob downloads to a CDN; httpx drops the
        # Authorization header when a redirect leaves the registry's origin); writes never do
        follow = method in ("GET", "HEAD")
        try:
            if self._client is not None:
                response = self._client.request(method, url, content=body, headers=all_headers,
                                                follow_redirects=follow)
            else:
                with self._new_client() as client:
                    response = client.request(method, url, content=body, headers=all_headers,
                                              follow_redirects=follow)
        except httpx.TransportError as exc:
            raise http.not_reachable(exc, url=self.base_url, what="registry",
                                     hint="is it running? (driftless registry serve / driftless up)") from None
        status, data = response.status_code, response.content
        if status not in ok:
            raise _error_from(method, url, status, data)
        return status, response.headers, data


def _error_from(method: str, url: str, status: int, data: bytes) -> RegistryClientError:
    code = detail = None
    try:
        first = json.loads(data)["errors"][0]
        code, detail = first.get("code"), first.get("detail") or first.get("message")
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    path = urllib.parse.urlsplit(url).path
    text = f"{method} {path}: {status}" + (f" {code}" if code else "") + (f": {detail}" if detail else "")
    hint = None
    if status == 401:
        hint = "pass --username and --password-stdin, or set DRIFTLESS_REGISTRY_USER and DRIFTLESS_REGISTRY_PASSWORD"
    return RegistryClientError(text, status=status, code=code, hint=hint)


def _session(t: Target, credentials: Credentials | None, insecure: bool = False,
             auth: CredentialPolicy | None = None) -> Session:
    return Session(t.base_url, credentials=credentials, insecure=insecure, auth=auth)


# --- reading ---------------------------------------------------------------------------------------


def resolve(ref: str | refs.Reference, *, registry_url: str | None = None,
            credentials: Credentials | None = None, auth: CredentialPolicy | None = None) -> str | None:
    """The manifest digest a tag (or digest) points to, or None when the registry has no such manifest."""
    t = target(ref, registry_url=registry_url)
    status, headers, _ = _session(t, credentials, auth=auth).request(
        "HEAD", f"/v2/{t.ref.repository}/manifests/{t.ref.identifier}", headers={"Accept": MANIFEST_ACCEPT},
        ok=(200, 404),
    )
    if status == 404:
        return None
    return headers.get("Docker-Content-Digest")


def fetch_manifest(ref: str | refs.Reference, *, registry_url: str | None = None,
                   credentials: Credentials | None = None, auth: CredentialPolicy | None = None) -> Manifest:
    t = target(ref, registry_url=registry_url)
    _, headers, body = _session(t, credentials, auth=auth).request(
        "GET", f"/v2/{t.ref.repository}/manifests/{t.ref.identifier}", headers={"Accept": MANIFEST_ACCEPT}
    )
    algorithm = (t.ref.digest or "sha256:").split(":")[0]
    digest = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
    if t.ref.digest and digest != t.ref.digest:
        raise RegistryClientError(f"manifest of {t.ref} has digest {digest}: the registry sent other content", status=200)
    return Manifest(digest=digest, media_type=headers.get("Content-Type", ""), body=body)


def fetch_blob(repository: str | refs.Reference, digest: str, *, registry_url: str | None = None,
               credentials: Credentials | None = None, auth: CredentialPolicy | None = None) -> bytes:
    """A blob's bytes, verified against ``digest``. ``repository`` may be a full or short reference."""
    refs.parse(f"x@{digest}")  # validates the digest's form
    t = target(repository, registry_url=registry_url)
    _, _, data = _session(t, credentials, auth=auth).request("GET", f"/v2/{t.ref.repository}/blobs/{digest}")
    algorithm = digest.split(":")[0]
    if f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}" != digest:
        raise RegistryClientError(f"blob {digest} from {t.base_url} does not match its digest", status=200)
    return data


def component_info(ref: str | refs.Reference, *, registry_url: str | None = None,
                   credentials: Credentials | None = None, auth: CredentialPolicy | None = None) -> dict[str, Any]:
    """``GET /v2/_driftless/components/<name>/<reference>``: kind, imports, exports, digests."""
    t = target(ref, registry_url=registry_url)
    _, _, body = _session(t, credentials, auth=auth).request(
        "GET", f"/v2/_driftless/components/{t.ref.repository}/{t.ref.identifier}"
    )
    return json.loads(body)


def list_tags(repository: str | refs.Reference, *, registry_url: str | None = None,
              credentials: Credentials | None = None, auth: CredentialPolicy | None = None) -> list[str]:
    t = target(repository, registry_url=registry_url)
    _, _, body = _session(t, credentials, auth=auth).request("GET", f"/v2/{t.ref.repository}/tags/list")
    return list(json.loads(body).get("tags") or [])


# --- writing ---------------------------------------------------------------------------------------


def push_blob(session: Session, repository: str, data: bytes) -> str:
    """Upload ``data`` (POST + PUT, skipped when the registry already has it); returns its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, _, _ = session.request("HEAD", f"/v2/{repository}/blobs/{digest}", ok=(200, 404))
    if status == 200:
        return digest
    _, headers, _ = session.request("POST", f"/v2/{repository}/blobs/uploads/", body=b"", ok=(202,))
    location = headers.get("Location") or ""
    if location.startswith("/"):
        location = session.base_url + location
    separator = "&" if "?" in location else "?"
    session.request(
        "PUT", f"{location}{separator}digest={urllib.parse.quote(digest)}", body=data,
        headers={"Content-Type": "application/octet-stream"}, ok=(201,),
    )
    return digest


def push_manifest(session: Session, repository: str, reference: str, body: bytes, media_type: str) -> str:
    _, headers, _ = session.request(
        "PUT", f"/v2/{repository}/manifests/{reference}", body=body, headers={"Content-Type": media_type}, ok=(201,)
    )
    return headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()


def wasm_artifact(wasm: bytes, *, created: str | None = None,
                  annotations: dict[str, str] | None = None) -> tuple[bytes, bytes, str]:
    """The CNCF wasm OCI artifact for ``wasm``: (config bytes, manifest bytes, layer digest).

    Raises :class:`UsageError` if ``wasm`` is not a valid component or module.
    """
    from shared.wasm import InvalidWasm, inspect_wasm

    try:
        info = inspect_wasm(wasm)
    except InvalidWasm as exc:
        raise UsageError(str(exc)) from None
    layer_digest = "sha256:" + hashlib.sha256(wasm).hexdigest()
    config = {
        "created": created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "architecture": "wasm",
        "os": info.os,
        "layerDigests": [layer_digest],
        "component": {"imports": info.imports, "exports": info.exports},
    }
    config_bytes = json.dumps(config, indent=2).encode()
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": WASM_CONFIG_MEDIA_TYPE,
        "config": {
            "mediaType": WASM_CONFIG_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
            "size": len(config_bytes),
        },
        "layers": [{"mediaType": WASM_LAYER_MEDIA_TYPE, "digest": layer_digest, "size": len(wasm)}],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return config_bytes, json.dumps(manifest, indent=2).encode(), layer_digest


def push_component(ref: str | refs.Reference, wasm: bytes, *, registry_url: str | None = None,
                   credentials: Credentials | None = None, annotations: dict[str, str] | None = None,
                   created: str | None = None, insecure: bool = False) -> str:
    """Push ``wasm`` as a CNCF wasm OCI artifact to ``ref`` (tag or digest); returns the manifest digest."""
    t = target(ref, registry_url=registry_url)
    wasm = bytes(wasm)  # wasmtime.wat2wasm returns a bytearray
    config_bytes, manifest_bytes, _ = wasm_artifact(wasm, created=created, annotations=annotations)
    with _session(t, credentials, insecure) as session:  # one connection for the five requests
        push_blob(session, t.ref.repository, wasm)
        push_blob(session, t.ref.repository, config_bytes)
        return push_manifest(session, t.ref.repository, t.ref.identifier, manifest_bytes, OCI_MANIFEST)


def registry_is_up(registry_url: str) -> bool:
    try:
        Session(registry_url, timeout=2).request("GET", "/v2/", ok=(200, 401))
        return True
    except (NotReachable, Refused, RegistryClientError):
        return False


# --- tag resolution (the reconciler's resolve step, `driftless diff` and `driftless drift`) -------------


class UnknownImage(Refused):
    """The registry answered that the repository or tag does not exist (the commit is wrong)."""

    def __init__(self, image: str, message: str) -> None:
        super().__init__(message)
        self.image = image


class RegistryUnreachable(NotReachable):
    """The registry did not answer (transient: retried)."""


def registry_host(url: str) -> str:
    """``http://127.0.0.1:5000`` -> ``127.0.0.1:5000``."""
    return urllib.parse.urlsplit(url if "://" in url else f"http://{url}").netloc


def resolve_tags(images: Iterable[str], *, registry_url: str, timeout: float = 5.0,
                 auth: CredentialPolicy | None = None) -> dict[str, str]:
    """Digest of every tagged image (as written); pinned images map to their own digest.

    Short references go to ``registry_url`` (a URL, or a bare ``host:port`` spoken to over http).
    Its credentials (``DRIFTLESS_REGISTRY_USER`` / ``..._PASSWORD``) are sent to it alone: an image
    naming another registry is asked anonymously, so a manifest cannot harvest our password; with
    ``auth``, each registry gets what ``auth`` gives it (the operator's --registry-credentials).
    """
    platform_url = registry_url if "://" in registry_url else f"http://{registry_url}"
    ours = registry_host(platform_url)
    out: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        sessions: dict[str, Session] = {}  # one connection pool per registry for the whole list
        for image in sorted(set(images)):
            ref = refs.parse(image)
            if ref.digest:
                out[image] = ref.digest
                continue
            t = target(ref, registry_url=platform_url)
            host = t.ref.registry or ours
            session = sessions.get(t.base_url)
            if session is None:
                session = sessions[t.base_url] = stack.enter_context(Session(t.base_url, timeout=timeout, auth=auth))
                if host != ours and auth is None:
                    session.credentials = None
            try:
                status, headers, _ = session.request(
                    "HEAD", f"/v2/{t.ref.repository}/manifests/{t.ref.identifier}",
                    headers={"Accept": MANIFEST_ACCEPT}, ok=tuple(range(100, 600)),
                )
            except NotReachable as exc:
                why = http.reason(exc.__context__) if exc.__context__ else str(exc)
                raise RegistryUnreachable(f"registry {host} not reachable for {image}: {why}") from exc
            if status == 404:
                raise UnknownImage(image, f"image {image}: tag {ref.identifier!r} not found in {host}")
            if status in (401, 403):
                raise UnknownImage(image, f"image {image}: registry {host} refused access ({status})")
            if status != 200:
                raise RegistryUnreachable(f"registry {host} answered {status} for {image}")
            digest = headers.get("Docker-Content-Digest")
            if not digest:
                raise RegistryUnreachable(f"registry {host} gave no Docker-Content-Digest for {image}")
            out[image] = digest
    return out
