"""Blob bytes from S3 straight into the HTTP answer: one ranged GET of a presigned URL with aiohttp.

Why not obstore (registry.storage_s3_reads) here too: for big bodies its stream costs about twice the
CPU of aiohttp's client (measured on SeaweedFS, reading a 64 MiB object in 1 MiB chunks: obstore 35 ms
of CPU, aiohttp 18 ms, boto3 60 ms), and on a pull of big blobs that CPU is the limit. The URL is
presigned by boto3 (0.14 ms, no round trip; valid 15 minutes, reused for 10), so requests carry the
same identity as every other call. Opening is retried like the other clients' calls (5 retries,
exponential backoff from 50 ms, for 5xx answers and connection errors); what still fails raises
:class:`~registry.storage_s3_reads.S3Unavailable` (503). Once the first byte went to the client a
failure can only cut the answer short (the client sees a short body and retries).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from typing import Any

from registry.caches import TtlCache
from registry.storage_s3_reads import S3Unavailable
from shared.retry import Backoff

PRESIGN_SECONDS = 900
PRESIGN_REUSE = 600.0  # seconds a presigned URL is reused (it stays valid PRESIGN_SECONDS)
RETRIES = 5
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0  # without a byte from S3
CHUNK = 1 << 20  # at most this much per write to the client


class PresignedStreams:
    """Ranged GETs of ``bucket``'s objects, signed by ``boto_client``; one aiohttp session per event loop."""

    def __init__(self, bucket: str, *, boto_client: Any) -> None:
        self.bucket = bucket
        self._client = boto_client
        self._urls: TtlCache[str, str] = TtlCache(ttl=PRESIGN_REUSE, max_entries=10_000)
        self._sessions: dict[asyncio.AbstractEventLoop, Any] = {}

    def url(self, full_key: str) -> str:
        """A presigned GET URL of the object (made without a round trip, reused for PRESIGN_REUSE)."""
        url = self._urls.get(full_key)
        if url is None:
            url = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": full_key}, ExpiresIn=PRESIGN_SECONDS)
            self._urls.put(full_key, url)
        return url

    def _session(self) -> Any:
        import aiohttp

        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            ca_bundle = os.environ.get("AWS_CA_BUNDLE")
            ctx = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ssl=ctx if ctx is not None else True),
                timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
                auto_decompress=False, skip_auto_headers=("Accept-Encoding", "User-Agent"),
            )
            self._sessions = {k: v for k, v in self._sessions.items() if not k.is_closed()}
            self._sessions[loop] = session
        return session

    async def open(self, full_key: str, start: int, stop: int, *, unless_meta: str) -> AsyncIterator[bytes] | None:
        """Bytes ``start``..``stop`` of the object, once S3 answered (FileNotFoundError if absent); None
        when the object has the user metadata ``unless_meta`` (a segmented value: read it another way)."""
        import aiohttp

        if start >= stop:
            return _nothing()
        headers = {"Range": f"bytes={start}-{stop - 1}"}
        backoff = Backoff(first=0.05, cap=2.0)
        for attempt in range(RETRIES + 1):
            try:
                response = await self._session().get(self.url(full_key), headers=headers)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                failure: str = f"{type(exc).__name__}: {exc}"
            else:
                if response.status in (200, 206):
                    if f"x-amz-meta-{unless_meta}" in response.headers:
                        response.release()
                        return None
                    return _body(response, full_key)
                response.release()
                if response.status == 404:
                    raise FileNotFoundError(full_key)
                if response.status == 403:  # a stale presigned URL (clock, rotated credentials): sign anew
                    self._urls.pop(full_key)
                    if attempt == 0:
                        continue
                if response.status < 500 and response.status not in (403, 429):
                    raise OSError(f"S3 answered {response.status} to a GET of {full_key}")
                failure = f"status {response.status}"
            if attempt < RETRIES:
                await backoff.wait()
        raise S3Unavailable(f"S3 GET of {full_key} failed after {RETRIES + 1} attempts: {failure}")

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def _body(response: Any, key: str) -> AsyncIterator[bytes]:
    import aiohttp

    try:
        async for chunk in response.content.iter_chunked(CHUNK):
            yield chunk
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise S3Unavailable(f"S3 GET of {key} broke off: {exc}") from None
    finally:
        response.release()
