"""The approval gate's arithmetic: how many distinct approvers count, and when the promoter's own does."""

from __future__ import annotations

from reconciler.gitops.gates import Promotion, approval_gate
from reconciler.gitops.policy import PolicyView


def gate(*, approvers: int = 1, distinct: bool = False, approver: str | None = None,
         ahead: tuple[str, ...] = (), promoter: str | None = "alice") -> tuple[bool, str]:
    policy = PolicyView(env="prod", from_env="staging", min_soak_seconds=0, require_approval=True, present=True,
                        approvers=approvers, distinct_from_promoter=distinct)
    (found,) = approval_gate(Promotion(policy=policy, from_env="staging", to_env="prod", app="web", source_status={},
                                       target_components=(), approver=approver, now=0.0, approvals=ahead,
                                       promoter=promoter))
    return found.passed, found.message


def test_requires_approval_true_is_satisfied_by_the_promoter() -> None:
    assert gate(approver="alice") == (True, "approved by alice")
    assert gate() == (False, "prod requires an approval (--approve NAME)")


def test_four_eyes_counts_only_others() -> None:
    passed, message = gate(distinct=True, approver="alice", ahead=("alice",))
    assert not passed and "alice promotes: their own approval does not count" in message
    assert gate(distinct=True, approver="alice", ahead=("bob",))[0]
    passed, message = gate(distinct=True, approver="alice", ahead=("bob",), promoter=None)  # promoter unknown (--repo)
    assert not passed and "promote through the reconciler" in message


def test_several_approvers_must_be_distinct() -> None:
    assert not gate(approvers=2, approver="alice", ahead=("alice",))[0]
    assert gate(approvers=2, approver="alice", ahead=("bob",))[0]
    assert not gate(approvers=2, distinct=True, approver="alice", ahead=("bob",))[0]
    assert gate(approvers=2, distinct=True, ahead=("bob", "carol"))[0]
