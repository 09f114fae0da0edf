"""The Git source: a bare mirror of one branch in the data directory, fetched on demand.

``fetch()`` clones on first use and fetches afterwards; it returns the branch head. A local
repository path can also be watched (watchdog on its refs), so a ``git push`` to it triggers a
fetch at once, with no webhook and no polling delay.
"""

from __future__ import annotations

import io
import logging
import subprocess
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git

log = logging.getLogger("driftless.reconciler.git")


class GitError(Exception):
    """Git could not be reached or the branch does not exist (transient: retried)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitInfo:
    revision: str
    message: str
    author: str
    committed_at: float


class GitSource:
    def __init__(self, *, url: str, branch: str, mirror: Path) -> None:
        local = Path(url).expanduser()
        self.url = str(local.resolve()) if local.exists() else url
        self.local_path: Path | None = local.resolve() if local.exists() else None
        self.branch = branch
        self.mirror = mirror
        self._lock = threading.Lock()
        self._observer: object | None = None

    def fetch(self) -> CommitInfo:
        """Clone or fetch; the head of the branch. Raises :class:`GitError`."""
        with self._lock:
            try:
                repo = self._repo()
                repo.git.fetch("origin", f"+refs/heads/{self.branch}:refs/heads/{self.branch}", "--prune")
                commit = repo.commit(f"refs/heads/{self.branch}")
            except (git.GitCommandError, git.BadName, ValueError) as exc:
                detail = getattr(exc, "stderr", "") or str(exc)
                raise GitError(f"cannot fetch branch {self.branch!r} from {self.url}: {detail.strip()}") from exc
            return self.info(commit)

    def export(self, revision: str, subdir: str, dest: Path) -> Path:
        """Extract ``subdir`` of ``revision`` into ``dest``; the folder it lands in.

        Raises :class:`GitError`, or ``tarfile.TarError`` when the tree holds links (the caller
        then reads it blob by blob, which judges links properly)."""
        paths = [] if subdir in ("", ".") else [subdir]
        proc = subprocess.run(["git", "--git-dir", str(self.mirror), "archive", "--format=tar", revision, *paths],
                              capture_output=True, timeout=120)
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
        repo.create_remote("origin", self.url)
        return repo

    def watch(self, on_change: Callable[[], None]) -> bool:
        """Call ``on_change`` (from a watchdog thread) when the local repository's refs change."""
        if self.local_path is None:
            return False
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                path = str(event.src_path) + " " + str(getattr(event, "dest_path", "") or "")
                if "refs" in path or "packed-refs" in path or path.rstrip().endswith("HEAD"):
                    on_change()

        git_dir = self.local_path / ".git" if (self.local_path / ".git").is_dir() else self.local_path
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

    def close(self) -> None:
        observer = self._observer
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            observer.join(5)  # type: ignore[attr-defined]
            self._observer = None
