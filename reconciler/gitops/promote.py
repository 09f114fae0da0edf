"""Promotion: make one environment declare exactly the digests that run Healthy in another, as a Git commit.

Library entry point (the reconciler's ``POST /api/v1/promote`` and ``driftless promote`` call it)::

    promote(*, repo: str, branch: str = "main", subdir: str = "manifests", app: str,
            from_env: str, to_env: str, source_status: Mapping[str, Any],
            approver: str | None = None, dry_run: bool = False, push: bool = True,
            now: float | None = None, author: str | None = None,
            source_drift: Sequence[Mapping[str, Any]] | None = None, review=None,
            approve_capabilities: bool = False, approvals: Sequence[str] = (),
            promoter: str | None = None) -> PromotionResult

    repo           Git remote (URL or path of a bare repo) when ``push``; a local working copy
                   when not ``push`` (the commit lands there, unpushed)
    source_status  GET /api/v1/environments/{from_env}/apps/{app} of the reconciler:
                   {"revision", "sync", "health", "healthySince", "components": [{"name", "image", "digest"}]}
    source_drift   GET /api/v1/drift?env={from_env} items, when known: adds the gate "no-drift"
    approvals      users who approved these digests ahead (reconciler.gitops.approvals)
    promoter       the user promoting: a four-eyes requireApproval does not count their approval
    returns        PromotionResult (``to_json()``); raises PromotionRefused (a ``Refused``, with
                   ``gates`` and ``to_json()``) when a gate fails, GitError/PushConflict on Git trouble.

HTTP (``POST /api/v1/promote``, wired by the reconciler to :func:`handle_request`)::

    request   {"app": "hello", "from": "staging", "to": "prod", "approve": true?, "dryRun": false?}
              (the approver and the author are the authenticated user; an "approve"/"approver" or
              "author" naming anyone else is refused with 400)
    200       PromotionResult.to_json(): {"app", "from", "to", "sourceRevision", "gates": [{"name",
              "passed", "message"}], "changes": [{"component", "old", "new", "digest"}], "file",
              "approvedBy", "diff", "message", "dryRun", "commit", "pushed"}
    400       a field is missing or has the wrong type;  409  a gate failed (the error names it)

The jobs live in their own modules: the gates (:mod:`reconciler.gitops.gates`, a list of
same-signature functions), the target's promotion policy (:mod:`~reconciler.gitops.policy`), the
compatibility review (:mod:`~reconciler.gitops.review`), the target's files
(:mod:`~reconciler.gitops.target_files`), the commit message and its trailers
(:mod:`~reconciler.gitops.trailers`), the request's fields (:mod:`~reconciler.gitops.request_fields`),
the approvals given ahead (:mod:`~reconciler.gitops.approvals`).

Gates come from the TARGET Environment's ``promotion`` block: ``from`` must name the source,
the source app must be Synced and Healthy, healthy for at least ``minSoak``, and with
``requireApproval`` an approver must be named (recorded as ``Approved-By:``; four eyes:
``{approvers: N, distinctFromPromoter: true}`` wants N users other than the promoter). When the source app
has a canary rollout (``spec.rollout.strategy: canary``), the gate ``rollout`` wants it Completed:
the digests passed the source's ``abortWhen`` (error rate, p99, traps, fuel per request against the
stable digest) and shadow ``minMatch`` there; an aborted, held-back digest is never promoted. Only the ``image:``
values of the target app's components change (pinned ``@sha256:``, registry written as before);
every other byte of the file stays as it was.
"""

from __future__ import annotations

import asyncio
import difflib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.controller.pipeline import Controller
from reconciler.gitops import approvals
from reconciler.gitops.gates import (
    Gate,
    Promotion,
    check_gates,
    hint_for,
    review_gates,
    run_gates,
    source_digests,
)
from reconciler.gitops.policy import PolicyView, parse_duration, read_promotion_policy
from reconciler.gitops.request_fields import approval, check_author, optional_text, required_text
from reconciler.gitops.review import DigestReview, component_digests, review_digests
from reconciler.gitops.signed_gate import SignedCheck, check_signed, signer_trailers
from reconciler.gitops.target_files import LocatedApp, app_files, application_name, find_app
from reconciler.gitops.trailers import ImageChange, promotion_message
from reconciler.gitops.working_copy import ChangeResult, WorkingCopy, commit_change, in_repository
from shared.errors import Refused
from shared.reference import parse

# (component -> digest, component -> image as the target writes it) -> the ``signed`` gate's check
SignatureCheck = Callable[[Mapping[str, str], Mapping[str, str]], SignedCheck]

