"""Git unreachable is transient (retried, counted, nothing lost); bad options are one clear line."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.reconciler.platform import GitRepo, Reconciler, Registry, application, environment, new_token
from tests.support.components import build
from tests.support.procs import wait_until


def post(url: str, headers: dict[str, str] | None = None) -> int:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST", headers=headers or {}), timeout=5) as r:
        return r.status


def test_unreachable_git_is_retried_then_applied(tmp_path: Path) -> None:
    repo = tmp_path / "later" / "manifests.git"  # does not exist yet
    registry = Registry(tmp_path / "registry", tmp_path).start()
    registry.push("demo/hello:1.0.0", build("hello"))
    rec = Reconciler(repo=repo, registry=registry.url, data=tmp_path / "rec", log_dir=tmp_path,
                     token_file=new_token(tmp_path / "token"), interval=60).start()
    try:
        wait_until(lambda: rec.get("/readyz")["status"] == "ready", timeout=10, what="first reconcile done")
        metrics = lambda: urllib.request.urlopen(f"{rec.url}/metrics", timeout=5).read().decode()  # noqa: E731
        wait_until(lambda: "driftless_git_fetch_errors_total 0" not in metrics(), timeout=10, what="fetch errors")
        source = rec.get("/api/v1/environments")["source"]
        assert source["applied"] is None and "cannot fetch" in (source["lastError"] or "")
        events = rec.get("/api/v1/events")["events"]
        assert any(e["reason"] == "FetchFailed" and e["type"] == "Warning" for e in events)
        # the repository appears: the retry (or a sync) applies it
        git = GitRepo(tmp_path / "later")
        rev = git.push({"prod/environment.yaml": environment("prod"),
                        "prod/apps/a.yaml": application("a", [{"name": "w", "image": "demo/hello:1.0.0",
                                                               "placement": {"spread": {"replicas": 1}}}])}, "late")
        assert post(f"{rec.url}/api/v1/sync", rec.p.admin_headers()) == 202  # a write: the admin credential
        env = wait_until(lambda: rec.get("/api/v1/environments/prod"), timeout=15, what="applied after retry")
        assert env["revision"] == rev
        wait_until(lambda: rec.get("/api/v1/environments")["source"]["lastError"] is None, timeout=10,
                   what="error cleared")
        # one reconciler per data directory
        second = run_cli("--repo", str(repo), "--data", str(rec.p.data / "reconciler"), "--registry", registry.url,
                         "--token-file", str(tmp_path / "token"), "--listen", "127.0.0.1:1")
        assert second.returncode == 2 and "another reconciler" in second.stderr
        taken = run_cli("--repo", str(repo), "--data", str(tmp_path / "rec2"), "--registry", registry.url,
                        "--token-file", str(tmp_path / "token"), "--listen", f"127.0.0.1:{rec.port}")
        assert taken.returncode == 2 and "cannot listen" in taken.stderr and "Traceback" not in taken.stderr
    finally:
        rec.stop()
        registry.stop()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftless", "reconcile", *args], capture_output=True, text=True,
                          timeout=30)


def test_bad_options_are_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    base = ["--repo", str(tmp_path), "--data", str(tmp_path / "d"), "--registry", "http://127.0.0.1:5000"]
    out = run_cli(*base, "--token-file", str(empty))
    assert out.returncode == 2 and "--token-file" in out.stderr and "empty" in out.stderr
    assert "Traceback" not in out.stderr
    out = run_cli(*base, "--token-file", str(tmp_path / "missing"))
    assert out.returncode == 2 and "missing" in out.stderr and "Traceback" not in out.stderr
    token = new_token(tmp_path / "token")
    out = run_cli(*base, "--token-file", str(token), "--listen", "nowhere")
    assert out.returncode == 2 and "HOST:PORT" in out.stderr
    out = run_cli(*base, "--token-file", str(token), "--tls-cert", str(token))
    assert out.returncode == 2 and "--tls-key" in out.stderr


def test_read_token_protects_read_endpoints(tmp_path: Path) -> None:
    read = tmp_path / "read-token"
    read.write_text("reader-secret")
    token = new_token(tmp_path / "token")
    rec = Reconciler(repo=tmp_path / "nothing.git", registry="http://127.0.0.1:9", data=tmp_path / "rec",
                     log_dir=tmp_path, token_file=token, extra=["--read-token-file", str(read)]).start()

    def status(path: str, bearer: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{rec.url}{path}", headers=headers), timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            e.close()
            return e.code

    try:
        for path in ("/api/v1/environments", "/api/v1/hosts", "/api/v1/events", "/metrics"):
            assert status(path) == 401
            assert status(path, "wrong") == 401
            assert status(path, "reader-secret") == 200
            # the join token only registers hosts: it reads nothing (issue 12)
            assert status(path, token.read_text()) == 401
        assert status("/healthz") == 200
        assert "reader-secret" not in (rec.proc.log() if rec.proc else "")
    finally:
        rec.stop()
