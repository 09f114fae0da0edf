"""The promotion gate ``signed`` and the signer trailers of a promotion commit.

Signatures live with the digest (referrers and the ``.sig`` tag of its repository), so a promotion
carries them along by pinning the same digest; what the promotion adds is the check that the digest
is signed as the TARGET environment requires, and the record of who signed it::

    check = check_signed(to_env="prod", digests={"web": "sha256:..."},
                         images={"web": "demo/hello:1.0.0"}, policy=controller.signatures)
    Gate(name="signed", passed=check.passed, message=check.message)     # reconciler.gitops.promote.Gate
    message += "\\n" + "\\n".join(signer_trailers(check))                 # in the commit's trailer block

Blocking (registry requests): call it where the other gates run (the promotion's worker thread).
``NotReachable`` propagates: a registry that does not answer says nothing about the signatures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.controller.signing_policy import SigningPolicy
from shared.signatures import Verification

GATE_NAME = "signed"
TRAILER = "Signed-By"


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedCheck:
    passed: bool
    message: str
    verifications: Mapping[str, Verification] = field(default_factory=dict)  # component -> its digest's

    name: str = GATE_NAME


def check_signed(*, to_env: str, digests: Mapping[str, str], images: Mapping[str, str],
                 policy: SigningPolicy) -> SignedCheck:
    """Each promoted component's digest verified with every key of the operator's policy; passes when
    the target environment's requirement is met by all of them (or it has none: then it only says
    who signed). ``images``: component -> its image as written in the target (where to look)."""
    if policy.policy is None:
        return SignedCheck(passed=True, message="no --signature-policy: signatures not checked")
    requirement = policy.requirement(to_env)
    verifications: dict[str, Verification] = {}
    said: list[str] = []
    refused: list[str] = []
    for component, digest in sorted(digests.items()):
        image = images.get(component)
        if image is None:
            continue
        result = verifications[component] = policy.verify(image, digest)
        names = ", ".join(k.name for k in result.signed_by) or "nobody the policy trusts"
        said.append(f"{component} {digest[:19]} signed by {names}")
        refusal = requirement.check(result) if requirement is not None else None
        if refusal is not None:
            refused.append(f"{component}: {refusal}")
    if refused:
        return SignedCheck(passed=False, verifications=verifications,
                           message=f"{to_env} requires signatures: " + "; ".join(refused))
    wanted = f" ({requirement.require} of {', '.join(k.name for k in requirement.keys)} required)" \
        if requirement is not None else f" ({to_env} requires none)"
    return SignedCheck(passed=True, verifications=verifications, message="; ".join(said) + wanted)


def signer_trailers(check: SignedCheck) -> list[str]:
    """``Signed-By: <component>=<digest> <key name> <key id> (<algorithm>)``, one per signer, in the
    order of the components: what `git interpret-trailers` reads back as provenance."""
    lines = []
    for component, result in sorted(check.verifications.items()):
        for key in result.signed_by:
            lines.append(f"{TRAILER}: {component}={result.digest} {key.name} {key.key_id} ({key.algorithm})")
    return lines
