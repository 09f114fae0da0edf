"""The S3 driver against a real SeaweedFS (the ``s3`` fixture): what the shared storage suite cannot
show — multipart streaming, segmented upload sessions composed server-side, and two registry
processes on one bucket (a push through one is pulled through the other; an upload started on one is
continued and completed on the other)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry.caches import DEFAULT_REMOTE_TTL
from registry.storage_s3 import PART_SIZE, S3Storage, parse_s3_url
from tests.registry.conftest import (
    EMPTY_CONFIG,
    OCI_MANIFEST,
    S3Service,
    error_code,
    sha256,
    start_s3_registry,
)
from tests.support.procs import DriftlessProcess, wait_until


@pytest.fixture
def bucket(s3: S3Service) -> S3Storage:
    return S3Storage.from_url(s3.url(), client=s3.client())


def _uploads_in_progress(storage: S3Storage) -> list[str]:
    r = storage.client.list_multipart_uploads(Bucket=storage.bucket, Prefix=storage.prefix + "/")
    return [u["Key"] for u in r.get("Uploads") or []]


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://registry/prod/eu") == parse_s3_url("s3://registry/prod/eu/")
    assert parse_s3_url("s3://registry").prefix == ""
    for bad in ("registry/prod", "s3:///prod", "s3://ab/x", "file:///tmp"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)


def test_big_writer_streams_in_parts_and_appears_only_on_commit(bucket: S3Storage) -> None:
    chunk = os.urandom(1 << 20)
    total = 8 * PART_SIZE + 12345  # 64 MiB and a bit: nine parts
    h = hashlib.sha256()
    tracemalloc.start()
    try:
        w = bucket.writer("blobs/big")
        written = 0
        while written < total:
            piece = chunk[: min(len(chunk), total - written)]
            w.write(piece)
            h.update(piece)
            written += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a few parts at most (the one filling, two in flight, botocore's copies), whatever the blob's size
    assert peak < 5 * PART_SIZE, f"the writer held {peak} bytes: the blob must not sit in memory"
    assert bucket.stat("blobs/big") is None  # parts sent, object not there yet
    assert _uploads_in_progress(bucket) == [bucket._k("blobs/big")]
    w.commit()
    st = bucket.stat("blobs/big")
    assert st is not None and st.size == total
    assert _uploads_in_progress(bucket) == []
    got = hashlib.sha256()
    with bucket.reader("blobs/big") as f:
        while block := f.read(1 << 20):
            got.update(block)
        f.seek(total - 10)
        tail = f.read()
    assert got.hexdigest() == h.hexdigest() and len(tail) == 10
    # cancel aborts the multipart upload: nothing visible, nothing left
    w = bucket.writer("blobs/abandoned")
    w.write(chunk * 9)
    w.cancel()
    assert bucket.stat("blobs/abandoned") is None and _uploads_in_progress(bucket) == []


def test_segmented_session_composes_server_side(bucket: S3Storage) -> None:
    """Chunks of every size (tiny, above the 5 MiB part minimum, crossing a part) compose into one blob."""
    sizes = [1000, 6 << 20, 3, (9 << 20) + 7, 17]
    data = b"".join(os.urandom(n) for n in sizes)
    size = 0
    for n in sizes:
        w = bucket.writer("uploads/u/data", append_at=size)
        w.write(data[size:size + n])
        w.commit()
        size += n
        assert bucket.stat("uploads/u/data").size == size  # type: ignore[union-attr]
    # a crash's leftovers past the committed size never count
    w = bucket.writer("uploads/u/data", append_at=size)
    w.write(b"junk")
    w.commit()
    w = bucket.writer("uploads/u/data", append_at=size)
    w.commit()
    assert bucket.stat("uploads/u/data").size == size  # type: ignore[union-attr]
    with bucket.reader("uploads/u/data") as f:
        f.seek(999)
        assert f.read(5) == data[999:1004]  # across a segment boundary
    assert bucket.list("uploads/u") == ["data"]  # segments are not listed
    bucket.move("uploads/u/data", "blobs/composed")
    assert bucket.get("blobs/composed") == data
    assert bucket.stat("uploads/u/data") is None
    left = bucket.client.list_objects_v2(Bucket=bucket.bucket, Prefix=bucket._k("uploads/"))
    assert [o["Key"] for o in left.get("Contents") or []] == []  # segments went with the move
    assert bucket.clean_temp() == 0


@pytest.fixture(scope="module")
def replicas(s3: S3Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two `registry serve` processes on one bucket prefix."""
    base = tmp_path_factory.mktemp("replicas")
    url = s3.url("replicas")
    procs: list[DriftlessProcess] = []
    try:
        urls = []
        for _ in range(2):
            proc, port = start_s3_registry(s3, url, base)
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
        yield urls[0], urls[1]
    finally:
        for proc in procs:
            assert "internal error" not in proc.log()
            proc.stop()


