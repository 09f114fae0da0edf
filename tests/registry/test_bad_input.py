"""Bad input gets the right OCI error (never a 500) and nothing stored is lost or corrupted."""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse

import httpx
import pytest

from tests.registry.conftest import OCI_INDEX, OCI_MANIFEST, Oci, Server, error_code, sha256


@pytest.mark.parametrize("path", [
    "/v2/UPPER/tags/list",
    "/v2/a..b/tags/list",
    "/v2/-lead/tags/list",
    "/v2/trail-/manifests/v1",
    "/v2/a//b/manifests/v1",
    "/v2/" + "a" * 256 + "/tags/list",
    "/v2/a_b__c---d/_x/blobs/uploads/",
])
def test_bad_repository_names(oci: Oci, path: str) -> None:
    r = oci.request("POST" if path.endswith("uploads/") else "GET", path)
    assert r.status_code == 400, r.text
    assert error_code(r) == "NAME_INVALID"


def test_path_traversal_never_reaches_storage(server: Server) -> None:
    """Raw paths with encoded dots and slashes, sent byte for byte (clients normalise them away)."""
    for raw in ("/v2/%2e%2e/%2e%2e/etc/tags/list", "/v2/..%2f..%2fetc/tags/list", "/v2/a/../../etc/tags/list",
                "/v2/a/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status = int(data.split(b" ", 2)[1])
        assert status in (400, 404), (raw, data[:200])
        assert b"root:" not in data


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "a" * 32, "sha256:" + "A" * 64, "sha256" + "a" * 64,
                                    "sha512:" + "a" * 64])
def test_bad_digests(oci: Oci, digest: str) -> None:
    q = urllib.parse.quote(digest)
    for method, path in (("GET", f"/v2/bad/digest/blobs/{q}"), ("GET", f"/v2/bad/digest/referrers/{q}"),
                         ("POST", f"/v2/bad/digest/blobs/uploads/?digest={q}"),
                         ("POST", f"/v2/bad/digest/blobs/uploads/?mount={q}")):
        r = oci.request(method, path)
        assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID", (method, path, r.text)


