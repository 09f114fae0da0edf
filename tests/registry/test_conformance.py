"""The four workflows of the OCI distribution-spec conformance suite (pull, push, content discovery,
content management), step by step, as direct HTTP against a real ``driftless registry serve`` — once
over the filesystem (``--root``) and once over S3 (``--storage s3://...`` on a real SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry.conftest import (
    OCI_INDEX,
    OCI_MANIFEST,
    Oci,
    Server,
    error_code,
    sha256,
    start_registry,
    start_s3_registry,
)


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's registry: every workflow below runs against both storage drivers."""
    base = tmp_path_factory.mktemp(f"registry-{request.param}")
    if request.param == "s3":
        s3 = request.getfixturevalue("s3")
        proc, port = start_s3_registry(s3, s3.url(), base)
        root = Path("-")
    else:
        proc, port = start_registry(base / "root", base)
        root = base / "root"
    try:
        yield Server(url=f"http://127.0.0.1:{port}", root=root, proc=proc, port=port)
    finally:
        proc.stop()

# --- pull -------------------------------------------------------------------------------------------


def test_pull_manifest_by_tag_and_digest(oci: Oci) -> None:
    digest, manifest = oci.image("conf/pull", "v1")
    body = json.dumps(manifest).encode()
    for ref in ("v1", digest):
        head = oci.head(f"/v2/conf/pull/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert head.status_code == 200
        assert head.headers["Docker-Content-Digest"] == digest
        assert int(head.headers["Content-Length"]) == len(body)
        assert head.content == b""
        get = oci.get(f"/v2/conf/pull/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert get.status_code == 200
        assert get.content == body
        assert get.headers["Content-Type"] == OCI_MANIFEST
        assert get.headers["Docker-Content-Digest"] == digest


def test_pull_unknown_manifest_and_repository(oci: Oci) -> None:
    oci.image("conf/pull-missing", "v1")
    r = oci.get("/v2/conf/pull-missing/manifests/nope")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    assert oci.head("/v2/conf/pull-missing/manifests/nope").status_code == 404
    r = oci.get(f"/v2/conf/pull-missing/manifests/{sha256(b'absent')}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    r = oci.get("/v2/conf/never-pushed/manifests/v1")
    assert r.status_code == 404 and error_code(r) == "NAME_UNKNOWN"


def test_pull_blob_head_get_and_unknown(oci: Oci) -> None:
    data = b"some blob content " * 100
    digest = oci.push_blob("conf/pull-blob", data)
    head = oci.head(f"/v2/conf/pull-blob/blobs/{digest}")
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(data)
    assert head.headers["Docker-Content-Digest"] == digest
    get = oci.get(f"/v2/conf/pull-blob/blobs/{digest}")
    assert get.status_code == 200 and get.content == data
    missing = oci.get(f"/v2/conf/pull-blob/blobs/{sha256(b'not there')}")
    assert missing.status_code == 404 and error_code(missing) == "BLOB_UNKNOWN"
    assert oci.head(f"/v2/conf/pull-blob/blobs/{sha256(b'not there')}").status_code == 404
    # a blob is only visible in the repositories it was pushed to or mounted into
    other = oci.get(f"/v2/conf/other-repo/blobs/{digest}")
    assert other.status_code == 404 and error_code(other) == "BLOB_UNKNOWN"


def test_pull_blob_ranges(oci: Oci) -> None:
    data = bytes(range(256)) * 40
    digest = oci.push_blob("conf/range", data)
    r = oci.get(f"/v2/conf/range/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = oci.get(f"/v2/conf/range/blobs/{digest}", headers={"Range": "bytes=10000-"})
    assert r.status_code == 206 and r.content == data[10000:]
    r = oci.get(f"/v2/conf/range/blobs/{digest}", headers={"Range": f"bytes={len(data) + 5}-{len(data) + 10}"})
    assert r.status_code == 416


# --- push -------------------------------------------------------------------------------------------


def test_push_monolithic_post_then_put(oci: Oci) -> None:
    data = b"monolithic" * 1000
    digest = sha256(data)
    post = oci.post("/v2/conf/push/blobs/uploads/")
    assert post.status_code == 202
    location = post.headers["Location"]
    assert location.startswith("/v2/conf/push/blobs/uploads/")
    put = oci.put(location, params={"digest": digest}, content=data, headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 201
    assert put.headers["Location"] == f"/v2/conf/push/blobs/{digest}"
    assert put.headers["Docker-Content-Digest"] == digest
    assert oci.get(f"/v2/conf/push/blobs/{digest}").content == data


def test_push_single_post_with_digest(oci: Oci) -> None:
    data = b"single post"
    digest = sha256(data)
    r = oci.post("/v2/conf/push/blobs/uploads/", params={"digest": digest}, content=data,
                 headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/conf/push/blobs/{digest}"
    assert oci.get(f"/v2/conf/push/blobs/{digest}").content == data


def test_push_chunked_with_status_and_out_of_order(oci: Oci) -> None:
    data = hashlib.sha512(b"x").digest() * 2000  # 128000 bytes
    first, second, third = data[:50000], data[50000:100000], data[100000:]
    post = oci.post("/v2/conf/chunked/blobs/uploads/")
    loc = post.headers["Location"]
    r = oci.patch(loc, content=first, headers={"Content-Type": "application/octet-stream",
                                               "Content-Range": f"0-{len(first) - 1}"})
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{len(first) - 1}"
    loc = r.headers["Location"]
    status = oci.get(loc)
    assert status.status_code == 204
    assert status.headers["Range"] == f"0-{len(first) - 1}"
    assert status.headers["Location"] == loc
    # a chunk that does not start where the upload ends
    r = oci.patch(loc, content=third, headers={"Content-Type": "application/octet-stream",
                                               "Content-Range": f"100000-{len(data) - 1}"})
    assert r.status_code == 416 and error_code(r) == "BLOB_UPLOAD_INVALID"
    assert oci.get(loc).headers["Range"] == f"0-{len(first) - 1}"  # nothing lost, nothing added
    r = oci.patch(loc, content=second, headers={"Content-Type": "application/octet-stream",
                                                "Content-Range": f"50000-{100000 - 1}"})
    assert r.status_code == 202 and r.headers["Range"] == "0-99999"
    # the last chunk comes with the PUT that closes the upload
    r = oci.put(r.headers["Location"], params={"digest": sha256(data)}, content=third,
                headers={"Content-Type": "application/octet-stream", "Content-Range": f"100000-{len(data) - 1}"})
    assert r.status_code == 201, r.text
    assert oci.get(f"/v2/conf/chunked/blobs/{sha256(data)}").content == data
    # the session is gone once it completed
    assert oci.get(loc).status_code == 404


def test_push_chunked_then_put_without_body(oci: Oci) -> None:
    data = b"abc" * 5000
    loc = oci.post("/v2/conf/chunked2/blobs/uploads/").headers["Location"]
    loc = oci.patch(loc, content=data, headers={"Content-Type": "application/octet-stream"}).headers["Location"]
    r = oci.put(loc, params={"digest": sha256(data)})
    assert r.status_code == 201
    assert oci.head(f"/v2/conf/chunked2/blobs/{sha256(data)}").headers["Content-Length"] == str(len(data))


def test_push_empty_blob(oci: Oci) -> None:
    empty = sha256(b"")
    loc = oci.post("/v2/conf/empty/blobs/uploads/").headers["Location"]
    r = oci.put(loc, params={"digest": empty})
    assert r.status_code == 201, r.text
    r = oci.get(f"/v2/conf/empty/blobs/{empty}")
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"
    empty512 = "sha512:" + hashlib.sha512(b"").hexdigest()
    loc = oci.post("/v2/conf/empty/blobs/uploads/").headers["Location"]
    assert oci.put(loc, params={"digest": empty512}).status_code == 201
    assert oci.get(f"/v2/conf/empty/blobs/{empty512}").content == b""
    r = oci.post("/v2/conf/empty2/blobs/uploads/", params={"digest": empty}, content=b"")
    assert r.status_code == 201
    assert oci.head(f"/v2/conf/empty2/blobs/{empty}").headers["Content-Length"] == "0"


def test_push_cancel_upload(oci: Oci) -> None:
    loc = oci.post("/v2/conf/cancel/blobs/uploads/").headers["Location"]
    oci.patch(loc, content=b"partial", headers={"Content-Type": "application/octet-stream"})
    r = oci.delete(loc)
    assert r.status_code == 204
    r = oci.get(loc)
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"
    r = oci.put(loc, params={"digest": sha256(b"partial")})
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"


def test_push_cross_repository_mount(oci: Oci) -> None:
    data = b"mount me"
    digest = oci.push_blob("conf/mount-src", data)
    r = oci.post("/v2/conf/mount-dst/blobs/uploads/", params={"mount": digest, "from": "conf/mount-src"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/conf/mount-dst/blobs/{digest}"
    assert oci.get(f"/v2/conf/mount-dst/blobs/{digest}").content == data
    # unknown blob: falls back to a new upload session
    r = oci.post("/v2/conf/mount-dst/blobs/uploads/", params={"mount": sha256(b"unknown"), "from": "conf/mount-src"})
    assert r.status_code == 202
    assert "/blobs/uploads/" in r.headers["Location"]
    # from a repository that does not have it: also a new session, the blob stays invisible
    r = oci.post("/v2/conf/mount-dst2/blobs/uploads/", params={"mount": digest, "from": "conf/elsewhere"})
    assert r.status_code == 202
    assert oci.get(f"/v2/conf/mount-dst2/blobs/{digest}").status_code == 404
    # without from: the registry finds the blob itself
    r = oci.post("/v2/conf/mount-dst3/blobs/uploads/", params={"mount": digest})
    assert r.status_code == 201


def test_push_manifest_by_tag_and_digest(oci: Oci) -> None:
    digest, manifest = oci.image("conf/manifests", "v1")
    body = json.dumps(manifest).encode()
    r = oci.put(f"/v2/conf/manifests/manifests/{digest}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/conf/manifests/manifests/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    # wrong digest in the URL
    r = oci.put(f"/v2/conf/manifests/manifests/{sha256(b'other')}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_push_manifest_with_missing_blob(oci: Oci) -> None:
    config = b"{}"
    oci.push_blob("conf/missing", config)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": 2},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(b"never"), "size": 5}]}
    r = oci.put("/v2/conf/missing/manifests/v1", json=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 404 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert sha256(b"never") in r.json()["errors"][0]["detail"]
    assert oci.get("/v2/conf/missing/manifests/v1").status_code == 404


def test_push_manifest_without_layers_and_image_index(oci: Oci) -> None:
    oci.push_blob("conf/index", b"{}")
    empty = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2}, "layers": []}
    child = oci.push_manifest("conf/index", "empty", empty)
    other, _ = oci.image("conf/index", "other")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child, "size": len(json.dumps(empty)),
         "platform": {"architecture": "wasm", "os": "wasip2"}},
        {"mediaType": OCI_MANIFEST, "digest": other, "size": 1},
    ]}
    digest = oci.push_manifest("conf/index", "multi", index, OCI_INDEX)
    r = oci.get("/v2/conf/index/manifests/multi")
    assert r.headers["Content-Type"] == OCI_INDEX and r.headers["Docker-Content-Digest"] == digest
    # an index whose child is absent
    bad = {"schemaVersion": 2, "mediaType": OCI_INDEX,
           "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"no"), "size": 1}]}
    r = oci.put("/v2/conf/index/manifests/bad", json=bad, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 404 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"


def test_push_manifest_size_limit(oci: Oci) -> None:
    oci.push_blob("conf/big", b"{}")
    base = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2}, "layers": []}
    # just under 4 MiB is accepted
    filler = 4 * 1024 * 1024 - len(json.dumps({**base, "annotations": {"a": ""}})) - 10
    ok = {**base, "annotations": {"a": "x" * filler}}
    body = json.dumps(ok).encode()
    assert len(body) < 4 * 1024 * 1024
    r = oci.put("/v2/conf/big/manifests/fits", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert oci.get("/v2/conf/big/manifests/fits").content == body
    too_big = json.dumps({**base, "annotations": {"a": "x" * (4 * 1024 * 1024)}}).encode()
    r = oci.put("/v2/conf/big/manifests/huge", content=too_big, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413 and error_code(r) == "SIZE_INVALID"


def test_push_sha512_blob_and_manifest(oci: Oci) -> None:
    data = b"sha512 content"
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    r = oci.post("/v2/conf/sha512/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201
    assert oci.get(f"/v2/conf/sha512/blobs/{digest}").content == data
    loc = oci.post("/v2/conf/sha512/blobs/uploads/").headers["Location"]
    loc = oci.patch(loc, content=data[:5], headers={"Content-Type": "application/octet-stream"}).headers["Location"]
    r = oci.put(loc, params={"digest": digest}, content=data[5:], headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201
    oci.push_blob("conf/sha512", b"{}")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": digest, "size": len(data)}]}
    body = json.dumps(manifest).encode()
    mdigest = "sha512:" + hashlib.sha512(body).hexdigest()
    r = oci.put(f"/v2/conf/sha512/manifests/{mdigest}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == mdigest
    assert oci.get(f"/v2/conf/sha512/manifests/{mdigest}").content == body


# --- content discovery -----------------------------------------------------------------------------


def test_tags_list_with_pagination(oci: Oci) -> None:
    for tag in ("c", "a", "b", "d", "e"):
        oci.image("conf/tags", tag)
    r = oci.get("/v2/conf/tags/tags/list")
    assert r.status_code == 200
    assert r.json() == {"name": "conf/tags", "tags": ["a", "b", "c", "d", "e"]}
    r = oci.get("/v2/conf/tags/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["a", "b"]
    assert r.headers["Link"] == '</v2/conf/tags/tags/list?n=2&last=b>; rel="next"'
    r = oci.get("/v2/conf/tags/tags/list", params={"n": 2, "last": "b"})
    assert r.json()["tags"] == ["c", "d"]
    r = oci.get("/v2/conf/tags/tags/list", params={"n": 2, "last": "d"})
    assert r.json()["tags"] == ["e"] and "Link" not in r.headers
    r = oci.get("/v2/conf/tags/tags/list", params={"n": 0})
    assert r.json()["tags"] == []
    r = oci.get("/v2/conf/tags/tags/list", params={"last": "c"})
    assert r.json()["tags"] == ["d", "e"]
    r = oci.get("/v2/conf/no-such-repo/tags/list")
    assert r.status_code == 404 and error_code(r) == "NAME_UNKNOWN"


def test_referrers_with_artifact_type_filter(oci: Oci) -> None:
    subject_digest, manifest = oci.image("conf/referrers", "v1")
    subject = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(json.dumps(manifest))}
    sig, sig_body = oci.artifact("conf/referrers", subject=subject, artifact_type="application/vnd.example.sig",
                                 annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z"})
    sbom, _ = oci.artifact("conf/referrers", subject=subject, artifact_type="application/vnd.example.sbom", blob=b"sbom")
    r = oci.get(f"/v2/conf/referrers/referrers/{subject_digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert set(by_digest) == {sig, sbom}
    assert by_digest[sig] == {"mediaType": OCI_MANIFEST, "digest": sig, "size": len(sig_body),
                              "artifactType": "application/vnd.example.sig",
                              "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}}
    r = oci.get(f"/v2/conf/referrers/referrers/{subject_digest}", params={"artifactType": "application/vnd.example.sbom"})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [sbom]
    # no referrers (even for an unknown subject): an empty index, not an error
    r = oci.get(f"/v2/conf/referrers/referrers/{sha256(b'nothing')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    r = oci.get("/v2/conf/referrers/referrers/sha256:nothex")
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_referrers_subject_may_arrive_later(oci: Oci) -> None:
    """A referrer can be pushed before its subject (the spec allows it)."""
    future = {"mediaType": OCI_MANIFEST, "digest": sha256(b"future subject"), "size": 14}
    sig, _ = oci.artifact("conf/referrers-early", subject=future, artifact_type="application/vnd.example.sig")
    r = oci.get(f"/v2/conf/referrers-early/referrers/{future['digest']}")
    assert [d["digest"] for d in r.json()["manifests"]] == [sig]



def test_catalog_lists_repositories(oci: Oci) -> None:
    for name in ("cat/b", "cat/a", "cat/c/nested"):
        oci.image(name, "v1")
    repos = oci.get("/v2/_catalog").json()["repositories"]
    assert {"cat/a", "cat/b", "cat/c/nested"} <= set(repos)
    assert repos == sorted(repos)
    r = oci.get("/v2/_catalog", params={"n": 1, "last": "cat/a"})
    assert r.json()["repositories"] == ["cat/b"]
    assert r.headers["Link"] == '</v2/_catalog?n=1&last=cat/b>; rel="next"'


# --- content management ----------------------------------------------------------------------------


def test_delete_tag_keeps_manifest(oci: Oci) -> None:
    digest, _ = oci.image("conf/delete-tag", "v1")
    oci.image("conf/delete-tag", "v2")
    r = oci.delete("/v2/conf/delete-tag/manifests/v1")
    assert r.status_code == 202
    assert oci.get("/v2/conf/delete-tag/manifests/v1").status_code == 404
    assert oci.get(f"/v2/conf/delete-tag/manifests/{digest}").status_code == 200
    assert oci.get("/v2/conf/delete-tag/tags/list").json()["tags"] == ["v2"]
    assert oci.delete("/v2/conf/delete-tag/manifests/v1").status_code == 404


def test_delete_manifest_by_digest(oci: Oci) -> None:
    digest, manifest = oci.image("conf/delete-manifest", "v1")
    subject = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(json.dumps(manifest))}
    sig, _ = oci.artifact("conf/delete-manifest", subject=subject, artifact_type="application/vnd.example.sig")
    r = oci.delete(f"/v2/conf/delete-manifest/manifests/{digest}")
    assert r.status_code == 202
    r = oci.get(f"/v2/conf/delete-manifest/manifests/{digest}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    assert oci.get("/v2/conf/delete-manifest/manifests/v1").status_code == 404
    assert oci.get("/v2/conf/delete-manifest/tags/list").json()["tags"] == []
    r = oci.delete(f"/v2/conf/delete-manifest/manifests/{digest}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    # deleting the referrer removes it from the referrers list
    assert len(oci.get(f"/v2/conf/delete-manifest/referrers/{digest}").json()["manifests"]) == 1
    assert oci.delete(f"/v2/conf/delete-manifest/manifests/{sig}").status_code == 202
    assert oci.get(f"/v2/conf/delete-manifest/referrers/{digest}").json()["manifests"] == []


def test_delete_blob(oci: Oci) -> None:
    digest = oci.push_blob("conf/delete-blob", b"to be deleted")
    oci.push_blob("conf/delete-blob-other", b"to be deleted")
    r = oci.delete(f"/v2/conf/delete-blob/blobs/{digest}")
    assert r.status_code == 202
    r = oci.get(f"/v2/conf/delete-blob/blobs/{digest}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"
    r = oci.delete(f"/v2/conf/delete-blob/blobs/{digest}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"
    # content is shared: another repository that has it still serves it
    assert oci.get(f"/v2/conf/delete-blob-other/blobs/{digest}").content == b"to be deleted"


def test_base_endpoint_and_api_version_header(oci: Oci) -> None:
    r = oci.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_pull_large_blob_keeps_connection_usable(oci: Oci) -> None:
    """Big blobs are sent with sendfile from a worker thread; the connection must stay healthy."""
    data = hashlib.sha256(b"big").digest() * (5 * 1024 * 1024 // 32 + 7)
    digest = oci.push_blob("conf/large", data)
    for _ in range(2):  # same keep-alive connection
        r = oci.get(f"/v2/conf/large/blobs/{digest}")
        assert r.status_code == 200 and r.content == data
        assert r.headers["Content-Length"] == str(len(data))
    r = oci.get(f"/v2/conf/large/blobs/{digest}", headers={"Range": "bytes=5000000-5000009"})
    assert r.status_code == 206 and r.content == data[5000000:5000010]
    assert oci.head(f"/v2/conf/large/blobs/{digest}").headers["Content-Length"] == str(len(data))


def test_push_manifest_by_digest_with_tag_parameters(oci: Oci) -> None:
    """The distribution-spec development version: PUT by digest with one or more ``tag`` query parameters
    sets every tag, and the response names each one in an ``OCI-Tag`` header (clients that see none fall
    back to one PUT per tag)."""
    _, manifest = oci.image("conf/tag-param", None)
    body = json.dumps({**manifest, "annotations": {"v": "2"}}).encode()
    digest = sha256(body)
    r = oci.put(f"/v2/conf/tag-param/manifests/{digest}?tag=a&tag=b&tag=a", content=body,
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    assert r.headers.get_list("OCI-Tag") == ["a", "b"]  # one header per tag, each once
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"] == f"/v2/conf/tag-param/manifests/{digest}"
    assert oci.get("/v2/conf/tag-param/tags/list").json()["tags"] == ["a", "b"]
    for tag in ("a", "b"):
        got = oci.get(f"/v2/conf/tag-param/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200 and got.content == body and got.headers["Docker-Content-Digest"] == digest
    # a single tag parameter, moving a tag another manifest held
    other = json.dumps({**manifest, "annotations": {"v": "3"}}).encode()
    r = oci.put(f"/v2/conf/tag-param/manifests/{sha256(other)}", params={"tag": "b"}, content=other,
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers.get_list("OCI-Tag") == ["b"]
    assert oci.head("/v2/conf/tag-param/manifests/b").headers["Docker-Content-Digest"] == sha256(other)
    assert oci.head("/v2/conf/tag-param/manifests/a").headers["Docker-Content-Digest"] == digest
    # without parameters, a push by digest sets no tag and says so by sending no OCI-Tag
    plain = json.dumps({**manifest, "annotations": {"v": "4"}}).encode()
    r = oci.put(f"/v2/conf/tag-param/manifests/{sha256(plain)}", content=plain, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and "OCI-Tag" not in r.headers
    # a push by tag names its tag (and any parameters) too
    r = oci.put("/v2/conf/tag-param/manifests/c", params=[("tag", "d")], content=plain,
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers.get_list("OCI-Tag") == ["c", "d"]
    assert oci.get("/v2/conf/tag-param/tags/list").json()["tags"] == ["a", "b", "c", "d"]


@pytest.mark.parametrize("tags", [["-bad"], ["ok1", "no/slash"], ["ok2", ""], ["x" * 129], ["ok3", ".dot"]])
def test_push_with_an_invalid_tag_parameter_sets_nothing(oci: Oci, tags: list[str]) -> None:
    """Any invalid tag refuses the whole push with MANIFEST_INVALID (the registry's error table): no tag
    of the request is set, and the manifest is not stored either."""
    _, manifest = oci.image("conf/tag-bad", None)
    body = json.dumps({**manifest, "annotations": {"tags": ",".join(tags)}}).encode()
    r = oci.put(f"/v2/conf/tag-bad/manifests/{sha256(body)}", params=[("tag", t) for t in tags], content=body,
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID", r.text
    assert "is invalid" in r.json()["errors"][0]["detail"] and "OCI-Tag" not in r.headers
    assert oci.get("/v2/conf/tag-bad/tags/list").json()["tags"] == []
    assert oci.get(f"/v2/conf/tag-bad/manifests/{sha256(body)}").status_code == 404


def test_push_with_too_many_tag_parameters_is_refused(oci: Oci) -> None:
    _, manifest = oci.image("conf/tag-many", None)
    body = json.dumps(manifest).encode()
    r = oci.put(f"/v2/conf/tag-many/manifests/{sha256(body)}", params=[("tag", f"t{i}") for i in range(101)],
                content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID"
    assert "at most 100" in r.json()["errors"][0]["detail"]
    assert oci.get("/v2/conf/tag-many/tags/list").json()["tags"] == []


def test_referrers_artifact_type_fallbacks_and_index_referrer(oci: Oci) -> None:
    """As in the conformance suite: artifactType from config.mediaType when absent, and an index referrer."""
    subject_digest, manifest = oci.image("conf/ref-kinds", "v1")
    subject = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(json.dumps(manifest))}
    config = b'{"kind": "sbom"}'
    blob = oci.push_blob("conf/ref-kinds", b"sbom data")
    by_config = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                 "config": {"mediaType": "application/vnd.example.sbom.config", "digest": oci.push_blob(
                     "conf/ref-kinds", config), "size": len(config)},
                 "layers": [{"mediaType": "application/octet-stream", "digest": blob, "size": 9}],
                 "subject": subject, "annotations": {"org.opencontainers.conformance.test": "config"}}
    body = json.dumps(by_config).encode()
    r = oci.put(f"/v2/conf/ref-kinds/manifests/{sha256(body)}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers["OCI-Subject"] == subject_digest
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": "application/vnd.food.stand",
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(body), "size": len(body)}],
             "subject": subject, "annotations": {"org.opencontainers.conformance.test": "index"}}
    index_body = json.dumps(index).encode()
    r = oci.put(f"/v2/conf/ref-kinds/manifests/{sha256(index_body)}", content=index_body,
                headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 201 and r.headers["OCI-Subject"] == subject_digest
    found = {d["digest"]: d for d in oci.get(f"/v2/conf/ref-kinds/referrers/{subject_digest}").json()["manifests"]}
    assert found[sha256(body)]["artifactType"] == "application/vnd.example.sbom.config"
    assert found[sha256(index_body)] == {"mediaType": OCI_INDEX, "digest": sha256(index_body), "size": len(index_body),
                                         "artifactType": "application/vnd.food.stand",
                                         "annotations": {"org.opencontainers.conformance.test": "index"}}
    r = oci.get(f"/v2/conf/ref-kinds/referrers/{subject_digest}", params={"artifactType": "application/vnd.food.stand"})
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(index_body)]


def test_pull_invalid_reference_is_not_found(oci: Oci) -> None:
    oci.image("conf/invalid-ref", "v1")
    for method in ("GET", "HEAD"):
        r = oci.request(method, "/v2/conf/invalid-ref/manifests/.INVALID_MANIFEST_NAME")
        assert r.status_code == 404
    r = oci.put("/v2/conf/invalid-ref/manifests/sha256:totallywrong", content=b"{}",
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_no_internal_error_was_logged(server: Server) -> None:
    """Runs last in this module: nothing above made the server hit a bug (a 500)."""
    assert "internal error" not in server.proc.log()