# the names this module had before it was split by job, for the callers that import them from here
__all__ = [
    "DigestReview", "Gate", "ImageChange", "LocatedApp", "PolicyView", "PromotionRefused", "PromotionResult",
    "app_files", "application_name", "approval", "check_author", "check_gates", "find_app", "handle_request",
    "optional_text", "parse_duration", "promote", "promotion_message", "read_promotion_policy", "required_text",
    "review_digests", "review_gates",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PromotionResult(ChangeResult):
    """Also ``diff`` (of ``file``), ``message``, ``dry_run``, ``committed``, ``pushed`` (ChangeResult)."""

    app: str
    from_env: str
    to_env: str
    source_revision: str
    gates: tuple[Gate, ...]
    changes: tuple[ImageChange, ...]  # only the images that actually change
    file: str  # the target app's manifest, relative to the repository root
    approved_by: tuple[str, ...] = ()  # every approver, each an Approved-By: trailer

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "from": self.from_env,
            "to": self.to_env,
            "sourceRevision": self.source_revision,
            "gates": [g.to_json() for g in self.gates],
            "changes": [c.to_json() for c in self.changes],
            "file": self.file,
            "approvedBy": list(self.approved_by),
            **self.change_json(),
        }


class PromotionRefused(Refused):
    """A gate failed; ``gates`` says which ones passed and which did not."""

    def __init__(self, message: str, *, gates: Sequence[Gate], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.gates = tuple(gates)

    def to_json(self) -> dict[str, Any]:
        return {"error": str(self), "hint": self.hint, "gates": [g.to_json() for g in self.gates]}


# -- entry point -----------------------------------------------------------------------------


def promote(
    *,
    repo: str,
    branch: str = "main",
    subdir: str = "manifests",
    app: str,
    from_env: str,
    to_env: str,
    source_status: Mapping[str, Any],
    approver: str | None = None,
    dry_run: bool = False,
    push: bool = True,
    now: float | None = None,
    author: str | None = None,
    source_drift: Sequence[Mapping[str, Any]] | None = None,
    review: Mapping[str, DigestReview] | None = None,
    approve_capabilities: bool = False,
    approvals: Sequence[str] = (),
    promoter: str | None = None,
    check_signatures: SignatureCheck | None = None,
) -> PromotionResult:
    """``check_signatures(digests, images)``: the ``signed`` gate's check against the operator's policy
    (component -> digest, component -> image as the target writes it). ``review`` (component -> what its new digest breaks and newly imports, from
    :func:`review_digests`) adds the gates ``compatible`` and ``no-new-capabilities``. ``approvals``: the
    users who approved these digests ahead (:mod:`reconciler.gitops.approvals`); ``promoter``: the user
    promoting (whose own approval a four-eyes ``requireApproval`` does not count)."""
    now = time.time() if now is None else now
    if from_env == to_env:
        raise Refused(f"cannot promote {app} from {from_env} to itself", hint="--from and --to must differ")
    kwargs: dict[str, Any] = dict(
        subdir=subdir, app=app, from_env=from_env, to_env=to_env, source_status=source_status,
        approver=approver, dry_run=dry_run, now=now, author=author, source_drift=source_drift,
        review=review, approve_capabilities=approve_capabilities, approvals=tuple(approvals), promoter=promoter,
        check_signatures=check_signatures,
    )  # fmt: skip
    return in_repository(
        repo=repo,
        branch=branch,
        push=push,
        dry_run=dry_run,
        work=lambda wc, p: _promote_in(wc, push=p, **kwargs),
    )


async def handle_request(
    *, controller: Controller, body: Mapping[str, Any], user: str, author: str
) -> dict[str, Any]:
    """``POST /api/v1/promote``: the source status comes from the controller, Git work runs in a thread.

    ``user`` and ``author`` (``Name <email>``) are the authenticated caller's: the approval is recorded
    as ``user`` and the commit authored by ``author``. A body naming someone else is refused (UsageError).
    """
    app, from_env, to_env = (required_text(body, k) for k in ("app", "from", "to"))
    approver = approval(body, user=user, author=author)
    check_author(body, author=author)
    status = controller.tracker.app_status(from_env, app)
    if status is None:
        raise Refused(
            f"application {app} is not running in environment {from_env}", hint="check `driftless status`"
        )
    settings = controller.settings
    approve_capabilities = body.get("approveCapabilities", False)
    if not isinstance(approve_capabilities, bool):
        raise TypeError("field 'approveCapabilities' must be true or false")
    target = controller.tracker.app_status(to_env, app) or {}
    digests = source_digests(status)
    ahead = [a.user for a in approvals.pending(controller.store, app=app, from_env=from_env, to_env=to_env,
                                                digests=digests)]
    dry_run = bool(body.get("dryRun", False))
    review = await asyncio.to_thread(
        review_digests, running=component_digests(target), proposed=component_digests(status),
        registry_url=settings.registry, auth=settings.registry_auth(),
    )
    result = await asyncio.to_thread(
        promote, repo=settings.repo, branch=settings.branch, subdir=settings.path, app=app, from_env=from_env,
        to_env=to_env, source_status=status, approver=approver, dry_run=dry_run, push=True, author=author,
        source_drift=[i.to_json() for i in controller.tracker.drift_items if i.env == from_env],
        review=review, approve_capabilities=approve_capabilities, approvals=ahead, promoter=user,
        check_signatures=lambda digests, images: check_signed(to_env=to_env, digests=digests, images=images,
                                                              policy=controller.signatures),
    )  # fmt: skip
    if not dry_run and result.committed:
        approvals.consume(controller.store, app=app, from_env=from_env, to_env=to_env, digests=digests)
    return result.to_json()


def _promote_in(
    wc: WorkingCopy,
    *,
    subdir: str,
    app: str,
    from_env: str,
    to_env: str,
    source_status: Mapping[str, Any],
    approver: str | None,
    dry_run: bool,
    push: bool,
    now: float,
    author: str | None,
    source_drift: Sequence[Mapping[str, Any]] | None,
    review: Mapping[str, DigestReview] | None,
    approve_capabilities: bool,
    approvals: tuple[str, ...],
    promoter: str | None,
    check_signatures: SignatureCheck | None,
) -> PromotionResult:
    policy = read_promotion_policy(wc.path, subdir=subdir, env=to_env)
    located = find_app(wc.path, subdir=subdir, env=to_env, app=app)
    digests = source_digests(source_status)
    # signatures live with the digest: a promotion carries them; the gate checks the target's policy
    signed = check_signatures(digests, dict(located.images)) if check_signatures is not None else None
    promotion = Promotion(
        policy=policy, from_env=from_env, to_env=to_env, app=app, source_status=source_status,
        target_components=[c for c, _ in located.images], approver=approver, now=now,
        target_images=dict(located.images), source_drift=source_drift, review=review,
        approve_capabilities=approve_capabilities, approvals=approvals, promoter=promoter, signed=signed,
    )  # fmt: skip
    gates = run_gates(promotion)
    failed = [g for g in gates if not g.passed]
    if failed:
        raise PromotionRefused(
            f"promotion of {app} from {from_env} to {to_env} refused: "
            + "; ".join(g.message for g in failed),
            gates=gates,
            hint=hint_for(failed[0]),
        )

    text = located.text
    changes: list[ImageChange] = []
    replacements: list[tuple[int, int, str]] = []
    for (component, node), (start, end, written) in zip(located.images, located.spans, strict=True):
        digest = digests[component]
        new = str(parse(node).pinned(digest))
        if new != node:
            changes.append(ImageChange(component=component, old=node, new=new, digest=digest))
            replacements.append((start, end, written.replace(node, new)))
    for start, end, replacement in sorted(replacements, reverse=True):
        text = text[:start] + replacement + text[end:]

    revision = str(source_status.get("revision") or "")
    message = promotion_message(
        app=app, from_env=from_env, to_env=to_env, revision=revision, changes=changes,
        digests=digests, components=[c for c, _ in located.images], approver=None, approvers=promotion.approved_by,
        healthy_since=source_status.get("healthySince"), now=now,
        approved_capabilities={c: r.new_imports for c, r in (review or {}).items() if r.new_imports}
        if approve_capabilities else {},
        trailers=signer_trailers(signed) if signed is not None else (),
    )  # fmt: skip
    diff = "".join(
        difflib.unified_diff(
            located.text.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"a/{located.file}", tofile=f"b/{located.file}",
        )
    )  # fmt: skip
    result = PromotionResult(
        app=app, from_env=from_env, to_env=to_env, source_revision=revision, gates=tuple(gates),
        changes=tuple(changes), file=located.file, diff=diff, message=message, dry_run=dry_run,
        approved_by=tuple(promotion.approved_by),
    )  # fmt: skip
    if dry_run or not changes:
        return result
    return commit_change(wc, result, contents={located.file: text.encode("utf-8")}, author=author, push=push)
