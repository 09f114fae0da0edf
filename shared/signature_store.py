"""Signatures on a registry over HTTP: write them (``driftless sign``, ``push --sign``) and read them
(:class:`RegistrySignatures`, the :class:`shared.signatures.SignatureSource` of the reconciler and CLI).

Each signature is written twice, so that verifiers of either kind find it:

1. as an **OCI 1.1 referrer**: a manifest of artifact type
   ``application/vnd.dev.cosign.artifact.sig.v1+json`` whose ``subject`` is the component manifest,
   listed by ``GET /v2/<name>/referrers/<digest>`` (cosign's OCI 1.1 mode, Notation, ORAS, Ratify;
   and the registry's GC keeps it exactly as long as its subject);
2. under the tag ``sha256-<hex>.sig`` (cosign's tag-based discovery, the one every cosign supports),
   all signatures of the digest as layers of one manifest: a signature is appended, as cosign does
   (two signers at the same instant may race; the referrer copy of each stays).
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from shared import reference as refs
from shared import registry_client as rc
from shared import signing


class RegistrySignatures:
    """:class:`shared.signatures.SignatureSource` over one repository of a registry."""

    def __init__(self, session: rc.Session, repository: str) -> None:
        self.session = session
        self.repository = repository

    def referrers(self, digest: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"artifactType": signing.SIGNATURE_ARTIFACT_TYPE})
        status, _, body = self.session.request(
            "GET", f"/v2/{self.repository}/referrers/{digest}?{query}",
            headers={"Accept": "application/vnd.oci.image.index.v1+json"}, ok=(200, 404))
        if status == 404:  # a registry without the referrers API: the tag fallback still finds them
            return []
        try:
            manifests = json.loads(body).get("manifests")
        except (ValueError, AttributeError):
            return []
        return [m for m in manifests or [] if isinstance(m, dict)]

    def manifest(self, reference: str) -> bytes | None:
        status, _, body = self.session.request(
            "GET", f"/v2/{self.repository}/manifests/{reference}", headers={"Accept": rc.MANIFEST_ACCEPT}, ok=(200, 404))
        return body if status == 200 else None

    def blob(self, digest: str) -> bytes | None:
        status, _, body = self.session.request("GET", f"/v2/{self.repository}/blobs/{digest}", ok=(200, 404))
        return body if status == 200 else None


def source_for(image: str, *, registry_url: str | None = None, credentials: rc.Credentials | None = None,
               timeout: float = 10.0, insecure: bool = False) -> tuple[RegistrySignatures, str | None]:
    """The signature source of ``image``'s repository and the digest it pins (None for a tag)."""
    t = rc.target(image, registry_url=registry_url)
    session = rc.Session(t.base_url, credentials=credentials, timeout=timeout, insecure=insecure)
    return RegistrySignatures(session, t.ref.repository), t.ref.digest


@dataclass(frozen=True, slots=True)
class Signed:
    digest: str  # the component manifest signed
    referrer: str  # the referrer manifest's digest
    tag: str  # the sha256-<hex>.sig tag
    key_id: str
    algorithm: str


def sign_image(ref: str | refs.Reference, key: signing.PrivateKey, *, registry_url: str | None = None,
               credentials: rc.Credentials | None = None, insecure: bool = False,
               expires: dt.datetime | None = None) -> Signed:
    """Sign the manifest ``ref`` names (a tag is resolved to its digest first: the digest is what is
    signed) and store the signature both ways (module docstring)."""
    t = rc.target(ref, registry_url=registry_url)
    repo = t.ref.repository
    with rc.Session(t.base_url, credentials=credentials, insecure=insecure) as session:
        _, headers, body = session.request("GET", f"/v2/{repo}/manifests/{t.ref.identifier}",
                                           headers={"Accept": rc.MANIFEST_ACCEPT})
        digest = signing.blob_digest(body)
        if t.ref.digest and t.ref.digest != digest:
            raise rc.RegistryClientError(f"manifest of {t.ref} has digest {digest}: the registry sent other content",
                                         status=200)
        media_type = (headers.get("Content-Type") or signing.OCI_MANIFEST).split(";")[0]
        payload = signing.payload(digest=digest, repository=f"{t.ref.registry}/{repo}", expires=expires)
        public = key.public_key()
        layer = signing.signature_layer(payload_bytes=payload, signature=signing.sign(key, payload), key=public)
        rc.push_blob(session, repo, payload)
        rc.push_blob(session, repo, signing.EMPTY_CONFIG)
        subject = {"mediaType": media_type, "digest": digest, "size": len(body)}
        manifest = signing.referrer_manifest(layer=layer, subject=subject)
        referrer = rc.push_manifest(session, repo, signing.blob_digest(manifest), manifest, signing.OCI_MANIFEST)
        # the tag fallback: this signature appended to the ones already there (same payload and
        # signature: nothing new to add)
        tag = signing.signature_tag(digest)
        status, _, existing = session.request("GET", f"/v2/{repo}/manifests/{tag}",
                                              headers={"Accept": rc.MANIFEST_ACCEPT}, ok=(200, 404))
        layers: list[dict[str, Any]] = []
        if status == 200:
            try:
                layers = [x for x in json.loads(existing).get("layers") or [] if isinstance(x, dict)]
            except (ValueError, AttributeError):
                layers = []
        sig = layer["annotations"][signing.SIGNATURE_ANNOTATION]
        if not any(x.get("digest") == layer["digest"] and
                   (x.get("annotations") or {}).get(signing.SIGNATURE_ANNOTATION) == sig for x in layers):
            layers.append(layer)
        config = signing.tag_config(layers)
        rc.push_blob(session, repo, config)
        rc.push_manifest(session, repo, tag, signing.tag_manifest(layers=layers, config=config), signing.OCI_MANIFEST)
    return Signed(digest=digest, referrer=referrer, tag=tag, key_id=signing.key_id(public),
                  algorithm=signing.algorithm_of(public))
