"""The CLI commands fail with one clear line (never a traceback) when the reconciler is not there or input is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.drift.gitrepo import seed_bare_repo
from tests.support.procs import free_port


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLESS_")}
    env["DRIFTLESS_DATA"] = str(cwd or Path.cwd())  # no up.json: nothing is picked up by accident
    return subprocess.run(
        [sys.executable, "-m", "driftless", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["drift"],
        ["history", "--env", "prod"],
        ["promote", "hello", "--from", "staging", "--to", "prod"],
        ["rollback", "hello", "--env", "prod", "--to", "HEAD"],
    ],
)
def test_unreachable_reconciler_is_one_clear_line(command: list[str], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = cli(*command, "--control", url, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: the reconciler at {url} did not answer"), r.stderr
    assert lines[1].startswith("hint: start the platform with `driftless up`")
    assert "Traceback" not in r.stderr


def test_diff_outside_a_working_copy_says_what_to_do(tmp_path: Path) -> None:
    r = cli("diff", "--control", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert r.returncode == 1
    assert "not inside a Git working copy" in r.stderr and "hint:" in r.stderr


def test_diff_of_an_invalid_tree_lists_the_problems(tmp_path: Path) -> None:
    _, work = seed_bare_repo(tmp_path)
    (work / "manifests/prod/apps/hello.yaml").write_text(
        "kind: Application\nmetadata: {name: hello}\nspec: {bogus: 1}\n"
    )
    r = cli("diff", "--control", f"http://127.0.0.1:{free_port()}", cwd=work)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "prod/apps/hello.yaml:" in r.stdout
    assert "the reconciler would reject this revision" in r.stderr


def test_no_push_into_a_remote_is_refused(tmp_path: Path) -> None:
    remote, _ = seed_bare_repo(tmp_path)
    r = cli(
        "rollback",
        "hello",
        "--env",
        "prod",
        "--to",
        "HEAD",
        "--any-revision",
        "--no-push",
        "--repo",
        str(remote),
        cwd=tmp_path,
    )
    assert r.returncode == 1
    assert "without --push the commit would be lost" in r.stderr


def test_unknown_drift_category_is_exit_1_not_2(tmp_path: Path) -> None:
    r = cli("drift", "--category", "Nope", "--control", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert r.returncode == 1
    assert "unknown drift category Nope; known: Missing, Unexpected" in r.stderr
