"""Crash safety: SIGKILL the registry in the middle of uploads, restart it on the same storage, and
check that no partial blob is visible and that an upload session survives the restart."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.registry.conftest import sha256, start_registry
from tests.support.procs import wait_until


def _send_partial(port: int, head: str, body: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(head.encode() + body)
    return s


def test_sigkill_mid_upload_then_restart(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc, port = start_registry(root, tmp_path)
    url = f"http://127.0.0.1:{port}"
    big = hashlib.sha256(b"seed").digest() * (4 * 1024 * 1024 // 32)  # 4 MiB
    first = big[: 1024 * 1024]
    with httpx.Client(base_url=url, timeout=30) as c:
        loc = c.post("/v2/crash/app/blobs/uploads/").headers["Location"]
        r = c.patch(loc, content=first, headers={"Content-Range": f"0-{len(first) - 1}"})
        assert r.status_code == 202
        loc = r.headers["Location"]
        upload_id = loc.rsplit("/", 1)[1]
    # a monolithic push and a chunk, each half sent when the registry dies
    mono = _send_partial(
        port,
        f"POST /v2/crash/app/blobs/uploads/?digest={sha256(big)} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(big)}\r\nContent-Type: application/octet-stream\r\n\r\n",
        big[: len(big) // 2],
    )
    chunk = _send_partial(
        port,
        f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(big) - len(first)}\r\n"
        f"Content-Range: {len(first)}-{len(big) - 1}\r\n\r\n",
        big[len(first): len(first) + 1024 * 1024],
    )
    data_file = root / "uploads" / upload_id / "data"
    wait_until(lambda: data_file.stat().st_size > len(first), what="the chunk to reach the disk")
    wait_until(lambda: any(p.stat().st_size > 0 for p in (root / "_tmp").iterdir()), what="the monolithic temp file")
    proc.kill()
    mono.close()
    chunk.close()

    # nothing partial is visible: the blob is absent, every stored blob matches its digest
    assert not (root / "blobs" / "sha256" / sha256(big)[7:9] / sha256(big)[7:]).exists()
    fsck = subprocess.run([sys.executable, "-m", "driftless", "registry", "fsck", "--root", str(root)],
                          capture_output=True, text=True, timeout=60)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    proc2, port2 = start_registry(root, tmp_path)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port2}", timeout=30) as c:
            assert c.head(f"/v2/crash/app/blobs/{sha256(big)}").status_code == 404
            # the session survived with exactly the committed bytes
            status = c.get(f"/v2/crash/app/blobs/uploads/{upload_id}")
            assert status.status_code == 204
            assert status.headers["Range"] == f"0-{len(first) - 1}"
            r = c.patch(status.headers["Location"], content=big[len(first):],
                        headers={"Content-Range": f"{len(first)}-{len(big) - 1}"})
            assert r.status_code == 202, r.text
            r = c.put(r.headers["Location"], params={"digest": sha256(big)})
            assert r.status_code == 201, r.text
            assert c.get(f"/v2/crash/app/blobs/{sha256(big)}").content == big
    finally:
        proc2.stop()


def test_empty_session_survives_restart_and_ids_are_signed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc, port = start_registry(root, tmp_path)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        loc = c.post("/v2/crash/empty/blobs/uploads/").headers["Location"]
    proc.kill()
    proc2, port2 = start_registry(root, tmp_path)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port2}", timeout=30) as c:
            status = c.get(loc)
            assert status.status_code == 204 and status.headers["Range"] == "0-0"
            upload_id = loc.rsplit("/", 1)[1]
            forged = upload_id[:-1] + ("0" if upload_id[-1] != "0" else "1")
            assert c.get(loc.replace(upload_id, forged)).status_code == 404
            assert c.get(f"/v2/crash/other/blobs/uploads/{upload_id}").status_code == 404
            r = c.put(loc, params={"digest": sha256(b"late")}, content=b"late")
            assert r.status_code == 201
            # a closed session stays closed
            assert c.get(loc).status_code == 404
            assert c.put(loc, params={"digest": sha256(b"again")}, content=b"again").status_code == 404
    finally:
        proc2.stop()


def test_sigkill_during_manifest_pushes_leaves_consistent_state(tmp_path: Path) -> None:
    import json
    import threading
    import time

    root = tmp_path / "root"
    proc, port = start_registry(root, tmp_path)
    pushed: list[str] = []
    stop = threading.Event()

    def pusher() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            i = 0
            while not stop.is_set():
                try:
                    config = json.dumps({"n": i}).encode()
                    c.post("/v2/crash/tags/blobs/uploads/", params={"digest": sha256(config)}, content=config)
                    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                                      "digest": sha256(config), "size": len(config)},
                                           "layers": []}).encode()
                    r = c.put(f"/v2/crash/tags/manifests/t{i % 7}", content=manifest,
                              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
                    if r.status_code == 201:
                        pushed.append(r.headers["Docker-Content-Digest"])
                except httpx.HTTPError:
                    return
                i += 1

    thread = threading.Thread(target=pusher)
    thread.start()
    wait_until(lambda: len(pushed) >= 20, timeout=30, what="some pushes")
    proc.kill()
    stop.set()
    thread.join(10)
    time.sleep(0.1)

    proc2, port2 = start_registry(root, tmp_path)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port2}", timeout=10) as c:
            tags = c.get("/v2/crash/tags/tags/list").json()["tags"]
            assert tags and set(tags) <= {f"t{i}" for i in range(7)}
            for tag in tags:  # every visible tag points to a whole, valid manifest
                r = c.get(f"/v2/crash/tags/manifests/{tag}")
                assert r.status_code == 200
                assert sha256(r.content) == r.headers["Docker-Content-Digest"]
                json.loads(r.content)
    finally:
        proc2.stop()
    fsck = subprocess.run([sys.executable, "-m", "driftless", "registry", "fsck", "--root", str(root)],
                          capture_output=True, text=True, timeout=60)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
