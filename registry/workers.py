"""Several serving processes on one port (``driftless registry serve --workers N``).

One Python process saturates one core long before S3 does (issue 20), so the registry can run N
*workers*: each a full server (its own event loop, storage client and caches) listening on the same
address with ``SO_REUSEPORT``, the kernel spreading new connections across them. They share nothing
but the store: upload sessions live in the storage (a chunk PATCHed on one worker is continued on
another; upload ids are signed with the key in the store), htpasswd logins are checked by each worker
against the same file, and the caches' staleness across workers is the ``--cache-ttl`` bound of
:mod:`registry.caches`. Per worker: ``/metrics`` counts what that worker served, and the failed-login
limit counts per worker (up to N times the limit in all).

The parent process binds the port first (``SO_REUSEPORT``, not listening: it receives no connections
but keeps the port, and resolves ``:0`` to a real port), starts the workers and supervises them:

- a worker that dies is logged and restarted (after 1 s, then backing off to 30 s while it keeps dying
  within a minute of its start); until then the other workers keep serving;
- if a worker fails before it ever served (a bad option, a port taken), the parent stops the others
  and exits with an error — nothing would make the next start succeed;
- SIGTERM/SIGINT to the parent stop every worker (each finishes or cuts its requests as a single
  server does) and then the parent; the workers die with the parent if it is killed (PDEATHSIG).

Worker 0 keeps the replica record of a shared store (registry.maintenance): one record per server.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from registry.options import ServerOptions
from registry.server import serve

log = logging.getLogger("driftless.registry")

READY_FD_ENV = "DRIFTLESS_REGISTRY_READY_FD"
RESTART_DELAY = 1.0  # seconds before restarting a dead worker; doubles while it keeps dying young
MAX_RESTART_DELAY = 30.0
YOUNG = 60.0  # seconds: a worker that dies sooner than this after its start backs the restarts off
START_TIMEOUT = 60.0


def default_workers(options: ServerOptions) -> int:
    """One worker per CPU on a remote store (its calls cost CPU in this process); one on the filesystem,
    where a single process already serves near the disk's speed (sendfile)."""
    return max(1, os.cpu_count() or 1) if options.storage is not None else 1


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    ready_fd: int  # the read end of the pipe on which the worker says it listens
    started: float
    ready: bool = False
    delay: float = RESTART_DELAY


def _reserve(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def serve_workers(options: ServerOptions, *, on_ready: Callable[[str], None] | None = None) -> int:
    """Run ``options.workers`` workers on one port until SIGTERM/SIGINT; the exit status (0: stopped)."""
    _create_upload_secret(options)
    reserved = _reserve(options.host, options.port)
    port = reserved.getsockname()[1]
    worker_options = replace(options, port=port, workers=1)
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers: dict[int, _Worker] = {}
    restart_at: dict[int, tuple[float, float]] = {}  # index -> (when, delay)
    url = ""
    announced = False
    try:
        for i in range(options.workers):
            workers[i] = _spawn(i, worker_options)
        while not stopping:
            readable, _, _ = select.select([w.ready_fd for w in workers.values() if not w.ready], [], [], 0.2)
            if stopping:  # (a Ctrl-C or a group kill reaches the workers too: their exits are no crash)
                break
            for w in list(workers.values()):
                if not w.ready and w.ready_fd in readable:  # (a ready worker's closed fd number may be reused)
                    line = os.read(w.ready_fd, 4096).decode()
                    if line.startswith("ready "):
                        w.ready, url = True, line.split()[1]
                        os.close(w.ready_fd)
                if w.proc.poll() is not None:
                    if not w.ready:
                        os.close(w.ready_fd)
                        if not any(x.ready for x in workers.values()) and not announced:
                            log.error("registry worker %d exited with %s before serving; stopping", w.index,
                                      w.proc.returncode)
                            return 1
                    log.warning("registry worker %d (pid %d) exited with %s; restarting it", w.index, w.proc.pid,
                                w.proc.returncode)
                    delay = w.delay * 2 if time.monotonic() - w.started < YOUNG else RESTART_DELAY
                    restart_at[w.index] = (time.monotonic() + min(w.delay, MAX_RESTART_DELAY),
                                           min(delay, MAX_RESTART_DELAY))
                    del workers[w.index]
                elif not w.ready and time.monotonic() - w.started > START_TIMEOUT:
                    log.error("registry worker %d did not start within %.0f s", w.index, START_TIMEOUT)
                    w.proc.kill()
            for index, (when, delay) in list(restart_at.items()):
                if time.monotonic() >= when:
                    del restart_at[index]
                    workers[index] = _spawn(index, worker_options)
                    workers[index].delay = delay
            if not announced and len(workers) == options.workers and all(w.ready for w in workers.values()):
                announced = True
                if on_ready:
                    on_ready(url)
                else:
                    log.info("registry serving %s with %d workers (storage %s)", url, options.workers,
                             options.storage or options.root)
        return 0
    finally:
        for w in workers.values():
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in workers.values():
            try:
                w.proc.wait(15)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(5)
            if not w.ready:
                try:
                    os.close(w.ready_fd)
                except OSError:
                    pass
        reserved.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _create_upload_secret(options: ServerOptions) -> None:
    """Before the workers start: on a fresh store they would otherwise each create the key that signs
    upload ids at once, and hold different ones for a moment."""
    from registry.server import open_storage
    from registry.storage import FilesystemStorage
    from registry.store import Registry

    Registry(open_storage(options) or FilesystemStorage(options.root)).upload_secret()


def _spawn(index: int, options: ServerOptions) -> _Worker:
    read_fd, write_fd = os.pipe()
    env = {**os.environ, READY_FD_ENV: str(write_fd),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the same modules as this process
    proc = subprocess.Popen(
        [sys.executable, "-m", "registry.workers", str(index)], stdin=subprocess.PIPE, env=env,
        pass_fds=(write_fd,),
    )
    os.close(write_fd)
    assert proc.stdin is not None
    proc.stdin.write(pickle.dumps(options))  # paths and switches only: no secret is in ServerOptions
    proc.stdin.close()
    return _Worker(index=index, proc=proc, ready_fd=read_fd, started=time.monotonic())


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the parent dies (a killed parent leaves no worker serving)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def worker_main(index: int) -> None:
    """A worker: read the options from stdin, serve with SO_REUSEPORT, say "ready URL" on the pipe."""
    _die_with_parent()
    parent = os.getppid()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options: ServerOptions = pickle.loads(sys.stdin.buffer.read())
    ready_fd = int(os.environ.pop(READY_FD_ENV))
    if os.getppid() != parent:  # the parent died before PDEATHSIG was set
        return

    def ready(url: str) -> None:
        os.write(ready_fd, f"ready {url}\n".encode())
        os.close(ready_fd)

    serve(options, on_ready=ready, reuse_port=True, replica_record=index == 0)


if __name__ == "__main__":
    worker_main(int(sys.argv[1]))
