"""Rollback against a real bare Git repository: a new commit on top, history never rewritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.gitops.rollback import rollback
from reconciler.gitops.working_copy import parse_trailers
from shared.errors import Refused
from tests.drift.gitrepo import PROD_HELLO, commit_file, remote_file, remote_log, seed_bare_repo, sh

APP = "manifests/prod/apps/hello.yaml"


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    remote, work = seed_bare_repo(tmp_path)
    seed = sh("rev-parse", "HEAD", cwd=work).strip()
    v2 = commit_file(work, APP, PROD_HELLO.replace("hello:1.0.0", "hello:2.0.0"), "hello 2.0.0")
    v3 = commit_file(work, APP, PROD_HELLO.replace("hello:1.0.0", "hello:3.0.0"), "hello 3.0.0 (broken)")
    return remote, work, [seed, v2, v3]


def test_rollback_is_a_new_commit_restoring_the_old_manifest(history: tuple[Path, Path, list[str]]) -> None:
    remote, _, (seed, v2, v3) = history
    result = rollback(repo=str(remote), app="hello", env="prod", to_revision=v2[:10], reason="3.0.0 crashes")
    assert result.committed and result.pushed
    assert remote_file(remote, APP) == PROD_HELLO.replace("hello:1.0.0", "hello:2.0.0")
    assert remote_log(remote) == [
        f"rollback(hello): prod to {v2[:12]}",
        "hello 3.0.0 (broken)",
        "hello 2.0.0",
        "seed",
    ]
    # history kept: the broken revision is still there, as the parent
    assert sh("rev-parse", "main~1", cwd=remote).strip() == v3
    message = sh("log", "-1", "--format=%B", "main", cwd=remote)
    assert "3.0.0 crashes" in message
    trailers = parse_trailers(message)
    assert trailers["Rolled-Back-To"] == [v2] and trailers["Rolled-Back-From"] == [v3]
    assert trailers["Environment"] == ["prod"]
    assert [f.to_json() for f in result.files] == [{"path": APP, "action": "restore"}]
    assert sh("diff", "--name-only", "main~1", "main", cwd=remote).split() == [APP]


def test_dry_run_and_no_op(history: tuple[Path, Path, list[str]]) -> None:
    remote, _, (_, v2, v3) = history
    head = sh("rev-parse", "main", cwd=remote)
    dry = rollback(repo=str(remote), app="hello", env="prod", to_revision=v2, dry_run=True)
    assert (
        dry.committed is None
        and "-    image: demo/hello:3.0.0" in dry.diff
        and "+    image: demo/hello:2.0.0" in dry.diff
    )
    same = rollback(repo=str(remote), app="hello", env="prod", to_revision=v3)
    assert not same.changed and same.committed is None
    assert sh("rev-parse", "main", cwd=remote) == head


def test_only_applied_revisions_when_history_is_given(history: tuple[Path, Path, list[str]]) -> None:
    remote, _, (seed, v2, _) = history
    with pytest.raises(Refused, match=f"revision {v2[:8]} was never applied to prod"):
        rollback(repo=str(remote), app="hello", env="prod", to_revision=v2[:8], applied_revisions=[seed])
    ok = rollback(repo=str(remote), app="hello", env="prod", to_revision=seed[:8], applied_revisions=[seed])
    assert ok.committed and remote_file(remote, APP) == PROD_HELLO


def test_a_revision_that_left_the_app_as_applied_counts_as_applied(
    history: tuple[Path, Path, list[str]],
) -> None:
    remote, work, (seed, v2, v3) = history
    # a commit that touched only staging: the history of prod does not list it, but prod's hello
    # there is exactly what v3 applied
    other = commit_file(work, "manifests/staging/apps/extra.yaml", "# nothing\n", "staging only")
    v4 = commit_file(work, APP, PROD_HELLO.replace("hello:1.0.0", "hello:4.0.0"), "hello 4.0.0")
    with pytest.raises(Refused, match="never applied"):
        rollback(
            repo=str(remote), app="hello", env="prod", to_revision=other, applied_revisions=[seed, v2, v4]
        )
    rolled = rollback(
        repo=str(remote), app="hello", env="prod", to_revision=other, applied_revisions=[v3, v4]
    )
    assert rolled.committed and "hello:3.0.0" in remote_file(remote, APP)


def test_app_deleted_later_is_re_added(history: tuple[Path, Path, list[str]]) -> None:
    remote, work, (_, v2, _) = history
    sh("rm", "-q", APP, cwd=work)
    sh("commit", "-q", "-m", "remove hello", cwd=work)
    sh("push", "-q", "origin", "HEAD:main", cwd=work)
    result = rollback(repo=str(remote), app="hello", env="prod", to_revision=v2)
    assert [f.action for f in result.files] == ["add"]
    assert "hello:2.0.0" in remote_file(remote, APP)


def test_clear_refusals(history: tuple[Path, Path, list[str]]) -> None:
    remote, work, (seed, _, _) = history
    with pytest.raises(Refused, match="'nope' is not a commit"):
        rollback(repo=str(remote), app="hello", env="prod", to_revision="nope")
    with pytest.raises(Refused, match="application ghost did not exist in prod"):
        rollback(repo=str(remote), app="ghost", env="prod", to_revision=seed)
    with pytest.raises(Refused, match="without --push the commit would be lost"):
        rollback(repo=str(remote), app="hello", env="prod", to_revision=seed, push=False)
    # a working copy without push: the commit stays local
    result = rollback(repo=str(work), app="hello", env="prod", to_revision=seed, push=False)
    assert result.committed == sh("rev-parse", "HEAD", cwd=work).strip() and not result.pushed
    assert remote_log(remote)[0] == "hello 3.0.0 (broken)"
