"""Big blobs from S3 to the client without passing through Python: ``splice(2)`` on a worker thread.

A pull of a 64 MiB blob through aiohttp's client still copied every byte into Python objects twice
and cost more CPU than distribution's Go (issue 20). For a big blob on a plain-HTTP S3 endpoint (a
SeaweedFS or MinIO next to the registry) and a plain-HTTP client, this module instead opens the ranged
GET of a presigned URL on its own socket, reads S3's answer head, and then moves the body kernel-side:
S3 socket -> pipe -> client socket, from a worker thread (as :func:`registry.transfer.threaded_sendfile`
does for files), so the bytes never enter this process. Whatever is unusual before the answer starts
(HTTPS, an error status, a chunked body, a segmented value, no free thread) returns None and the caller
streams the ordinary way (registry.storage_s3_stream, which retries); a failure after it started cuts
the answer short (the client sees fewer bytes than Content-Length and retries).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from registry.transfer import prepared_socket

SPLICE_MIN = 4 << 20  # blobs (or ranges) this big are spliced
SPLICE_THREADS = 8
PIPE_SIZE = 1 << 20  # bytes the pipe between the sockets holds (F_SETPIPE_SZ; the default is 64 KiB)
STALL_SECONDS = 60.0  # a client that takes nothing, or an S3 that sends nothing, for this long is dropped
CONNECT_SECONDS = 5.0
F_SETPIPE_SZ = 1031

_POOL = ThreadPoolExecutor(max_workers=SPLICE_THREADS, thread_name_prefix="driftless-splice")
_active = 0  # touched only on the event loop


def usable(request: web.BaseRequest, url: str, length: int) -> bool:
    return (length >= SPLICE_MIN and _active < SPLICE_THREADS and hasattr(os, "splice") and url.startswith("http://")
            and request.transport is not None and request.transport.get_extra_info("sslcontext") is None)


def _open(url: str, start: int, stop: int, unless_header: str) -> tuple[socket.socket, bytes] | None:
    """Send the GET, read the answer's head: (socket, body bytes read with it), or None when it is not
    a plain 200/206 of exactly the range (the caller then streams the ordinary way)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=CONNECT_SECONDS)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nRange: bytes={start}-{stop - 1}\r\n"
                     "Connection: close\r\n\r\n".encode())
        sock.settimeout(STALL_SECONDS)
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            if not data or len(buffer) > 65536:
                raise ConnectionError("S3 sent no complete answer head")
            buffer += data
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)[1] if lines[0].count(" ") >= 1 else ""
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status == "404":
            raise FileNotFoundError(url)
        if (status not in ("200", "206") or fields.get("content-length") != str(stop - start)
                or "transfer-encoding" in fields or f"x-amz-meta-{unless_header}" in fields):
            sock.close()
            return None
        sock.setblocking(False)
        return sock, rest
    except BaseException:
        sock.close()
        raise


class _Splice:
    """One body moved S3 socket -> pipe -> client socket on a worker thread, which owns (and closes)
    its descriptors; ``abort`` (from the loop, when the client is gone) wakes it through a pipe."""

    def __init__(self, out_fd: int, s3: socket.socket, already: bytes, length: int) -> None:
        self.out_fd, self.s3, self.already, self.length = out_fd, s3, already, length
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._closed = False

    def _wait(self, *, read: int | None = None, write: int | None = None) -> None:
        readable, writable, _ = select.select([self._wake_r] + ([read] if read is not None else []),
                                              [write] if write is not None else [], [], STALL_SECONDS)
        if self._wake_r in readable:
            raise ConnectionAbortedError("the download was aborted")
        if not readable and not writable:
            raise TimeoutError(f"nothing moved for {STALL_SECONDS:.0f} s")

    def _send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.out_fd, view):]
            except BlockingIOError:
                self._wait(write=self.out_fd)

    def run(self) -> None:
        pipe_r, pipe_w = os.pipe()
        try:
            try:
                fcntl.fcntl(pipe_w, F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:  # over /proc/sys/fs/pipe-max-size: the default size works, in more steps
                pass
            self._send_all(self.already)
            remaining = self.length - len(self.already)
            in_fd = self.s3.fileno()
            while remaining > 0:
                try:
                    moved = os.splice(in_fd, pipe_w, min(remaining, PIPE_SIZE))
                except BlockingIOError:
                    self._wait(read=in_fd)
                    continue
                if moved == 0:
                    raise ConnectionError(f"S3 closed the body with {remaining} bytes to go")
                remaining -= moved
                while moved:
                    try:
                        moved -= os.splice(pipe_r, self.out_fd, moved)
                    except BlockingIOError:
                        self._wait(write=self.out_fd)
        finally:
            os.close(pipe_r)
            os.close(pipe_w)
            with self._lock:
                self._closed = True
                self.s3.close()
                for fd in (self.out_fd, self._wake_r, self._wake_w):
                    os.close(fd)

    def abort(self) -> None:
        with self._lock:
            if not self._closed:
                os.write(self._wake_w, b"x")


async def splice_from_s3(request: web.BaseRequest, *, url: str, start: int, stop: int, status: int,
                         headers: dict[str, str], unless_header: str) -> web.StreamResponse | None:
    """Serve bytes ``start``..``stop`` of the object at the presigned ``url``; None: serve them another
    way (nothing was sent). FileNotFoundError when S3 has no such object."""
    global _active
    loop = asyncio.get_running_loop()
    _active += 1
    try:
        try:
            opened = await loop.run_in_executor(_POOL, _open, url, start, stop, unless_header)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            return None  # refused, timed out, cut: the ordinary stream retries
        if opened is None:
            return None
        s3, already = opened
        try:
            response, transport, out_fd = await prepared_socket(request, status=status, headers=headers, length=stop - start)
        except BaseException:
            s3.close()
            raise
        job = _Splice(out_fd, s3, already, stop - start)
        try:
            # shielded: run() closes the descriptors, so it must run even if the request is cancelled
            moving = asyncio.wrap_future(_POOL.submit(job.run))
            moving.add_done_callback(_retrieved)  # after a cancel its error (the client left) is expected
            await asyncio.shield(moving)
        except asyncio.CancelledError:
            job.abort()
            raise
        except OSError:  # the client went away or stalled, or S3 broke off: cut the answer
            response.force_close()
            transport.close()
            return response
        await response.write_eof()
        return response
    finally:
        _active -= 1


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def presigned(storage: Any, key: str) -> str | None:
    """The presigned URL of ``key`` in an S3 driver with blob streams, else None."""
    streams = getattr(storage, "streams", None)
    return streams.url(storage._k(key)) if streams is not None else None
