"""--allowed-signers: only commits SSH-signed by an allowed key are applied; others are rejected."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.reconciler.platform import GitRepo, Reconciler, Registry, application, environment, new_token
from tests.support.components import build
from tests.support.procs import wait_until


def keypair(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def test_only_allowed_signers_are_applied(tmp_path: Path) -> None:
    good_pub = keypair(tmp_path / "good")
    keypair(tmp_path / "bad")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"test@driftless.dev {good_pub}\n")
    registry = Registry(tmp_path / "registry", tmp_path).start()
    registry.push("demo/hello:1.0.0", build("hello"))
    git = GitRepo(tmp_path / "git")
    git._git("config", "gpg.format", "ssh")
    git._git("config", "commit.gpgsign", "true")
    git._git("config", "user.signingkey", str(tmp_path / "good"))
    comp = {"name": "w", "image": "demo/hello:1.0.0", "placement": {"spread": {"replicas": 1}}}
    signed = git.push({"prod/environment.yaml": environment("prod"), "prod/apps/a.yaml": application("a", [comp])},
                      "signed by an allowed key")
    rec = Reconciler(repo=git.bare, registry=registry.url, data=tmp_path / "rec", log_dir=tmp_path,
                     token_file=new_token(tmp_path / "token"), extra=["--allowed-signers", str(signers)]).start()
    try:
        wait_until(lambda: rec.get("/api/v1/environments/prod")["revision"] == signed, timeout=15, what="applied")
        git._git("config", "user.signingkey", str(tmp_path / "bad"))
        other = git.push({"prod/apps/a.yaml": application("a", [{**comp, "name": "x"}])}, "signed by a stranger")
        env = wait_until(lambda: (e := rec.get("/api/v1/environments/prod"))["rejected"] and e, timeout=15,
                         what="stranger rejected")
        assert env["rejected"]["revision"] == other and env["revision"] == signed
        assert "not signed by an allowed key" in env["rejected"]["errors"][0]["message"]
        git._git("config", "commit.gpgsign", "false")
        unsigned = git.push({"prod/apps/a.yaml": application("a", [{**comp, "name": "y"}])}, "unsigned")
        env = wait_until(lambda: (e := rec.get("/api/v1/environments/prod"))["rejected"]
                         and e["rejected"]["revision"] == unsigned and e, timeout=15, what="unsigned rejected")
        assert env["revision"] == signed
    finally:
        rec.stop()
        registry.stop()
