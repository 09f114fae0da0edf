"""Manifests as the registry reads them: the media types it stores, and :func:`parse_manifest`, the
structural check of an image manifest or index (its descriptors, subject, artifactType and
annotations) before the store looks at what they point to."""

from __future__ import annotations

import json
from typing import Any

from registry.errors import RegistryError
from shared.reference import DIGEST_RE

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_MEDIA_TYPES = (OCI_INDEX, DOCKER_LIST)
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
GENERIC_CONTENT_TYPES = frozenset({"application/json", "application/octet-stream", "text/plain"})


def parse_manifest(body: bytes, content_type: str | None) -> dict[str, Any]:
    """Parse and check a manifest's structure; returns it with ``mediaType`` filled in."""
    try:
        manifest = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError("MANIFEST_INVALID", f"manifest is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise RegistryError("MANIFEST_INVALID", "manifest must be a JSON object")
    if manifest.get("schemaVersion") != 2:
        raise RegistryError("MANIFEST_INVALID", f"schemaVersion must be 2, not {manifest.get('schemaVersion')!r}")
    declared = manifest.get("mediaType")
    content_type = (content_type or "").split(";")[0].strip() or None
    if content_type in GENERIC_CONTENT_TYPES:  # says nothing about the manifest kind (curl, simple scripts)
        content_type = None
    if declared is not None and content_type and declared != content_type:
        raise RegistryError(
            "MANIFEST_INVALID", f"Content-Type {content_type} does not match the manifest's mediaType {declared}"
        )
    media_type = declared or content_type or (OCI_INDEX if "manifests" in manifest else OCI_MANIFEST)
    if media_type not in MANIFEST_MEDIA_TYPES:
        raise RegistryError(
            "MANIFEST_INVALID", f"unsupported manifest media type {media_type!r}; supported: {', '.join(MANIFEST_MEDIA_TYPES)}"
        )
    manifest["mediaType"] = media_type
    if media_type in INDEX_MEDIA_TYPES:
        children = manifest.get("manifests")
        if not isinstance(children, list):
            raise RegistryError("MANIFEST_INVALID", "an index needs a 'manifests' list")
        for i, child in enumerate(children):
            _check_descriptor(child, f"manifests[{i}]")
    else:
        _check_descriptor(manifest.get("config"), "config")
        layers = manifest.get("layers")
        if not isinstance(layers, list):
            raise RegistryError("MANIFEST_INVALID", "an image manifest needs a 'layers' list (it may be empty)")
        for i, layer in enumerate(layers):
            _check_descriptor(layer, f"layers[{i}]")
    if manifest.get("subject") is not None:
        _check_descriptor(manifest["subject"], "subject")
    artifact_type = manifest.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise RegistryError("MANIFEST_INVALID", "artifactType must be a string")
    annotations = manifest.get("annotations")
    if annotations is not None and not (
        isinstance(annotations, dict) and all(isinstance(v, str) for v in annotations.values())
    ):
        raise RegistryError("MANIFEST_INVALID", "annotations must map strings to strings")
    return manifest


def _check_descriptor(desc: Any, where: str) -> None:
    if not isinstance(desc, dict):
        raise RegistryError("MANIFEST_INVALID", f"{where} must be a descriptor object (mediaType, digest, size)")
    if not isinstance(desc.get("mediaType"), str) or not desc["mediaType"]:
        raise RegistryError("MANIFEST_INVALID", f"{where}.mediaType must be a non-empty string")
    digest = desc.get("digest")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise RegistryError("MANIFEST_INVALID", f"{where}.digest {digest!r} is not sha256:<64 hex> or sha512:<128 hex>")
    size = desc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError("MANIFEST_INVALID", f"{where}.size must be a non-negative integer, not {size!r}")
