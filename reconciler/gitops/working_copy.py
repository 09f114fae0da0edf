"""Git working-copy operations for promotion and rollback: clone, read at a revision, commit with
trailers, push with rebase-and-retry. Runs the ``git`` command line (no shell); every failure
becomes a :class:`GitError` that says which command failed and why.

    with temporary_clone(remote="/srv/manifests.git", branch="main") as wc:
        (wc.path / "manifests/prod/apps/hello.yaml").write_text(...)
        wc.commit(message="...", paths=["manifests/prod/apps/hello.yaml"])
        wc.push()        # on a non-fast-forward: fetch, rebase, push again (bounded)

    in_repository(repo=..., branch="main", push=True, dry_run=False, work=lambda wc, push: ...)
        # where a commit belongs: a local clone in place, or a fresh clone of a remote; a change
        # whose push conflicts is recomputed on the new head (with_fresh_clone)

    result = commit_change(wc, result, contents={path: new_bytes}, author=None, push=True)
        # write (None: delete), commit and push a ChangeResult; returns it with the commit id
"""

from __future__ import annotations

import contextvars
import functools
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from shared.errors import DriftlessError, Refused

DEFAULT_IDENTITY = ("driftless", "driftless@localhost")
T = TypeVar("T")


class GitError(DriftlessError):
    """A git command failed; the message names the command and git's own words."""


class PushConflict(Refused):
    """Someone else changed the same lines in the meantime; rebasing could not apply our commit."""


# Called before every `git push` attempt; raises to refuse it. Replicated reconcilers set it (per
# request: asyncio.to_thread carries it into the Git thread) to "this reconciler still leads, with
# a margin of lease left" (reconciler/api/replication.py): a deposed leader never pushes.
push_guard: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("push_guard", default=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeResult:
    """What a promotion or a rollback did (or, on a dry run, would do) to the manifests repository."""

    diff: str  # unified diff of the files changed
    message: str  # the commit message (also for dry runs: what would be committed)
    dry_run: bool
    committed: str | None = None  # commit id; None on dry run or when nothing changes
    pushed: bool = False

    def change_json(self) -> dict[str, Any]:
        """The JSON fields every result ends with."""
        return {
            "diff": self.diff,
            "message": self.message,
            "dryRun": self.dry_run,
            "commit": self.committed,
            "pushed": self.pushed,
        }


R = TypeVar("R", bound=ChangeResult)


@functools.cache
def _configured_identity() -> bool:
    """Whether git already knows who commits (user.name and user.email in the git config)."""
    probe = {**os.environ, "LC_ALL": "C"}
    got = [
        subprocess.run(["git", "config", "--get", key], capture_output=True, env=probe).returncode == 0
        for key in ("user.name", "user.email")
    ]
    return all(got)


def _env() -> dict[str, str]:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }  # LC_ALL: parse git's messages in one language
    if not _configured_identity():
        # no identity configured (CI, containers): commit as "driftless" rather than fail
        name, email = DEFAULT_IDENTITY
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_NAME", name)
            env.setdefault(f"GIT_{role}_EMAIL", email)
    return env


def git(
    *args: str, cwd: Path | None = None, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, env=_env(), input=input)
    if check and r.returncode != 0:
        msg = r.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(
            f"git {' '.join(a for a in args[:2])} failed: {msg[-1] if msg else f'exit {r.returncode}'}"
        )
    return r


def is_working_copy(path: str | Path) -> bool:
    """True when ``path`` is a non-bare Git checkout (commits can be made in it)."""
    p = Path(path)
    if not p.is_dir():
        return False
    r = git("rev-parse", "--is-bare-repository", cwd=p, check=False)
    return r.returncode == 0 and r.stdout.strip() == b"false"


