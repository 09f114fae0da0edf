"""Processes a test run leaves behind: the charter says a test leaves none, and the end of the run checks.

A process belongs to this run when it descends from the pytest process, when it inherited the run's
mark (an environment variable set at the start: a host's children keep it even once their parent has
died and they were re-parented), or when its command line names the run's temporary directory (a
``wasmtime serve`` gets a bare environment, but its component lives under the host's data directory).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MARK = "PROCESS_LEAK_CHECK"


def mark_this_run() -> str:
    """Set the run's mark in our environment (children inherit it); its value. Always a new one: a pytest
    run started by a test of another must not take the outer run's processes for its own."""
    os.environ[MARK] = uuid.uuid4().hex
    return os.environ[MARK]


@dataclass(frozen=True, slots=True)
class Leftover:
    pid: int
    command: str
    why: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.why}): {self.command[:200]}"


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks after boot) of ``pid``, or None when it is gone."""
    raw = _read(f"/proc/{pid}/stat").decode(errors="replace")
    if not raw:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), fields[0], int(fields[19])


def find(*, root: int, mark: str, temp_dir: str) -> list[Leftover]:
    """Live (not zombie) processes of this run other than ``root`` itself: only processes started after
    ``root`` (its parents, a `timeout` wrapper whose command line names the temporary directory, are not)."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    info = {pid: st for pid in pids if (st := _stat(pid)) is not None}
    if root not in info:
        return []
    since = info[root][2]
    ancestors, up = set(), info[root][0]
    while up in info and up not in ancestors:  # pytest's parents (started in the same clock tick, maybe)
        ancestors.add(up)
        up = info[up][0]
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in info.items():
        children.setdefault(ppid, []).append(pid)
    descendants, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in descendants:
                descendants.add(child)
                todo.append(child)
    marked = f"{MARK}={mark}".encode()
    found = []
    for pid, (_, state, started) in sorted(info.items()):
        if pid == root or pid in ancestors or state == "Z" or started < since:
            continue
        cmdline = _read(f"/proc/{pid}/cmdline")
        if pid in descendants:
            why = "a child of pytest"
        elif marked in _read(f"/proc/{pid}/environ").split(b"\0"):
            why = "started by this run"
        elif temp_dir and temp_dir.encode() in cmdline:
            why = "runs from this run's temporary directory"
        else:
            continue
        found.append(Leftover(pid, cmdline.replace(b"\0", b" ").decode(errors="replace").strip(), why))
    return found


def settle(*, root: int, mark: str, temp_dir: str, grace: float = 5.0) -> list[Leftover]:
    """Leftovers still alive after ``grace`` seconds (a process told to stop may take a moment)."""
    deadline = time.monotonic() + grace
    while True:
        found = find(root=root, mark=mark, temp_dir=temp_dir)
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def kill(leftovers: list[Leftover]) -> None:
    """SIGKILL them (so one leaky run does not disturb the next)."""
    for p in leftovers:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
