"""Key pairs and cosign-format signatures of component manifest digests (no I/O but key files).

We follow cosign's signature specification (sigstore/cosign ``specs/SIGNATURE_SPEC.md``, the
key-based part: no certificate, no transparency log), as docs/registry.md says in full:

- the signed **payload** is a Simple Signing document (containers/image
  ``containers-signature.5.md``), serialized compactly::

      {"critical":{"identity":{"docker-reference":"HOST/REPO"},
                   "image":{"docker-manifest-digest":"sha256:..."},
                   "type":"cosign container image signature"},
       "optional":{...} or null}

  stored as a blob of media type ``application/vnd.dev.cosign.simplesigning.v1+json``;
- the **signature** covers the payload's bytes: ECDSA P-256 with SHA-256 (ASN.1 DER), or Ed25519
  (pure, over the bytes), base64-encoded in the layer annotation ``dev.cosignproject.cosign/signature``;
- it is **stored** as an OCI 1.1 referrer (``subject`` = the component manifest, ``artifactType``
  ``application/vnd.dev.cosign.artifact.sig.v1+json``) and under the tag ``sha256-<hex>.sig``
  (cosign's tag-based discovery, which every cosign verifier supports): :mod:`shared.signature_store`.

Our own layer annotations ``dev.driftless.signature/key-id`` and ``.../algorithm`` are hints for
listing (``driftless inspect``); verification never trusts them, it tries every trusted key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from shared.errors import UsageError

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_TYPE = "cosign container image signature"
KEY_ID_ANNOTATION = "dev.driftless.signature/key-id"  # a hint for listings, never trusted
ALGORITHM_ANNOTATION = "dev.driftless.signature/algorithm"
EXPIRES_CLAIM = "dev.driftless/expires"  # optional claim: RFC 3339 UTC time after which the signature is void
ALGORITHMS = ("ecdsa-p256", "ed25519")

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


# --- keys ----------------------------------------------------------------------------------------


def algorithm_of(key: PublicKey | PrivateKey) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key.curve, ec.SECP256R1):
        return "ecdsa-p256"
    raise UsageError(f"unsupported key: ECDSA on {key.curve.name}", hint="use ECDSA P-256 or Ed25519 keys")


def key_id(key: PublicKey) -> str:
    """``sha256:<hex>`` of the key's DER SubjectPublicKeyInfo: the same key, the same id, whatever the file."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def public_pem(key: PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def generate(algorithm: str) -> PrivateKey:
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise UsageError(f"unknown key algorithm {algorithm!r}", hint=f"use one of {', '.join(ALGORITHMS)}")


def write_key_pair(key: PrivateKey, *, private_path: Path) -> Path:
    """Write ``private_path`` (PKCS#8 PEM, mode 0600, created exclusively) and ``<it>.pub`` beside it
    (or ``X.pub`` for ``X.key``); returns the public key's path. Never overwrites a key."""
    public_path = private_path.with_suffix(".pub") if private_path.suffix == ".key" else Path(f"{private_path}.pub")
    for path in (private_path, public_path):
        if path.exists():
            raise UsageError(f"{path} exists; a key is never overwritten", hint="choose another name or remove it first")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_text(public_pem(key.public_key()))
    return public_path


def load_private_key(path: Path) -> PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the signing key {path}: {exc.strerror or exc}") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise UsageError(f"signing key {path} may be read by group or others", hint=f"chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not an unencrypted PEM private key: {exc}",
                         hint="make one with `driftless keys generate`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise UsageError(f"{path} holds a {type(key).__name__}", hint="use ECDSA P-256 or Ed25519 keys")
    algorithm_of(key)
    return key


def parse_public_key(pem: str | bytes, *, where: str) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{where} is not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise UsageError(f"{where} holds a {type(key).__name__}", hint="use ECDSA P-256 or Ed25519 keys")
    algorithm_of(key)
    return key


def load_public_key(path: Path) -> PublicKey:
    try:
        return parse_public_key(path.read_bytes(), where=str(path))
    except OSError as exc:
        raise UsageError(f"cannot read the public key {path}: {exc.strerror or exc}") from None


