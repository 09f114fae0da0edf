"""Load a manifests tree (``<env>/environment.yaml``, ``<env>/apps/*.yaml``) into a ManifestTree.

Every problem is collected, none stops the load: a broken file is reported and skipped, the rest is
still read and checked, so one run shows everything there is to fix.
"""

from __future__ import annotations

from pathlib import Path

import git

from model import convert
from model.schema_check import check_header, check_schema
from model.semantic import (
    AppRecord,
    EnvRecord,
    check_applications,
    check_environments,
    check_raw_images,
    check_routes,
)
from model.sources import DirectoryReader, Entry, GitTreeReader, TreeReader
from model.types import ManifestTree, Problem
from model.yamldoc import Document, format_path, parse_documents
from shared.errors import DriftlessError

DEFAULT_MAX_FILE_BYTES = 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")
ENVIRONMENT_FILES = ("environment.yaml", "environment.yml")


class RevisionNotFound(DriftlessError):
    """The Git revision (or repository) to load does not exist."""


def load_tree(root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> ManifestTree:
    """Load and check the tree in the directory ``root``. Problem files are relative to ``root``."""
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        return ManifestTree(problems=[_folder_problem(".", f"{root} {what}: give the folder that holds one "
                                                           "folder per environment (e.g. manifests)",
                                                      code="not-found")])
    return _load(DirectoryReader(root), max_file_bytes=max_file_bytes)


def load_revision(
    repo_path: Path, revision: str, *, subdir: str = "manifests", max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> ManifestTree:
    """Load and check ``subdir`` of ``revision`` in the Git repository ``repo_path`` (bare or not), without
    a checkout. ``tree.revision`` is the full commit sha. Raise :class:`RevisionNotFound` when the
    repository or revision does not exist; problems of the tree itself are in ``tree.problems``."""
    try:
        repo = git.Repo(repo_path)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError) as exc:
        raise RevisionNotFound(f"{repo_path} is not a Git repository", hint=str(exc) or None) from exc
    with repo:  # closes gitpython's persistent `git cat-file` processes: the reconciler calls this for ever
        try:
            commit = repo.commit(revision)
        except (git.BadName, ValueError, git.BadObject) as exc:
            raise RevisionNotFound(f"revision {revision!r} not found in {repo_path}") from exc
        reader = GitTreeReader(repo, commit, subdir, max_blob_bytes=max_file_bytes)
        if not reader.is_folder(""):
            tree = ManifestTree(problems=[_folder_problem(
                subdir or ".", f"commit {commit.hexsha[:12]} has no folder '{subdir}'", code="not-found")])
        else:
            tree = _load(reader, max_file_bytes=max_file_bytes)
        tree.revision = commit.hexsha
    return tree


def check_file(path: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[Problem]:
    """Problems of one manifest file on its own, outside a tree: YAML, schema, and the checks that need
    no other file (names, images, placement, links, routes within the file). Problem files are the
    file's name. Checks that need the tree (registries allowed, promotion sources, layout) are skipped."""
    path = Path(path)
    loader = _TreeLoader(DirectoryReader(path.parent), max_file_bytes=max_file_bytes)
    try:
        entry = Entry(path.name, "file", size=path.stat().st_size)
    except OSError as exc:
        return [_folder_problem(path.name, f"{path} could not be read: {exc.strerror or exc}", code="unreadable")]
    records: list[AppRecord] = []
    for doc in loader._documents(path.name, entry):
        kind = loader._checked_kind(doc)
        if kind is None or not loader._schema_ok(doc, kind):
            if kind == "Application":
                loader.problems.extend(check_raw_images(None, doc))
            continue
        if kind == "Application":
            app = convert.to_application(doc.data, env="", source=doc.file)
            paths = tuple(("spec", "components", i) for i in range(len(app.components)))
            records.append(AppRecord(app=app, doc=doc, component_paths=paths))
    loader.problems.extend(check_applications(None, records))
    loader.problems.extend(check_routes({}, {"": records}))
    return sorted(loader.problems, key=lambda p: (p.line, p.column, p.level, p.message))


def _load(reader: TreeReader, *, max_file_bytes: int) -> ManifestTree:
    loader = _TreeLoader(reader, max_file_bytes=max_file_bytes)
    return loader.run()


class _TreeLoader:
    def __init__(self, reader: TreeReader, *, max_file_bytes: int) -> None:
        self.reader = reader
        self.max_file_bytes = max_file_bytes
        self.problems: list[Problem] = []
        self.envs: dict[str, EnvRecord] = {}  # folder -> record
        self.apps: dict[str, list[AppRecord]] = {}  # folder -> records
        self.env_folders: list[str] = []

    def run(self) -> ManifestTree:
        top_dirs: set[str] = set()
        top_entries = self._list("")
        for entry in top_entries:
            if entry.name.startswith("."):
                continue  # .git, .github, editor files
            if entry.kind == "dir":
                top_dirs.add(entry.name)
                self._env_folder(entry.name)
            elif entry.kind in ("outside", "broken"):
                self._bad_link(entry.name, entry)
        if not self.env_folders:
            hint = ""
            if "manifests" in top_dirs:
                hint = "; did you mean the manifests/ folder inside it?"
            elif any(e.name in ENVIRONMENT_FILES for e in top_entries):
                hint = "; this looks like one environment's folder: give the folder above it"
            self.problems.append(_folder_problem(".", "no environment folders found: expected "
                                                      f"<env>/environment.yaml (e.g. dev/environment.yaml){hint}",
                                                 code="empty-tree"))
        self._semantic_checks()
        tree = ManifestTree()
        tree.environments = {folder: r.env for folder, r in sorted(self.envs.items())}
        for folder, records in sorted(self.apps.items()):
            apps = tree.applications.setdefault(folder, {})
            for record in records:  # file order; the first of duplicate names wins (the others are errors)
                apps.setdefault(record.app.name, record.app)
        for folder in self.env_folders:
            tree.applications.setdefault(folder, {})
        for folder, env_record in self.envs.items():
            _record_locations(tree.locations, folder, env_record.doc)
        for folder, records in self.apps.items():
            for record in reversed(records):  # the first of duplicate names is the one kept
                _record_locations(tree.locations, f"{folder}/{record.app.name}", record.doc)
        tree.problems = sorted(self.problems, key=lambda p: (p.file, p.line, p.column, p.level, p.message))
        return tree

    def _env_folder(self, folder: str) -> None:
        entries = {e.name: e for e in self._list(folder)}
        env_file = next((entries[n] for n in ENVIRONMENT_FILES if n in entries), None)
        apps_dir = entries.get("apps")
        if env_file is None:
            if apps_dir is not None:
                self.problems.append(_folder_problem(
                    folder, f"folder '{folder}' has apps/ but no environment.yaml: add {folder}/environment.yaml "
                            f"with kind: Environment and metadata.name: {folder}", code="missing-environment"))
                self.env_folders.append(folder)
                self.apps[folder] = []
                self._apps_folder(folder, apps_dir)
            return
        self.env_folders.append(folder)
        self.apps[folder] = []
        for name, entry in entries.items():
            rel = f"{folder}/{name}"
            if name.startswith(".") or entry is env_file or entry is apps_dir:
                continue
            if entry.kind in ("outside", "broken"):
                self._bad_link(rel, entry)
            elif name.endswith(YAML_SUFFIXES):
                self.problems.append(_folder_problem(rel, f"{rel} is not read: only environment.yaml and "
                                                          "apps/*.yaml are; move applications into apps/",
                                                     code="not-read", level="warning", line=1))
        self._environment_file(folder, f"{folder}/{env_file.name}", env_file)
        if apps_dir is not None:
            self._apps_folder(folder, apps_dir)

    def _apps_folder(self, folder: str, apps_dir: Entry) -> None:
        rel_dir = f"{folder}/apps"
        if apps_dir.kind in ("outside", "broken"):
            self._bad_link(rel_dir, apps_dir)
            return
        if apps_dir.kind != "dir":
            self.problems.append(_folder_problem(rel_dir, f"{rel_dir} must be a folder of YAML files",
                                                 code="not-read"))
            return
        for entry in self._list(rel_dir):
            rel = f"{rel_dir}/{entry.name}"
            if entry.name.startswith("."):
                continue  # .gitkeep and friends
            if entry.kind in ("outside", "broken"):
                self._bad_link(rel, entry)
            elif entry.kind == "dir":
                self.problems.append(_folder_problem(rel, f"folder {rel} is not read: put application files "
                                                          f"directly in {rel_dir}/", code="not-read",
                                                     level="warning"))
            elif entry.kind != "file" or not entry.name.endswith(YAML_SUFFIXES):
                self.problems.append(_folder_problem(rel, f"{rel} is not read: application files end in .yaml "
                                                          "or .yml", code="not-read", level="warning", line=1))
            else:
                for doc in self._documents(rel, entry):
                    self._application_doc(folder, doc)

    def _list(self, rel: str) -> list[Entry]:
        try:
            return self.reader.list(rel)
        except OSError as exc:
            self.problems.append(_folder_problem(rel or ".", f"folder {rel or '.'} could not be read: "
                                                             f"{exc.strerror or exc}", code="unreadable"))
            return []

    def _environment_file(self, folder: str, rel: str, entry: Entry) -> None:
        if entry.kind in ("outside", "broken"):
            self._bad_link(rel, entry)
            return
        if entry.kind != "file":
            self.problems.append(_folder_problem(rel, f"{rel} must be a YAML file", code="not-read"))
            return
        for doc in self._documents(rel, entry):
            kind = self._checked_kind(doc)
            if kind is None:
                continue
            if kind == "Application":
                self.problems.append(doc.problem(("kind",), f"an Application belongs in {folder}/apps/, not in "
                                                            f"{rel}; move it to {folder}/apps/<name>.yaml",
                                                 code="misplaced-kind"))
                continue
            if not self._schema_ok(doc, kind):
                continue
            env = convert.to_environment(doc.data, source=rel)
            if folder in self.envs:
                first = self.envs[folder].doc
                self.problems.append(doc.problem(("metadata", "name"), f"{rel} defines a second Environment "
                                                                       f"(the first is at line {first.start[0]}); "
                                                                       "one environment per folder",
                                                 code="duplicate-name"))
                continue
            self.envs[folder] = EnvRecord(env=env, doc=doc, folder=folder)

    def _application_doc(self, folder: str, doc: Document) -> None:
        kind = self._checked_kind(doc)
        if kind is None:
            return
        if kind == "Environment":
            self.problems.append(doc.problem(("kind",), f"an Environment belongs in {folder}/environment.yaml, "
                                                        "not in apps/", code="misplaced-kind"))
            return
        if not self._schema_ok(doc, kind):
            env = self.envs.get(folder)
            self.problems.extend(check_raw_images(env.env if env else None, doc))
            return
        app = convert.to_application(doc.data, env=folder, source=doc.file)
        paths = tuple(("spec", "components", i) for i in range(len(app.components)))
        self.apps[folder].append(AppRecord(app=app, doc=doc, component_paths=paths))

    def _checked_kind(self, doc: Document) -> str | None:
        kind, problems = check_header(doc)
        self.problems.extend(problems)
        return kind if not any(p.level == "error" for p in problems) else None

    def _schema_ok(self, doc: Document, kind: str) -> bool:
        problems = check_schema(doc, kind)
        self.problems.extend(problems)
        return not problems

    def _documents(self, rel: str, entry: Entry) -> list[Document]:
        if entry.size > self.max_file_bytes:
            self.problems.append(_folder_problem(rel, f"{rel} is {entry.size} bytes, over the limit of "
                                                      f"{self.max_file_bytes}: split it into smaller files",
                                                 code="too-large", line=1))
            return []
        try:
            raw = self.reader.read(rel)
        except OSError as exc:
            self.problems.append(_folder_problem(rel, f"{rel} could not be read: {exc.strerror or exc}",
                                                 code="unreadable", line=1))
            return []
        if len(raw) > self.max_file_bytes:  # grew since it was listed
            self.problems.append(_folder_problem(rel, f"{rel} is over the limit of {self.max_file_bytes} bytes",
                                                 code="too-large", line=1))
            return []
        text = _decode(raw)
        if text is None:
            self.problems.append(_folder_problem(rel, f"{rel} is a binary file, not UTF-8 YAML text: remove it "
                                                      "or replace it with a YAML manifest", code="binary-file",
                                                 line=1))
            return []
        docs, problems = parse_documents(text, file=rel)
        self.problems.extend(problems)
        if not docs and not problems:
            self.problems.append(_folder_problem(rel, f"{rel} has no manifests (empty or only comments); it is "
                                                      "ignored", code="empty-file", level="warning", line=1))
        return docs

    def _bad_link(self, rel: str, entry: Entry) -> None:
        if entry.kind == "outside":
            message = (f"{rel} is a symlink to {entry.target!r}, outside the manifests tree: refused; copy the "
                       "file into the tree instead")
            self.problems.append(_folder_problem(rel, message, code="symlink-outside"))
        else:
            self.problems.append(_folder_problem(rel, f"{rel} is a symlink to {entry.target!r}, which does not "
                                                      "exist or loops back to itself", code="broken-symlink"))

    def _semantic_checks(self) -> None:
        self.problems.extend(check_environments(self.envs.values(), folders=self.env_folders))
        envs = {folder: record.env for folder, record in self.envs.items()}
        for folder, records in self.apps.items():
            self.problems.extend(check_applications(envs.get(folder), records))
        self.problems.extend(check_routes(envs, self.apps))


def _record_locations(locations: dict[str, tuple[str, int, int]], prefix: str, doc: Document) -> None:
    locations[f"{prefix}:"] = (doc.file, *doc.start)
    for path, (line, column) in doc.values.items():
        locations[f"{prefix}:{format_path(path)}"] = (doc.file, line, column)


def _decode(raw: bytes) -> str | None:
    if b"\0" in raw[:8192]:
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _folder_problem(rel: str, message: str, *, code: str, level: str = "error", line: int = 0) -> Problem:
    """A problem about a file or folder as a whole (line 0: not about one line)."""
    return Problem(level=level, file=rel, line=line, column=0 if line == 0 else 1, path="",  # type: ignore[arg-type]
                   message=message, code=code)
