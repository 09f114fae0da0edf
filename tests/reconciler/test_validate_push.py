"""The pre-receive hook asks the running reconciler to check a pushed tree (POST /api/v1/validate, a
`git archive` of it): the reconciler answers every problem at file:line with its own loader (a read,
as any credential may), refuses what is not a plain tree and writes nothing outside it; with the reconciler stopped the hook checks locally and
still refuses an invalid push. (tests/reconciler/test_notify.py pushes through the hook with the
reconciler running.)"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from pathlib import Path

import httpx

from tests.reconciler.test_notify import BROKEN, started


def _tar(entries: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """A tar of (name, file bytes | None, symlink target | None) entries."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return out.getvalue()


def test_the_reconciler_checks_a_pushed_tree_and_refuses_what_is_not_one(tmp_path: Path) -> None:
    p = started(tmp_path)
    try:
        url = f"{p.control_url}/api/v1/validate?subdir=manifests"
        revision = subprocess.run(["git", "--git-dir", str(p.git_dir), "rev-parse", "main"], check=True,
                                  capture_output=True, text=True).stdout.strip()
        good = subprocess.run(["git", "--git-dir", str(p.git_dir), "archive", "--format=tar", revision, "--",
                               "manifests"], check=True, capture_output=True).stdout
        viewer = {"Authorization": f"Bearer {p.hook_token_file.read_text().strip()}"}
        with httpx.Client(timeout=30) as client:
            assert client.post(url, content=good, headers=viewer).json() == {"problems": []}
            bad = _tar([("manifests/prod/environment.yaml", b"apiVersion: driftless.dev/v1alpha1\nkind: Environment\n"
                         b"metadata: {name: prod}\nspec: {}\n", None),
                        ("manifests/prod/apps/bad.yaml", BROKEN.encode(), None),
                        ("manifests/prod/apps/out.yaml", None, "/etc/passwd")])
            problems = client.post(url, content=bad, headers=viewer).json()["problems"]
            said = [f"{x['file']}:{x['line']}: {x['message']}" for x in problems if x["level"] == "error"]
            assert any(re.match(r"prod/apps/bad\.yaml:\d+: .*replicas", s) for s in said), said
            assert any(x["code"] == "symlink-outside" for x in problems), problems  # judged, never followed
            for entries in ([("../escape.yaml", b"x", None)], [("/abs.yaml", b"x", None)],
                            [("manifests/link", None, "/tmp"), ("manifests/link/x.yaml", b"x", None)]):
                r = client.post(url, content=_tar(entries), headers=viewer)
                assert r.status_code == 400 and "not a manifests archive" in r.text, r.text
            assert not (tmp_path.parent / "escape.yaml").exists() and not Path("/tmp/x.yaml").exists()
            r = client.post(url, content=b"not a tar at all", headers=viewer)
            assert r.status_code == 400
            missing = client.post(f"{p.control_url}/api/v1/validate?subdir=elsewhere", content=good,
                                  headers=viewer).json()["problems"]
            assert [x["code"] for x in missing] == ["not-found"] and "elsewhere" in missing[0]["message"]
    finally:
        p.stop()


def test_with_the_reconciler_stopped_the_hook_checks_locally_and_still_refuses(tmp_path: Path) -> None:
    p = started(tmp_path)
    try:
        p.refuse_invalid_pushes = True
        p.install_hook()
        p.stop_process("reconciler")
        repo = p.git
        repo.sync()
        repo.write({"prod/apps/bad.yaml": BROKEN})
        work = str(repo.work)
        subprocess.run(["git", "-C", work, "add", "-A", "manifests"], check=True, capture_output=True)
        subprocess.run(["git", "-C", work, "commit", "-q", "-m", "a broken app"], check=True, capture_output=True)
        done = subprocess.run(["git", "-C", work, "push", "origin", "HEAD:main"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode != 0, done.stderr
        assert re.search(r"remote: driftless: +manifests/prod/apps/bad\.yaml:\d+:\d+: error: .*replicas",
                         done.stderr), done.stderr
    finally:
        p.stop()


def test_the_hook_gets_its_answer_from_the_reconciler(tmp_path: Path) -> None:
    """ask_reconciler, what the hook does first: the problems of a revision, from the running reconciler
    (None, and the hook checks locally, only when it cannot say)."""
    from driftless.pre_receive import ask_reconciler

    p = started(tmp_path)
    try:
        repo = p.git
        repo.sync()
        repo.write({"prod/apps/bad.yaml": BROKEN})
        work = str(repo.work)
        subprocess.run(["git", "-C", work, "add", "-A", "manifests"], check=True, capture_output=True)
        subprocess.run(["git", "-C", work, "commit", "-q", "-m", "a broken app"], check=True, capture_output=True)
        subprocess.run(["git", "-C", work, "push", "-q", "origin", "HEAD:main"], check=True, capture_output=True)
        revision = subprocess.run(["git", "--git-dir", str(p.git_dir), "rev-parse", "main"], check=True,
                                  capture_output=True, text=True).stdout.strip()
        found = ask_reconciler(p.git_dir, revision, subdir="manifests", url=p.control_url,
                               token_file=p.hook_token_file, cacert=None)
        assert found is not None
        assert any(re.match(r"prod/apps/bad\.yaml:\d+:\d+: error: .*replicas", str(f)) for f in found), found
        p.stop_process("reconciler")
        assert ask_reconciler(p.git_dir, revision, subdir="manifests", url=p.control_url,
                              token_file=p.hook_token_file, cacert=None) is None
    finally:
        p.stop()
