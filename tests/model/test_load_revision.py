"""load_revision reads a tree straight from a Git commit (bare repositories too), no checkout."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from model import RevisionNotFound, load_revision, load_tree
from tests.model.conftest import EXAMPLE_MANIFESTS


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A clone with the example manifests committed and pushed to a bare repository (tmp_path/remote.git)."""
    git(tmp_path, "init", "-q", "--bare", "remote.git")
    git(tmp_path, "clone", "-q", str(tmp_path / "remote.git"), "work")
    work = tmp_path / "work"
    shutil.copytree(EXAMPLE_MANIFESTS, work / "manifests")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "examples")
    git(work, "push", "-q", "origin", "HEAD:main")
    return work


def test_revision_loads_like_the_directory(work: Path, tmp_path: Path) -> None:
    sha = git(work, "rev-parse", "HEAD")
    from_git = load_revision(tmp_path / "remote.git", "main")
    from_dir = load_tree(EXAMPLE_MANIFESTS)
    assert from_git.revision == sha
    assert from_git.problems == []
    assert from_git.environments == from_dir.environments
    assert from_git.applications == from_dir.applications
    assert from_git.locations == from_dir.locations


def test_each_revision_is_read_as_committed(work: Path, tmp_path: Path) -> None:
    first = git(work, "rev-parse", "HEAD")
    hello = work / "manifests" / "dev" / "apps" / "hello.yaml"
    hello.write_text(hello.read_text().replace("Hello from dev", "Howdy"))
    (work / "manifests" / "dev" / "apps" / "broken.yaml").write_text("kind: [\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "change")
    git(work, "push", "-q", "origin", "HEAD:main")
    second = git(work, "rev-parse", "HEAD")
    # uncommitted edits in the working tree are not seen
    hello.write_text("garbage: [")

    old = load_revision(tmp_path / "remote.git", first)
    new = load_revision(work, "HEAD")
    assert old.revision == first and new.revision == second
    assert old.ok and old.applications["dev"]["hello"].components[0].config["GREETING"] == "Hello from dev"
    assert new.applications["dev"]["hello"].components[0].config["GREETING"] == "Howdy"
    assert [(p.file, p.line, p.code) for p in new.errors] == [("dev/apps/broken.yaml", 2, "yaml-syntax")]


def test_symlinks_in_a_commit_stay_inside_the_tree(work: Path) -> None:
    apps = work / "manifests" / "dev" / "apps"
    (apps / "passwd.yaml").symlink_to("/etc/passwd")
    (apps / "up.yaml").symlink_to("../../../outside.yaml")
    (work / "outside.yaml").write_text("kind: Application\n")
    (apps / "copy.yaml").symlink_to("../../staging/apps/greeter.yaml")
    (apps / "ping.yaml").symlink_to("pong.yaml")
    (apps / "pong.yaml").symlink_to("ping.yaml")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "links")
    tree = load_revision(work, "HEAD")
    assert sorted((p.file, p.code) for p in tree.problems) == [
        # followed: copy.yaml (read first) is a second 'greeter' in dev, claiming /dev/greet too
        ("dev/apps/greeter.yaml", "duplicate-name"),
        ("dev/apps/greeter.yaml", "route-collision"),
        ("dev/apps/passwd.yaml", "symlink-outside"),
        ("dev/apps/ping.yaml", "broken-symlink"),
        ("dev/apps/pong.yaml", "broken-symlink"),
        ("dev/apps/up.yaml", "symlink-outside"),
    ]


def test_missing_revision_repository_or_folder(work: Path, tmp_path: Path) -> None:
    with pytest.raises(RevisionNotFound, match="no-such-branch"):
        load_revision(work, "no-such-branch")
    with pytest.raises(RevisionNotFound, match="not a Git repository"):
        load_revision(tmp_path / "nothing-here", "HEAD")
    tree = load_revision(work, "HEAD", subdir="deploy")
    assert [p.code for p in tree.problems] == ["not-found"] and tree.revision == git(work, "rev-parse", "HEAD")
    assert set(load_revision(work, "HEAD", subdir="manifests/dev").environments) == set()


def test_size_limit_applies_to_blobs(work: Path) -> None:
    tree = load_revision(work, "HEAD", max_file_bytes=100)
    assert tree.problems and all(p.code in ("too-large", "empty-tree") for p in tree.problems)


def test_no_git_processes_are_left_behind(work: Path) -> None:
    import os

    for _ in range(5):
        assert load_revision(work, "HEAD").ok
    children = subprocess.run(["ps", "-o", "args=", "--ppid", str(os.getpid())], capture_output=True, text=True)
    assert "cat-file" not in children.stdout


def test_tree_at_the_repository_root(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "flat")
    flat = tmp_path / "flat"
    shutil.copytree(EXAMPLE_MANIFESTS, flat, dirs_exist_ok=True)
    (flat / "README.md").write_text("manifests at the top\n")
    git(flat, "add", "-A")
    git(flat, "commit", "-q", "-m", "flat")
    tree = load_revision(flat, "HEAD", subdir="")
    assert tree.ok and set(tree.environments) == {"dev", "staging", "prod"}
    assert tree.applications == load_tree(EXAMPLE_MANIFESTS).applications
