"""Where a manifests tree is read from: a directory, or a folder of a Git commit (no checkout).

Both readers refuse symlinks that point outside the tree, so a manifest cannot pull in
``/etc/passwd`` or a file of another project.
"""

from __future__ import annotations

import posixpath
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
            resolved = path.resolve()
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


_SYMLINK_MODE = 0o120000
_MAX_LINK_HOPS = 16


class GitTreeReader:
    """Reads blobs straight from ``commit:subdir``; symlinks are resolved inside ``subdir`` only."""

    def __init__(self, commit: git.Commit, subdir: str) -> None:
        self.commit = commit
        self.subdir = subdir.strip("/")

    def _object(self, rel: str) -> git.Blob | git.Tree | None:
        full = posixpath.join(self.subdir, rel) if rel else self.subdir
        try:
            return self.commit.tree / full if full else self.commit.tree
        except KeyError:
            return None

    def _resolve(self, rel: str) -> tuple[EntryKind, git.Blob | git.Tree | None]:
        """Follow symlinks hop by hop; each hop must stay inside the tree."""
        obj = self._object(rel)
        hops = 0
        while obj is not None and obj.type == "blob" and obj.mode & 0o170000 == _SYMLINK_MODE:
            hops += 1
            if hops > _MAX_LINK_HOPS:
                return "broken", None
            target = obj.data_stream.read().decode("utf-8", "replace")
            if posixpath.isabs(target):
                return "outside", None
            rel = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
            if rel == ".." or rel.startswith("../"):
                return "outside", None
            obj = self._object("" if rel == "." else rel)
        if obj is None:
            return "broken", None
        if obj.type == "tree":
            return "dir", obj
        if obj.type == "blob":
            return "file", obj
        return "other", obj  # a submodule

    def is_folder(self, rel: str) -> bool:
        return self._resolve(rel)[0] == "dir"

    def list(self, rel: str) -> list[Entry]:
        kind, folder = self._resolve(rel)
        if kind != "dir" or folder is None:
            return []
        entries: list[Entry] = []
        for item in sorted(folder, key=lambda o: o.name):
            child = posixpath.join(rel, item.name) if rel else item.name
            target = ""
            if item.type == "blob" and item.mode & 0o170000 == _SYMLINK_MODE:
                target = item.data_stream.read().decode("utf-8", "replace")
            kind, obj = self._resolve(child)
            size = obj.size if kind == "file" and obj is not None else 0
            entries.append(Entry(item.name, kind, size=size, target=target))
        return entries

    def read(self, rel: str) -> bytes:
        kind, obj = self._resolve(rel)
        if kind != "file" or obj is None:
            raise FileNotFoundError(rel)
        return bytes(obj.data_stream.read())
