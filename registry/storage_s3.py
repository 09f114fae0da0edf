"""An S3 driver for the :class:`~registry.storage.Storage` interface (AWS S3, MinIO, SeaweedFS, ...).

``driftless registry serve --storage s3://bucket/prefix [--s3-endpoint URL]``: every key of
:mod:`registry.layout` becomes the object ``prefix/key`` in ``bucket``. Credentials come from boto3's
usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and the shared
credentials file, instance roles); the region defaults to us-east-1; with an endpoint (MinIO,
SeaweedFS) requests use path-style addressing.

What is atomic, and how
    S3 has no rename and no append, but a single PUT (or the completion of a multipart upload) makes an
    object appear whole, at once, or not at all. So :meth:`S3Storage.put` is one PutObject, and a
    :class:`_MultipartWriter` keeps up to one part (8 MiB) in memory, sends each full part as an
    UploadPart from a small thread pool while the next one fills (at most two in flight: memory stays
    bounded whatever the blob's size), and only :meth:`~_MultipartWriter.commit`
    (CompleteMultipartUpload) makes the object visible; :meth:`~_MultipartWriter.cancel` aborts the
    multipart upload. A blob smaller than one part is a single PutObject at commit.

Upload sessions (``writer(key, append_at=N)``)
    A chunked upload's bytes must survive between requests and be continued by *any* replica, so they
    live in the bucket. Objects are immutable, so each committed chunk is its own object, a *segment*
    ``<key>#<start offset>-<random>``; the object at ``<key>`` itself is a small JSON *index* naming the
    segments and how many bytes of each count (metadata ``driftless-segmented``, the total size in
    ``driftless-size``). A chunk is committed by writing its segment (multipart, as above) and then
    replacing the index — one PutObject, the commit point: a reader sees the old chunk list or the new.
    ``append_at=N`` keeps the first N bytes: segments past N are dropped from the index and one that
    crosses N is clipped (only the index changes), so a crash's leftovers never count. Segments not in
    the index (a crash between the two writes) are orphans, deleted with the key. ``stat`` is one
    HeadObject whatever the form; ``reader`` streams across the segments with ranged GETs; ``move``
    (the end of an upload) composes the segments into the destination server-side with UploadPartCopy
    (parts of at least 5 MiB are copied without passing through this process; smaller chunks are
    concatenated here, at most 8 MiB at a time, into full parts) and then deletes the source.

Other operations
    ``move`` is copy + delete (CopyObject, or UploadPartCopy beyond 5 GiB): the destination appears
    atomically; the registry only moves content-addressed upload data to its blob key, so a repeated
    or concurrent move writes the same bytes. ``delete`` of a key removes the object, its segments and
    everything under ``key/`` (ListObjectsV2 + DeleteObjects). ``list`` is ListObjectsV2 with a ``/``
    delimiter, paginated. ``local_path`` is None: the server streams blobs from :meth:`reader` (with
    ranged GETs for ``Range`` requests), like :class:`~registry.storage.MemoryStorage`.
    :meth:`clean_temp` aborts multipart uploads a crash left behind (gc calls it, as for the
    filesystem's ``_tmp/``).
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from registry.storage import Stat
from registry.storage_s3_reads import ObstoreReads, RangedReader, S3Unavailable
from registry.storage_s3_reads import available as obstore_available
from registry.storage_s3_stream import PresignedStreams

PART_SIZE = 8 << 20  # multipart part size (S3 needs >= 5 MiB for all parts but the last)
MIN_PART = 5 << 20
MAX_COPY = 5 << 30  # CopyObject / UploadPartCopy limit per request
MAX_IN_FLIGHT = 2  # parts being sent per writer while the next one fills
SEGMENT_MARK = "#"  # never in a layout key (names, tags, digests and upload ids have no '#')
SEGMENTED_META = "driftless-segmented"
SIZE_META = "driftless-size"
CONNECT_TIMEOUT = 5.0  # seconds: a down endpoint fails fast (and is retried) rather than hanging clients
READ_TIMEOUT = 60.0  # seconds without a byte from S3 (server-side copies of big objects can be slow)
TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
                   "ServiceUnavailable", "InternalError", "RequestTimeout"}

_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="driftless-s3")


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "some/prefix" (no trailing slash)


def parse_s3_url(url: str) -> S3Location:
    """``s3://bucket[/prefix]`` -> (bucket, prefix); ValueError when it is not one."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{url!r} is not an s3://bucket[/prefix] URL")
    if len(parsed.netloc) < 3:
        raise ValueError(f"bucket name {parsed.netloc!r} is too short (S3 bucket names have 3 to 63 characters)")
    return S3Location(parsed.netloc, parsed.path.strip("/"))


