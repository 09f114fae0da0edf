"""S3 faults: throttling (503 SlowDown) and an endpoint that is down, seen through a real registry process.

The proxy below is fault injection in front of a real S3 (the SeaweedFS of the ``s3`` fixture), not a
mock: it forwards every request unchanged to SeaweedFS unless told to answer the next N requests with
S3's own throttling answer (503 SlowDown) or to answer every request with 503 / drop every connection
(the endpoint is down). The registry under test is a ``driftless registry serve --storage s3://...``
process whose ``--s3-endpoint`` is the proxy.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import ClientSession, ClientTimeout, web

from registry.storage_s3 import parse_s3_url
from tests.registry.conftest import (
    EMPTY_CONFIG,
    OCI_MANIFEST,
    S3Service,
    error_code,
    sha256,
    start_s3_registry,
)
from tests.support.procs import DriftlessProcess, wait_until

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
UNAVAILABLE = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
               b"<Message>Service is unable to handle request.</Message></Error>")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
              "content-length"}  # Host is kept: it is part of the SigV4 signature


class FaultProxy:
    """An aiohttp server on 127.0.0.1 (in a thread) forwarding to a real S3 endpoint, with faults on demand."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.throttle_next = 0  # answer this many more requests with 503 SlowDown
        self.mode = "pass"  # "pass" | "503" (every request: 503 ServiceUnavailable) | "refuse" (drop connections)
        self.throttled = 0  # SlowDown answers given
        self.faulted = 0  # answers given while down
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s3-fault-proxy", daemon=True)
        self.url = ""

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        assert self._ready.wait(10), "the fault proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._session = ClientSession(timeout=ClientTimeout(total=60), auto_decompress=False)
        runner = web.ServerRunner(web.Server(self._handle))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await self._session.close()

    def _fault(self) -> str | None:
        with self._lock:
            if self.mode != "pass":
                self.faulted += 1
                return self.mode
            if self.throttle_next > 0:
                self.throttle_next -= 1
                self.throttled += 1
                return "slowdown"
        return None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.headers.get("Expect", "").lower() == "100-continue":  # botocore's PUTs wait 1 s for it
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await request.read()  # the whole request first, as a real S3 front end would
        fault = self._fault()
        if fault == "refuse":
            assert request.transport is not None
            request.transport.abort()  # no answer at all: the connection drops
            return web.Response(status=503)
        if fault is not None:
            return web.Response(status=503, body=SLOW_DOWN if fault == "slowdown" else UNAVAILABLE,
                                content_type="application/xml", headers={"Connection": "close"})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body, allow_redirects=False) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            if request.method != "HEAD":
                return web.Response(status=upstream.status, body=payload, headers=out)
            response = web.StreamResponse(status=upstream.status, headers=out)  # HEAD: S3's Content-Length
            response.content_length = int(upstream.headers.get("Content-Length") or 0)
            await response.prepare(request)
            await response.write_eof()
            return response


Faulty = tuple["FaultProxy", httpx.Client, DriftlessProcess]


@pytest.fixture(scope="module")
def faulty(s3: S3Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    base: Path = tmp_path_factory.mktemp("s3-faults")
    with FaultProxy(s3.endpoint) as proxy:
        behind = S3Service(endpoint=proxy.url, bucket=s3.bucket, proc=s3.proc, log_path=s3.log_path)
        url = s3.url()
        # no caches: every request below must reach S3 (within --cache-ttl a cached manifest would be served)
        proc, port = start_s3_registry(behind, url, base, "--cache-ttl", "0")
        try:
            # serve answers /v2/ just before its first write of replicas/<id>.json, and a failure of that
            # first write ends the process: inject faults only once the record is in the bucket
            client, prefix = s3.client(), parse_s3_url(url).prefix
            wait_until(lambda: client.list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/replicas/").get("KeyCount"),
                       what="the registry's replica record")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                yield proxy, http, proc
        finally:
            log = proc.log()
            proc.stop()
            assert "Traceback" not in log and "internal error" not in log, log[-3000:]


def _manifest(layer: bytes) -> dict[str, object]:
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": EMPTY_CONFIG,
            "layers": [{"mediaType": "application/octet-stream", "digest": sha256(layer), "size": len(layer)}]}


def test_throttling_is_retried(faulty: Faulty) -> None:
    """Two SlowDowns in a row during a blob push, then two during a manifest push: both succeed."""
    proxy, client, _ = faulty
    assert client.post("/v2/faults/app/blobs/uploads/", params={"digest": sha256(b"{}")}, content=b"{}").status_code == 201
    proxy.throttle_next = 2
    data = b"throttled layer"
    r = client.post("/v2/faults/app/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    assert r.status_code == 201, r.text
    assert proxy.throttle_next == 0
    proxy.throttle_next = 2
    r = client.put("/v2/faults/app/manifests/v1", json=_manifest(data), headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert proxy.throttled == 4
    assert client.get("/v2/faults/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 200


@pytest.mark.parametrize("mode", ["503", "refuse"])
def test_endpoint_down_answers_503_and_leaves_nothing_half_written(
        faulty: Faulty, mode: str) -> None:
    proxy, client, proc = faulty
    layer = f"pushed while S3 is down ({mode})".encode()
    digest = sha256(layer)
    proxy.mode = mode
    try:
        started = time.monotonic()
        push = client.post("/v2/faults/app/blobs/uploads/", params={"digest": digest}, content=layer)
        pull = client.get("/v2/faults/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        elapsed = time.monotonic() - started
    finally:
        proxy.mode = "pass"
    for r in (push, pull):
        assert r.status_code == 503, (r.status_code, r.text)
        assert error_code(r) == "UNAVAILABLE", r.text
        assert r.headers.get("Retry-After"), r.headers
        assert "Traceback" not in r.text
    assert proxy.faulted >= 12  # the registry asked S3: 6 attempts (with backoff) per request
    assert elapsed < 20, f"an outage took {elapsed:.1f} s to answer: the retries must be bounded"
    # back up: nothing of the failed push is visible, a retry succeeds, the process lived through it
    assert client.head(f"/v2/faults/app/blobs/{digest}").status_code == 404
    r = client.post("/v2/faults/app/blobs/uploads/", params={"digest": digest}, content=layer)
    assert r.status_code == 201, r.text
    got = client.get(f"/v2/faults/app/blobs/{digest}")
    assert got.status_code == 200 and got.content == layer
    assert proc.alive()
