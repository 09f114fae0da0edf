"""Several serving processes on one port (``registry serve --workers N``) on a real SeaweedFS, the caches'
staleness bound (registry.caches), and clients that hang up.

Which worker answered a connection shows in ``/metrics`` (``driftless_registry_process{pid=...}``): a
keep-alive connection stays with the worker that accepted it, so the tests open connections until they
hold one on each worker.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry.caches import TtlCache
from registry.errors import RegistryError
from registry.storage import MemoryStorage
from registry.store import Registry
from tests.registry.conftest import (
    EMPTY_CONFIG,
    OCI_MANIFEST,
    S3Service,
    sha256,
    start_registry,
    start_s3_registry,
)
from tests.support.procs import DriftlessProcess, wait_until

TTL = 0.5  # --cache-ttl of the servers below: seconds another worker's change may go unseen


def worker_pid(client: httpx.Client) -> int:
    text = client.get("/metrics").text
    found = re.search(r'^driftless_registry_process\{pid="(\d+)"\} 1', text, re.MULTILINE)
    assert found, text[:2000]
    return int(found.group(1))


def client_on_other_worker(url: str, than: int) -> httpx.Client:
    """A keep-alive client whose connection another worker than ``than`` accepted (SO_REUSEPORT spreads
    connections by their source port: a few tries find one)."""
    for _ in range(200):
        c = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1))
        if worker_pid(c) != than:
            return c
        c.close()
    raise AssertionError("200 connections all went to one worker: the port is not shared")


def manifest(layer_digest: str, size: int, note: str) -> dict[str, object]:
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": EMPTY_CONFIG,
            "layers": [{"mediaType": "application/octet-stream", "digest": layer_digest, "size": size}],
            "annotations": {"note": note}}


@pytest.fixture
def workers(s3: S3Service, tmp_path: Path) -> Iterator[tuple[DriftlessProcess, str]]:
    proc, port = start_s3_registry(s3, s3.url(), tmp_path, "--workers", "2", "--cache-ttl", str(TTL))
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
        log = proc.log()
        assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def test_two_workers_share_one_port_uploads_and_manifests(workers: tuple[DriftlessProcess, str]) -> None:
    proc, url = workers
    one = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1))
    first = worker_pid(one)
    two = client_on_other_worker(url, first)
    try:
        assert {first, worker_pid(two)} <= set(_children(proc.pid)), "workers are children of the serve process"
        data, digest = upload_across(one, two)
        assert two.post("/v2/team/app/blobs/uploads/", params={"digest": sha256(b"{}")},
                        content=b"{}").status_code == 201
        # a manifest pushed through one worker is served by the other at once (misses are never cached)
        body = manifest(digest, len(data), "first")
        pushed = one.put("/v2/team/app/manifests/v1", json=body, headers={"Content-Type": OCI_MANIFEST})
        assert pushed.status_code == 201, pushed.text
        got = two.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200 and got.headers["Docker-Content-Digest"] == pushed.headers["Docker-Content-Digest"]
        assert two.get("/v2/team/app/tags/list").json()["tags"] == ["v1"]
        # the tag moves through one worker: the other (which cached v1) answers the new digest within the TTL
        moved = one.put("/v2/team/app/manifests/v1", json=manifest(digest, len(data), "second"),
                        headers={"Content-Type": OCI_MANIFEST})
        assert one.get("/v2/team/app/manifests/v1").headers["Docker-Content-Digest"] == moved.headers[
            "Docker-Content-Digest"], "a worker sees its own write at once"
        since = time.monotonic()
        seen = []

        def moved_on_two() -> bool:
            seen.append(two.get("/v2/team/app/manifests/v1").headers["Docker-Content-Digest"])
            return seen[-1] == moved.headers["Docker-Content-Digest"]

        wait_until(moved_on_two, timeout=TTL + 5, interval=0.05, what="the moved tag on the other worker")
        assert set(seen) <= {pushed.headers["Docker-Content-Digest"], moved.headers["Docker-Content-Digest"]}
        # only the old digest, and only within the bound (+ slack for a loaded machine's scheduling)
        assert time.monotonic() - since < TTL + 5
    finally:
        one.close()
        two.close()


def upload_across(one: httpx.Client, two: httpx.Client) -> tuple[bytes, str]:
    """An upload started and half sent through one worker, finished through the other."""
    data = os.urandom(300_000)
    digest = sha256(data)
    started = one.post("/v2/team/app/blobs/uploads/")
    assert started.status_code == 202, started.text
    r = one.patch(started.headers["Location"], content=data[:100_000], headers={"Content-Range": "0-99999"})
    assert r.status_code == 202, r.text
    r = two.patch(r.headers["Location"], content=data[100_000:], headers={"Content-Range": f"100000-{len(data) - 1}"})
    assert r.status_code == 202, r.text
    assert two.put(r.headers["Location"], params={"digest": digest}).status_code == 201
    assert one.get(f"/v2/team/app/blobs/{digest}").content == data
    return data, digest


def test_workers_on_the_filesystem_share_uploads(tmp_path: Path) -> None:
    proc, port = start_registry(tmp_path / "root", tmp_path, "--workers", "2")
    url = f"http://127.0.0.1:{port}"
    one = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1))
    two = client_on_other_worker(url, worker_pid(one))
    try:
        upload_across(one, two)
    finally:
        one.close()
        two.close()
        proc.stop()
    assert not _children(proc.pid) and "Traceback" not in proc.log()


def test_a_dead_worker_is_replaced_and_the_port_keeps_serving(workers: tuple[DriftlessProcess, str]) -> None:
    proc, url = workers
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1)) as c:
        victim = worker_pid(c)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(_children(proc.pid)) == 2 and victim not in _children(proc.pid), timeout=30,
               what="a new worker in place of the killed one")
    pids, refused = set(), 0
    for _ in range(200):  # both workers serve again: the new one too
        with httpx.Client(base_url=url, timeout=60) as c:
            try:
                assert c.get("/v2/").status_code == 200
                pids.add(worker_pid(c))
            except httpx.ConnectError:  # one that met the killed worker's closed listener (docs/registry.md)
                refused += 1
        if pids == set(_children(proc.pid)):
            break
    assert pids == set(_children(proc.pid)) and victim not in pids
    assert refused <= 2, f"{refused} connections refused after the restart"
    assert "registry worker" in proc.log() and "restarting it" in proc.log()
    proc.stop()
    assert not _children(proc.pid), "stopping the server stops its workers"
    assert proc.log().count("Traceback") == 0


def test_clients_hanging_up_during_blob_gets_are_not_errors(s3: S3Service, tmp_path: Path) -> None:
    """Four clients at a time read a big blob at full speed and hang up part way (as a load generator
    does when its time is up); before, each such GET logged an ERROR with a traceback."""
    proc, port = start_s3_registry(s3, s3.url(), tmp_path, "--workers", "1")
    try:
        data = os.urandom(32 << 20)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            assert c.post("/v2/gone/app/blobs/uploads/", params={"digest": digest}, content=data).status_code == 201

            def hang_up(i: int) -> None:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                    s.sendall(f"GET /v2/gone/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    got, want = 0, (i * 3_700_000) % (30 << 20) + 1
                    while got < want:
                        chunk = s.recv(1 << 20)
                        assert chunk, "the server closed first"
                        got += len(chunk)
                    if i % 3 == 2:  # some with a reset rather than a close
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

            for round_ in range(3):
                threads = [threading.Thread(target=hang_up, args=(round_ * 4 + i,)) for i in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
            assert c.get(f"/v2/gone/app/blobs/{digest}").content == data  # and it serves on
            ranged = c.get(f"/v2/gone/app/blobs/{digest}", headers={"Range": "bytes=1000000-6999999"})
            assert ranged.status_code == 206 and ranged.content == data[1_000_000:7_000_000]
            assert ranged.headers["Content-Range"] == f"bytes 1000000-6999999/{len(data)}"
            time.sleep(0.5)  # let the server finish with the hung-up requests before reading its log
    finally:
        proc.stop()
    log = proc.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


# --- the caches' staleness bound, with a controlled clock --------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("registry.caches.time.monotonic", c)
    monkeypatch.setattr("registry.store.time.monotonic", c)
    return c


def test_ttl_cache_forgets_after_its_ttl_and_stays_bounded(clock: Clock) -> None:
    cache: TtlCache[str, int] = TtlCache(ttl=1.0, max_entries=3)
    cache.put("a", 1)
    clock.now += 0.99
    assert cache.get("a") == 1
    clock.now += 0.02
    assert cache.get("a") is None
    cache.put("b", 2, stored_at=clock.now - 0.9)  # dated from before a slow read: expires sooner
    clock.now += 0.2
    assert cache.get("b") is None
    for i in range(5):
        cache.put(str(i), i)
    assert len(cache) == 3 and cache.get("0") is None and cache.get("4") == 4
    assert TtlCache[str, int](ttl=0).get("x") is None  # ttl 0: nothing is cached


def test_another_process_change_is_seen_within_the_ttl_and_own_writes_at_once(clock: Clock) -> None:
    storage = MemoryStorage()
    here, there = Registry(storage, cache_ttl=1.0), Registry(storage, cache_ttl=1.0)  # two workers, one store
    assert Registry(MemoryStorage()).cache_ttl == 0  # a local store caches nothing by default
    config = here.put_blob("app", b"{}")

    def push(registry: Registry, note: str) -> str:
        body = (b'{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.empty.v1+json",'
                b'"digest":"%s","size":2},"layers":[],"annotations":{"n":"%s"}}'
                % (OCI_MANIFEST.encode(), config.encode(), note.encode()))
        return registry.put_manifest("app", "v1", body, OCI_MANIFEST).digest

    with pytest.raises(RegistryError):
        there.get_manifest("app", "v1")
    first = push(here, "one")
    assert there.get_manifest("app", "v1").digest == first, "a miss is not cached: new things are seen at once"
    assert there.tags("app") == ["v1"]
    second = push(here, "two")
    assert here.get_manifest("app", "v1").digest == second, "own writes at once"
    clock.now += 0.9
    assert there.get_manifest("app", "v1").digest == first, "within the TTL the other may answer the old digest"
    clock.now += 0.2
    assert there.get_manifest("app", "v1").digest == second, "past the TTL it reads the store again"
    assert there.cached_manifest("app", "v1") is not None  # and serves it from memory
    here.delete_manifest("app", second)
    with pytest.raises(RegistryError):
        here.get_manifest("app", second)
    assert there.get_manifest("app", second).digest == second  # deleted elsewhere: still served within the TTL
    clock.now += 1.1
    with pytest.raises(RegistryError):
        there.get_manifest("app", second)
    # a blob link unlinked in one process is gone in the other after the TTL
    assert there.blob_stat("app", config).size == 2
    here.delete_blob("app", config)
    assert there.blob_stat("app", config).size == 2
    clock.now += 1.1
    with pytest.raises(RegistryError):
        there.blob_stat("app", config)


def test_a_blob_gc_removed_while_its_stat_is_cached_answers_404(s3: S3Service, tmp_path: Path) -> None:
    """The stat is cached (--cache-ttl), the bytes are not: the stream is opened before the answer
    starts, so a blob deleted behind the server's back (gc in another process) is a clean 404."""
    url = s3.url()
    proc, port = start_s3_registry(s3, url, tmp_path, "--workers", "1", "--cache-ttl", "60")
    try:
        data = os.urandom(1000)
        digest = sha256(data)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            assert c.post("/v2/gc/app/blobs/uploads/", params={"digest": digest}, content=data).status_code == 201
            assert c.get(f"/v2/gc/app/blobs/{digest}").content == data  # its stat is cached now
            bucket, prefix = url[len("s3://"):].split("/", 1)
            s3.client().delete_object(Bucket=bucket, Key=f"{prefix}/blobs/sha256/{digest[7:9]}/{digest[7:]}")
            assert c.head(f"/v2/gc/app/blobs/{digest}").status_code == 200  # within the TTL: from the cache
            gone = c.get(f"/v2/gc/app/blobs/{digest}")
            assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "BLOB_UNKNOWN", gone.text
            assert c.head(f"/v2/gc/app/blobs/{digest}").status_code == 404  # and the stat was forgotten
    finally:
        proc.stop()
    assert "Traceback" not in proc.log()
