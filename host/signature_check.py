"""The host's own signature check: before it compiles or runs a digest whose environment requires
signatures (``InstanceSpec.signature``, the operator's policy passed down by the reconciler), it
finds the digest's cosign signatures on the registry and verifies them (shared.signatures).

A digest whose signatures cannot be checked is never run: missing or wrong signatures are a
refusal (:class:`SignatureRefused`, not retried until a new desired state), a registry that does
not answer is a pull failure (retried with backoff). The check runs at every start, compiled
cache or not: a signature removed from the registry after placement stops the next start.
"""

from __future__ import annotations

import json
from typing import Any

from host.errors import HostError
from host.puller import NotFound, RegistryAccess, RegistrySession, registry_session
from shared.errors import UsageError
from shared.signatures import Requirement, verify_digest
from wire.control import InstanceSpec

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MAX_SIGNATURE_BYTES = 1 << 20


class SignatureRefused(HostError):
    """The digest is not signed as its environment requires (or the requirement is unusable)."""


class _Source:
    """shared.signatures.SignatureSource over the puller's registry session."""

    def __init__(self, session: RegistrySession) -> None:
        self.s = session

    def _get(self, path: str, accept: str, what: str) -> bytes | None:
        try:
            body, _ = self.s.get(f"{self.s.base}/{path}", accept, what, limit=MAX_SIGNATURE_BYTES)
        except NotFound:
            return None
        return body

    def referrers(self, digest: str) -> list[dict[str, Any]]:
        body = self._get(f"referrers/{digest}", INDEX, f"referrers of {digest[:19]}...")
        try:
            manifests = json.loads(body or b"{}").get("manifests")
        except (ValueError, AttributeError):
            return []
        return [m for m in manifests or [] if isinstance(m, dict)]

    def manifest(self, reference: str) -> bytes | None:
        return self._get(f"manifests/{reference}", MANIFEST, f"signature manifest {reference[:24]}")

    def blob(self, digest: str) -> bytes | None:
        return self._get(f"blobs/{digest}", "*/*", f"signature payload {digest[:19]}...")


def check_signature(spec: InstanceSpec, *, access: RegistryAccess) -> str | None:
    """None when the spec requires no signature; else who signed it (for the log). Raises
    :class:`SignatureRefused` naming the digest, the keys and the reasons, or a PullError."""
    if spec.signature is None:
        return None
    try:
        requirement = Requirement.from_wire(spec.signature.to_json())
    except (UsageError, KeyError, TypeError) as exc:
        raise SignatureRefused(f"refusing {spec.digest}: the signature requirement for environment {spec.env} "
                               f"is unusable: {exc}") from None
    with registry_session(image=spec.image, access=access) as session:
        result = verify_digest(_Source(session), spec.digest, keys=requirement.keys)
    refusal = requirement.check(result)
    if refusal is not None:
        raise SignatureRefused(f"refusing to run {spec.env}/{spec.app}/{spec.component}: {refusal}")
    return ", ".join(k.label for k in result.signed_by)
