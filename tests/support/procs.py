"""Start real ``driftless`` processes for tests; their logs go to files that are printed when a test fails.

    with DriftlessProcess(["registry", "serve", "--root", str(root), "--listen", f"127.0.0.1:{port}"],
                          log_dir=tmp_path, ready_url=f"http://127.0.0.1:{port}/v2/") as reg:
        ...
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# every process started by a test, so conftest can print their logs when the test fails
STARTED: list[DriftlessProcess] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound now (for a process that takes fixed ports)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_until(predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; raise AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the condition may not be observable yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}" + (f": {last_exc!r}" if last_exc else ""))


def http_ok(url: str, *, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as r:
            return 200 <= r.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except OSError:
        return False


class DriftlessProcess:
    def __init__(
        self,
        args: Sequence[str],
        *,
        log_dir: Path,
        ready_url: str | None = None,
        ready_timeout: float = 20.0,
        env: dict[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self.args = list(args)
        self.name = name or self.args[0]
        self.log_path = Path(log_dir) / f"{self.name}-{len(STARTED)}.log"
        self.ready_url = ready_url
        self.ready_timeout = ready_timeout
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DriftlessProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftless", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        STARTED.append(self)
        if self.ready_url:
            wait_until(self._ready, timeout=self.ready_timeout, what=f"{self.name} at {self.ready_url}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
        return http_ok(self.ready_url or "")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: a crash, no cleanup."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (graceful); SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> DriftlessProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
