"""skopeo, a real client: copy an OCI layout in and out, list tags, inspect, delete."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.registry.conftest import OCI_MANIFEST, Oci, Server, sha256


def skopeo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.json"
    if not policy.exists():
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return subprocess.run(["skopeo", "--policy", str(policy), *args], capture_output=True, text=True, timeout=60,
                          env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)})


def _write_blob(layout: Path, data: bytes) -> dict:
    digest = sha256(data)
    path = layout / "blobs" / "sha256" / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, bytes]:
    """An OCI image layout with one image (a one-file tar layer), tagged 1.0.0."""
    root = tmp_path / "layout"
    root.mkdir()
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        content = b"hello from a layer\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer = buf.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_write_blob(root, config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **_write_blob(root, layer)}],
    }).encode()
    desc = {"mediaType": OCI_MANIFEST, **_write_blob(root, manifest),
            "annotations": {"org.opencontainers.image.ref.name": "1.0.0"}}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return root, layer


def test_skopeo_copy_in_and_out_list_inspect_delete(server: Server, oci: Oci, layout: tuple[Path, bytes],
                                                    tmp_path: Path) -> None:
    root, layer = layout
    dest = f"docker://{server.host}/skopeo/app"
    for tag in ("1.0.0", "latest"):
        r = skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"oci:{root}:1.0.0", f"{dest}:{tag}")
        assert r.returncode == 0, r.stderr

    r = skopeo(tmp_path, "list-tags", "--tls-verify=false", dest)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Tags"] == ["1.0.0", "latest"]

    r = skopeo(tmp_path, "inspect", "--tls-verify=false", f"{dest}:1.0.0")
    assert r.returncode == 0, r.stderr
    inspected = json.loads(r.stdout)
    assert inspected["Digest"] == oci.head("/v2/skopeo/app/manifests/1.0.0").headers["Docker-Content-Digest"]
    assert inspected["Architecture"] == "amd64"
    pushed = oci.get("/v2/skopeo/app/manifests/1.0.0", headers={"Accept": OCI_MANIFEST}).json()
    assert inspected["Layers"] == [d["digest"] for d in pushed["layers"]]  # skopeo may compress the tar on the way
    stored_layer = oci.get(f"/v2/skopeo/app/blobs/{pushed['layers'][0]['digest']}").content
    assert b"hello from a layer" in (gzip.decompress(stored_layer) if stored_layer[:2] == b"\x1f\x8b" else stored_layer)

    out = tmp_path / "out"
    r = skopeo(tmp_path, "copy", "--src-tls-verify=false", f"{dest}:1.0.0", f"oci:{out}:copied")
    assert r.returncode == 0, r.stderr
    assert (out / "blobs" / "sha256" / sha256(stored_layer)[7:]).read_bytes() == stored_layer
    [entry] = json.loads((out / "index.json").read_text())["manifests"]
    assert entry["digest"] == inspected["Digest"]

    r = skopeo(tmp_path, "delete", "--tls-verify=false", f"{dest}:latest")
    assert r.returncode == 0, r.stderr
    # skopeo deletes the manifest by digest: both tags pointed at it
    assert oci.get("/v2/skopeo/app/manifests/1.0.0").status_code == 404
    assert oci.get("/v2/skopeo/app/tags/list").json()["tags"] == []
    r = skopeo(tmp_path, "inspect", "--tls-verify=false", f"{dest}:1.0.0")
    assert r.returncode != 0 and "manifest unknown" in r.stderr.lower()


def test_skopeo_copies_a_wasm_artifact(server: Server, tmp_path: Path) -> None:
    from shared import registry_client as client
    from tests.registry import components

    client.push_component(f"{server.host}/skopeo/greeter:1.0.0", components.greeter())
    out = tmp_path / "wasm-layout"
    r = skopeo(tmp_path, "copy", "--src-tls-verify=false", f"docker://{server.host}/skopeo/greeter:1.0.0",
               f"oci:{out}:1.0.0")
    assert r.returncode == 0, r.stderr
    assert (out / "blobs" / "sha256" / sha256(components.greeter())[7:]).read_bytes() == components.greeter()
    r = skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"oci:{out}:1.0.0",
               f"docker://{server.host}/skopeo/greeter-copy:1.0.0")
    assert r.returncode == 0, r.stderr
    assert client.component_info(f"{server.host}/skopeo/greeter-copy:1.0.0")["exports"] == ["driftless:demo/greeter"]
