"""The storage contract, one suite for every driver (filesystem, memory, and S3 against a real
SeaweedFS — the ``s3`` fixture), plus the registry model on top of each driver."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from registry.errors import RegistryError
from registry.layout import key
from registry.manifests import OCI_MANIFEST
from registry.storage import FilesystemStorage, MemoryStorage, Storage
from registry.store import Registry, digest_of


def _s3_driver(tmp: Path, request: pytest.FixtureRequest) -> Storage:
    from registry.storage_s3 import S3Storage

    s3 = request.getfixturevalue("s3")  # a real SeaweedFS for the session; each test gets its own prefix
    return S3Storage.from_url(s3.url(), endpoint=s3.endpoint, client=s3.client())


DRIVERS: dict[str, Callable[[Path, pytest.FixtureRequest], Storage]] = {
    "filesystem": lambda tmp, request: FilesystemStorage(tmp / "root"),
    "memory": lambda tmp, request: MemoryStorage(),
    "s3": _s3_driver,
}


@pytest.fixture(params=sorted(DRIVERS))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return DRIVERS[request.param](tmp_path, request)


def test_put_get_stat(storage: Storage) -> None:
    assert storage.stat("a/b/c") is None
    with pytest.raises(FileNotFoundError):
        storage.get("a/b/c")
    storage.put("a/b/c", b"hello")
    assert storage.get("a/b/c") == b"hello"
    st = storage.stat("a/b/c")
    assert st is not None and st.size == 5 and st.modified > 0
    storage.put("a/b/c", b"replaced")
    assert storage.get("a/b/c") == b"replaced"
    # a prefix is not a value
    assert storage.stat("a/b") is None
    with pytest.raises(FileNotFoundError):
        storage.get("a/b")


def test_writer_is_invisible_until_commit(storage: Storage) -> None:
    w = storage.writer("blobs/x")
    w.write(b"part 1 ")
    w.write(b"part 2")
    assert w.size == 13
    assert storage.stat("blobs/x") is None
    w.commit()
    assert storage.get("blobs/x") == b"part 1 part 2"
    w = storage.writer("blobs/y")
    w.write(b"abandoned")
    w.cancel()
    assert storage.stat("blobs/y") is None
    assert storage.list("blobs") == ["x"]


def test_append_writer_keeps_committed_prefix(storage: Storage) -> None:
    storage.put("up/data", b"")
    w = storage.writer("up/data", append_at=0)
    w.write(b"0123")
    w.commit()
    # bytes past the committed size (a crash mid-chunk) are dropped by the next writer
    w = storage.writer("up/data", append_at=4)
    w.write(b"junk-from-a-crash")
    w.commit()
    w = storage.writer("up/data", append_at=4)
    w.write(b"4567")
    assert w.size == 8
    w.commit()
    assert storage.get("up/data") == b"01234567"
    with storage.reader("up/data") as f:
        assert f.read(3) == b"012"


def test_list_move_delete(storage: Storage) -> None:
    for k in ("r/a/1", "r/a/2", "r/b", "r/c/deep/x"):
        storage.put(k, k.encode())
    assert storage.list("r") == ["a", "b", "c"]
    assert storage.list("r/a") == ["1", "2"]
    assert storage.list("nothing") == []
    storage.move("r/b", "s/moved")
    assert storage.get("s/moved") == b"r/b" and storage.stat("r/b") is None
    with pytest.raises(FileNotFoundError):
        storage.move("r/b", "s/again")
    assert storage.delete("r/a/1") is True
    assert storage.delete("r/a/1") is False
    assert storage.delete("r/c") is True  # a whole prefix
    assert storage.stat("r/c/deep/x") is None
    assert storage.list("r") == ["a"]


def test_reader_and_local_path(storage: Storage) -> None:
    storage.put("k", b"data")
    with storage.reader("k") as f:
        assert f.read() == b"data"
    with pytest.raises(FileNotFoundError):
        storage.reader("missing")
    path = storage.local_path("k")
    assert path is None or path.read_bytes() == b"data"


def test_registry_model_on_every_driver(storage: Storage) -> None:
    reg = Registry(storage)
    config = reg.put_blob("team/app", b"{}")
    layer = reg.put_blob("team/app", b"layer bytes")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
                "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": 11}]}
    body = json.dumps(manifest).encode()
    result = reg.put_manifest("team/app", "v1", body, OCI_MANIFEST)
    assert result.digest == digest_of(body)
    assert reg.get_manifest("team/app", "v1").body == body
    assert reg.tags("team/app") == ["v1"]
    assert reg.catalog() == ["team/app"]
    # an upload session, resumed as if after a restart (a new Registry over the same storage)
    state = reg.start_upload("team/app")
    w = reg.chunk_writer(state)
    w.write(b"chunk one ")
    state = reg.commit_chunk(state, w, _hashed(b"chunk one "))
    again = Registry(storage)
    resumed = again.upload("team/app", state.id)
    assert resumed.size == 10
    w = again.chunk_writer(resumed)
    w.write(b"chunk two")
    h = again.upload_hasher(resumed).copy()
    h.update(b"chunk two")
    resumed = again.commit_chunk(resumed, w, h)
    again.finish_upload(resumed, digest_of(b"chunk one chunk two"))
    assert storage.get(key("blob", digest=digest_of(b"chunk one chunk two"))) == b"chunk one chunk two"
    with pytest.raises(RegistryError) as exc:
        again.upload("team/app", state.id)
    assert exc.value.code == "BLOB_UPLOAD_UNKNOWN"


def _hashed(data: bytes) -> object:
    import hashlib

    h = hashlib.sha256()
    h.update(data)
    return h


def test_filesystem_writes_leave_no_partial_file(tmp_path: Path) -> None:
    fs = FilesystemStorage(tmp_path / "root")
    w = fs.writer("blobs/sha256/ab/abc")
    w.write(b"x" * 1000)
    # before commit the bytes live only in _tmp/
    assert not (tmp_path / "root" / "blobs").exists()
    assert len(list((tmp_path / "root" / "_tmp").iterdir())) == 1
    w.commit()
    assert (tmp_path / "root" / "blobs/sha256/ab/abc").read_bytes() == b"x" * 1000
    assert list((tmp_path / "root" / "_tmp").iterdir()) == []
    abandoned = fs.writer("blobs/z")
    abandoned.write(b"crash")
    assert fs.clean_temp() == 1
    abandoned.cancel()


def test_server_over_a_driver_without_local_files(tmp_path: Path) -> None:
    """The HTTP server only needs the Storage protocol: blobs stream from the driver's reader."""
    import httpx

    from registry.server import ServerOptions, serve_in_thread

    running = serve_in_thread(ServerOptions(root=tmp_path / "unused", port=0), storage=MemoryStorage())
    try:
        with httpx.Client(base_url=running.url, timeout=10) as c:
            data = bytes(range(256)) * 10
            digest = digest_of(data)
            assert c.post("/v2/mem/app/blobs/uploads/", params={"digest": digest}, content=data).status_code == 201
            loc = c.post("/v2/mem/app/blobs/uploads/").headers["Location"]
            loc = c.patch(loc, content=b"{}", headers={"Content-Range": "0-1"}).headers["Location"]
            assert c.put(loc, params={"digest": digest_of(b"{}")}).status_code == 201
            r = c.get(f"/v2/mem/app/blobs/{digest}")
            assert r.status_code == 200 and r.content == data
            r = c.get(f"/v2/mem/app/blobs/{digest}", headers={"Range": "bytes=100-199"})
            assert r.status_code == 206 and r.content == data[100:200]
            assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
            assert c.get(f"/v2/mem/app/blobs/{digest}", headers={"Range": "bytes=9999-"}).status_code == 416
            assert c.head(f"/v2/mem/app/blobs/{digest}").headers["Content-Length"] == str(len(data))
            manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(b"{}"), "size": 2},
                        "layers": [{"mediaType": "application/octet-stream", "digest": digest, "size": len(data)}]}
            assert c.put("/v2/mem/app/manifests/v1", json=manifest,
                         headers={"Content-Type": OCI_MANIFEST}).status_code == 201
            assert c.get("/v2/mem/app/tags/list").json()["tags"] == ["v1"]
        assert not (tmp_path / "unused").exists()  # nothing touched the filesystem
    finally:
        running.stop()