def test_wrong_digest_stores_nothing(server: Server, oci: Oci) -> None:
    claimed = sha256(b"what I claim")
    r = oci.post("/v2/bad/wrong/blobs/uploads/", params={"digest": claimed}, content=b"what I send")
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    assert oci.head(f"/v2/bad/wrong/blobs/{claimed}").status_code == 404
    assert not (server.root / "blobs" / "sha256" / claimed[7:9] / claimed[7:]).exists()
    assert not (server.root / "blobs" / "sha256" / sha256(b"what I send")[7:9] / sha256(b"what I send")[7:]).exists()
    # a session PUT with the wrong digest keeps the session: the client can fix it
    loc = oci.post("/v2/bad/wrong/blobs/uploads/").headers["Location"]
    loc = oci.patch(loc, content=b"part one", headers={"Content-Type": "application/octet-stream"}).headers["Location"]
    r = oci.put(loc, params={"digest": claimed})
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    assert oci.get(loc).headers["Range"] == "0-7"
    assert oci.put(loc, params={"digest": sha256(b"part one")}).status_code == 201
    # PUT without a digest
    loc = oci.post("/v2/bad/wrong/blobs/uploads/").headers["Location"]
    r = oci.put(loc, content=b"x")
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_unknown_upload_sessions(oci: Oci) -> None:
    for upload in ("0" * 32, "not-a-uuid", "%2e%2e"):
        r = oci.get(f"/v2/bad/upload/blobs/uploads/{upload}")
        assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN", r.text
    # a session belongs to its repository
    loc = oci.post("/v2/bad/upload/blobs/uploads/").headers["Location"]
    upload_id = loc.rsplit("/", 1)[1]
    r = oci.get(f"/v2/bad/other/blobs/uploads/{upload_id}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"


def test_bad_chunks(oci: Oci) -> None:
    loc = oci.post("/v2/bad/chunks/blobs/uploads/").headers["Location"]
    loc = oci.patch(loc, content=b"0123456789", headers={"Content-Range": "0-9"}).headers["Location"]
    for content_range in ("5-14", "11-20", "garbage", "20-10"):
        r = oci.patch(loc, content=b"0123456789", headers={"Content-Range": content_range})
        assert r.status_code == 416 and error_code(r) == "BLOB_UPLOAD_INVALID", content_range
    # Content-Range and Content-Length disagree
    r = oci.patch(loc, content=b"012", headers={"Content-Range": "10-19"})
    assert r.status_code == 416 and error_code(r) == "SIZE_INVALID"
    assert oci.get(loc).headers["Range"] == "0-9"
    r = oci.put(loc, params={"digest": sha256(b"0123456789")})
    assert r.status_code == 201


def test_truncated_body_stores_nothing(server: Server, oci: Oci) -> None:
    """The client announces 1000 bytes, sends 10 and hangs up."""
    data = b"x" * 1000
    digest = sha256(data)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(
            f"POST /v2/bad/truncated/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: 1000\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + data[:10]
        )
        s.shutdown(socket.SHUT_WR)
        s.recv(65536)
    assert oci.head(f"/v2/bad/truncated/blobs/{digest}").status_code == 404
    # the same for a chunk: the session keeps what it had
    loc = oci.post("/v2/bad/truncated/blobs/uploads/").headers["Location"]
    loc = oci.patch(loc, content=b"good", headers={"Content-Range": "0-3"}).headers["Location"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n".encode() + b"y" * 20)
        s.shutdown(socket.SHUT_WR)
        s.recv(65536)
    assert oci.get(loc).headers["Range"] == "0-3"
    loc = oci.patch(loc, content=b"more", headers={"Content-Range": "4-7"}).headers["Location"]
    assert oci.put(loc, params={"digest": sha256(b"goodmore")}).status_code == 201
    assert oci.get(f"/v2/bad/truncated/blobs/{sha256(b'goodmore')}").content == b"goodmore"


@pytest.mark.parametrize("body, content_type, needle", [
    (b"{not json", OCI_MANIFEST, "not valid JSON"),
    (b"[1, 2]", OCI_MANIFEST, "JSON object"),
    (json.dumps({"schemaVersion": 1}).encode(), OCI_MANIFEST, "schemaVersion must be 2"),
    (json.dumps({"schemaVersion": 2, "mediaType": "application/x-unknown"}).encode(), "application/x-unknown",
     "unsupported manifest media type"),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode(), OCI_MANIFEST,
     "does not match"),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(), OCI_MANIFEST, "config"),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": "x", "digest": "sha256:1",
                 "size": 1}, "layers": []}).encode(), OCI_MANIFEST, "config.digest"),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": "x", "digest": sha256(b""),
                 "size": -1}, "layers": []}).encode(), OCI_MANIFEST, "config.size"),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "nope"}).encode(), OCI_INDEX, "manifests"),
    (b"\xff\xfe", OCI_MANIFEST, "not valid JSON"),
])
def test_malformed_manifests(oci: Oci, body: bytes, content_type: str, needle: str) -> None:
    r = oci.put("/v2/bad/manifest/manifests/v1", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 400, r.text
    assert error_code(r) == "MANIFEST_INVALID"
    assert needle in r.json()["errors"][0]["detail"]


def test_manifest_size_mismatch_and_bad_tag(oci: Oci) -> None:
    layer = oci.push_blob("bad/size", b"12345")
    oci.push_blob("bad/size", b"{}")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
                "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": 6}]}
    r = oci.put("/v2/bad/size/manifests/v1", json=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID" and "6 bytes" in r.text
    manifest["layers"][0]["size"] = 5
    r = oci.put("/v2/bad/size/manifests/-bad-tag", json=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID"
    r = oci.put("/v2/bad/size/manifests/" + "t" * 129, json=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400


def test_unsupported_methods_and_routes(oci: Oci) -> None:
    r = oci.post("/v2/bad/methods/manifests/v1")
    assert r.status_code == 405 and error_code(r) == "UNSUPPORTED"
    r = oci.put(f"/v2/bad/methods/blobs/{sha256(b'')}", content=b"")
    assert r.status_code == 405 and error_code(r) == "UNSUPPORTED"
    r = oci.get("/v2/bad/methods/nothing-here")
    assert r.status_code == 404 and error_code(r) == "UNSUPPORTED"
    oci.image("bad/methods", "v1")
    r = oci.get("/v2/bad/methods/tags/list", params={"n": "many"})
    assert r.status_code == 400 and "non-negative integer" in r.text
    assert oci.get("/elsewhere").status_code == 404


def test_concurrent_pushes_of_the_same_blob_and_tag(server: Server, oci: Oci) -> None:
    data = b"contended" * 100_000
    digest = sha256(data)
    results: list[int] = []
    tags: list[int] = []

    def push_blob() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            loc = c.post("/v2/bad/race/blobs/uploads/").headers["Location"]
            results.append(c.put(loc, params={"digest": digest}, content=data).status_code)

    threads = [threading.Thread(target=push_blob) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201] * 6
    assert oci.get(f"/v2/bad/race/blobs/{digest}").content == data

    manifests = [oci.image("bad/race", None, layer=f"layer {i}".encode())[1] for i in range(6)]
    bodies = [json.dumps(m).encode() for m in manifests]

    def push_tag(body: bytes) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            tags.append(c.put("/v2/bad/race/manifests/latest", content=body,
                              headers={"Content-Type": OCI_MANIFEST}).status_code)

    threads = [threading.Thread(target=push_tag, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tags == [201] * 6
    final = oci.get("/v2/bad/race/manifests/latest")
    assert final.content in bodies  # one of them, whole
    assert final.headers["Docker-Content-Digest"] == sha256(final.content)


def test_expect_100_continue(server: Server, oci: Oci) -> None:
    """curl and some SDKs wait for '100 Continue' before sending a body."""
    data = b"expecting" * 1000
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(f"POST /v2/bad/expect/blobs/uploads/?digest={sha256(data)} HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Length: {len(data)}\r\nExpect: 100-continue\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(data)
        assert s.recv(65536).startswith(b"HTTP/1.1 201")
    assert oci.get(f"/v2/bad/expect/blobs/{sha256(data)}").content == data


def test_client_hanging_up_mid_download(server: Server, oci: Oci) -> None:
    """Big blobs go out from a worker thread; clients that leave early must not leak or upset anything."""
    import os

    from tests.support.procs import wait_until

    data = os.urandom(6 * 1024 * 1024)
    digest = oci.push_blob("bad/hangup", data)
    fd_dir = f"/proc/{server.proc.pid}/fd"
    oci.get(f"/v2/bad/hangup/blobs/{digest}")
    before = len(os.listdir(fd_dir))
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"GET /v2/bad/hangup/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
    assert oci.get(f"/v2/bad/hangup/blobs/{digest}").content == data
    def fds() -> list[str]:
        out = []
        for f in os.listdir(fd_dir):
            try:
                out.append(os.readlink(f"{fd_dir}/{f}"))
            except FileNotFoundError:
                pass
        return sorted(out)

    wait_until(lambda: len(os.listdir(fd_dir)) <= before + 1, timeout=20,
               what=f"the server's descriptors to be closed: {before} before, now {fds()}")


def test_generic_content_type_defers_to_the_manifest(oci: Oci) -> None:
    """curl-style `Content-Type: application/json` does not contradict the manifest's own mediaType."""
    _, manifest = oci.image("bad/generic-ct", None)
    r = oci.put("/v2/bad/generic-ct/manifests/v1", json=manifest)  # httpx sends application/json
    assert r.status_code == 201, r.text
    assert oci.get("/v2/bad/generic-ct/manifests/v1").headers["Content-Type"] == OCI_MANIFEST


def test_truncated_manifest_is_not_stored(server: Server, oci: Oci) -> None:
    _, manifest = oci.image("bad/trunc-manifest", None)
    body = json.dumps(manifest).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(f"PUT /v2/bad/trunc-manifest/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: {OCI_MANIFEST}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
        s.shutdown(socket.SHUT_WR)
        s.recv(65536)
    assert oci.get("/v2/bad/trunc-manifest/manifests/v1").status_code == 404
    assert "internal error" not in server.proc.log()