def make_client(endpoint: str | None = None, *, region: str | None = None) -> Any:
    """A boto3 S3 client: credentials from the usual AWS chain, us-east-1 unless configured, path-style
    addressing (what MinIO and SeaweedFS need) when an endpoint is given."""
    import os

    import boto3
    from botocore.config import Config

    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(
        s3={"addressing_style": "path" if endpoint else "auto"},
        # throttling (503 SlowDown, backoff from 1 s), 5xx and connection errors (from 50 ms) are retried
        # 5 times with exponential backoff and jitter; what still fails is answered 503 (see unavailable())
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=32,
    )
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _missing(exc: Exception) -> bool:
    return _code(exc) in ("404", "NoSuchKey", "NotFound")


def unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (after botocore's retries) says S3 is down, throttling or failing — a 5xx or
    429, SlowDown, a refused, dropped or timed-out connection — rather than that a request was wrong.
    The server answers these with 503 UNAVAILABLE and Retry-After."""
    try:
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return False
    if isinstance(exc, S3Unavailable):  # from the obstore read path (registry.storage_s3_reads)
        return True
    if isinstance(exc, ClientError):
        status = int((exc.response or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or status == 429 or _code(exc) in TRANSIENT_CODES
    return isinstance(exc, (BotoConnectionError, HTTPClientError))  # refused, closed, timed out


@dataclass(frozen=True, slots=True)
class _Piece:
    """``length`` bytes of object ``key``, from its start."""

    key: str
    length: int


Pieces = list[_Piece]
_Objects = list[dict[str, Any]]
_Names = list[str]


class S3Storage:
    """Objects under ``prefix/`` in ``bucket`` (see the module docstring)."""

    remote = True  # every call is a round trip: never on the event loop

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None, endpoint: str | None = None,
                 fast_reads: bool = True) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else make_client(endpoint)
        # reads (HEAD, GET, list, blob streams) on obstore: a tenth of boto3's CPU per call (see that module)
        self.reads = (ObstoreReads(bucket, endpoint=endpoint or (self.client.meta.endpoint_url if client else None),
                                   region=self.client.meta.region_name, boto_client=self.client)
                      if fast_reads and obstore_available() else None)
        self.streams = PresignedStreams(bucket, boto_client=self.client) if fast_reads else None  # blob GETs

    @classmethod
    def from_url(cls, url: str, *, endpoint: str | None = None, client: Any = None) -> S3Storage:
        loc = parse_s3_url(url)
        return cls(loc.bucket, loc.prefix, endpoint=endpoint, client=client)

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.bucket}/{self.prefix})"

    # -- keys ---------------------------------------------------------------------------------------
    def _k(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unk(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    # -- the index of a segmented value -----------------------------------------------------------------
    def _head(self, key: str) -> dict[str, Any] | None:
        if self.reads is not None:
            return self.reads.head(self._k(key))
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self._k(key)))
        except Exception as exc:
            if _missing(exc):
                return None
            raise

    def _pieces(self, key: str, head: dict[str, Any] | None = None, body: bytes | None = None) -> Pieces | None:
        """The pieces a value is made of (one for a plain object), or None when absent."""
        if head is None:
            head = self._head(key)
            if head is None:
                return None
        if SEGMENTED_META not in (head.get("Metadata") or {}):
            return [_Piece(key, int(head["ContentLength"]))]
        if body is None and self.reads is not None:
            try:
                body = self.reads.get(self._k(key))[0]
            except FileNotFoundError:
                return None
        if body is None:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
            except Exception as exc:
                if _missing(exc):
                    return None
                raise
        return [_Piece(k, int(n)) for k, n in json.loads(body or b"[]")]

    def _put_index(self, key: str, pieces: Pieces) -> None:
        total = sum(p.length for p in pieces)
        self.client.put_object(
            Bucket=self.bucket, Key=self._k(key), Body=json.dumps([[p.key, p.length] for p in pieces]).encode(),
            Metadata={SEGMENTED_META: "1", SIZE_META: str(total)}, ContentType="application/json",
        )

    # -- the interface --------------------------------------------------------------------------------
    def stat(self, key: str) -> Stat | None:
        head = self._head(key)
        if head is None:
            return None
        meta = head.get("Metadata") or {}
        size = int(meta[SIZE_META]) if SEGMENTED_META in meta else int(head["ContentLength"])
        return Stat(size, head["LastModified"].timestamp())

    def get(self, key: str) -> bytes:
        if self.reads is not None:
            body, meta = self.reads.get(self._k(key))
            if SEGMENTED_META not in meta:
                return body
            with self._open(self._pieces(key, {"Metadata": meta}, body) or []) as f:
                return f.read()
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
        except Exception as exc:
            if _missing(exc):
                raise FileNotFoundError(key) from None
            raise
        data: bytes = response["Body"].read()
        if SEGMENTED_META not in (response.get("Metadata") or {}):
            return data
        with self._open(self._pieces(key, {"Metadata": response["Metadata"]}, data) or []) as f:
            return f.read()

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=bytes(data))

    def writer(self, key: str, *, append_at: int | None = None) -> _MultipartWriter | _AppendWriter:
        if append_at is None:
            return _MultipartWriter(self, key)
        return _AppendWriter(self, key, append_at)

    def reader(self, key: str) -> BinaryIO:
        pieces = self._pieces(key)
        if pieces is None:
            raise FileNotFoundError(key)
        return self._open(pieces)

    def _open(self, pieces: Pieces) -> BinaryIO:
        return io.BufferedReader(RangedReader(self, pieces), buffer_size=1 << 20)

    def local_path(self, key: str) -> Path | None:
        return None

    async def open_stream(self, key: str, start: int, stop: int) -> AsyncIterator[bytes] | None:
        """Bytes ``start``..``stop`` of a plain object as an async stream, once S3 answered (FileNotFoundError
        when absent); None when the value is segmented or fast reads are off (then use :meth:`reader`)."""
        if self.streams is None:
            return None
        return await self.streams.open(self._k(key), start, stop, unless_meta=SEGMENTED_META)

    def _list_all(self, full_prefix: str, *, delimiter: str | None = None) -> tuple[_Objects, _Names]:
        objects: _Objects = []
        prefixes: _Names = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full_prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            objects += page.get("Contents") or []
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes") or []]
        return objects, prefixes

    def list(self, prefix: str) -> list[str]:
        start = self._k(prefix) + "/" if prefix.strip("/") else (self.prefix + "/" if self.prefix else "")
        if self.reads is not None:
            keys, dirs = self.reads.list(start, delimiter=True)
            names = {k[len(start):] for k in keys + dirs if k.startswith(start)}
            return sorted(n for n in names if n and SEGMENT_MARK not in n and "/" not in n)
        objects, prefixes = self._list_all(start, delimiter="/")
        names = {o["Key"][len(start):] for o in objects} | {p[len(start):].rstrip("/") for p in prefixes}
        return sorted(n for n in names if n and SEGMENT_MARK not in n)

    def move(self, src: str, dst: str) -> None:
        pieces = self._pieces(src)
        if pieces is None:
            raise FileNotFoundError(src)
        self._compose(pieces, dst)
        self.delete(src)

    def delete(self, key: str) -> bool:
        full = self._k(key)
        objects, _ = self._list_all(full)
        doomed = [o["Key"] for o in objects
                  if o["Key"] == full or o["Key"].startswith(full + "/") or o["Key"].startswith(full + SEGMENT_MARK)]
        for i in range(0, len(doomed), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in doomed[i:i + 1000]], "Quiet": True})
        # stores with real directories (SeaweedFS's filer) keep the emptied ones and list them as common
        # prefixes: delete those markers, deepest first (on AWS S3 these are no-ops)
        dirs = {full + "/"}
        for k in doomed:
            parts = k[len(full) + 1:].split("/")[:-1] if k.startswith(full + "/") else []
            dirs |= {full + "/" + "/".join(parts[:i]) + "/" for i in range(1, len(parts) + 1)}
        if any(k.startswith(full + "/") for k in doomed):
            for d in sorted(dirs, key=lambda d: -d.count("/")):
                self.client.delete_object(Bucket=self.bucket, Key=d)
        return bool(doomed)

    async def aclose(self) -> None:
        """Close the blob streams' HTTP sessions (the server calls it when it stops)."""
        if self.streams is not None:
            await self.streams.close()

    def clean_temp(self, *, older_than: float = 0.0) -> int:
        """Abort multipart uploads under the prefix started more than ``older_than`` seconds ago (a
        crash's leftovers, invisible but billed); returns how many."""
        cutoff = time.time() - older_than
        aborted = 0
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + "/" if self.prefix else ""}
        for page in self.client.get_paginator("list_multipart_uploads").paginate(**kwargs):
            for upload in page.get("Uploads") or []:
                if upload["Initiated"].timestamp() <= cutoff:
                    try:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                        aborted += 1
                    except Exception as exc:
                        if _code(exc) != "NoSuchUpload":
                            raise
        return aborted

    # -- composing pieces into one object (server-side where S3 allows) -------------------------------
    def _compose(self, pieces: Pieces, dst: str) -> None:
        pieces = [p for p in pieces if p.length > 0]
        total = sum(p.length for p in pieces)
        if total == 0:
            self.put(dst, b"")
            return
        if len(pieces) == 1 and pieces[0].length <= MAX_COPY:
            head = self._head(pieces[0].key)
            if head is not None and int(head["ContentLength"]) == pieces[0].length:
                self.client.copy_object(Bucket=self.bucket, Key=self._k(dst),
                                        CopySource={"Bucket": self.bucket, "Key": self._k(pieces[0].key)})
                return
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self._k(dst))["UploadId"]
        parts: _Objects = []
        buffer = bytearray()

        def send_buffer() -> None:
            r = self.client.upload_part(Bucket=self.bucket, Key=self._k(dst), UploadId=upload_id,
                                        PartNumber=len(parts) + 1, Body=bytes(buffer))
            parts.append({"PartNumber": len(parts) + 1, "ETag": r["ETag"]})
            buffer.clear()

        def read_range(key: str, start: int, stop: int) -> bytes:
            r = self.client.get_object(Bucket=self.bucket, Key=self._k(key), Range=f"bytes={start}-{stop - 1}")
            return bytes(r["Body"].read())

        try:
            for piece in pieces:
                offset = 0
                while offset < piece.length:
                    remaining = piece.length - offset
                    if buffer or remaining < MIN_PART:
                        # top the buffer up to a full part from this piece (small chunks are concatenated here)
                        take = min(remaining, PART_SIZE - len(buffer))
                        buffer += read_range(piece.key, offset, offset + take)
                        offset += take
                        if len(buffer) >= PART_SIZE:
                            send_buffer()
                        continue
                    # a big run with nothing buffered: copy it server-side, leaving no runt (< 5 MiB) behind
                    take = min(remaining, MAX_COPY)
                    if 0 < remaining - take < MIN_PART:
                        take = remaining - MIN_PART
                    r = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=self._k(dst), UploadId=upload_id, PartNumber=len(parts) + 1,
                        CopySource={"Bucket": self.bucket, "Key": self._k(piece.key)},
                        CopySourceRange=f"bytes={offset}-{offset + take - 1}",
                    )
                    parts.append({"PartNumber": len(parts) + 1, "ETag": r["CopyPartResult"]["ETag"]})
                    offset += take
            if buffer:
                send_buffer()
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self._k(dst), UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._k(dst), UploadId=upload_id)
            raise