@dataclass(frozen=True, slots=True)
class WorkingCopy:
    path: Path
    branch: str
    remote: str = "origin"

    # -- reading ------------------------------------------------------------------------------
    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.path).stdout.decode().strip()

    def resolve(self, revision: str) -> str:
        """Full commit id of ``revision`` (a sha, short sha, branch, tag, HEAD~1, ...)."""
        r = git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", cwd=self.path, check=False)
        if r.returncode != 0:
            raise Refused(
                f"revision {revision!r} is not a commit of the repository",
                hint="list revisions with `driftless history` or `git log`",
            )
        return r.stdout.decode().strip()

    def show(self, *, revision: str, path: str) -> bytes | None:
        """The content of ``path`` at ``revision``, or None when it did not exist there."""
        r = git("show", f"{revision}:{path}", cwd=self.path, check=False)
        return r.stdout if r.returncode == 0 else None

    def list_files(self, *, revision: str, under: str) -> list[str]:
        r = git("ls-tree", "-r", "--name-only", revision, "--", under, cwd=self.path, check=False)
        return [line for line in r.stdout.decode().splitlines() if line] if r.returncode == 0 else []

    def message(self, revision: str = "HEAD") -> str:
        return git("log", "-1", "--format=%B", revision, cwd=self.path).stdout.decode()

    # -- writing ------------------------------------------------------------------------------
    def ensure_unmodified(self, paths: Sequence[str]) -> None:
        """Refuse to touch files with uncommitted changes: they would end up in our commit."""
        r = git("status", "--porcelain", "--", *paths, cwd=self.path)
        dirty = [line[3:] for line in r.stdout.decode().splitlines() if line.strip()]
        if dirty:
            raise Refused(
                f"{', '.join(dirty)} in {self.path} has uncommitted changes",
                hint="commit or stash them first",
            )

    def current_branch(self) -> str:
        return git("rev-parse", "--abbrev-ref", "HEAD", cwd=self.path).stdout.decode().strip()

    def commit(self, *, message: str, paths: Sequence[str], author: str | None = None) -> str:
        """Commit exactly ``paths`` (added, changed or deleted) with ``message``; return the new commit id."""
        git("add", "-A", "--", *paths, cwd=self.path)
        args = ["commit", "-q", "--no-verify", "-F", "-"]
        if author:
            args.append(f"--author={author}")
        git(*args, "--", *paths, cwd=self.path, input=message.encode())
        return self.head()

    def push(self, *, attempts: int = 6) -> str:
        """Push HEAD to the branch; on a rejection fetch, rebase our commits on top and retry.

        Concurrent writers both land: the loser of a race rebases onto the winner. A rebase that
        conflicts (both changed the same lines) is aborted and raised as :class:`PushConflict`,
        leaving the remote untouched. Returns the commit id that landed.
        """
        last = ""
        for attempt in range(attempts):
            guard = push_guard.get()
            if guard is not None:
                guard()
            r = git(
                "push",
                "-q",
                "--porcelain",
                self.remote,
                f"HEAD:refs/heads/{self.branch}",
                cwd=self.path,
                check=False,
            )
            if r.returncode == 0:
                return self.head()
            last = (r.stderr + r.stdout).decode(errors="replace").strip()
            if not _retryable(last):
                raise GitError(f"git push to {self.branch} failed: {_last_line(last)}")
            time.sleep(random.uniform(0.02, 0.1) * (attempt + 1))  # let the winner's ref update settle
            git("fetch", "-q", self.remote, self.branch, cwd=self.path)
            rb = git("rebase", "-q", "--autostash", "FETCH_HEAD", cwd=self.path, check=False)
            if rb.returncode != 0:
                git("rebase", "--abort", cwd=self.path, check=False)
                raise PushConflict(
                    f"{self.branch} changed the same lines in the meantime; nothing was pushed",
                    hint="look at the newest commits (`driftless history`) and run the command again",
                )
        raise GitError(
            f"git push to {self.branch} was still rejected after {attempts} attempts: {_last_line(last)}"
        )


