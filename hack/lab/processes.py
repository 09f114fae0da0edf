"""Every process the lab starts, and the one place their command lines are made.

A process runs inside its site's namespace (``ip netns exec`` execs it: the pid is the process's own),
in its own session, its output in ``LOGS/<name>.log``. ``Procs.stop_all`` ends them all (SIGTERM,
then SIGKILL of the process group), which the lab does in ``finally``.

To change how a part is started (an option the CLI gained, another way to name the leader URLs),
edit :func:`reconciler_args`, :func:`host_args` or :func:`registry_args` here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hack.lab.netns import ns_name


@dataclass
class Proc:
    name: str
    site: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    command: list[str] = field(default_factory=list)  # argv without the namespace and faketime prefix
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Procs:
    logs: Path
    running: dict[str, Proc] = field(default_factory=dict)

    def start(self, name: str, site: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
              skew: str | None = None) -> Proc:
        """Start ``argv`` in ``site``'s namespace; ``skew`` (e.g. "+30s") runs it under Debian's faketime."""
        if name in self.running and self.running[name].alive():
            raise RuntimeError(f"{name} already runs")
        prefix = ["faketime", "-f", skew] if skew else []
        proc = Proc(name, site, ["ip", "netns", "exec", ns_name(site), *prefix, *argv], env or {},
                    self.logs / f"{name}.log", list(argv))
        with open(proc.log, "ab") as out:
            proc.popen = subprocess.Popen(proc.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env={**os.environ, "PYTHONUNBUFFERED": "1", **proc.env},
                                          start_new_session=True)  # fmt: skip
        self.running[name] = proc
        return proc

    def restart(self, name: str, *, skew: str | None = None) -> Proc:
        old = self.running[name]
        self.stop(name)
        return self.start(name, old.site, old.command, env=old.env, skew=skew)

    def stop(self, name: str, timeout: float = 10.0) -> None:
        proc = self.running.get(name)
        if proc is None or proc.popen is None:
            return
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(proc.popen)

    def stop_all(self, timeout: float = 10.0) -> None:
        """Hosts first (they drain), then the reconcilers, registries and the stores."""
        order = sorted(self.running.values(), key=lambda p: (not p.name.startswith("host-"),
                                                              not p.name.startswith("reconciler"),
                                                              not p.name.startswith("registry")))
        for proc in order:
            if proc.popen is not None and proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in order:
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(proc.popen)


def _kill_group(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of the process's session (wasmtime serve children included)."""
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        popen.wait(10)
    except subprocess.TimeoutExpired:
        pass


# --- command lines -----------------------------------------------------------------------------------


def driftless(python: Path, *args: str) -> list[str]:
    return [str(python), "-m", "driftless", *args]


def registry_args(*, listen: str, storage: str, s3_endpoint: str, cert: Path, key: Path) -> list[str]:
    return ["registry", "serve", "--storage", storage, "--s3-endpoint", s3_endpoint, "--listen", listen,
            "--tls-cert", str(cert), "--tls-key", str(key)]  # fmt: skip


def reconciler_args(*, listen: str, url: str, repo: Path, data: Path, registry: str, state: str, token: Path,
                    users: Path, cert: Path, key: Path, heartbeat: float, lease: float) -> list[str]:
    return ["reconcile", "--repo", str(repo), "--branch", "main", "--path", "manifests", "--listen", listen,
            "--advertise", url, "--data", str(data), "--registry", registry, "--token-file", str(token),
            "--users-file", str(users), "--state", state, "--lease", str(lease), "--heartbeat", str(heartbeat),
            "--interval", "1", "--grace", "3", "--tls-cert", str(cert), "--tls-key", str(key)]  # fmt: skip


def host_args(*, name: str, controls: list[str], ca: Path, token: Path, address: str, port: int,
              admin_port: int, data: Path, heartbeat: float, labels: dict[str, str]) -> list[str]:
    # every reconciler's URL: a host follows the leader among them (a follower answers 503 naming it)
    args = ["host", "--control", ",".join(controls), "--control-ca", str(ca), "--registry-ca", str(ca),
            "--token-file", str(token), "--name", name, "--listen", f"{address}:{port}",
            "--admin-listen", f"{address}:{admin_port}", "--advertise", f"http://{address}:{port}",
            "--data", str(data), "--heartbeat", str(heartbeat)]  # fmt: skip
    for k, v in labels.items():
        args += ["--label", f"{k}={v}"]
    return args


def postgres_args(*, bindir: Path, data: Path, address: str, port: int, socket_dir: Path) -> list[str]:
    # setpriv execs (runuser would stay the parent): the pid we hold is the postmaster's
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", str(bindir / "postgres"),
            "-D", str(data), "-c", f"listen_addresses={address}", "-p", str(port), "-k", str(socket_dir),
            "-c", "fsync=off", "-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key",
            "-c", "max_connections=100"]  # fmt: skip


def weed_args(*, weed: str, data: Path, address: str, port: int, cert: Path, key: Path) -> list[str]:
    p = port
    return [weed, "server", f"-dir={data}", f"-ip={address}", f"-ip.bind={address}", f"-master.port={p}",
            f"-master.port.grpc={p + 1}", "-master.volumeSizeLimitMB=64", f"-volume.port={p + 2}",
            f"-volume.port.grpc={p + 3}", "-volume.max=0", "-volume.preStopSeconds=0", "-filer",
            f"-filer.port={p + 4}", f"-filer.port.grpc={p + 5}", "-s3", f"-s3.port={p + 6}",
            f"-s3.port.grpc={p + 7}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.cert.file={cert}", f"-s3.key.file={key}"]  # fmt: skip
