"""``driftless logs [--host NAME] [--follow]``: the logs of the platform ``driftless up`` runs.

``driftless up`` writes one log per process in ``DATA/logs/``: ``registry.log``, ``reconciler.log``
and ``host-NAME.log``. This prints the last lines of each (prefixed with the process's name), or of
one host's with ``--host`` (or one process's with ``--process``); ``--follow`` then prints what they
add as it comes, until Ctrl-C, picking up the logs of processes started later.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO

from driftless.endpoints import default_data_dir
from shared.errors import UsageError

POLL_SECONDS = 0.2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None, help="data directory (default $DRIFTLESS_DATA or ~/.driftless)")
    p.add_argument("--host", metavar="NAME", default=None, help="only this host's log")
    p.add_argument("--process", metavar="NAME", default=None,
                   help="only this process's log: registry, reconciler or host-NAME")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    p.add_argument("-n", "--tail", type=int, default=20, metavar="N",
                   help="lines to show of each log first (default 20; 0: none, -1: all)")


def _logs(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.log"))}


def _wanted(args: argparse.Namespace, folder: Path) -> str | None:
    """The one process asked for (None: every one); UsageError naming the known ones."""
    if args.host and args.process:
        raise UsageError("give --host or --process, not both")
    name = f"host-{args.host}" if args.host else args.process
    if name is None:
        return None
    known = _logs(folder)
    if name not in known:
        hosts = [n[5:] for n in known if n.startswith("host-")]
        listing = f"hosts: {', '.join(hosts) or 'none'}; processes: {', '.join(known) or 'none'}"
        raise UsageError(f"no log for {args.host and f'host {args.host}' or name} in {folder} ({listing})")
    return name


def _tail(path: Path, n: int) -> tuple[list[str], int]:
    """The last ``n`` lines of ``path`` (all when n < 0) and the offset after them."""
    with open(path, "rb") as f:
        lines = deque(f, maxlen=None if n < 0 else n) if n else deque()
        end = f.seek(0, 2)
    return [line.decode(errors="replace").rstrip("\n") for line in lines], end


def run(args: argparse.Namespace) -> int:
    data: Path = (args.data or default_data_dir()).resolve()
    folder = data / "logs"
    if not folder.is_dir() or not _logs(folder):
        raise UsageError(f"no logs in {folder}", hint="`driftless up` writes them there; --data for another "
                                                      "data directory")
    only = _wanted(args, folder)
    out = sys.stdout

    def names() -> dict[str, Path]:
        found = _logs(folder)
        return {n: p for n, p in found.items() if only is None or n == only}

    width = max(len(n) for n in _logs(folder))
    prefix = (lambda name: "") if only else (lambda name: f"{name:<{width}} | ")
    offsets: dict[str, int] = {}
    for name, path in names().items():
        lines, offsets[name] = _tail(path, args.tail)
        for line in lines:
            out.write(prefix(name) + line + "\n")
    out.flush()
    if not args.follow:
        return 0
    partial: dict[str, bytes] = {}
    handles: dict[str, IO[bytes]] = {}
    try:
        while True:
            for name, path in names().items():
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                at = offsets.get(name, 0)  # a process started later: its log from the start
                if size < at:  # truncated or replaced: read it again from the start
                    at, partial[name] = 0, b""
                    old = handles.pop(name, None)
                    if old is not None:
                        old.close()
                if size == at:
                    continue
                if name not in handles:
                    handles[name] = open(path, "rb")  # noqa: SIM115 (kept open while following)
                f = handles[name]
                f.seek(at)
                chunk = partial.get(name, b"") + f.read(size - at)
                offsets[name] = size
                complete = chunk.split(b"\n")
                partial[name] = complete.pop()  # a line still being written
                for raw in complete:
                    out.write(prefix(name) + raw.decode(errors="replace") + "\n")
            out.flush()
            time.sleep(POLL_SECONDS)
    finally:
        for f in handles.values():
            f.close()
