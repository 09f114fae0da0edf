"""The Git source: a bare mirror of one branch in the data directory, fetched on demand.

``fetch()`` clones on first use and fetches afterwards; it returns the branch head. Each Git
command is bounded (``DRIFTLESS_GIT_TIMEOUT`` seconds, default 120) and never prompts for
credentials. A local repository path can also be watched (watchdog on its refs), so a ``git push``
to it triggers a fetch at once, with no webhook and no polling delay; only writes count, and only
when the branch's value changed (our own fetch reads those refs: reading is no push).

``url`` is what is shown (logs, errors, the API): credentials in it are redacted
(:func:`shared.redact.redact_url`); the real one goes to Git alone.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git

from shared.redact import redact_text, redact_url
from shared.units import seconds_from_env

log = logging.getLogger("driftless.reconciler.git")



GIT_TIMEOUT = seconds_from_env("DRIFTLESS_GIT_TIMEOUT", 120.0)  # one fetch (clone included), seconds
WATCH_DEBOUNCE = 0.05  # a push writes a lock file, then renames it: look at the ref once it settled
# Git never waits for a password on a terminal nobody watches
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "GCM_INTERACTIVE": "never"}


class GitError(Exception):
    """Git could not be reached or the branch does not exist (transient: retried)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitInfo:
    revision: str
    message: str
    author: str
    committed_at: float


