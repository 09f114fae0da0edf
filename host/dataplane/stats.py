"""What HAProxy served, folded into the host's per-digest figures (host/traffic.py).

Exact counts come from the runtime API's per-server counters (``show stat``: requests, 5xx answers,
requests in flight), polled by the agent; a counter that went down means a new worker (a reload or
a restart) and counts from zero. Latency comes from HAProxy's request log, sent to a unix datagram
socket the agent reads (one short line per request: backend, server, status, total ms).
"""

from __future__ import annotations

import asyncio
import csv
import io
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from host.dataplane.config import PYTHON_SERVER


@dataclass(frozen=True, slots=True)
class ServerStat:
    backend: str
    server: str
    requests: int  # stot: streams, one per HTTP request
    errors: int  # hrsp_5xx
    inflight: int  # scur


def parse_stat(text: str) -> list[ServerStat]:
    """``show stat`` CSV -> the servers' rows (not FRONTEND/BACKEND, not the Python fallback)."""
    if text.startswith("# "):
        text = text[2:]
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        server = row.get("svname") or ""
        if server in ("FRONTEND", "BACKEND", PYTHON_SERVER, "") or row.get("pxname") == "python":
            continue
        out.append(ServerStat(backend=row.get("pxname") or "", server=server, requests=int(row.get("stot") or 0),
                              errors=int(row.get("hrsp_5xx") or 0), inflight=int(row.get("scur") or 0)))
    return out


class Deltas:
    """Per-server counter deltas between polls (a counter going down: a new worker, counted from 0)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[int, int]] = {}

    def update(self, stats: list[ServerStat]) -> list[tuple[ServerStat, int, int]]:
        out = []
        seen = {}
        for s in stats:
            key = (s.backend, s.server)
            before = self._last.get(key, (0, 0))
            requests = s.requests - before[0] if s.requests >= before[0] else s.requests
            errors = s.errors - before[1] if s.errors >= before[1] else s.errors
            seen[key] = (s.requests, s.errors)
            out.append((s, requests, errors))
        self._last = seen
        return out


def parse_log(line: bytes) -> tuple[str, float] | None:
    """One raw log line "backend server status total_ms" -> (server, seconds); None for the
    Python fallback (it counts its own) and for what it cannot read."""
    parts = line.split()
    if len(parts) < 4:
        return None
    server = parts[1].decode(errors="replace")
    if server == PYTHON_SERVER or server == "<NOSRV>" or parts[0] == b"python":
        return None
    try:
        ms = int(parts[3])
    except ValueError:
        return None
    return server, max(ms, 0) / 1000


class LogReader(asyncio.DatagramProtocol):
    """HAProxy's request log on a unix datagram socket; each line to ``on_line(server, seconds)``."""

    def __init__(self, on_line: Callable[[str, float], None]) -> None:
        self._on_line = on_line
        self.lines = 0

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.lines += 1
        parsed = parse_log(data)
        if parsed is not None:
            self._on_line(*parsed)


async def open_log(path: Path, on_line: Callable[[str, float], None]) -> tuple[asyncio.DatagramTransport, LogReader]:
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    path.chmod(0o600)
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: LogReader(on_line), sock=sock)
    return transport, protocol
