"""Where a manifests tree is read from: a directory, or a folder of a Git commit (no checkout).

Both readers refuse symlinks that point outside the tree, so a manifest cannot pull in
``/etc/passwd`` or a file of another project.
"""

from __future__ import annotations

import posixpath
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import git

EntryKind = Literal["file", "dir", "outside", "broken", "other"]


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    kind: EntryKind  # "outside": a symlink leaving the tree; "broken": a symlink to nothing
    size: int = 0
    target: str = ""  # where a symlink points, as written


class TreeReader(Protocol):
    def list(self, rel: str) -> list[Entry]:
        """Entries of the folder ``rel`` ("" for the root), sorted by name."""
        ...

    def read(self, rel: str) -> bytes:
        """The content of the file ``rel`` (symlinks inside the tree are followed)."""
        ...


class DirectoryReader:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def list(self, rel: str) -> list[Entry]:
        entries: list[Entry] = []
        for path in sorted((self.root / rel).iterdir(), key=lambda p: p.name):
            entries.append(self._entry(path))
        return entries

    def _entry(self, path: Path) -> Entry:
        target = ""
        if path.is_symlink():
            target = str(path.readlink())
            try:
                resolved = path.resolve()
            except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13)
                return Entry(path.name, "broken", target=target)
            if not resolved.is_relative_to(self.root):
                return Entry(path.name, "outside", target=target)
            if not resolved.exists():
                return Entry(path.name, "broken", target=target)
        if path.is_dir():
            return Entry(path.name, "dir", target=target)
        if path.is_file():
            return Entry(path.name, "file", size=path.stat().st_size, target=target)
        return Entry(path.name, "other", target=target)

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()


_SYMLINK_MODE = "120000"
_MAX_LINK_HOPS = 16


@dataclass(frozen=True, slots=True)
class _GitEntry:
    mode: str
    kind: str  # "blob", "tree" or "commit" (a submodule)
    sha: str
    size: int


class GitTreeReader:
    """Reads ``commit:subdir`` straight from the object database, no checkout: one ``ls-tree`` lists every
    entry with its size, one ``cat-file --batch`` fetches the blobs (gitpython's object-per-round-trip
    reading is ~3x slower on a few hundred files). Symlinks are resolved inside ``subdir`` only."""

    def __init__(self, repo: git.Repo, commit: git.Commit, subdir: str, *, max_blob_bytes: int) -> None:
        self.repo = repo
        self.subdir = subdir.strip("/")
        self.max_blob_bytes = max_blob_bytes
        self.entries: dict[str, _GitEntry] = {}
        self.children: dict[str, list[str]] = {}
        self.blobs: dict[str, bytes] = {}  # sha -> content, filled in one batch on first read
        treeish = f"{commit.hexsha}:{self.subdir}" if self.subdir else commit.hexsha
        try:
            listing = repo.git.ls_tree("-r", "-t", "-l", "-z", "--full-tree", treeish)
        except git.GitCommandError:
            self.root_ok = False  # no such folder in this commit
            return
        self.root_ok = True
        self.children[""] = []
        for record in filter(None, listing.split("\0")):
            meta, _, path = record.partition("\t")
            mode, kind, sha, size = meta.split()
            self.entries[path] = _GitEntry(mode, kind, sha, int(size) if size.isdigit() else 0)
            parent, _, name = path.rpartition("/")
            self.children.setdefault(parent, []).append(name)
            if kind == "tree":
                self.children.setdefault(path, [])
        links = [e.sha for e in self.entries.values() if e.mode == _SYMLINK_MODE]
        self._fetch(links)

    def _fetch(self, shas: list[str]) -> None:
        wanted = [sha for sha in dict.fromkeys(shas) if sha not in self.blobs]
        if not wanted:
            return
        out = subprocess.run(
            ["git", "--git-dir", str(self.repo.git_dir), "cat-file", "--batch"],
            input=("\n".join(wanted) + "\n").encode(), capture_output=True, check=True,
        ).stdout
        offset = 0
        for _ in wanted:
            header_end = out.index(b"\n", offset)
            sha, _kind, size = out[offset:header_end].split()
            start = header_end + 1
            self.blobs[sha.decode()] = out[start : start + int(size)]
            offset = start + int(size) + 1  # content is followed by a newline

    def _resolve(self, rel: str) -> tuple[EntryKind, _GitEntry | None, str]:
        """(kind, entry, path) after following symlinks hop by hop; each hop must stay inside the tree."""
        hops = 0
        while True:
            if rel in ("", "."):
                return "dir", None, ""
            entry = self.entries.get(rel)
            if entry is None:
                return "broken", None, rel
            if entry.mode != _SYMLINK_MODE:
                kind: EntryKind = {"tree": "dir", "blob": "file"}.get(entry.kind, "other")  # type: ignore[assignment]
                return kind, entry, rel
            hops += 1
            target = self.blobs[entry.sha].decode("utf-8", "replace")
            if hops > _MAX_LINK_HOPS:
                return "broken", None, rel
            if posixpath.isabs(target):
                return "outside", None, rel
            rel = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
            if rel == ".." or rel.startswith("../"):
                return "outside", None, rel

    def is_folder(self, rel: str) -> bool:
        return self.root_ok and self._resolve(rel)[0] == "dir"

    def list(self, rel: str) -> list[Entry]:
        kind, _, folder = self._resolve(rel)
        if kind != "dir":
            return []
        entries: list[Entry] = []
        for name in sorted(self.children.get(folder, [])):
            child = posixpath.join(rel, name) if rel else name
            own = self.entries[posixpath.join(folder, name) if folder else name]
            target = self.blobs[own.sha].decode("utf-8", "replace") if own.mode == _SYMLINK_MODE else ""
            kind, entry, _ = self._resolve(child)
            size = entry.size if kind == "file" and entry is not None else 0
            entries.append(Entry(name, kind, size=size, target=target))
        return entries

    def read(self, rel: str) -> bytes:
        kind, entry, _ = self._resolve(rel)
        if kind != "file" or entry is None:
            raise FileNotFoundError(rel)
        if entry.sha not in self.blobs:
            # first read: fetch every manifest-sized blob at once
            self._fetch([e.sha for path, e in self.entries.items()
                         if e.kind == "blob" and e.size <= self.max_blob_bytes and path.endswith((".yaml", ".yml"))]
                        + [entry.sha])
        return self.blobs[entry.sha]
