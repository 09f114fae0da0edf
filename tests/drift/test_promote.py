"""Promotion against a real bare Git repository: gates, byte-exact rewriting, trailers, races, dry runs."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from reconciler.gitops.promote import PromotionRefused, parse_duration, promote
from reconciler.gitops.working_copy import clone, parse_trailers
from shared.errors import DriftlessError, Refused
from tests.drift.gitrepo import PROD_HELLO, remote_file, remote_log, seed_bare_repo, sh

WEB = "sha256:" + "a" * 64
GREETER = "sha256:" + "b" * 64
API = "sha256:" + "c" * 64
NOW = 2_000_000.0
REV = "f" * 40


def status(
    *, sync: str = "Synced", health: str = "Healthy", healthy_for: float = 3600, **digests: str
) -> dict[str, Any]:
    digests = digests or {"web": WEB, "greeter": GREETER}
    images = {"web": "127.0.0.1:5000/demo/hello", "greeter": "127.0.0.1:5000/demo/greeter", "api": "demo/api"}
    return {
        "env": "staging",
        "app": "hello",
        "revision": REV,
        "sync": sync,
        "health": health,
        "healthySince": NOW - healthy_for if health == "Healthy" else None,
        "components": [
            {"name": n, "image": f"{images[n]}@{d}", "digest": d, "desired": 2, "ready": 2}
            for n, d in digests.items()
        ],
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    remote, _ = seed_bare_repo(tmp_path)
    return remote


def run(remote: Path, **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        repo=str(remote),
        app="hello",
        from_env="staging",
        to_env="prod",
        source_status=status(),
        approver="alice",
        now=NOW,
    )
    args.update(kw)
    return promote(**args)


def test_promotion_rewrites_only_the_images_and_pushes_a_commit_with_trailers(repo: Path) -> None:
    before = remote_log(repo)
    result = run(repo)
    assert result.committed and result.pushed and result.changed
    assert [c.component for c in result.changes] == ["web", "greeter"]
    # byte-level: exactly the two image values changed, comments, quotes, flow style and order kept
    expected = PROD_HELLO.replace("image: demo/hello:1.0.0", f"image: demo/hello@{WEB}").replace(
        '"127.0.0.1:5000/demo/greeter:1.0.0"', f'"127.0.0.1:5000/demo/greeter@{GREETER}"'
    )
    assert remote_file(repo, "manifests/prod/apps/hello.yaml") == expected
    # nothing else in the tree changed
    changed = sh("diff", "--name-only", "main~1", "main", cwd=repo).split()
    assert changed == ["manifests/prod/apps/hello.yaml"]
    log = remote_log(repo)
    assert log == ["promote(hello): staging -> prod", *before]
    message = sh("log", "-1", "--format=%B", "main", cwd=repo)
    trailers = parse_trailers(message)
    assert trailers["Promoted-From"] == [f"staging@{REV}"]
    assert trailers["Promoted-Digest"] == [f"web={WEB}", f"greeter={GREETER}"]
    assert trailers["Approved-By"] == ["alice"]
    assert result.committed == sh("rev-parse", "main", cwd=repo).strip()
    assert result.to_json()["commit"] == result.committed


def test_dry_run_shows_the_diff_and_commits_nothing(repo: Path) -> None:
    head = sh("rev-parse", "main", cwd=repo)
    result = run(repo, dry_run=True)
    assert result.committed is None and not result.pushed
    assert f"+    image: demo/hello@{WEB}   # bumped by promotion" in result.diff
    assert "-    image: demo/hello:1.0.0   # bumped by promotion" in result.diff
    assert result.diff.startswith(
        "--- a/manifests/prod/apps/hello.yaml\n+++ b/manifests/prod/apps/hello.yaml\n"
    )
    assert "Approved-By: alice" in result.message
    assert sh("rev-parse", "main", cwd=repo) == head


def test_promoting_the_same_digests_again_changes_nothing(repo: Path) -> None:
    first = run(repo)
    head = sh("rev-parse", "main", cwd=repo)
    second = run(repo)
    assert first.changed and not second.changed and second.committed is None
    assert sh("rev-parse", "main", cwd=repo) == head


@pytest.mark.parametrize(
    ("kw", "gate", "words"),
    [
        ({"source_status": status(sync="OutOfSync")}, "synced", "OutOfSync, not Synced"),
        ({"source_status": status(health="Degraded")}, "healthy", "Degraded, not Healthy"),
        ({"source_status": status(healthy_for=10)}, "min-soak", "healthy for 10s of the 30s minSoak"),
        ({"approver": None}, "approval", "requires an approval"),
        ({"source_status": status(web=WEB)}, "components", "no digest for component(s) greeter"),
        ({"from_env": "dev"}, "promotion-from", "prod promotes from staging, not from dev"),
        ({"to_env": "staging", "from_env": "prod"}, "promotion-from", "staging has no promotion block"),
    ],
)
def test_refusals_name_the_failed_gate_and_change_nothing(
    repo: Path, kw: dict[str, Any], gate: str, words: str
) -> None:
    head = sh("rev-parse", "main", cwd=repo)
    with pytest.raises(PromotionRefused) as info:
        run(repo, **kw)
    failed = [g.name for g in info.value.gates if not g.passed]
    assert gate in failed
    assert words in str(info.value)
    assert info.value.hint
    assert info.value.to_json()["gates"]
    assert sh("rev-parse", "main", cwd=repo) == head


def test_drift_in_the_source_blocks_promotion(repo: Path) -> None:
    drifting = [
        {"category": "VersionMismatch", "env": "staging", "app": "hello", "instance": "staging/hello/web/1"},
        {"category": "Unexpected", "env": "staging", "app": "other", "instance": "x"},  # another app: ignored
        {"category": "TagMoved", "env": "staging", "app": "hello", "component": "web"},  # not about what runs
    ]
    with pytest.raises(
        PromotionRefused, match="hello in staging drifts: VersionMismatch staging/hello/web/1"
    ) as info:
        run(repo, source_drift=drifting)
    assert [g.name for g in info.value.gates if not g.passed] == ["no-drift"]
    ok = run(repo, source_drift=drifting[1:], dry_run=True)
    assert [g.name for g in ok.gates][-1] == "no-drift" and all(g.passed for g in ok.gates)


def test_refusal_when_the_source_runs_another_repository(repo: Path) -> None:
    st = status()
    st["components"][0]["image"] = f"127.0.0.1:5000/demo/other@{WEB}"
    with pytest.raises(
        PromotionRefused, match="component web runs demo/other in staging but prod declares demo/hello"
    ):
        run(repo, source_status=st)


def test_unknown_app_and_env_are_clear_errors(repo: Path) -> None:
    with pytest.raises(Refused, match="application nope not found in manifests/prod/apps/"):
        run(repo, app="nope")
    with pytest.raises(Refused, match="environment qa not found"):
        run(repo, to_env="qa")
    with pytest.raises(DriftlessError, match="cannot clone branch 'nope'"):
        run(repo, branch="nope")


def test_remote_without_push_is_refused_but_a_working_copy_gets_the_commit(
    repo: Path, tmp_path: Path
) -> None:
    with pytest.raises(Refused, match="without --push the commit would be lost"):
        run(repo, push=False)
    head = sh("rev-parse", "main", cwd=repo)
    local = tmp_path / "local"
    sh("clone", "-q", str(repo), str(local))
    result = run(local, push=False)
    assert result.committed and not result.pushed
    assert sh("rev-parse", "HEAD", cwd=local).strip() == result.committed
    assert sh("rev-parse", "main", cwd=repo) == head  # the remote is untouched
    assert f"demo/hello@{WEB}" in (local / "manifests/prod/apps/hello.yaml").read_text()


def test_racing_promotions_both_land(repo: Path) -> None:
    other = status(api=API)
    other["app"] = "other"
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def go(**kw: Any) -> None:
        try:
            start.wait()
            run(repo, **kw)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=go),
        threading.Thread(target=go, kwargs={"app": "other", "source_status": other}),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    subjects = remote_log(repo)[:2]
    assert sorted(subjects) == ["promote(hello): staging -> prod", "promote(other): staging -> prod"]
    assert f"demo/hello@{WEB}" in remote_file(repo, "manifests/prod/apps/hello.yaml")
    assert f"'demo/api@{API}'" in remote_file(repo, "manifests/prod/apps/other.yaml")


def test_push_after_someone_else_pushed_rebases_instead_of_losing_a_commit(
    repo: Path, tmp_path: Path
) -> None:
    a = clone(remote=str(repo), branch="main", into=tmp_path / "a")
    b = clone(remote=str(repo), branch="main", into=tmp_path / "b")
    (a.path / "a.txt").write_text("a\n")
    (b.path / "b.txt").write_text("b\n")
    a.commit(message="from a\n\nX-Test: 1\n", paths=["a.txt"])
    b.commit(message="from b\n", paths=["b.txt"])
    a.push()
    landed = b.push()  # rejected once as non-fast-forward, then rebased onto a's commit
    assert remote_log(repo)[:2] == ["from b", "from a"]
    assert sh("rev-parse", "main", cwd=repo).strip() == landed
    assert parse_trailers(a.message()) == {"X-Test": ["1"]}


def test_conflicting_concurrent_change_is_refused_and_loses_nothing(repo: Path, tmp_path: Path) -> None:
    from reconciler.gitops.working_copy import PushConflict

    a = clone(remote=str(repo), branch="main", into=tmp_path / "a")
    b = clone(remote=str(repo), branch="main", into=tmp_path / "b")
    for wc, text in ((a, "one\n"), (b, "two\n")):
        (wc.path / "same.txt").write_text(text)
        wc.commit(message=f"write {text.strip()}", paths=["same.txt"])
    a.push()
    with pytest.raises(PushConflict, match="changed the same lines"):
        b.push()
    assert remote_file(repo, "same.txt") == "one\n"


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), (12, 12)]
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5 minutes", "", True])
def test_parse_duration_rejects_nonsense(text: Any) -> None:
    with pytest.raises(Refused, match="not a duration"):
        parse_duration(text)


def test_racing_promotions_of_the_same_app_both_land(repo: Path) -> None:
    """Both change the same line: the loser of the push race recomputes its change on the new head."""
    other_web = "sha256:" + "d" * 64
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def go(web: str) -> None:
        try:
            start.wait()
            run(repo, source_status=status(web=web, greeter=GREETER))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(d,)) for d in (WEB, other_web)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    log = remote_log(repo, "%B")
    landed = [line.split("=", 1)[1] for line in log if line.startswith("Promoted-Digest: web=")]
    assert sorted(landed) == sorted([WEB, other_web])  # two promotion commits, none lost
    last = sh("log", "-1", "--format=%B", "main", cwd=repo)
    assert f"demo/hello@{parse_trailers(last)['Promoted-Digest'][0].split('=', 1)[1]}" in remote_file(
        repo, "manifests/prod/apps/hello.yaml"
    )


def test_crlf_file_keeps_its_line_endings(tmp_path: Path) -> None:
    from tests.drift.gitrepo import TREE

    files = dict(TREE)
    files["manifests/prod/apps/hello.yaml"] = PROD_HELLO.replace("\n", "\r\n")
    remote, _ = seed_bare_repo(tmp_path, files)
    sh("config", "core.autocrlf", "false", cwd=remote)
    run(remote)
    raw = subprocess.run(
        ["git", "show", "main:manifests/prod/apps/hello.yaml"], cwd=remote, capture_output=True, check=True
    ).stdout
    assert (
        raw
        == PROD_HELLO.replace("image: demo/hello:1.0.0", f"image: demo/hello@{WEB}")
        .replace('"127.0.0.1:5000/demo/greeter:1.0.0"', f'"127.0.0.1:5000/demo/greeter@{GREETER}"')
        .replace("\n", "\r\n")
        .encode()
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (PROD_HELLO + "---\nkind: Application\nmetadata: {name: more}\n", "holds 2 YAML documents"),
        (
            PROD_HELLO.replace(
                "image: demo/hello:1.0.0   # bumped by promotion", "image: &img demo/hello:1.0.0"
            ).replace('"127.0.0.1:5000/demo/greeter:1.0.0"', "*img"),
            "cannot rewrite in place",
        ),
    ],
)
def test_files_promotion_cannot_rewrite_safely_are_refused(tmp_path: Path, text: str, words: str) -> None:
    from tests.drift.gitrepo import TREE

    remote, _ = seed_bare_repo(tmp_path, {**TREE, "manifests/prod/apps/hello.yaml": text})
    with pytest.raises(Refused, match=words):
        run(remote)


def test_a_local_clone_is_used_in_place_and_pushed_to_its_origin(repo: Path, tmp_path: Path) -> None:
    local = tmp_path / "mine"
    sh("clone", "-q", str(repo), str(local))
    (local / "notes.txt").write_text("my own uncommitted work\n")  # untouched by the promotion
    result = run(local)  # push=True by default
    assert result.pushed and sh("rev-parse", "main", cwd=repo).strip() == result.committed
    assert sh("rev-parse", "HEAD", cwd=local).strip() == result.committed
    assert (local / "notes.txt").read_text() == "my own uncommitted work\n"


def test_a_local_clone_with_edits_in_the_file_or_on_another_branch_is_refused(
    repo: Path, tmp_path: Path
) -> None:
    local = tmp_path / "mine"
    sh("clone", "-q", str(repo), str(local))
    target = local / "manifests/prod/apps/hello.yaml"
    target.write_text(target.read_text() + "# my edit\n")
    with pytest.raises(Refused, match="has uncommitted changes"):
        run(local)
    assert target.read_text().endswith("# my edit\n")
    sh("checkout", "-q", "--", "manifests/prod/apps/hello.yaml", cwd=local)
    sh("switch", "-q", "-c", "feature", cwd=local)
    with pytest.raises(Refused, match="has 'feature' checked out, not 'main'"):
        run(local)
