"""The compatibility review of a promotion: what replacing the target's running digests with the
source's would change of each component's contract (exports removed or changed, imports added), from
what the registry recorded of both digests. Its findings feed the gates ``compatible`` and
``no-new-capabilities`` (:mod:`reconciler.gitops.gates`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.planner.compat import breaking_changes, new_capabilities
from shared.errors import DriftlessError
from shared.reference import DIGEST_RE, ReferenceError, parse
from shared.registry_auth import RegistryAuth
from shared.registry_client import Credentials, component_info


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestReview:
    """What replacing one component's running digest with another would change of its contract."""

    running: str
    proposed: str
    breaking: tuple[str, ...] = ()  # exports removed or changed (reconciler.planner.compat)
    new_imports: tuple[str, ...] = ()  # capabilities it starts needing


def component_digests(status: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """component -> (image as written, digest it runs) from an app status document."""
    return {
        str(c["name"]): (str(c.get("image") or ""), str(c["digest"]))
        for c in status.get("components") or ()
        if isinstance(c, Mapping) and c.get("name") and DIGEST_RE.match(str(c.get("digest") or ""))
    }


def review_digests(*, running: Mapping[str, tuple[str, str]], proposed: Mapping[str, tuple[str, str]],
                   registry_url: str, auth: RegistryAuth | None = None) -> dict[str, DigestReview]:
    """For each component whose digest would change, its typed compatibility and new capabilities,
    from what the registry recorded of both digests. A component the registry cannot describe (a
    plain OCI registry, a digest it no longer has) is left out: nothing to compare.

    ``auth`` says which credential goes to which registry (default: the environment's
    ``DRIFTLESS_REGISTRY_USER`` / ``..._PASSWORD`` to ``registry_url`` alone, none elsewhere)."""
    if auth is None:
        auth = RegistryAuth(platform=registry_url, platform_credentials=Credentials.from_env())
    out = {}
    for component, (image, new) in sorted(proposed.items()):
        old = running.get(component, ("", ""))[1]
        if not old or old == new:
            continue
        try:
            ref = parse(image)
            repository = f"{ref.registry}/{ref.repository}" if ref.registry else ref.repository
            before = component_info(f"{repository}@{old}", registry_url=registry_url, auth=auth)
            after = component_info(f"{repository}@{new}", registry_url=registry_url, auth=auth)
        except (DriftlessError, ReferenceError):
            continue
        out[component] = DigestReview(
            running=old, proposed=new,
            breaking=tuple(breaking_changes(before.get("exportsDetail") or {}, after.get("exportsDetail") or {})),
            new_imports=tuple(new_capabilities(before.get("imports") or (), after.get("imports") or ())),
        )  # fmt: skip
    return out