def _retryable(output: str) -> bool:
    words = (
        "non-fast-forward",
        "fetch first",
        "rejected",
        "cannot lock ref",
        "failed to update ref",
        "stale info",
    )
    return any(w in output for w in words)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def clone(*, remote: str, branch: str, into: Path) -> WorkingCopy:
    r = git("clone", "-q", "--no-tags", "--single-branch", "--branch", branch, remote, str(into), check=False)
    if r.returncode != 0:
        detail = _last_line(r.stderr.decode(errors="replace"))
        raise GitError(
            f"cannot clone branch {branch!r} of {remote}: {detail}",
            hint="check --repo (the Git remote of the manifests) and --branch",
        )
    return WorkingCopy(path=into, branch=branch)


@contextmanager
def temporary_clone(*, remote: str, branch: str) -> Iterator[WorkingCopy]:
    """A fresh clone in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="driftless-git-") as tmp:
        yield clone(remote=remote, branch=branch, into=Path(tmp) / "work")


def open_working_copy(path: str | Path, *, branch: str | None = None) -> WorkingCopy:
    """An existing checkout, used in place (commits land there; nothing is pushed unless asked)."""
    p = Path(path).resolve()
    if not is_working_copy(p):
        raise Refused(
            f"{p} is not a Git working copy", hint="clone the manifests repository first, or pass --push"
        )
    top = Path(git("rev-parse", "--show-toplevel", cwd=p).stdout.decode().strip())
    current = git("rev-parse", "--abbrev-ref", "HEAD", cwd=top).stdout.decode().strip()
    return WorkingCopy(path=top, branch=branch or current)


def parse_trailers(message: str) -> dict[str, list[str]]:
    """``Key: value`` trailers of a commit message (as ``git interpret-trailers`` reads them)."""
    r = git("interpret-trailers", "--parse", input=message.encode())
    out: dict[str, list[str]] = {}
    for line in r.stdout.decode().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def in_repository(
    *, repo: str, branch: str, push: bool, dry_run: bool, work: Callable[[WorkingCopy, bool], T]
) -> T:
    """Run ``work(working_copy, push)`` where the commit belongs.

    A local working copy is used in place (its branch must be ``branch``), and pushed to its
    ``origin`` when ``push``. Anything else is a remote: cloned fresh, and ``push`` is required
    (unless it is a dry run) since a commit in a temporary clone would be lost.
    """
    if is_working_copy(repo):
        wc = open_working_copy(repo, branch=branch)
        if wc.current_branch() != branch:
            raise Refused(
                f"{wc.path} has {wc.current_branch()!r} checked out, not {branch!r}",
                hint=f"git switch {branch} there, or pass --branch",
            )
        return work(wc, push)
    if not push and not dry_run:
        raise Refused(
            f"{repo} is a remote, not a working copy: without --push the commit would be lost",
            hint="pass --push (the default), --dry-run to preview, or --repo PATH of a local clone",
        )
    return with_fresh_clone(repo=repo, branch=branch, work=lambda wc: work(wc, push))


def with_fresh_clone(*, repo: str, branch: str, work: Callable[[WorkingCopy], T], attempts: int = 3) -> T:
    """Run ``work`` in a fresh clone; when its push conflicts (someone changed the same lines),
    run it again on the new head: the change is recomputed, so no one's commit is lost."""
    for attempt in range(1, attempts + 1):
        with temporary_clone(remote=repo, branch=branch) as wc:
            try:
                return work(wc)
            except PushConflict:
                if attempt == attempts:
                    raise
    raise AssertionError("unreachable")


def commit_change(
    wc: WorkingCopy, result: R, *, contents: Mapping[str, bytes | None], author: str | None, push: bool
) -> R:
    """Write ``contents`` (path relative to the repository root -> bytes, None to delete), commit
    exactly those paths with ``result.message``, push when ``push``; ``result`` with the commit id.

    Files with uncommitted changes are refused first: they would end up in our commit.
    """
    paths = list(contents)
    wc.ensure_unmodified(paths)
    for rel, data in contents.items():
        path = wc.path / rel
        if data is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)  # bytes: keep CRLF files as they are
    commit = wc.commit(message=result.message, paths=paths, author=author)
    if push:
        commit = wc.push()
    return replace(result, committed=commit, pushed=push)
