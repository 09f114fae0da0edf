"""The commit message of a promotion: a subject, what changes, and the trailers that record why it
was allowed (``Promoted-From``, ``Promoted-Digest``, ``Approved-By``, ``Approved-Capabilities``);
``git interpret-trailers --parse`` and :func:`reconciler.gitops.working_copy.parse_trailers` read them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.gitops.gates import human_duration


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageChange:
    component: str
    old: str
    new: str
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"component": self.component, "old": self.old, "new": self.new, "digest": self.digest}


def promotion_message(
    *,
    app: str,
    from_env: str,
    to_env: str,
    revision: str,
    changes: Sequence[ImageChange],
    digests: Mapping[str, str],
    components: Sequence[str],
    approver: str | None,
    healthy_since: Any,
    now: float,
    approved_capabilities: Mapping[str, Sequence[str]] | None = None,
    approvers: Sequence[str] = (),
    trailers: Sequence[str] = (),
) -> str:
    """``approver`` and ``approvers``: one ``Approved-By:`` trailer each (``approvers`` first), once per name;
    ``trailers``: more lines of the trailer block, as given (``Signed-By:``, reconciler.gitops.signed_gate)."""
    lines = [f"promote({app}): {from_env} -> {to_env}", ""]
    soaked = (
        f", healthy for {human_duration(now - float(healthy_since))}"
        if isinstance(healthy_since, int | float)
        else ""
    )
    lines.append(f"Declare in {to_env} the digests {app} runs Synced and Healthy in {from_env}{soaked}.")
    lines.append("")
    for c in changes:
        lines.append(f"  {c.component}: {c.old} -> {c.new}")
    if changes:
        lines.append("")
    lines.append(f"Promoted-From: {from_env}@{revision or 'unknown'}")
    for component in components:
        lines.append(f"Promoted-Digest: {component}={digests[component]}")
    lines.extend(trailers)
    for name in dict.fromkeys([*approvers, *([approver] if approver else [])]):
        lines.append(f"Approved-By: {name}")
    for component, imports in sorted((approved_capabilities or {}).items()):
        lines.append(f"Approved-Capabilities: {component}={','.join(imports)}")
    return "\n".join(lines) + "\n"