class GitSource:
    def __init__(self, *, url: str, branch: str, mirror: Path, timeout: float = GIT_TIMEOUT) -> None:
        local = Path(url).expanduser()
        self._remote = str(local.resolve()) if local.exists() else url  # what Git is given (credentials and all)
        self.url = redact_url(self._remote)  # what is shown
        self.local_path: Path | None = local.resolve() if local.exists() else None
        self._watch_dir: Path | None = None
        if self.local_path is not None:
            dot_git = self.local_path / ".git"
            self._watch_dir = dot_git if dot_git.is_dir() else self.local_path
        self.branch = branch
        self.mirror = mirror
        self.timeout = timeout
        self._lock = threading.Lock()
        self._observer: object | None = None
        self._watched: str | None = None  # the source's branch value the watcher last saw
        self._watch_timer: threading.Timer | None = None
        self._watch_lock = threading.Lock()

    def fetch(self) -> CommitInfo:
        """Clone or fetch; the head of the branch. Raises :class:`GitError` (credentials redacted),
        also when Git takes longer than ``timeout`` seconds."""
        with self._lock:
            started = time.monotonic()
            try:
                repo = self._repo()
                repo.git.fetch("origin", f"+refs/heads/{self.branch}:refs/heads/{self.branch}", "--prune",
                               kill_after_timeout=self.timeout, env={**os.environ, **GIT_ENV})
                commit = repo.commit(f"refs/heads/{self.branch}")
            except (git.GitCommandError, git.BadName, ValueError) as exc:
                detail = getattr(exc, "stderr", "") or str(exc)
                if isinstance(exc, git.GitCommandError) and time.monotonic() - started >= self.timeout:
                    detail = f"git fetch did not finish within {self.timeout:g}s (DRIFTLESS_GIT_TIMEOUT)"
                raise GitError(redact_text(f"cannot fetch branch {self.branch!r} from {self.url}: "
                                           f"{detail.strip()}")) from None
            return self.info(commit)

    def export(self, revision: str, subdir: str, dest: Path) -> Path:
        """Extract ``subdir`` of ``revision`` into ``dest``; the folder it lands in.

        Raises :class:`GitError`, or ``tarfile.TarError`` when the tree holds links (the caller
        then reads it blob by blob, which judges links properly)."""
        paths = [] if subdir in ("", ".") else [subdir]
        try:
            proc = subprocess.run(["git", "--git-dir", str(self.mirror), "archive", "--format=tar", revision, *paths],
                                  capture_output=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise GitError(f"git archive {revision[:12]} did not finish within {self.timeout:g}s") from exc
        if proc.returncode != 0:
            stderr = proc.stderr.decode(errors="replace").strip()
            if "did not match" in stderr:
                return dest / subdir  # missing folder: the loader says so, with a clear problem
            raise GitError(f"git archive {revision[:12]} failed: {stderr}")
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as archive:
            if any(m.issym() or m.islnk() for m in archive.getmembers()):
                raise tarfile.TarError("the tree holds links")
            archive.extractall(dest, filter="data")
        return dest / subdir if paths else dest

    def verify_signature(self, revision: str, *, allowed_signers: Path) -> str | None:
        """None when ``revision`` carries a valid SSH signature by a key of ``allowed_signers``
        (git's allowed-signers format), else why not."""
        proc = subprocess.run(
            ["git", "--git-dir", str(self.mirror), "-c", f"gpg.ssh.allowedSignersFile={allowed_signers}",
             "verify-commit", revision],
            capture_output=True, text=True, timeout=60,
        )
        if proc.returncode == 0:
            return None
        detail = (proc.stderr.strip().splitlines() or ["no signature"])[-1]
        return detail

    def folder_ids(self, revision: str, subdir: str) -> dict[str, str]:
        """The folders of ``subdir`` at ``revision``, each with its Git tree id: two revisions with the
        same id for a folder have the same content there (what tells an environment changed). {} when
        ``subdir`` is not there."""
        spec = revision if subdir in ("", ".") else f"{revision}:{subdir}"
        proc = subprocess.run(["git", "--git-dir", str(self.mirror), "ls-tree", spec],
                              capture_output=True, text=True, timeout=self.timeout)
        if proc.returncode != 0:
            return {}
        out = {}
        for line in proc.stdout.splitlines():
            meta, _, name = line.partition("\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == "tree":
                out[name] = parts[2]
        return out

    def commit_info(self, revision: str) -> CommitInfo:
        with self._lock:
            return self.info(self._repo().commit(revision))

    @staticmethod
    def info(commit: git.Commit) -> CommitInfo:
        message = commit.message if isinstance(commit.message, str) else commit.message.decode(errors="replace")
        return CommitInfo(
            revision=commit.hexsha,
            message=message.strip().splitlines()[0] if message.strip() else "",
            author=f"{commit.author.name} <{commit.author.email}>",
            committed_at=float(commit.committed_date),
        )

    def _repo(self) -> git.Repo:
        if (self.mirror / "HEAD").exists():
            return git.Repo(self.mirror)
        self.mirror.parent.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(self.mirror, bare=True)
        repo.create_remote("origin", self._remote)
        return repo

    def watch(self, on_change: Callable[[], None]) -> bool:
        """Call ``on_change`` (from a watchdog thread) when the local repository's branch moves.

        Only writes to refs count (created, modified, moved, deleted, closed after writing): a fetch
        of ours opens and reads the refs, which must not look like a push. Writes are debounced and
        the branch's value compared with the last one seen, so other refs (tags, other branches) and
        rewrites to the same value do not trigger a fetch either."""
        if self.local_path is None:
            return False
        from watchdog.events import (
            EVENT_TYPE_CLOSED,
            EVENT_TYPE_CREATED,
            EVENT_TYPE_DELETED,
            EVENT_TYPE_MODIFIED,
            EVENT_TYPE_MOVED,
            FileSystemEvent,
            FileSystemEventHandler,
        )
        from watchdog.observers import Observer

        writes = {EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED, EVENT_TYPE_CLOSED}
        source = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in writes:
                    return  # opened, closed without writing: someone read (our own fetch does)
                path = str(event.src_path) + " " + str(getattr(event, "dest_path", "") or "")
                if "refs" in path or "packed-refs" in path or path.rstrip().endswith("HEAD"):
                    source._ref_written(on_change)

        git_dir = self._watch_dir or self.local_path
        self._watched = self._source_head()
        observer = Observer()
        observer.daemon = True
        handler = Handler()
        # refs/ (loose refs) and the git dir itself (packed-refs), not objects/: a push writes many objects
        observer.schedule(handler, str(git_dir), recursive=False)
        if (git_dir / "refs").is_dir():
            observer.schedule(handler, str(git_dir / "refs"), recursive=True)
        observer.start()
        self._observer = observer
        log.info("watching %s for pushes", self.local_path)
        return True

    def _ref_written(self, on_change: Callable[[], None]) -> None:
        """A ref was written: look at the branch once the writes settle (one timer for a burst)."""
        with self._watch_lock:
            if self._watch_timer is not None:
                self._watch_timer.cancel()
            timer = threading.Timer(WATCH_DEBOUNCE, self._check_source, args=(on_change,))
            timer.daemon = True
            self._watch_timer = timer
            timer.start()

    def _check_source(self, on_change: Callable[[], None]) -> None:
        head = self._source_head()
        with self._watch_lock:
            if head == self._watched:
                return
            self._watched = head
        log.debug("event=source-moved branch=%s head=%s", self.branch, head)
        on_change()

    def _source_head(self) -> str | None:
        """The source repository's branch value (None: no such branch yet, or unreadable)."""
        if self._watch_dir is None:
            return None
        try:
            proc = subprocess.run(["git", "--git-dir", str(self._watch_dir), "rev-parse", "--verify", "-q",
                                   f"refs/heads/{self.branch}"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() or None

    def close(self) -> None:
        with self._watch_lock:
            if self._watch_timer is not None:
                self._watch_timer.cancel()
        observer = self._observer
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            observer.join(5)  # type: ignore[attr-defined]
            self._observer = None
