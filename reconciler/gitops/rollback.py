"""Rollback: restore an application's manifests as they were at an earlier revision, as a NEW commit.

History is never rewritten: the rollback is a commit on top of the branch, so it can itself be
rolled back, and the reconciler applies it like any other push.

Library entry point (the reconciler's ``POST /api/v1/rollback`` and ``driftless rollback`` call it)::

    rollback(*, repo: str, branch: str = "main", subdir: str = "manifests", app: str, env: str,
             to_revision: str, applied_revisions: Sequence[str] | None = None,
             dry_run: bool = False, push: bool = True, author: str | None = None,
             reason: str | None = None) -> RollbackResult

    repo               Git remote when ``push`` (cloned to a temporary directory), or a local
                       working copy when not ``push`` (the commit lands there, unpushed)
    to_revision        any commit-ish (full or short sha, tag, HEAD~2, ...)
    applied_revisions  when given (from GET /api/v1/history), ``to_revision`` must be one of them:
                       only revisions that were actually applied are safe targets
    returns            RollbackResult (``to_json()``); raises ``Refused`` with the reason otherwise.

HTTP (``POST /api/v1/rollback``, wired by the reconciler to :func:`handle_request`)::

    request   {"app": "hello", "env": "prod", "to": "<revision>", "anyRevision": false?,
               "dryRun": false?, "reason": "..."?}   (authored by the authenticated user; an
              "author" naming anyone else is refused with 400)
    200       RollbackResult.to_json(): {"app", "env", "toRevision", "fromRevision",
              "files": [{"path", "action"}], "diff", "message", "dryRun", "commit", "pushed"}
    400       a field is missing or has the wrong type;  409  refused (never applied, unknown app...)

Without ``anyRevision`` the target must be a revision the reconciler applied to the environment.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.controller.pipeline import Controller
from reconciler.gitops.request_fields import check_author, optional_text, required_text
from reconciler.gitops.target_files import app_files, application_name
from reconciler.gitops.working_copy import (
    ChangeResult,
    WorkingCopy,
    commit_change,
    in_repository,
)
from shared.errors import Refused


@dataclass(frozen=True, slots=True, kw_only=True)
class FileChange:
    path: str  # relative to the repository root
    action: str  # "restore" (content replaced), "add" (re-created), "delete" (absent at the revision)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "action": self.action}


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackResult(ChangeResult):
    """Also ``diff``, ``message``, ``dry_run``, ``committed`` (None on a dry run or when the app is
    already as it was) and ``pushed`` (ChangeResult)."""

    app: str
    env: str
    to_revision: str  # full commit id rolled back to
    from_revision: str  # branch head before the rollback
    files: tuple[FileChange, ...]

    @property
    def changed(self) -> bool:
        return bool(self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "env": self.env,
            "toRevision": self.to_revision,
            "fromRevision": self.from_revision,
            "files": [f.to_json() for f in self.files],
            **self.change_json(),
        }


def rollback(
    *,
    repo: str,
    branch: str = "main",
    subdir: str = "manifests",
    app: str,
    env: str,
    to_revision: str,
    applied_revisions: Sequence[str] | None = None,
    dry_run: bool = False,
    push: bool = True,
    author: str | None = None,
    reason: str | None = None,
) -> RollbackResult:
    kwargs: dict[str, Any] = dict(
        subdir=subdir, app=app, env=env, to_revision=to_revision, applied_revisions=applied_revisions,
        dry_run=dry_run, author=author, reason=reason,
    )  # fmt: skip
    return in_repository(
        repo=repo,
        branch=branch,
        push=push,
        dry_run=dry_run,
        work=lambda wc, p: _rollback_in(wc, push=p, **kwargs),
    )


def _app_files_at(wc: WorkingCopy, *, revision: str, apps_dir: str, app: str) -> dict[str, str]:
    """The files under ``apps_dir`` at ``revision`` that declare ``app``, with their content."""
    found: dict[str, str] = {}
    for rel in wc.list_files(revision=revision, under=apps_dir):
        if not rel.endswith((".yaml", ".yml")):
            continue
        content = (wc.show(revision=revision, path=rel) or b"").decode("utf-8", errors="replace")
        if app in application_name(content):
            found[rel] = content
    return found


def _was_applied(
    wc: WorkingCopy, target: str, files: dict[str, str], applied: Sequence[str], apps_dir: str, app: str
) -> bool:
    """``target`` is in ``applied``, or declares the app exactly as an applied revision did.

    The history lists the revisions that changed an environment; a commit that changed only
    other environments left this app as the applied revision before it had it.
    """
    if any(r and target.startswith(r) for r in applied):
        return True
    for revision in applied:
        try:
            full = wc.resolve(revision)
        except Refused:
            continue  # no longer on the branch
        if _app_files_at(wc, revision=full, apps_dir=apps_dir, app=app) == files:
            return True
    return False


async def handle_request(
    *, controller: Controller, body: Mapping[str, Any], user: str, author: str
) -> dict[str, Any]:
    """``POST /api/v1/rollback``: applied revisions come from the controller's history; Git work runs in a thread.

    The commit is authored by ``author`` (the authenticated user's ``Name <email>``); a body ``author``
    naming anyone else is refused (UsageError)."""
    app, env, to = (required_text(body, k) for k in ("app", "env", "to"))
    check_author(body, author=author)
    applied = None
    if not body.get("anyRevision", False):
        applied = [e["revision"] for e in controller.store.history(env=env, limit=10_000)]
    settings = controller.settings
    result = await asyncio.to_thread(
        rollback, repo=settings.repo, branch=settings.branch, subdir=settings.path, app=app, env=env,
        to_revision=to, applied_revisions=applied, dry_run=bool(body.get("dryRun", False)), push=True,
        author=author, reason=optional_text(body, "reason"),
    )  # fmt: skip
    return result.to_json()


def _rollback_in(
    wc: WorkingCopy,
    *,
    subdir: str,
    app: str,
    env: str,
    to_revision: str,
    applied_revisions: Sequence[str] | None,
    dry_run: bool,
    push: bool,
    author: str | None,
    reason: str | None,
) -> RollbackResult:
    target = wc.resolve(to_revision)
    head = wc.head()
    apps_dir = f"{subdir}/{env}/apps"
    old = _app_files_at(wc, revision=target, apps_dir=apps_dir, app=app)
    if applied_revisions is not None and not _was_applied(wc, target, old, applied_revisions, apps_dir, app):
        raise Refused(
            f"revision {to_revision} was never applied to {env}",
            hint=f"pick one from `driftless history --env {env} {app}`, or pass --any-revision",
        )
    if not old:
        raise Refused(
            f"application {app} did not exist in {env} at {target[:12]}",
            hint="choose a revision where it was declared (`driftless history`)",
        )
    current: dict[str, str] = {}
    for path in app_files(wc.path, subdir=subdir, env=env):
        content = path.read_bytes().decode("utf-8", errors="replace")
        if app in application_name(content):
            current[str(path.relative_to(wc.path))] = content
    for rel, content in [*old.items(), *current.items()]:
        others = sorted(set(application_name(content)) - {app})
        if others:
            raise Refused(
                f"{rel} also declares {', '.join(others)}: rolling back {app} would change them too",
                hint=f"move {app} into a file of its own first",
            )

    files: list[FileChange] = []
    diff_parts: list[str] = []
    for rel in sorted(set(old) | set(current)):
        before, after = current.get(rel), old.get(rel)
        if before == after:
            continue
        files.append(
            FileChange(path=rel, action="delete" if after is None else "add" if before is None else "restore")
        )
        diff_parts.append(
            "".join(
                difflib.unified_diff(
                    (before or "").splitlines(keepends=True), (after or "").splitlines(keepends=True),
                    fromfile=f"a/{rel}" if before is not None else "/dev/null",
                    tofile=f"b/{rel}" if after is not None else "/dev/null",
                )
            )
        )  # fmt: skip
    subject = wc.message(target).splitlines()[0] if wc.message(target).strip() else ""
    lines = [
        f"rollback({app}): {env} to {target[:12]}",
        "",
        f'Restore the manifests of {app} in {env} as they were at {target[:12]} ("{subject}").',
    ]
    if reason:
        lines += ["", reason]
    lines += ["", f"Rolled-Back-To: {target}", f"Rolled-Back-From: {head}", f"Environment: {env}"]
    message = "\n".join(lines) + "\n"
    result = RollbackResult(
        app=app, env=env, to_revision=target, from_revision=head, files=tuple(files),
        diff="".join(diff_parts), message=message, dry_run=dry_run,
    )  # fmt: skip
    if dry_run or not files:
        return result
    contents = {f.path: None if f.action == "delete" else old[f.path].encode("utf-8") for f in files}
    return commit_change(wc, result, contents=contents, author=author, push=push)
