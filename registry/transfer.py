"""Moving bytes between the network and storage: request bodies streamed into a writer while hashed,
large blobs sent with os.sendfile from worker threads, manifests read under a size limit."""

from __future__ import annotations

import asyncio
import os
import select
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from registry.errors import RegistryError
from registry.storage_s3 import unavailable as storage_unavailable

THREADED_SENDFILE_MIN = 4 << 20  # blobs this big are sent from a worker thread
SENDFILE_THREADS = 8  # concurrent big downloads on threads; more go out from the event loop
SEND_STALL_SECONDS = 60  # a download that accepts nothing for this long is dropped
FLUSH_EVERY = 8 << 20  # bytes between background fdatasyncs of a streamed upload


def sendfile_thread_free() -> bool:
    """Whether a big download may go out from a worker thread now (else from the event loop)."""
    return _sendfile_active < SENDFILE_THREADS


async def stream_body(request: web.BaseRequest, writer: Any, hasher: Any) -> None:
    """Body -> hasher and writer in one pass. Every FLUSH_EVERY bytes a background fdatasync starts,
    so the disk writes overlap the network and the final fsync at commit only has the tail to do."""
    declared = request.content_length
    received = 0
    fileno = getattr(writer, "fileno", None)
    loop = asyncio.get_running_loop()
    flushing: asyncio.Future[None] | None = None
    next_flush = FLUSH_EVERY
    try:
        async for chunk in request.content.iter_any():
            hasher.update(chunk)
            if fileno is None:  # an object-store writer may upload a part now: off the loop
                await loop.run_in_executor(None, writer.write, chunk)
            else:
                writer.write(chunk)
            received += len(chunk)
            if fileno is not None and received >= next_flush and (flushing is None or flushing.done()):
                next_flush = received + FLUSH_EVERY
                flushing = loop.run_in_executor(None, os.fdatasync, fileno)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        if storage_unavailable(exc):  # a part's upload to S3 failed, not the client's body
            raise
        raise RegistryError("BLOB_UPLOAD_INVALID", f"the request body was cut short: {exc}") from None
    finally:
        if flushing is not None:
            await asyncio.shield(flushing)
    if declared is not None and received != declared:
        raise RegistryError(
            "SIZE_INVALID", f"Content-Length says {declared} bytes but {received} arrived"
        )


def range_length(request: web.BaseRequest, size: int) -> int:
    try:
        start, stop, _ = request.http_range.indices(size)
    except ValueError:
        return 0
    return max(0, stop - start)


class _ThreadedSend:
    """One download sent with os.sendfile on a worker thread, which owns (and closes) its descriptors.

    The descriptors are the thread's own duplicates, so a cancelled request can never make it write
    to a reused fd; ``abort`` (from the loop, when the client is gone) wakes a thread that waits on
    a stalled client through a pipe, so it returns at once.
    """

    def __init__(self, out_fd: int, in_fd: int, size: int) -> None:
        self.out_fd, self.in_fd, self.size = out_fd, in_fd, size
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._closed = False

    def run(self) -> None:
        try:
            offset = 0
            while offset < self.size:
                try:
                    sent = os.sendfile(self.out_fd, self.in_fd, offset, self.size - offset)
                except BlockingIOError:
                    readable, writable, _ = select.select([self._wake_r], [self.out_fd], [], SEND_STALL_SECONDS)
                    if readable:
                        raise ConnectionAbortedError("the download was aborted") from None
                    if not writable:
                        raise TimeoutError(f"the client took no data for {SEND_STALL_SECONDS} s") from None
                    continue
                if sent == 0:
                    raise ConnectionResetError("the client went away")
                offset += sent
        finally:
            with self._lock:
                self._closed = True
                for fd in (self.in_fd, self.out_fd, self._wake_r, self._wake_w):
                    os.close(fd)

    def abort(self) -> None:
        with self._lock:
            if not self._closed:
                os.write(self._wake_w, b"x")


_SENDFILE_POOL = ThreadPoolExecutor(max_workers=SENDFILE_THREADS, thread_name_prefix="driftless-sendfile")
_sendfile_active = 0  # touched only on the event loop


async def prepared_socket(request: web.BaseRequest, *, status: int, headers: dict[str, str],
                          length: int) -> tuple[web.StreamResponse, asyncio.Transport, int]:
    """Send the answer's head and hand over a duplicate of the client's socket, for a thread to write
    the ``length`` body bytes to kernel-side (sendfile, splice); the caller closes the descriptor (and
    the transport, to cut an answer short)."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(request)
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost")
    while transport.get_write_buffer_size():  # the head must be out before the thread writes
        await asyncio.sleep(0)
    return response, transport, os.dup(transport.get_extra_info("socket").fileno())


async def threaded_sendfile(request: web.BaseRequest, path: Path, size: int,
                             headers: dict[str, str]) -> web.StreamResponse:
    """Serve a whole large blob with os.sendfile on a worker thread rather than on the event loop.

    The kernel's copy runs in the calling thread; on the loop every big download shares one core,
    on worker threads they spread over all cores. The loop writes the headers, waits until they
    have left, and keeps its hands off the socket until the thread is done.
    """
    global _sendfile_active
    try:
        in_fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise RegistryError("BLOB_UNKNOWN", "the blob was deleted while being served") from None
    try:
        response, transport, out_fd = await prepared_socket(request, status=200, headers=headers, length=size)
    except BaseException:
        os.close(in_fd)
        raise
    sender = _ThreadedSend(out_fd, in_fd, size)
    _sendfile_active += 1
    try:
        # shielded: a cancelled request must not cancel a job that has not started, whose run() is
        # what closes the descriptors; abort() makes it return at once instead
        await asyncio.shield(asyncio.wrap_future(_SENDFILE_POOL.submit(sender.run)))
    except asyncio.CancelledError:  # the client disconnected: release the thread now
        sender.abort()
        raise
    except OSError:  # the client went away or stalled (TimeoutError is an OSError): drop the connection
        response.force_close()
        transport.close()
        return response
    finally:
        _sendfile_active -= 1
    await response.write_eof()
    return response


async def read_limited(request: web.BaseRequest, limit: int) -> bytes:
    parts = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise RegistryError("SIZE_INVALID", f"manifest is larger than the limit of {limit} bytes (4 MiB)",
                                    status=413)
            parts.append(chunk)
    except (RegistryError, asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # the client hung up mid-body
        raise RegistryError("MANIFEST_INVALID", f"the request body was cut short: {exc}") from None
    return b"".join(parts)
