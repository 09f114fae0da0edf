"""The target environment's ``promotion`` block as a promotion reads it from the working copy (the
revision it is about to change, not the one the reconciler applied)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.error import YAMLError

from model.types import approval_rule
from reconciler.gitops.target_files import yaml_loader
from shared.errors import Refused
from shared.units import duration_seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyView:
    """The target Environment's ``promotion`` block as written (None when it has none)."""

    env: str
    from_env: str | None
    min_soak_seconds: float
    require_approval: bool
    present: bool
    approvers: int = 1  # with require_approval: how many distinct users must approve
    distinct_from_promoter: bool = False  # four eyes: the promoter's own approval does not count


def read_promotion_policy(root: Path, *, subdir: str, env: str) -> PolicyView:
    env_file = root / subdir / env / "environment.yaml"
    if not env_file.is_file():
        env_file = root / subdir / env / "environment.yml"
    if not env_file.is_file():
        raise Refused(
            f"environment {env} not found: {Path(subdir) / env / 'environment.yaml'} does not exist",
            hint="check --to (the environment folders are under " + subdir + "/)",
        )
    try:
        doc = yaml_loader().load(env_file.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise Refused(f"{env_file.relative_to(root)} is not valid YAML: {exc}".splitlines()[0]) from None
    spec = doc.get("spec") if isinstance(doc, Mapping) else None
    block = spec.get("promotion") if isinstance(spec, Mapping) else None
    if not isinstance(block, Mapping):
        return PolicyView(env=env, from_env=None, min_soak_seconds=0.0, require_approval=False, present=False)
    try:
        required, approvers, distinct = approval_rule(block.get("requireApproval", False))
    except (TypeError, ValueError):
        raise Refused(f"{env_file.relative_to(root)}: spec.promotion.requireApproval is neither true/false nor "
                      "{approvers: N, distinctFromPromoter: true|false}") from None
    return PolicyView(
        env=env,
        from_env=str(block.get("from")) if block.get("from") is not None else None,
        min_soak_seconds=parse_duration(block.get("minSoak", 0)),
        require_approval=required,
        approvers=approvers,
        distinct_from_promoter=distinct,
        present=True,
    )



def parse_duration(value: Any) -> float:
    """minSoak as seconds (:func:`shared.units.duration_seconds`); a promotion refuses anything else."""
    try:
        return duration_seconds(value)
    except ValueError as exc:
        raise Refused(f"minSoak {value!r} is not a duration (e.g. 30s, 5m, 1h)") from exc
