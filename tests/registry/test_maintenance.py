"""``driftless registry gc`` and ``driftless registry fsck`` on real storage, run as the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from registry.layout import key
from registry.manifests import OCI_INDEX, OCI_MANIFEST
from registry.storage import FilesystemStorage
from registry.store import Registry, digest_of


def driftless(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftless", *args], capture_output=True, text=True, timeout=60)


def _image(reg: Registry, repo: str, ref: str, layer: bytes, *, subject: str | None = None) -> str:
    config = reg.put_blob(repo, b"{}")
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": reg.put_blob(repo, layer), "size": len(layer)}],
    }
    if subject:
        manifest["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}
        manifest["artifactType"] = "application/vnd.example.sig"
    body = json.dumps(manifest).encode()
    return reg.put_manifest(repo, ref if ref != "-" else digest_of(body), body, OCI_MANIFEST).digest


def _age_everything(root: Path, seconds: float = 3600) -> None:
    old = time.time() - seconds
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (old, old))


def test_gc_marks_from_tags_and_keeps_recent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = FilesystemStorage(root)
    reg = Registry(storage)
    tagged = _image(reg, "app", "v1", b"L1")
    untagged = _image(reg, "app", "-", b"L2")
    sig_of_tagged = _image(reg, "app", "-", b"L3", subject=tagged)
    sig_of_untagged = _image(reg, "app", "-", b"L4", subject=untagged)
    child = _image(reg, "app", "-", b"L5")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": 1}]}).encode()
    index_digest = reg.put_manifest("app", "multi", index, OCI_INDEX).digest
    orphan = reg.put_blob("app", b"orphan blob")
    upload = reg.start_upload("app")
    w = reg.chunk_writer(upload)
    w.write(b"in progress")
    import hashlib

    reg.commit_chunk(upload, w, hashlib.sha256(b"in progress"))
    _age_everything(root)
    fresh = reg.put_blob("other", b"pushed a moment ago")  # within the grace period

    dry = driftless("registry", "gc", "--root", str(root), "--dry-run", "--delete-untagged")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete manifest app@{untagged}" in dry.stdout
    assert f"would delete manifest app@{sig_of_untagged}" in dry.stdout
    assert f"would delete blob {orphan}" in dry.stdout
    assert storage.stat(key("blob", digest=orphan)) is not None  # dry run deletes nothing

    out = driftless("registry", "gc", "--root", str(root), "--grace", "10m", "--delete-untagged")
    assert out.returncode == 0, out.stderr
    for gone in (untagged, sig_of_untagged, orphan, digest_of(b"L2"), digest_of(b"L4")):
        assert storage.stat(key("blob", digest=gone)) is None, gone
    for kept in (tagged, sig_of_tagged, child, index_digest, fresh, digest_of(b"L1"), digest_of(b"L3"),
                 digest_of(b"L5"), digest_of(b"{}")):
        assert storage.stat(key("blob", digest=kept)) is not None, kept
    reg = Registry(storage)
    assert reg.get_manifest("app", "v1").digest == tagged
    assert [d["digest"] for d in reg.referrers("app", tagged)] == [sig_of_tagged]
    assert not reg.has_manifest("app", untagged)
    assert reg.upload("app", upload.id).size == len(b"in progress")
    # the blob link of the orphan went too, the fresh one stays
    assert storage.stat(key("layer-link", repo="app", digest=orphan)) is None
    assert reg.blob_stat("other", fresh).size == len(b"pushed a moment ago")

    closed = reg.start_upload("app")
    reg.cancel_upload(closed)  # leaves a marker so the id cannot be reused
    assert (root / key("upload-closed", upload=closed.id)).exists()
    again = driftless("registry", "gc", "--root", str(root), "--grace", "0s", "--delete-untagged")
    assert "deleted 1 blobs" in again.stdout  # only the fresh orphan, now past a zero grace
    assert not (root / key("upload", upload=closed.id)).exists()
    assert reg.upload("app", upload.id).size == len(b"in progress")
    # a session untouched for two days is abandoned, not in progress
    _age_everything(root / "uploads", seconds=2 * 86400)
    r = driftless("registry", "gc", "--root", str(root), "--stale-uploads", "1d")
    assert f"deleted abandoned upload session app {upload.id}" in r.stdout
    assert not (root / key("upload", upload=upload.id)).exists()


def test_gc_and_fsck_usage_errors(tmp_path: Path) -> None:
    r = driftless("registry", "gc", "--root", str(tmp_path / "absent"))
    assert r.returncode == 2 and "is not a directory" in r.stderr and "Traceback" not in r.stderr
    r = driftless("registry", "gc", "--root", str(tmp_path), "--grace", "soon")
    assert r.returncode == 2 and "not a duration" in r.stderr


def test_fsck_quarantines_corrupt_blobs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = FilesystemStorage(root)
    reg = Registry(storage)
    _image(reg, "app", "v1", b"good layer")
    victim = _image(reg, "app", "v2", b"layer to corrupt")
    layer = digest_of(b"layer to corrupt")
    ok = driftless("registry", "fsck", "--root", str(root))
    assert ok.returncode == 0, ok.stdout
    assert "checked 5 blobs; 0 corrupt" in ok.stdout

    (root / key("blob", digest=layer)).write_bytes(b"bit rot")
    bad = driftless("registry", "fsck", "--root", str(root))
    assert bad.returncode == 1
    assert f"corrupt blob {layer}" in bad.stdout
    assert (root / key("quarantine", digest=layer)).read_bytes() == b"bit rot"
    assert storage.stat(key("blob", digest=layer)) is None
    # the manifest that needs it is reported, and the run stays non-zero until it is fixed
    again = driftless("registry", "fsck", "--root", str(root))
    assert again.returncode == 1 and f"app@{layer}: linked blob is missing" in again.stdout
    assert reg.get_manifest("app", "v2").digest == victim  # nothing else was touched


def test_gc_keeps_digests_an_environment_pins_unless_asked(tmp_path: Path) -> None:
    """An environment pins demo/app@sha256:...; the tag moves on; gc must not break the pinned pull."""
    from tests.registry.conftest import Oci, start_registry

    root = tmp_path / "root"
    proc, port = start_registry(root, tmp_path)
    try:
        with Oci(f"http://127.0.0.1:{port}") as oci:
            pinned, manifest = oci.image("demo/app", "v1", layer=b"release 1")
            newer, _ = oci.image("demo/app", "v1", layer=b"release 2")  # the tag moves on
            untagged, _ = oci.image("demo/app", None, layer=b"pushed by digest only")
            assert oci.head("/v2/demo/app/manifests/v1").headers["Docker-Content-Digest"] == newer
            _age_everything(root)

            out = driftless("registry", "gc", "--root", str(root), "--grace", "0s")
            assert out.returncode == 0, out.stderr
            assert "kept 2 untagged manifests" in out.stdout and "deleted 0 blobs" in out.stdout, out.stdout
            for digest in (pinned, untagged):
                assert oci.get(f"/v2/demo/app/manifests/{digest}").status_code == 200
            assert oci.get(f"/v2/demo/app/blobs/{manifest['layers'][0]['digest']}").content == b"release 1"

            out = driftless("registry", "gc", "--root", str(root), "--grace", "0s", "--delete-untagged")
            assert out.returncode == 0, out.stderr
            assert f"deleted manifest demo/app@{pinned}" in out.stdout
            for digest in (pinned, untagged):
                assert oci.get(f"/v2/demo/app/manifests/{digest}").status_code == 404
            assert oci.get(f"/v2/demo/app/blobs/{manifest['layers'][0]['digest']}").status_code == 404
            assert oci.get(f"/v2/demo/app/manifests/{newer}").status_code == 200
            assert oci.get("/v2/demo/app/manifests/v1").status_code == 200
    finally:
        proc.stop()