# --- payload and signature -----------------------------------------------------------------------


def payload(*, digest: str, repository: str, expires: dt.datetime | None = None,
            claims: dict[str, Any] | None = None) -> bytes:
    """The Simple Signing payload for ``digest`` (compact JSON, cosign's field order)."""
    optional: dict[str, Any] = dict(claims or {})
    if expires is not None:
        optional[EXPIRES_CLAIM] = expires.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": COSIGN_TYPE,
        },
        "optional": optional or None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def sign(key: PrivateKey, data: bytes) -> str:
    """The base64 signature over ``data`` (the payload's bytes)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.sign(data)
    else:
        raw = key.sign(data, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(raw).decode()


def verify(key: PublicKey, data: bytes, signature_b64: str) -> bool:
    try:
        raw = base64.b64decode(signature_b64, validate=True)
    except (ValueError, TypeError):
        return False
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(raw, data)
        else:
            key.verify(raw, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class PayloadClaims:
    digest: str | None  # critical.image.docker-manifest-digest
    kind: str | None  # critical.type
    expires: dt.datetime | None
    problem: str | None = None  # why the payload is not a usable Simple Signing document


def read_payload(data: bytes) -> PayloadClaims:
    """The claims of a Simple Signing payload; field names are matched without case, as cosign's
    verifier (Go's encoding/json) does: the spec's own example writes ``Docker-manifest-digest``."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return PayloadClaims(None, None, None, "the payload is not JSON")

    def field(obj: Any, name: str) -> Any:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(k, str) and k.lower() == name:
                    return v
        return None

    critical = field(doc, "critical")
    digest = field(field(critical, "image"), "docker-manifest-digest")
    kind = field(critical, "type")
    if not isinstance(digest, str) or not isinstance(kind, str):
        return PayloadClaims(None, None, None, "the payload has no critical.image.docker-manifest-digest or type")
    expires = None
    raw = field(field(doc, "optional"), EXPIRES_CLAIM)
    if raw is not None:
        try:
            expires = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=dt.UTC)
        except ValueError:
            return PayloadClaims(digest, kind, None, f"the payload's {EXPIRES_CLAIM} {raw!r} is not an RFC 3339 time")
    return PayloadClaims(digest, kind, expires)


# --- the OCI objects -----------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
IMAGE_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"


def blob_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def signature_layer(*, payload_bytes: bytes, signature: str, key: PublicKey) -> dict[str, Any]:
    return {
        "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
        "digest": blob_digest(payload_bytes),
        "size": len(payload_bytes),
        "annotations": {
            SIGNATURE_ANNOTATION: signature,
            KEY_ID_ANNOTATION: key_id(key),
            ALGORITHM_ANNOTATION: algorithm_of(key),
        },
    }


def referrer_manifest(*, layer: dict[str, Any], subject: dict[str, Any]) -> bytes:
    """OCI 1.1 mode: one signature, its subject the component manifest (the empty config, as the
    image spec's artifact guidance says; the artifact type names what it is)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIGNATURE_ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_CONFIG_MEDIA_TYPE, "digest": blob_digest(EMPTY_CONFIG), "size": len(EMPTY_CONFIG)},
        "layers": [layer],
        "subject": subject,
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def tag_config(layers: list[dict[str, Any]]) -> bytes:
    """The image config of a ``sha256-<hex>.sig`` manifest (as cosign writes it: its layers as rootfs)."""
    config = {"architecture": "", "os": "", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}}
    return json.dumps(config, separators=(",", ":")).encode()


def tag_manifest(*, layers: list[dict[str, Any]], config: bytes) -> bytes:
    """Tag-based discovery: every signature of the digest as a layer of one manifest."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": IMAGE_CONFIG_MEDIA_TYPE, "digest": blob_digest(config), "size": len(config)},
        "layers": layers,
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def signature_tag(digest: str) -> str:
    """``sha256:abc...`` -> ``sha256-abc....sig`` (the spec's tag-based discovery)."""
    return digest.replace(":", "-", 1) + ".sig"
