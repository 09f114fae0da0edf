"""Pull a component from an OCI registry by digest, verifying every byte (distribution API, httpx).

Plain http for registries on loopback (127.0.0.0/8, localhost, ::1) or named in ``insecure``;
https otherwise (``ca_file``: the CA bundle to trust instead of the system's). Basic-auth
credentials: ``username``/``password`` to the platform ``registry`` alone (same host:port, same
scheme), an entry of ``credentials`` (--registry-credentials) to its registry, none to any other
(a manifest naming another registry cannot harvest them); a ``WWW-Authenticate: Bearer``
challenge is answered with a token from its realm (anonymous, or with that registry's credential),
as docker/oras do. Redirects (blob downloads sent to a CDN) are followed, and ``Authorization`` is
never sent along to another host.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field

import httpx

from host.errors import DigestMismatch, PullError, RegistryUnreachable
from shared import http
from shared.reference import ReferenceError, parse
from shared.registry_auth import RegistryAuth
from shared.registry_client import Credentials

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
WASM_LAYER_TYPES = (
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
)
MAX_MANIFEST_BYTES = 4 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryAccess:
    username: str | None = None  # the platform registry's credential, sent to it alone
    password: str | None = None
    insecure: Collection[str] = field(default_factory=tuple)  # registry hosts reached over plain http
    ca_file: str | None = None
    timeout: float = 30.0
    registry: str | None = None  # the platform registry: URL, or host[:port] (its scheme as the puller's)
    credentials: Mapping[str, Credentials] = field(default_factory=dict)  # host[:port] -> another registry's

    def scheme(self, registry: str) -> str:
        return "http" if is_loopback(registry) or registry in self.insecure else "https"

    def auth(self) -> RegistryAuth:
        platform = self.registry
        if platform is not None and "://" not in platform:
            platform = f"{self.scheme(platform)}://{platform}"
        return RegistryAuth(platform=platform, configured=self.credentials,
                            platform_credentials=Credentials(self.username, self.password or "")
                            if self.username and platform else None)


def is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 or registry.startswith("[") else registry
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _verify(data: bytes, digest: str, *, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    if algorithm not in ("sha256", "sha512"):
        raise DigestMismatch(f"{what}: unsupported digest algorithm {algorithm!r}")
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected:
        raise DigestMismatch(
            f"{what}: content has digest {algorithm}:{actual[:16]}..., expected {digest[:23]}...; "
            "the registry served different bytes than the pinned digest"
        )


class NotFound(PullError):
    """The registry answered 404 (what a missing signature looks like, too)."""


@dataclass(frozen=True, slots=True)
class RegistrySession:
    """One registry conversation: ``get(url, accept, what, limit=...)`` with auth handled."""

    registry: str
    repository: str
    base: str  # <scheme>://<registry>/v2/<repository>
    get: Callable[..., tuple[bytes, str]]


@contextlib.contextmanager
def registry_session(*, image: str, access: RegistryAccess) -> Iterator[RegistrySession]:
    """Talk to the registry of ``image`` (a fully qualified reference) as the puller does."""
    try:
        ref = parse(image)
    except ReferenceError as exc:
        raise PullError(str(exc)) from None
    if ref.registry is None:
        raise PullError(f"image {image!r} names no registry; the host pulls only fully qualified references")
    scheme = access.scheme(ref.registry)
    registry_url = f"{scheme}://{ref.registry}"
    base = f"{registry_url}/v2/{ref.repository}"

    credentials = access.auth().for_url(registry_url)
    basic = (
        "Basic " + base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        if credentials
        else None
    )
    authorization: list[str | None] = [basic]  # becomes "Bearer ..." after a token challenge

    # Redirects are followed (registries send blob downloads to a CDN): httpx drops the
    # Authorization header whenever a redirect leaves the registry's origin, so neither the
    # credentials nor a token ever go to another host.
    client = http.client(timeout=access.timeout, ca_file=access.ca_file if scheme == "https" else None,
                         follow_redirects=True)

    def open_url(url: str, headers: dict[str, str], *, limit: int | None = None) -> tuple[bytes, str]:
        """GET ``url`` into memory; stops reading once more than ``limit`` bytes came (the caller
        says what is too large), so a huge answer to a manifest request is not read whole."""
        with client.stream("GET", url, headers=headers) as resp:
            resp.raise_for_status()
            data = bytearray()
            for chunk in resp.iter_bytes():
                data += chunk
                if limit is not None and len(data) > limit:
                    break
            return bytes(data), resp.headers.get("Content-Type", "")

    def bearer_token(challenge: str) -> str | None:
        """Token auth (distribution, ghcr.io, zot): ask the realm for a pull token."""
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            return None
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        headers = {"Authorization": basic} if basic else {}
        body, _ = open_url(f"{realm}?{httpx.QueryParams(query)}" if query else realm, headers)
        try:
            answer = json.loads(body)
        except ValueError:
            raise PullError(f"token service {realm} of registry {ref.registry} did not answer with JSON") from None
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else None
        return f"Bearer {token}" if token else None

    def get(url: str, accept: str, what: str, *, limit: int | None = None) -> tuple[bytes, str]:
        headers = {"Accept": accept}
        if authorization[0]:
            headers["Authorization"] = authorization[0]
        try:
            try:
                return open_url(url, headers, limit=limit)
            except httpx.HTTPStatusError as exc:
                challenge = exc.response.headers.get("WWW-Authenticate", "")
                if exc.response.status_code != 401 or not challenge.lower().startswith("bearer") or (
                    "Bearer" in headers.get("Authorization", "")
                ):
                    raise
                token = bearer_token(challenge)
                if token is None:
                    raise
                authorization[0] = headers["Authorization"] = token
                return open_url(url, headers, limit=limit)
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise PullError(
                    f"registry {ref.registry} refused {what} ({status}); "
                    + ("its credential was refused" if credentials else
                       "no credential is configured for it: the platform registry's comes from --registry, "
                       "--registry-user and DRIFTLESS_REGISTRY_PASSWORD on the host, another registry's from "
                       "--registry-credentials FILE")
                ) from None
            if status == 404:
                raise NotFound(f"{what} not found in registry {ref.registry} (404)") from None
            raise PullError(f"registry {ref.registry} answered {status} for {what}") from None
        except httpx.TransportError as exc:
            raise http.not_reachable(exc, url=registry_url, what="registry", verb="is not reachable",
                                     error=RegistryUnreachable) from None

    with client:
        yield RegistrySession(registry=ref.registry, repository=ref.repository, base=base, get=get)


def pull_component(
    *, image: str, digest: str, access: RegistryAccess, progress: Callable[[str], None] = lambda _m: None
) -> bytes:
    """The Wasm bytes of the component ``image`` pinned at manifest ``digest`` (both verified)."""
    try:
        pinned = parse(image).digest
    except ReferenceError as exc:
        raise PullError(str(exc)) from None
    if pinned and pinned != digest:
        raise DigestMismatch(f"image {image} is pinned to {pinned} but the instance digest is {digest}")
    with registry_session(image=image, access=access) as s:
        return _fetch_component(s.get, image=image, digest=digest, registry=s.registry,
                                repository=s.repository, base=s.base, progress=progress)


def fetch_manifest(get: Callable[..., tuple[bytes, str]], *, image: str, digest: str, repository: str,
                   base: str) -> tuple[bytes, str]:
    """The manifest ``digest`` of ``image`` and its content type, bounded in size and verified."""
    body, content_type = get(f"{base}/manifests/{digest}", ", ".join(MANIFEST_TYPES + INDEX_TYPES), "manifest",
                             limit=MAX_MANIFEST_BYTES)
    if len(body) > MAX_MANIFEST_BYTES:
        raise PullError(f"manifest of {image} is larger than {MAX_MANIFEST_BYTES} bytes")
    _verify(body, digest, what=f"manifest of {repository}")
    return body, content_type


def _fetch_component(get: Callable[..., tuple[bytes, str]], *, image: str, digest: str, registry: str,
                     repository: str, base: str, progress: Callable[[str], None]) -> bytes:
    """The manifest (verified, a single component manifest), then its wasm layer (verified)."""
    progress(f"pulling {registry}/{repository}@{digest[:19]}...")
    body, content_type = fetch_manifest(get, image=image, digest=digest, repository=repository, base=base)
    try:
        manifest = json.loads(body)
    except ValueError:
        raise PullError(f"manifest of {image} is not JSON") from None
    media_type = manifest.get("mediaType") or content_type.split(";")[0]
    if media_type in INDEX_TYPES or "manifests" in manifest:
        raise PullError(f"{image} is an image index, not a component artifact; pin the component manifest digest")
    layers = [x for x in manifest.get("layers") or [] if isinstance(x, dict)]
    wasm = [x for x in layers if x.get("mediaType") in WASM_LAYER_TYPES]
    if not wasm:
        found = ", ".join(str(x.get("mediaType")) for x in layers) or "no layers"
        raise PullError(
            f"{image} has no wasm layer (found: {found}); push it as a wasm OCI artifact (`driftless push`)"
        )
    layer = wasm[0]
    layer_digest = str(layer.get("digest", ""))
    progress(f"pulling layer {layer_digest[:19]}... ({layer.get('size', '?')} bytes)")
    blob, _ = get(f"{base}/blobs/{layer_digest}", "*/*", f"layer {layer_digest[:19]}")
    _verify(blob, layer_digest, what=f"layer of {repository}")
    return blob
