"""The HAProxy process: checked, started, reloaded and supervised by the agent; its runtime API.

Master-worker mode (``-W -S <run>/master.sock``): a reload (SIGUSR2 to the master) starts a new
worker on the new configuration while the old one finishes its requests. Every configuration is
checked first (``haproxy -c``): one that fails is an event with HAProxy's reason and the last good
one keeps serving. A master that exits (killed, crashed) is started again, with a backoff, on the
last good configuration.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from host.errors import HostError
from shared.retry import Backoff

log = logging.getLogger("driftless.host")

PACKAGE = "haproxy"  # Debian/Ubuntu: apt-get install haproxy (2.6 or newer)
READY_SECONDS = 10.0
PR_SET_PDEATHSIG = 1


def _die_with_the_agent() -> None:
    """In the child: SIGTERM when the thread that started it ends (the agent killed with SIGKILL too)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def locate_haproxy() -> Path:
    """The haproxy binary ($DRIFTLESS_HAPROXY, else on PATH); a clear error naming the package."""
    found = os.environ.get("DRIFTLESS_HAPROXY") or shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if not found:
        raise HostError("the native data path needs HAProxy, which is not installed",
                        hint=f"install the '{PACKAGE}' package (Debian: apt-get install {PACKAGE}), or run the "
                             "host with --data-path python (the slower Python ingress)")
    return Path(found)


class HAProxy:
    """One master process and the configuration files in ``run_dir``."""

    def __init__(self, *, binary: Path, run_dir: Path, on_event: Callable[[str, str], None]) -> None:
        self.binary = binary
        self.run_dir = run_dir
        self.config = run_dir / "haproxy.cfg"
        self.admin_socket = run_dir / "admin.sock"
        self._on_event = on_event  # (reason, message), from any thread
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._restart = Backoff(first=0.2, cap=10.0, jitter=0.2)
        self.restarts = 0
        self.reloads = 0
        self.last_error: str | None = None
        self._output: list[str] = []
        # HAProxy is started from this one thread, alive as long as the agent: the child's parent-death
        # signal fires when the thread that started it ends
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="haproxy-spawn")

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def check(self, text: str) -> str | None:
        """HAProxy's verdict on ``text``: None when valid, else its alert lines."""
        candidate = self.run_dir / "haproxy.cfg.new"
        candidate.write_text(text)
        candidate.chmod(0o600)
        done = subprocess.run([str(self.binary), "-c", "-f", str(candidate)], capture_output=True, text=True,
                              timeout=30)
        if done.returncode == 0:
            return None
        lines = [ln.strip() for ln in (done.stdout + done.stderr).splitlines() if "ALERT" in ln or "rror" in ln]
        return "; ".join(lines[:5]) or f"haproxy -c exited with code {done.returncode}"

    def apply(self, text: str) -> bool:
        """Check ``text`` and make it the running configuration (start or reload); False, with an
        event, when HAProxy refuses it (the last good configuration keeps serving)."""
        why = self.check(text)
        if why is not None:
            self.last_error = f"data plane configuration refused, keeping the last good one: {why}"
            self._on_event("ConfigRefused", self.last_error)
            return False
        (self.run_dir / "haproxy.cfg.new").replace(self.config)
        with self._lock:
            proc = self._proc
        if proc is None or proc.poll() is not None:
            self.start()
            return True
        old = self.worker_pid()
        os.kill(proc.pid, signal.SIGUSR2)  # graceful: the old worker finishes its requests
        self.reloads += 1
        if not self._wait_worker(lambda pid: pid is not None and pid != old):
            self.last_error = "data plane reload did not bring up a new worker; the previous one keeps serving"
            self._on_event("ReloadFailed", self.last_error)
            return False
        return True

    def start(self) -> None:
        """Start the master on the current file; a port still held by a dying predecessor (an agent
        killed with SIGKILL takes its HAProxy along, in a few ms) is tried again for a few seconds."""
        deadline = time.monotonic() + 5.0
        while True:
            try:
                self._start_once()
                return
            except HostError as exc:
                if "Address already in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _start_once(self) -> None:
        with self._lock:
            if self._stopping.is_set() or (self._proc is not None and self._proc.poll() is None):
                return  # never two masters: the watcher's restart and a reload's start may race
            self._output = []
            args = [str(self.binary), "-W", "-S", f"{self.run_dir}/master.sock,mode,600", "-f", str(self.config)]
            proc = self._spawner.submit(
                subprocess.Popen, args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_the_agent).result()
            self._proc = proc
        threading.Thread(target=self._read_output, args=(proc,), name="haproxy-out", daemon=True).start()
        if not self._wait_worker(lambda pid: pid is not None):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            time.sleep(0.05)  # its last lines
            raise HostError(f"HAProxy did not start: {' / '.join(self._output[-5:]) or 'no output'}")
        log.info("data plane: haproxy master pid %d", proc.pid)
        threading.Thread(target=self._watch, args=(proc,), name="haproxy-watch", daemon=True).start()

    def _wait_worker(self, ok: Callable[[int | None], bool]) -> bool:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return False
            if ok(self.worker_pid()):
                return True
            time.sleep(0.01)
        return False

    def worker_pid(self) -> int | None:
        try:
            info = self.command("show info")
        except OSError:
            return None
        for line in info.splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        return None

    def command(self, cmd: str) -> str:
        """One runtime API command on the current worker's stats socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(str(self.admin_socket))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def _read_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._output = (self._output + [line])[-20:]
                log.info("[haproxy] %s", line)

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        began = time.monotonic()
        code = proc.wait()
        if self._stopping.is_set() or self._proc is not proc:
            return
        if time.monotonic() - began > 30:
            self._restart.reset()
        delay = self._restart.next_delay()
        self.restarts += 1
        self.last_error = f"the data plane (haproxy pid {proc.pid}) exited with code {code}; restarting in {delay:.1f}s"
        self._on_event("DataPlaneExited", self.last_error)
        while not self._stopping.wait(delay):
            try:
                self.start()
                self._on_event("DataPlaneRestarted", f"the data plane is serving again (haproxy pid {self.pid})")
                return
            except (HostError, OSError) as exc:
                self.last_error = f"the data plane does not start again: {exc}"
                self._on_event("DataPlaneExited", self.last_error)
                delay = self._restart.next_delay()

    def soft_stop(self, timeout: float) -> None:
        """Stop listening, let requests in flight finish (up to ``timeout``), then exit."""
        self._stopping.set()
        proc = self._proc
        deadline = time.monotonic() + timeout
        while proc is not None and proc.poll() is None and time.monotonic() < deadline:
            try:  # again every half second: a master still starting (a reload just done) may miss it
                os.kill(proc.pid, signal.SIGUSR1)
            except ProcessLookupError:
                return
            try:
                proc.wait(min(0.5, max(0.01, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                continue
        self.stop()

    def old_workers(self) -> int:
        """Workers of earlier configurations still finishing their requests (after a reload)."""
        master = self.pid
        if master is None:
            return 0
        workers = 0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    workers += 1
        return max(0, workers - 1)

    def stop(self) -> None:
        self._stopping.set()
        self._spawner.shutdown(wait=False)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
