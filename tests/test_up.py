"""`driftless up`: the whole platform in one process tree; Ctrl-C stops it; started again it resumes.
up.json appears only once the platform serves; the death of a host is a loss the reconciler heals, not
the end of the platform; `driftless logs` shows (and follows) the logs up says it writes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.procs import free_port, port_is_free


def _start_up(data: Path, ports: dict[str, int], log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "driftless", "up", "--data", str(data), "--hosts", "3",
            "--registry-port", str(ports["registry"]), "--control-port", str(ports["control"]),
            "--host-port", str(ports["host"]), "--admin-port", str(ports["admin"]), "--heartbeat", "1"]
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_up(proc: subprocess.Popen[bytes], log: Path, *, runs: int, data: Path | None = None) -> str:
    deadline = time.monotonic() + 90
    while log.read_text().count("Driftless is up") < runs:
        # up.json (what the CLI reads) only once the example apps serve
        said = log.read_text()
        if data is not None and (data / "up.json").exists():
            done = re.findall(r"serve the example apps[ .]*(?:ready|\(still converging)", said)
            assert len(done) == said.count("serve the example apps"), f"up.json before the apps serve:\n{said}"
        assert proc.poll() is None, f"driftless up exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"not up in 90 s:\n{log.read_text()}"
        time.sleep(0.05)
    return log.read_text()


def _child(parent: int, *args: str) -> int:
    """The pid of ``parent``'s child process whose command line holds ``args`` in a row."""
    want = "\0".join(args)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_text()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and want in cmdline:
            return int(stat.parent.name)
    raise AssertionError(f"no child of {parent} runs {' '.join(args)}")


def _driftless(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLESS_")}
    return subprocess.run([sys.executable, "-m", "driftless", *args], capture_output=True, text=True, timeout=30,
                          env={**env, "DRIFTLESS_DATA": str(data)})


def _host_death_is_healed_and_logged(up: subprocess.Popen[bytes], log: Path, data: Path) -> None:
    """Kill a host: up says so and goes on; the reconciler's HostLost shows in `driftless logs --follow`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLESS_")}
    follow = subprocess.Popen([sys.executable, "-m", "driftless", "logs", "--process", "reconciler", "--follow",
                               "-n", "0"], stdout=subprocess.PIPE, text=True, env={**env, "DRIFTLESS_DATA": str(data)})
    followed: list[str] = []
    reader = threading.Thread(target=lambda: followed.extend(iter(follow.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        os.kill(_child(up.pid, "--name", "edge-1"), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not any("HostLost" in line and "edge-1" in line for line in followed):
            assert time.monotonic() < deadline, f"no HostLost followed: {followed}\n{log.read_text()}"
            time.sleep(0.2)
    finally:
        follow.terminate()
        follow.wait(10)
        reader.join(5)
        follow.stdout.close()  # type: ignore[union-attr]
    said = log.read_text()
    assert "host edge-1 exited; the reconciler heals its loss" in said, said
    assert up.poll() is None, f"driftless up stopped when a host died:\n{said}"
    shown = _driftless(data, "logs", "--host", "edge-1", "-n", "5")
    assert shown.returncode == 0 and "driftless.host" in shown.stdout, shown.stdout + shown.stderr


def _interrupt(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def _admin_instances(host: dict[str, str]) -> list[dict[str, str]]:
    token = Path(host["adminTokenFile"]).read_text().strip()
    request = urllib.request.Request(f"{host['admin']}/api/v1/instances", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as r:
        instances: list[dict[str, str]] = json.loads(r.read())["instances"]
        return instances


def _consecutive_ports(n: int) -> int:
    """A start port with n free ports after it (the hosts take consecutive ports)."""
    for _ in range(50):
        start = free_port()
        if start + n < 65535 and all(port_is_free(start + i) for i in range(n)):
            return start
    raise AssertionError("no run of free ports")




@pytest.mark.timeout(240)
def test_up_serves_the_examples_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ports = {"registry": free_port(), "control": free_port(), "host": _consecutive_ports(3),
             "admin": _consecutive_ports(3)}
    log = tmp_path / "up.log"

    first = _start_up(data, ports, log)
    try:
        out = _wait_up(first, log, runs=1, data=data)
        assert f"logs          {data / 'logs'}" in out  # where the logs are, and how to read them
        assert "driftless logs [--host NAME] [--follow]" in out
        info = json.loads((data / "up.json").read_text())
        assert info["registry"] == f"http://127.0.0.1:{ports['registry']}"
        assert info["reconciler"] == f"http://127.0.0.1:{ports['control']}"
        assert Path(info["git"]).joinpath("HEAD").exists()
        assert [h["labels"] for h in info["hosts"]] == [
            {"cloud": "aws", "region": "us-east-1"}, {"cloud": "gcp", "region": "europe-west1"}, {"tier": "edge"}]
        assert "pushed" in out and "seeded" in out
        # ready means the examples answered: up asked each route once, so it woke one idle hello-py
        if "not seeding" not in out:
            woken = [i for h in info["hosts"] for i in _admin_instances(h) if i["id"].startswith("dev/hello-py/")
                     and i["status"] == "Running"]
            assert woken, [_admin_instances(h) for h in info["hosts"]]
        # every host serves dev/hello (a daemon), the edge host the linked greeter app of prod
        for h in info["hosts"]:
            assert "Hello from dev" in _get(f"{h['ingress']}/dev/hello")
        assert "Hello" in _get(f"{info['hosts'][2]['ingress']}/greet")
        hooks = (Path(info["git"]) / "hooks" / "post-receive").read_text()
        assert "/hooks/generic" in hooks
        # invalid pushes are refused before they land (driftless/pre_receive.py), by default
        assert "driftless.pre_receive" in (Path(info["git"]) / "hooks" / "pre-receive").read_text()
        # the dashboard, and a one-click sign-in for the admin (the token in the fragment, never sent to a server)
        token = (data / "admin-token").read_text().strip()
        deadline = time.monotonic() + 30
        while "Ctrl-C stops everything" not in (out := log.read_text()):  # the summary, printed in full
            assert time.monotonic() < deadline, out
            time.sleep(0.05)
        assert f"dashboard   http://127.0.0.1:{ports['control']}/" in out
        assert f"sign in     http://127.0.0.1:{ports['control']}/#token={token}" in out
        _host_death_is_healed_and_logged(first, log, data)
    finally:
        code = _interrupt(first)
    assert code == 0
    assert not (data / "up.json").exists(), "a stopped platform leaves no stale endpoints"
    assert "==> stopped" in log.read_text()

    # started again on the same data directory: nothing re-pushed or re-seeded, the apps come back
    log.write_text("")
    second = _start_up(data, ports, log)
    try:
        out = _wait_up(second, log, runs=1, data=data)
        assert "resuming Driftless" in out
        assert "pushed" not in out and "seeded" not in out
        info = json.loads((data / "up.json").read_text())
        assert "Hello from prod" in _get(f"{info['hosts'][0]['ingress']}/hello")
    finally:
        assert _interrupt(second) == 0


def test_up_refuses_a_busy_port_with_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "driftless", "up", "--data", str(tmp_path / "d"),
                            "--registry-port", str(port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"error: port {port} for the registry is already in use" in r.stderr
    assert "Traceback" not in r.stderr
