"""--allowed-signers [ENV=]FILE: only commits SSH-signed by an allowed key are applied (per environment they change)."""

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


def test_allowed_signers_per_environment(tmp_path: Path) -> None:
    """--allowed-signers ENV=FILE: a commit changing prod/ signed only by a dev key is rejected for prod
    (naming the commit, the environment, the file and the fix) and applied to dev; a prod key applies it."""
    dev_pub, prod_pub = keypair(tmp_path / "dev"), keypair(tmp_path / "prod")
    dev_signers, prod_signers = tmp_path / "dev-signers", tmp_path / "prod-signers"
    dev_signers.write_text(f"dev@driftless.dev {dev_pub}\nops@driftless.dev {prod_pub}\n")  # ops may change dev too
    prod_signers.write_text(f"ops@driftless.dev {prod_pub}\n")
    registry = Registry(tmp_path / "registry", tmp_path).start()
    registry.push("demo/hello:1.0.0", build("hello"))
    git = GitRepo(tmp_path / "git")
    git._git("config", "gpg.format", "ssh")
    git._git("config", "commit.gpgsign", "true")
    git._git("config", "user.signingkey", str(tmp_path / "prod"))
    comp = {"name": "w", "image": "demo/hello:1.0.0", "placement": {"spread": {"replicas": 1}}}
    first = git.push({f"{e}/{f}": text for e in ("dev", "prod") for f, text in
                      (("environment.yaml", environment(e, prefix=f"/{e}")), ("apps/a.yaml", application("a", [comp])))},
                     "both environments, signed by ops")
    rec = Reconciler(repo=git.bare, registry=registry.url, data=tmp_path / "rec", log_dir=tmp_path,
                     token_file=new_token(tmp_path / "token"),
                     extra=["--allowed-signers", f"prod={prod_signers}", "--allowed-signers", f"dev={dev_signers}"]).start()
    try:
        envs = ("dev", "prod")
        wait_until(lambda: all(rec.get(f"/api/v1/environments/{e}")["revision"] == first for e in envs), timeout=15,
                   what="applied by ops")
        git._git("config", "user.signingkey", str(tmp_path / "dev"))
        by_dev = git.push({"dev/apps/a.yaml": application("a", [{**comp, "name": "d"}]),
                           "prod/apps/a.yaml": application("a", [{**comp, "name": "p"}])}, "a dev changes prod too")
        prod = wait_until(lambda: (e := rec.get("/api/v1/environments/prod"))["rejected"] and e, timeout=15,
                          what="prod rejected")
        assert prod["revision"] == first and prod["rejected"]["revision"] == by_dev
        message = prod["rejected"]["errors"][0]["message"]
        assert by_dev[:12] in message and "changes prod/" in message and f"prod={prod_signers}" in message, message
        assert "not signed by an allowed key for prod" in message and "to fix: sign the commit" in message, message
        dev = wait_until(lambda: (e := rec.get("/api/v1/environments/dev"))["revision"] == by_dev and e, timeout=15,
                         what="dev applied")
        assert dev["rejected"] is None
        assert [c["name"] for c in rec.get("/api/v1/environments/prod/apps/a")["components"]] == ["w"]
        # a later dev-key commit touching only dev/ does not carry the refused prod change into prod
        only_dev = git.push({"dev/apps/b.yaml": application("b", [comp])}, "dev only")
        wait_until(lambda: rec.get("/api/v1/environments/dev")["revision"] == only_dev, timeout=15, what="dev")
        prod = wait_until(lambda: (e := rec.get("/api/v1/environments/prod"))["rejected"]["revision"] == only_dev
                          and e, timeout=15, what="prod still refuses the dev key")
        assert prod["revision"] == first
        # ops signs: prod applies the state of the branch
        git._git("config", "user.signingkey", str(tmp_path / "prod"))
        by_ops = git.push({"prod/apps/a.yaml": application("a", [{**comp, "name": "o"}])}, "ops changes prod")
        wait_until(lambda: rec.get("/api/v1/environments/prod")["revision"] == by_ops, timeout=15, what="prod")
        assert rec.get("/api/v1/environments/prod")["rejected"] is None
        # the app view follows the applied revision once the status pass (a thread) has run: wait for it
        wait_until(lambda: [c["name"] for c in rec.get("/api/v1/environments/prod/apps/a")["components"]] == ["o"],
                   timeout=15, what="prod's app shows the ops change")
    finally:
        rec.stop()
        registry.stop()
