"""``spec.promotion.requireApproval``: true/false as before, or ``{approvers, distinctFromPromoter}`` (four
eyes) into the model; a wrong value is reported at its file:line with what it may be."""

from __future__ import annotations

from pathlib import Path

import pytest

from model import load_tree

ENV = """apiVersion: driftless.dev/v1alpha1
kind: Environment
metadata: {{name: {name}}}
spec:
{spec}"""


def tree(tmp_path: Path, require: str) -> Path:
    root = tmp_path / "manifests"
    for name, spec in (("staging", "  {}\n"), ("prod", f"  promotion:\n    from: staging\n    requireApproval: {require}\n")):
        (root / name).mkdir(parents=True)
        (root / name / "environment.yaml").write_text(ENV.format(name=name, spec=spec))
    return root


@pytest.mark.parametrize(("written", "rule"), [
    ("true", (True, 1, False)), ("false", (False, 1, False)),
    ("{distinctFromPromoter: true}", (True, 1, True)), ("{approvers: 2}", (True, 2, False)),
])  # fmt: skip
def test_the_forms_it_takes(tmp_path: Path, written: str, rule: tuple[bool, int, bool]) -> None:
    loaded = load_tree(tree(tmp_path, written))
    assert loaded.problems == []
    policy = loaded.environments["prod"].promotion
    assert policy is not None
    assert (policy.require_approval, policy.approvers, policy.distinct_from_promoter) == rule


def test_a_wrong_value_says_where_and_what_it_may_be(tmp_path: Path) -> None:
    problems = load_tree(tree(tmp_path, "{approvers: 0, distinctFromPromotor: true}")).problems
    assert {(p.line, p.message.split(" (")[0]) for p in problems} == {
        (7, "approvers must be at least 1, not 0"),
        (7, "unknown field 'distinctFromPromotor' in requireApproval"),
    }
    (problem,) = load_tree(tree(tmp_path / "b", '"yes"')).problems
    assert problem.file.endswith("prod/environment.yaml") and problem.line == 7
    assert "must be true or false, or a mapping {approvers: N, distinctFromPromoter: true|false}" in problem.message
