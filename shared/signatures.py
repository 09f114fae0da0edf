"""Find a digest's cosign signatures and check them against trusted public keys; signature policy.

    source = RegistrySignatures(session, repository="demo/hello")       # shared.signature_store
    result = verify_digest(source, digest, keys=[trusted("ci", pem)])
    result.signed_by                  # the trusted keys with a valid signature over this digest
    result.outcomes                   # per key: signed, or why not (missing, expired, another digest...)
    requirement.check(result)         # None, or the refusal naming the digest, the keys and the reasons

A signature counts for a key when, following cosign's specification (see :mod:`shared.signing`):
the signature verifies over the payload's bytes with that key, the payload is a ``cosign container
image signature`` whose ``docker-manifest-digest`` is the digest asked about (a signature copied
to another digest fails here), and it has not expired.

"Expired" with key-based signing (no certificates): the payload's optional claim
``dev.driftless/expires`` (set with ``driftless sign --expires-in``) is past, or the trusted key's
``notAfter`` (set by the operator in the policy) is past: from then on the key vouches for nothing,
as a certificate past its validity would. Times are the verifier's clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shared import signing
from shared.errors import UsageError

REQUIRE = ("all", "any")


class SignatureSource(Protocol):
    """Read access to the repository holding the digest (a registry over HTTP, in practice)."""

    def referrers(self, digest: str) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose subject is ``digest`` (OCI 1.1 referrers API)."""
        ...

    def manifest(self, reference: str) -> bytes | None:
        """A manifest's bytes by tag or digest; None when the registry has none."""
        ...

    def blob(self, digest: str) -> bytes | None:
        """A blob's bytes; None when the registry has none."""
        ...


@dataclass(frozen=True, slots=True)
class TrustedKey:
    name: str  # what people call it: the key file's stem ("ci", "release") or the policy's name
    key: signing.PublicKey
    key_id: str
    algorithm: str
    not_after: dt.datetime | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.algorithm} {self.key_id[:19]})"


def trusted(name: str, pem: str | bytes, *, not_after: dt.datetime | str | None = None) -> TrustedKey:
    key = signing.parse_public_key(pem, where=f"public key {name!r}")
    if isinstance(not_after, str):
        not_after = parse_time(not_after, where=f"notAfter of key {name!r}")
    return TrustedKey(name=name, key=key, key_id=signing.key_id(key), algorithm=signing.algorithm_of(key),
                      not_after=not_after)


def parse_time(text: str, *, where: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{where} {text!r} is not a date or time", hint="e.g. 2027-01-31 or 2027-01-31T12:00:00Z") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class FoundSignature:
    payload: bytes
    signature: str
    where: str  # "referrer sha256:..." or "tag sha256-....sig"
    key_id_hint: str | None = None  # our own annotation: for listings only, never trusted
    algorithm_hint: str | None = None


def _checked(data: bytes | None, digest: str) -> bytes | None:
    if data is None:
        return None
    algorithm = digest.split(":", 1)[0]
    if algorithm not in ("sha256", "sha512") or f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}" != digest:
        return None  # the registry served other bytes than the digest names: not evidence of anything
    return data


def _layers_of(manifest: bytes | None) -> list[dict[str, Any]]:
    try:
        doc = json.loads(manifest or b"")
    except (ValueError, UnicodeDecodeError):
        return []
    layers = doc.get("layers") if isinstance(doc, dict) else None
    return [x for x in layers or [] if isinstance(x, dict)]