# --- writers ---------------------------------------------------------------------------------------


class _MultipartWriter:
    """Bytes on their way to one object: one PutObject if they fit in a part, else a multipart upload
    whose full parts are sent from a thread pool while the next fills (see the module docstring)."""

    def __init__(self, storage: S3Storage, key: str) -> None:
        self._s = storage
        self._key = storage._k(key)
        self._buf = bytearray()
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._done = False
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        if self._done:
            raise ValueError("write after commit or cancel")
        self._buf += data
        self._size += len(data)
        while len(self._buf) >= PART_SIZE:
            part, self._buf = self._buf, self._buf[PART_SIZE:]  # copies only the small remainder
            del part[PART_SIZE:]
            self._send(part)

    def _send(self, part: bytes | bytearray) -> None:
        if self._upload_id is None:
            self._upload_id = self._s.client.create_multipart_upload(Bucket=self._s.bucket, Key=self._key)["UploadId"]
        in_flight = [f for f in self._parts if not f.done()]
        while len(in_flight) >= MAX_IN_FLIGHT:  # back-pressure: memory stays at a few parts
            in_flight[0].result()
            in_flight = [f for f in self._parts if not f.done()]
        for f in self._parts:
            if f.done() and f.exception() is not None:
                f.result()  # raise the failure now rather than at commit
        number = len(self._parts) + 1
        self._parts.append(_POOL.submit(self._upload_part, number, part))

    def _upload_part(self, number: int, part: bytes | bytearray) -> dict[str, Any]:
        r = self._s.client.upload_part(Bucket=self._s.bucket, Key=self._key, UploadId=self._upload_id,
                                       PartNumber=number, Body=part)
        return {"PartNumber": number, "ETag": r["ETag"]}

    def commit(self) -> None:
        if self._done:
            return
        try:
            if self._upload_id is None:
                self._s.client.put_object(Bucket=self._s.bucket, Key=self._key, Body=bytes(self._buf))
            else:
                if self._buf:
                    self._send(self._buf)
                    self._buf = bytearray()
                parts = [f.result() for f in self._parts]
                self._s.client.complete_multipart_upload(Bucket=self._s.bucket, Key=self._key,
                                                         UploadId=self._upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self.cancel()
            raise
        self._buf = bytearray()
        self._done = True

    def cancel(self) -> None:
        if self._done:
            return
        self._done = True
        self._buf = bytearray()
        if self._upload_id is not None:
            for f in self._parts:
                f.exception()  # wait: an abort while a part is in flight may leave that part behind
            try:
                self._s.client.abort_multipart_upload(Bucket=self._s.bucket, Key=self._key, UploadId=self._upload_id)
            except Exception as exc:
                if _code(exc) != "NoSuchUpload":
                    raise


class _AppendWriter:
    """The next chunk of a segmented value: a new segment object, then a new index (the commit point)."""

    def __init__(self, storage: S3Storage, key: str, append_at: int) -> None:
        self._s = storage
        self._key = key
        head = storage._head(key)
        kept: list[_Piece] = []
        if head is not None and append_at > 0:
            pieces = storage._pieces(key, head) or []
            if SEGMENTED_META not in (head.get("Metadata") or {}):
                # a plain object becomes the first segment (the index is about to replace it)
                first = f"{key}{SEGMENT_MARK}{0:015d}-{uuid.uuid4().hex[:8]}"
                storage.client.copy_object(Bucket=storage.bucket, Key=storage._k(first),
                                           CopySource={"Bucket": storage.bucket, "Key": storage._k(key)})
                pieces = [_Piece(first, pieces[0].length)]
            budget = append_at
            for p in pieces:  # keep the first append_at bytes: later segments go, a crossing one is clipped
                if budget <= 0:
                    break
                kept.append(_Piece(p.key, min(p.length, budget)))
                budget -= kept[-1].length
        self._kept = kept
        self._base = sum(p.length for p in kept)
        self._segment = f"{key}{SEGMENT_MARK}{self._base:015d}-{uuid.uuid4().hex[:8]}"
        self._inner = _MultipartWriter(storage, self._segment)
        self._done = False

    @property
    def size(self) -> int:
        return self._base + self._inner.size

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def commit(self) -> None:
        if self._done:
            return
        pieces = list(self._kept)
        if self._inner.size:
            self._inner.commit()
            pieces.append(_Piece(self._segment, self._inner.size))
        else:
            self._inner.cancel()
        self._s._put_index(self._key, pieces)
        self._done = True

    def cancel(self) -> None:
        if not self._done:
            self._inner.cancel()
            self._done = True
