"""Installing Driftless as an operator would: the wheel (`pip wheel`, the same PEP 517 build as
`python -m build`) in a fresh virtual environment runs `driftless up` from an empty directory;
deploy/install.sh stages the three hardened systemd units that systemd itself accepts, each failing
at start with the credential file it expected; deploy/image/build.sh builds the container image the
Kubernetes files name, from Debian packages with Debian's tools, and pushes it to our registry."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from driftless.commands import host as host_command
from driftless.commands import reconcile as reconcile_command
from driftless.commands import registry as registry_command
from tests.support.procs import DriftlessProcess, free_port

TOP = Path(__file__).resolve().parent.parent
DEPLOY = TOP / "deploy"
UNITS = ("registry", "reconciler", "host")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(TOP)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (built,) = out.glob("driftless-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with only the wheel and its dependencies: its bin/ directory."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return venv / "bin"


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything pointing at the checkout or its virtualenv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DRIFTLESS_", "PYTHON", "VIRTUAL_ENV")) and k != "PATH"}
    return {**env, "PATH": "/usr/local/bin:/usr/bin:/bin", **extra}


@pytest.mark.timeout(600)  # with the module's wheel and venv (a minute each on a busy machine)
def test_the_installed_wheel_runs_driftless_up_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    empty, home = tmp_path / "empty", tmp_path / "home"
    empty.mkdir()
    home.mkdir()
    ports = {name: free_port() for name in ("registry", "control", "host", "admin")}
    log = tmp_path / "up.log"
    with open(log, "ab") as out:
        up = subprocess.Popen(
            [str(installed / "driftless"), "up", "--hosts", "1", "--heartbeat", "1",
             "--registry-port", str(ports["registry"]), "--control-port", str(ports["control"]),
             "--host-port", str(ports["host"]), "--admin-port", str(ports["admin"])],
            cwd=empty, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env=_clean_env(HOME=str(home), PYTHONUNBUFFERED="1"))  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "Driftless is up" not in log.read_text():
            assert up.poll() is None, f"driftless up exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not up in 120 s:\n{log.read_text()}"
            time.sleep(0.1)
        # everything it needs came from the wheel: the schemas, the seeded manifests, the example
        # components (compiled from the packaged WAT), the dashboard
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['host']}/hello", timeout=10) as resp:
            assert resp.status == 200 and resp.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['control']}/", timeout=10) as resp:
            assert b"<html" in resp.read().lower()
        up_json = json.loads((home / ".driftless" / "up.json").read_text())
        assert up_json["registry"].endswith(str(ports["registry"]))
        assert list(empty.iterdir()) == [], "driftless up wrote into the directory it was started from"
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(10)
    assert up.returncode == 0, log.read_text()


@pytest.fixture(scope="module")
def staged(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    r = subprocess.run([str(DEPLOY / "install.sh"), "--prefix", str(root), "--wheel", str(wheel), *UNITS],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return root


def _exec_start(unit: str) -> list[str]:
    text = unit.replace("\\\n", " ")
    starts = [m.group(1) for m in re.finditer(r"^ExecStart=(.*)$", text, re.M)]
    return starts[-1].split()


def _parser(module: object) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="driftless")
    module.add_arguments(p)  # type: ignore[attr-defined]
    return p


@pytest.mark.timeout(600)
def test_install_stages_hardened_units_that_systemd_accepts(staged: Path, tmp_path: Path) -> None:
    driftless = staged / "opt" / "driftless" / "bin" / "driftless"
    assert os.readlink(staged / "usr" / "local" / "bin" / "driftless") == "/opt/driftless/bin/driftless"
    r = subprocess.run([str(driftless), "--help"], capture_output=True, text=True, timeout=60, env=_clean_env())
    assert r.returncode == 0 and "reconcile" in r.stdout
    assert (staged / "etc" / "driftless").stat().st_mode & 0o777 == 0o700
    sysusers = (staged / "usr" / "lib" / "sysusers.d" / "driftless.conf").read_text()
    for role in UNITS:
        path = staged / "etc" / "systemd" / "system" / f"driftless-{role}.service"
        text = path.read_text()
        # a dedicated user of its own, made by sysusers; credentials only through LoadCredential
        assert re.search(rf"^User=driftless-{role}$", text, re.M) and f"u driftless-{role} " in sysusers
        for setting in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                        "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service"):
            assert setting in text, f"{path.name} lacks {setting!r}"
        assert re.search(r"^LoadCredential=", text, re.M) and "Environment=DRIFTLESS_TOKEN" not in text
        env_file = staged / "etc" / "driftless" / f"{role}.env"
        assert env_file.exists() and "secret" not in env_file.read_text().replace("no secrets", "").lower()
        # systemd's own checks: the unit parses and its ExecStart exists (the staged root's binary)
        check = tmp_path / path.name
        check.write_text(text.replace("/usr/local/bin/driftless", str(driftless)))
        verify = subprocess.run(["systemd-analyze", "verify", str(check)], capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stderr
        security = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", str(check)],
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
        assert security.returncode == 0, f"{path.name} exposure above 2.0:\n{security.stdout[-600:]}"


ENV = {"${STATE_DIRECTORY}": "/var/lib/x", "${DRIFTLESS_REGISTRY_LISTEN}": "127.0.0.1:5000",
       "${DRIFTLESS_REPO}": "/srv/git/manifests.git", "${DRIFTLESS_REGISTRY}": "https://registry.internal:5000",
       "${DRIFTLESS_RECONCILER_LISTEN}": "127.0.0.1:8443", "${DRIFTLESS_CONTROL}": "https://reconciler:8443",
       "${DRIFTLESS_LISTEN}": "127.0.0.1:8081", "$DRIFTLESS_LABELS": "--label=tier=edge", "%H": "edge-1",
       "$DRIFTLESS_REGISTRY_OPTIONS": "", "$DRIFTLESS_RECONCILE_OPTIONS": ""}  # fmt: skip


def _expanded(words: list[str], credentials: Path) -> list[str]:
    out = []
    for w in words:
        w = ENV.get(w, w).replace("${CREDENTIALS_DIRECTORY}", str(credentials)).replace(
            "${CACHE_DIRECTORY}", str(credentials.parent / "cache"))
        if w:
            out.append(w)
    return out


@pytest.mark.parametrize("role", UNITS)
def test_each_unit_runs_valid_options_and_a_missing_credential_names_its_file(role: str, tmp_path: Path) -> None:
    words = _exec_start((DEPLOY / "systemd" / f"driftless-{role}.service").read_text())
    assert words[0] == "/usr/local/bin/driftless"
    credentials = tmp_path / "credentials"  # systemd's $CREDENTIALS_DIRECTORY, here empty
    credentials.mkdir()
    args = _expanded(words[1:], credentials)
    command = {"registry": registry_command, "reconciler": reconcile_command, "host": host_command}[role]
    assert args[0] == {"reconciler": "reconcile"}.get(role, role)
    _parser(command).parse_args(args[1:])  # every option is one the CLI accepts
    # started with a credential missing, it fails at once and names the file it expected
    proc = subprocess.run([sys.executable, "-m", "driftless", *args, *(["--data", str(tmp_path / "d")]
                                                                        if role == "host" else [])],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert proc.returncode != 0
    assert str(credentials) in proc.stderr, proc.stderr


def test_the_s3_drop_in_keeps_the_credentials_out_of_the_command_line() -> None:
    text = (DEPLOY / "systemd" / "driftless-registry-s3.conf").read_text()
    assert re.search(r"^LoadCredential=s3:", text, re.M)
    assert "AWS_SHARED_CREDENTIALS_FILE=%d/s3" in text
    words = _exec_start(text)
    assert "--storage" in words and "AWS_SECRET_ACCESS_KEY" not in text


def _images() -> set[str]:
    found = set()
    for path in (DEPLOY / "kubernetes").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            for match in re.finditer(r"'image': '([^']+)'", repr(doc)):
                found.add(match.group(1))
    return found


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = DriftlessProcess(["registry", "serve", "--root", str(tmp_path / "reg"), "--listen", f"127.0.0.1:{port}"],
                            log_dir=tmp_path, ready_url=f"http://127.0.0.1:{port}/v2/", name="registry")
    with proc:
        yield f"127.0.0.1:{port}"


@pytest.mark.timeout(900)
def test_the_image_the_kubernetes_files_name_is_built_from_debian_and_pushed(wheel: Path, registry: str,
                                                                          tmp_path: Path) -> None:
    version = wheel.name.split("-")[1]
    assert _images() == {f"driftless/driftless:{version}"}, "every workload names the image build.sh makes"
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    assert [i["name"] for i in kustomization["images"]] == ["driftless/driftless"]
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).exists(), resource
    r = subprocess.run([str(DEPLOY / "image" / "build.sh"), "--wheel", str(wheel), "--out", str(tmp_path / "oci"),
                        "--push", registry], capture_output=True, text=True, timeout=840)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == f"driftless/driftless:{version}"
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config",
                              f"docker://{registry}/driftless/driftless:{version}"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert inspect.returncode == 0, inspect.stderr
    config = json.loads(inspect.stdout)["config"]
    assert config["Entrypoint"] == ["/opt/driftless/bin/driftless"]
    assert config["User"] == "10001:10001"
    assert config["Labels"]["org.opencontainers.image.version"] == version
    # the image runs: its CLI, from the layer that was pushed (unpacked, started in a chroot)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{tmp_path / 'oci'}:{version}", str(bundle)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    run = subprocess.run([chroot, "--userspec=10001:10001", str(bundle / "rootfs"), "/opt/driftless/bin/driftless",
                          "validate", "--help"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/var/lib/driftless"})  # fmt: skip
    assert run.returncode == 0, run.stderr
    shutil.rmtree(bundle, ignore_errors=True)