def discover(source: SignatureSource, digest: str) -> list[FoundSignature]:
    """Every cosign signature stored for ``digest``: its referrers of the signature artifact type,
    then the ``sha256-<hex>.sig`` tag; one entry per distinct (payload, signature)."""
    manifests: list[tuple[str, bytes | None]] = []
    for desc in source.referrers(digest):
        if desc.get("artifactType") == signing.SIGNATURE_ARTIFACT_TYPE and isinstance(desc.get("digest"), str):
            manifests.append((f"referrer {desc['digest']}", _checked(source.manifest(desc["digest"]), desc["digest"])))
    tag = signing.signature_tag(digest)
    manifests.append((f"tag {tag}", source.manifest(tag)))
    found: dict[tuple[str, str], FoundSignature] = {}
    for where, body in manifests:
        for layer in _layers_of(body):
            annotations = layer.get("annotations") or {}
            signature = annotations.get(signing.SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
            layer_digest = layer.get("digest")
            if layer.get("mediaType") != signing.SIMPLE_SIGNING_MEDIA_TYPE or not isinstance(signature, str) \
                    or not isinstance(layer_digest, str):
                continue
            if (layer_digest, signature) in found:
                continue
            data = _checked(source.blob(layer_digest), layer_digest)
            if data is None:
                continue
            found[(layer_digest, signature)] = FoundSignature(
                payload=data, signature=signature, where=where,
                key_id_hint=annotations.get(signing.KEY_ID_ANNOTATION),
                algorithm_hint=annotations.get(signing.ALGORITHM_ANNOTATION))
    return list(found.values())


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    key: TrustedKey
    signed: bool
    reason: str  # "signed", or why not: "no signature by this key", "expired ...", "signed for another digest ..."


@dataclass(frozen=True, slots=True)
class Verification:
    digest: str
    found: int  # signatures stored for the digest
    unverified: int  # of them, those no trusted key verifies (an unknown key, or altered after signing)
    outcomes: tuple[KeyOutcome, ...]

    @property
    def signed_by(self) -> tuple[TrustedKey, ...]:
        return tuple(o.key for o in self.outcomes if o.signed)

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "found": self.found, "unverified": self.unverified,
                "signedBy": [k.name for k in self.signed_by],
                "keys": [{"name": o.key.name, "keyId": o.key.key_id, "algorithm": o.key.algorithm,
                          "signed": o.signed, "reason": o.reason} for o in self.outcomes]}


def _judge(sig: FoundSignature, key: TrustedKey, digest: str, now: dt.datetime) -> tuple[int, str]:
    """(rank, reason) of one signature for one key that verified it: 3 signed, 2 expired, 1 not for this digest."""
    claims = signing.read_payload(sig.payload)
    if claims.problem:
        return 1, f"its signature ({sig.where}) is over a payload that is not usable: {claims.problem}"
    if claims.kind != signing.COSIGN_TYPE:
        return 1, f"its signature ({sig.where}) is of type {claims.kind!r}, not {signing.COSIGN_TYPE!r}"
    if claims.digest != digest:
        return 1, f"its signature ({sig.where}) was made for another digest, {claims.digest}: copied, not signed here"
    if key.not_after is not None and now > key.not_after:
        return 2, f"expired: the key is trusted only until {key.not_after.isoformat()} (policy notAfter)"
    if claims.expires is not None and now > claims.expires:
        return 2, f"expired: its signature ({sig.where}) was valid until {claims.expires.isoformat()}"
    return 3, "signed"


def verify_found(found: Sequence[FoundSignature], digest: str, keys: Iterable[TrustedKey], *,
                 now: dt.datetime | None = None) -> Verification:
    now = now or dt.datetime.now(dt.UTC)
    keys = list(keys)
    verified_any: set[int] = set()
    outcomes = []
    for key in keys:
        best = (0, "")
        for i, sig in enumerate(found):
            if not signing.verify(key.key, sig.payload, sig.signature):
                continue
            verified_any.add(i)
            best = max(best, _judge(sig, key, digest, now), key=lambda r: r[0])
        if best[0] == 3:
            outcomes.append(KeyOutcome(key, True, "signed"))
        elif best[0]:
            outcomes.append(KeyOutcome(key, False, best[1]))
        elif not found:
            outcomes.append(KeyOutcome(key, False, "missing: the digest has no signature at all"))
        else:
            outcomes.append(KeyOutcome(key, False, f"missing: none of its {len(found)} signature(s) verifies with "
                                                   "this key (made with another key, or the payload was altered)"))
    return Verification(digest=digest, found=len(found), unverified=len(found) - len(verified_any),
                        outcomes=tuple(outcomes))