def test_push_through_one_replica_pull_through_the_other(replicas: tuple[str, str]) -> None:
    one, two = (httpx.Client(base_url=u, timeout=60) for u in replicas)
    with one, two:
        layer = os.urandom((PART_SIZE * 2) + 99)  # a multipart blob
        digest = sha256(layer)
        assert one.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=layer).status_code == 201
        one.post("/v2/team/app/blobs/uploads/", params={"digest": sha256(b"{}")}, content=b"{}")
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": EMPTY_CONFIG,
                    "layers": [{"mediaType": "application/octet-stream", "digest": digest, "size": len(layer)}]}
        r = one.put("/v2/team/app/manifests/v1", json=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        # at once, through the other process
        got = two.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200 and got.headers["Docker-Content-Digest"] == r.headers["Docker-Content-Digest"]
        blob = two.get(f"/v2/team/app/blobs/{digest}")
        assert blob.status_code == 200 and blob.content == layer
        ranged = two.get(f"/v2/team/app/blobs/{digest}", headers={"Range": f"bytes={PART_SIZE - 5}-{PART_SIZE + 4}"})
        assert ranged.status_code == 206 and ranged.content == layer[PART_SIZE - 5:PART_SIZE + 5]
        assert two.get("/v2/team/app/tags/list").json()["tags"] == ["v1"]
        assert "team/app" in two.get("/v2/_catalog").json()["repositories"]
        # a delete through one is seen by the other within its cache TTL (1 s by default on S3: registry.caches)
        assert one.delete("/v2/team/app/manifests/v1").status_code == 202
        assert one.get("/v2/team/app/manifests/v1").status_code == 404  # at once where it was deleted
        wait_until(lambda: two.get("/v2/team/app/manifests/v1").status_code == 404, timeout=DEFAULT_REMOTE_TTL + 5,
                   what="the delete seen by the other replica")


def test_upload_started_on_one_replica_is_finished_on_the_other(replicas: tuple[str, str]) -> None:
    one, two = (httpx.Client(base_url=u, timeout=60) for u in replicas)
    with one, two:
        first, second, third = os.urandom(6 << 20), os.urandom(1234), os.urandom(77)
        data = first + second + third
        location = one.post("/v2/team/chunked/blobs/uploads/").headers["Location"]
        r = one.patch(location, content=first, headers={"Content-Range": f"0-{len(first) - 1}"})
        assert r.status_code == 202 and r.headers["Range"] == f"0-{len(first) - 1}"
        # the other replica knows the session (its state is in the bucket, not in the first process)
        status = two.get(r.headers["Location"])
        assert status.status_code == 204 and status.headers["Range"] == f"0-{len(first) - 1}"
        start = len(first)
        r = two.patch(r.headers["Location"], content=second,
                      headers={"Content-Range": f"{start}-{start + len(second) - 1}"})
        assert r.status_code == 202, r.text
        # an out-of-order chunk is refused on either replica
        bad = one.patch(r.headers["Location"], content=b"x", headers={"Content-Range": "0-0"})
        assert bad.status_code == 416
        r2 = two.put(r.headers["Location"], params={"digest": sha256(data)}, content=third,
                     headers={"Content-Range": f"{len(first) + len(second)}-{len(data) - 1}"})
        assert r2.status_code == 201, r2.text
        assert one.get(f"/v2/team/chunked/blobs/{sha256(data)}").content == data
        # the session is closed everywhere
        gone = one.get(r.headers["Location"])
        assert gone.status_code == 404 and error_code(gone) == "BLOB_UPLOAD_UNKNOWN"


def test_cli_rejects_root_with_storage(tmp_path: Path) -> None:
    for args in (["--root", str(tmp_path), "--storage", "s3://bucket/p"], [],
                 ["--storage", "bucket/p"], ["--root", str(tmp_path), "--s3-endpoint", "http://x"]):
        r = subprocess.run([sys.executable, "-m", "driftless", "registry", "serve", *args, "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and ("--storage" in r.stderr or "--root" in r.stderr), (args, r.stderr)


def test_gc_on_shared_storage_needs_every_replica_read_only(s3: S3Service, tmp_path: Path) -> None:
    url = s3.url()
    storage = S3Storage.from_url(url, client=s3.client())
    orphan = b"an orphan blob" * 100
    storage.put(f"blobs/sha256/{sha256(orphan)[7:9]}/{sha256(orphan)[7:]}", orphan)

    def gc() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "driftless", "registry", "gc", "--storage", url, "--s3-endpoint", s3.endpoint,
             "--grace", "0s"], capture_output=True, text=True, timeout=60, env={**os.environ, **s3.env})

    writable, port = start_s3_registry(s3, url, tmp_path)
    try:
        refused = gc()
        assert refused.returncode == 1 and "--read-only" in refused.stderr and f"127.0.0.1:{port}" in refused.stderr
        assert storage.stat(f"blobs/sha256/{sha256(orphan)[7:9]}/{sha256(orphan)[7:]}") is not None
    finally:
        writable.stop()  # a clean stop removes its record
    read_only, port = start_s3_registry(s3, url, tmp_path, "--read-only")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            r = c.post("/v2/team/app/blobs/uploads/", params={"digest": sha256(b"x")}, content=b"x")
            assert r.status_code == 405 and error_code(r) == "UNSUPPORTED"
        done = gc()
        assert done.returncode == 0, done.stderr
        assert f"deleted blob {sha256(orphan)}" in done.stdout
        assert storage.stat(f"blobs/sha256/{sha256(orphan)[7:9]}/{sha256(orphan)[7:]}") is None
        fsck = subprocess.run(
            [sys.executable, "-m", "driftless", "registry", "fsck", "--storage", url, "--s3-endpoint", s3.endpoint],
            capture_output=True, text=True, timeout=60, env={**os.environ, **s3.env})
        assert fsck.returncode == 0 and "fsck: checked 0 blobs" in fsck.stdout, fsck.stdout + fsck.stderr
    finally:
        read_only.stop()
    assert storage.list("replicas") == []


def test_a_replica_that_died_is_forgotten() -> None:
    import time

    from registry.maintenance import REPLICA_STALE, Replica, writable_replicas
    from registry.storage import MemoryStorage

    storage = MemoryStorage()
    writer = Replica(storage, read_only=False, url="http://a")
    writer.beat()
    Replica(storage, read_only=True, url="http://b").beat()
    assert [r["url"] for r in writable_replicas(storage)] == ["http://a"]
    assert writable_replicas(storage, now=time.time() + REPLICA_STALE + 1) == []  # killed: no more beats
    writer.remove()
    assert writable_replicas(storage) == []
