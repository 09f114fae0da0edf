"""Credentials per registry on the host: the platform registry's (--registry, --registry-user,
$DRIFTLESS_REGISTRY_PASSWORD) go to it alone; a registry named in --registry-credentials gets its own
entry, only it; a registry a manifest names that nobody configured gets nothing. The foreign registries
are capture servers on loopback forwarding to the real (password-protected) registry."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest

from shared import registry_client as client
from tests.host.conftest import instance, start_host, write_desired
from tests.support.components import build
from tests.support.procs import DriftlessProcess, free_port
from tests.support.registry_proxy import RecordingProxy

PLATFORM_SECRET = "platform-s3cret"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_each_registry_gets_only_its_own_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                                for u, p in (("puller", PLATFORM_SECRET), ("evil-user", "evil-pw"))))
    port = free_port()
    platform = f"http://127.0.0.1:{port}"
    with DriftlessProcess(
        ["registry", "serve", "--root", str(tmp_path / "reg"), "--listen", f"127.0.0.1:{port}", "--htpasswd", str(htpasswd)],
        log_dir=tmp_path, name="registry", ready_url=f"{platform}/v2/",
    ), RecordingProxy(upstream=platform) as evil, RecordingProxy(upstream=platform) as other:  # fmt: skip
        digest = client.push_component(f"127.0.0.1:{port}/demo/hello:1.0.0", build("hello"),
                                       credentials=client.Credentials("puller", PLATFORM_SECRET))
        desired = tmp_path / "desired.json"
        write_desired(desired, 1, [
            instance(f"127.0.0.1:{port}/demo/hello@{digest}", component="platform", route="/platform"),
            instance(f"{evil.host}/demo/hello@{digest}", component="evil", route="/evil"),
            instance(f"{other.host}/demo/hello@{digest}", component="other", route="/other"),
        ])  # fmt: skip
        monkeypatch.setenv("DRIFTLESS_REGISTRY_PASSWORD", PLATFORM_SECRET)  # inherited by the host process
        creds = tmp_path / "registries.yaml"
        creds.write_text(f"{evil.host}:\n  username: evil-user\n  password: evil-pw\n")
        creds.chmod(0o600)
        with start_host(tmp_path, "--desired", str(desired), "--registry", platform, "--registry-user", "puller",
                        "--registry-credentials", str(creds)) as host:
            host.wait_status("dev/demo/platform/0", "Running")  # the platform's credential opens its registry
            host.wait_status("dev/demo/evil/0", "Running")  # evil's own credential opens it (through the proxy)
            failed = host.wait_status("dev/demo/other/0", "Failed")  # nobody configured other: anonymous, refused
            assert "refused manifest (401)" in failed["lastError"]
            assert "--registry-credentials" in failed["lastError"]
        assert evil.paths() and other.paths()  # both were asked
        assert set(evil.authorizations()) == {basic("evil-user", "evil-pw")}
        assert other.authorizations() == []  # the platform's password reached neither foreign registry
        assert not any(PLATFORM_SECRET in base64.b64decode(a.split()[1]).decode() for a in evil.authorizations())


def _host(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLESS_")}
    return subprocess.run([sys.executable, "-m", "driftless", "host", *args], capture_output=True, text=True,
                          timeout=30, env={**clean, **(env or {})})


def test_the_credentials_file_must_be_private_and_the_user_needs_its_registry(tmp_path: Path) -> None:
    creds = tmp_path / "registries.yaml"
    creds.write_text("ghcr.io: {username: robot, password: pw}\n")
    creds.chmod(0o644)
    r = _host("--desired", str(tmp_path / "none.json"), "--registry-credentials", str(creds),
              "--data", str(tmp_path / "h"))
    assert r.returncode != 0 and "may be read by others (mode 0644)" in r.stderr and "chmod 600" in r.stderr, r.stderr

    r = _host("--desired", str(tmp_path / "none.json"), "--data", str(tmp_path / "h"),
              env={"DRIFTLESS_REGISTRY_USER": "puller"})
    assert r.returncode != 0 and "needs --registry URL" in r.stderr, r.stderr


def test_the_file_may_be_a_docker_config_and_a_bad_one_says_why(tmp_path: Path) -> None:
    from shared.errors import UsageError
    from shared.registry_auth import RegistryAuth, load_credentials_file
    from shared.registry_client import Credentials

    def load(text: str) -> dict[str, Credentials]:
        path = tmp_path / "config.json"
        path.write_text(text)
        path.chmod(0o600)
        return load_credentials_file(path)

    robot = base64.b64encode(b"robot:s3:cret").decode()
    config = {"auths": {"ghcr.io": {"auth": robot}, "https://Reg.Example:5000/v1/": {"username": "u", "password": "p"}}}
    assert load(json.dumps(config)) == {"ghcr.io": Credentials("robot", "s3:cret"),
                                        "reg.example:5000": Credentials("u", "p")}
    for text, said in (('{"auths": {}, "credsStore": "desktop"}', "credential helpers"),
                       ('{"auths": {"ghcr.io": {"auth": "bm9jb2xvbg=="}}}', "not base64 of user:password"),
                       ("ghcr.io: {username: robot}\n", "needs username and password"),
                       ("ghcr.io:\n  username: [unclosed\n", "config.json:2:")):
        with pytest.raises(UsageError) as refused:
            load(text)
        assert said in str(refused.value), refused.value

    auth = RegistryAuth(platform="https://reg.example:443", platform_credentials=Credentials("ci", "pw"),
                        configured={"ghcr.io": Credentials("robot", "x")})
    assert auth.for_url("https://REG.example:443") == Credentials("ci", "pw")
    assert auth.for_url("http://reg.example:443") is None  # the same host downgraded to http: nothing
    assert auth.for_url("https://reg.example:444") is None  # another port: another registry
    assert auth.for_url("https://ghcr.io") == Credentials("robot", "x")
    assert auth.for_url("https://evil.example") is None
