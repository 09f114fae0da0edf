"""The operator's signature policy on the reconciler's side (``driftless reconcile --signature-policy``).

Three jobs, each used by one step of the pipeline:

- :meth:`SigningPolicy.check` (resolve): every digest of a revision verified against its
  environment's requirement before the revision is applied; an unsigned or wrongly signed digest is
  an error at the file:line of its image, naming the digest, the keys wanted and why each failed;
- :attr:`SigningPolicy.requirements` and :meth:`SigningPolicy.decorate` (plan): each instance of such
  an environment carries the requirement down to its host (``InstanceSpec.signature``), which
  verifies again before it compiles or runs; the planner gives it to the instances as it builds
  them (``plan(signatures=...)``), decorate checks them and takes them off the hosts that cannot
  verify (no ``signatures/v1`` feature): unplaced;
- :attr:`SigningPolicy.signed_by` (status, dashboard, promotion): which of the policy's keys
  signed each digest, as found at the last check (kept in the state store across restarts).

The policy file is read once, at start (a changed policy is a restart: it changes what may run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.types import ManifestTree
from reconciler.controller.revisions import error_json
from reconciler.planner.placement import Plan, Unplaced
from shared import registry_client, signing
from shared.reference import parse
from shared.signature_store import source_for
from shared.signatures import (
    Requirement,
    SignaturePolicy,
    TrustedKey,
    Verification,
    load_policy,
    verify_digest,
)
from wire.control import FEATURE_SIGNATURES, InstanceSpec, SignatureRequirement, TrustedKeySpec

STORE_KEY = "signedBy"


def wire_requirement(requirement: Requirement) -> SignatureRequirement:
    return SignatureRequirement(require=requirement.require, keys=tuple(
        TrustedKeySpec(name=k.name, public_key=signing.public_pem(k.key),
                       not_after=k.not_after.isoformat() if k.not_after else None) for k in requirement.keys))


class SigningPolicy:
    def __init__(self, path: Path | None, *, registry_url: str, timeout: float, store: Any = None) -> None:
        self.policy: SignaturePolicy | None = load_policy(path) if path is not None else None
        self.registry_url = registry_url
        self.timeout = timeout
        self._store = store
        saved = store.get(STORE_KEY) if store is not None else None
        self.signed_by: dict[str, list[str]] = dict(saved) if isinstance(saved, dict) else {}
        self._wire = {env: wire_requirement(req) for env, req in (self.policy.environments.items()
                                                                  if self.policy else ())}

    @property
    def keys(self) -> tuple[TrustedKey, ...]:
        """Every key the policy names, once (by key id)."""
        seen: dict[str, TrustedKey] = {}
        for req in (self.policy.environments.values() if self.policy else ()):
            for k in req.keys:
                seen.setdefault(k.key_id, k)
        return tuple(seen.values())

    @property
    def requirements(self) -> Mapping[str, SignatureRequirement]:
        """Environment -> the requirement its instances carry (for the planner's ``signatures``)."""
        return self._wire

    def requirement(self, env: str) -> Requirement | None:
        return self.policy.for_env(env) if self.policy else None

    def verify(self, image: str, digest: str) -> Verification:
        """Blocking (registry requests); raises NotReachable when the registry does not answer."""
        ours = registry_client.registry_host(self.registry_url)
        source, _ = source_for(image, registry_url=self.registry_url, timeout=self.timeout)
        if (parse(image).registry or ours) != ours:
            source.session.credentials = None  # our registry password goes to our registry alone
        return verify_digest(source, digest, keys=self.keys)

    def check(self, tree: ManifestTree, digests: Mapping[str, str]) -> list[dict[str, Any]]:
        """Errors (``error_json``, code ``unsigned``) for each component whose digest its environment's
        requirement refuses; remembers who signed every digest checked. Blocking."""
        if self.policy is None:
            return []
        errors: list[dict[str, Any]] = []
        results: dict[str, Verification] = {}
        for env, apps in sorted(tree.applications.items()):
            requirement = self.requirement(env)
            for _, app in sorted(apps.items()):
                for i, comp in enumerate(app.components):
                    digest = digests.get(comp.image) or comp.image.partition("@")[2]
                    if not digest:
                        continue
                    if digest not in results:
                        results[digest] = self.verify(comp.image, digest)
                    refusal = requirement.check(results[digest]) if requirement is not None else None
                    if refusal is None:
                        continue
                    path = f"spec.components[{i}].image"
                    file, line, column = tree.location(env=env, app=app.name, path=path)
                    errors.append(error_json(file, line, f"environment {env}: {refusal} (at {path})",
                                             code="unsigned-digest", column=column))
        # merged: a rejected revision's check must not hide who signed the digests still running
        self.signed_by = {**self.signed_by, **{d: [k.name for k in r.signed_by] for d, r in results.items()}}
        if self._store is not None:
            self._store.put(STORE_KEY, self.signed_by)
        return errors

    def decorate(self, placed: Plan, *, hosts: Mapping[str, Any], carried: bool = False) -> Plan:
        """Each instance of an environment with a requirement carries it; hosts that cannot verify
        signatures get none of those (unplaced, with the reason). ``carried``: the plan was made with
        ``plan(signatures=self.requirements)``, its instances carry them already, and the documents
        of hosts that can verify are kept as they are (the same objects: a copy of each spec took
        ~0.7 s at 100,000 instances, and new objects defeat the publish step's identity comparison);
        otherwise each spec is copied with its requirement."""
        if not self._wire:
            return placed
        desired: dict[str, tuple[InstanceSpec, ...]] = {}
        refused: dict[tuple[str, str, str], int] = {}
        for host, specs in placed.desired.items():
            known = hosts.get(host)  # controller.hosts: name -> its registration
            capable = known is not None and FEATURE_SIGNATURES in known.registration.features
            if capable and carried:
                desired[host] = specs
                continue
            kept = []
            for spec in specs:
                wanted = self._wire.get(spec.env)
                if wanted is None:
                    kept.append(spec)
                elif capable:
                    kept.append(dataclasses.replace(spec, signature=wanted))
                else:
                    key = (spec.env, spec.app, spec.component)
                    refused[key] = refused.get(key, 0) + 1
            desired[host] = tuple(kept)
        unplaced = placed.unplaced + tuple(
            Unplaced(env=env, app=app, component=comp, missing=n,
                     reason=f"environment {env} requires signatures and its host(s) cannot verify them "
                            f"(no {FEATURE_SIGNATURES} feature: upgrade the host agent)")
            for (env, app, comp), n in sorted(refused.items()))
        return dataclasses.replace(placed, desired=desired, unplaced=unplaced)