def verify_digest(source: SignatureSource, digest: str, *, keys: Iterable[TrustedKey],
                  now: dt.datetime | None = None) -> Verification:
    return verify_found(discover(source, digest), digest, keys, now=now)


# --- policy --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requirement:
    """What one environment requires of a digest: a signature by ``all`` or by ``any`` of ``keys``."""

    keys: tuple[TrustedKey, ...]
    require: str = "all"

    def check(self, result: Verification) -> str | None:
        """None when satisfied; else the refusal, naming the digest, the keys wanted and each reason."""
        wanted = {k.key_id for k in self.keys}
        signed = {k.key_id for k in result.signed_by} & wanted
        if (signed == wanted) if self.require == "all" else bool(signed):
            return None
        reasons = "; ".join(f"{o.key.label}: {o.reason}" for o in result.outcomes
                            if o.key.key_id in wanted and not o.signed)
        names = ", ".join(k.name for k in self.keys)
        return (f"digest {result.digest} is not signed as required ({self.require} of {names}): {reasons}")

    def to_wire(self) -> dict[str, Any]:
        return {"require": self.require,
                "keys": [{"name": k.name, "publicKey": signing.public_pem(k.key),
                          **({"notAfter": k.not_after.isoformat()} if k.not_after else {})} for k in self.keys]}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Requirement:
        keys = tuple(trusted(str(k.get("name") or "key"), k["publicKey"], not_after=k.get("notAfter"))
                     for k in d.get("keys") or ())
        return cls(keys=keys, require=str(d.get("require") or "all"))


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    """Per environment, the signatures a component needs; environments not named need none."""

    environments: Mapping[str, Requirement]

    def for_env(self, env: str) -> Requirement | None:
        return self.environments.get(env)


def load_policy(path: Path) -> SignaturePolicy:
    """Read the operator's policy (YAML or JSON)::

        environments:
          prod: {keys: [ci.pub, release.pub], require: all}
          dev:  {keys: [ci.pub], require: any}
          # a key may also be {file: old.pub, name: old-ci, notAfter: 2027-01-31}

    Key files are relative to the policy file. A bad policy is a usage error naming what to fix."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"--signature-policy {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--signature-policy {path} is not valid YAML: {exc}") from None
    envs = doc.get("environments") if isinstance(doc, dict) else None
    if not isinstance(envs, dict):
        raise UsageError(f"--signature-policy {path} needs an 'environments' mapping",
                         hint="environments: {prod: {keys: [ci.pub, release.pub], require: all}}")
    out: dict[str, Requirement] = {}
    for env, spec in envs.items():
        where = f"{path}: environments.{env}"
        if not isinstance(spec, dict) or not isinstance(spec.get("keys"), list) or not spec["keys"]:
            raise UsageError(f"{where} needs a non-empty 'keys' list of public key files")
        require = spec.get("require", "all")
        if require not in REQUIRE:
            raise UsageError(f"{where}.require is {require!r}", hint="use all (every key) or any (one of them)")
        keys = []
        for i, entry in enumerate(spec["keys"]):
            item = {"file": entry} if isinstance(entry, str) else entry
            if not isinstance(item, dict) or not isinstance(item.get("file"), str):
                raise UsageError(f"{where}.keys[{i}] must be a key file or {{file: ..., name: ..., notAfter: ...}}")
            file = (path.parent / item["file"]).resolve()
            key = signing.load_public_key(file)
            not_after = item.get("notAfter")
            keys.append(TrustedKey(
                name=str(item.get("name") or Path(item["file"]).stem), key=key, key_id=signing.key_id(key),
                algorithm=signing.algorithm_of(key),
                not_after=parse_time(str(not_after), where=f"{where}.keys[{i}].notAfter") if not_after else None))
        out[str(env)] = Requirement(keys=tuple(keys), require=require)
    return SignaturePolicy(environments=out)
