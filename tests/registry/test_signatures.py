"""Component signatures on a real registry over HTTP: ``driftless keys generate``, ``push --sign``,
``sign``, ``inspect``; both storage modes (OCI 1.1 referrer, ``sha256-<hex>.sig`` tag); interop
with cosign's specification both ways (checked here with ``cryptography`` alone, not our code); GC."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from shared import registry_client as rc
from shared.signature_store import RegistrySignatures
from shared.signatures import trusted, verify_digest
from tests.registry.test_maintenance import _age_everything
from tests.support.components import build, variant

SIG_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "driftless", *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "NO_COLOR": "1"})
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def keys(tmp_path: Path, name: str, algorithm: str = "ecdsa-p256") -> tuple[Path, Path]:
    cli("keys", "generate", str(tmp_path / f"{name}.key"), "--algorithm", algorithm)
    return tmp_path / f"{name}.key", tmp_path / f"{name}.pub"


def test_keys_generate_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    private, public = keys(tmp_path, "ci")
    assert private.stat().st_mode & 0o777 == 0o600
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = cli("keys", "generate", str(private), check=False)
    assert again.returncode != 0 and "never overwritten" in again.stderr
    private.chmod(0o644)
    refused = cli("sign", "127.0.0.1:1/demo/x:1", "--key", str(private), check=False)
    assert refused.returncode != 0 and "chmod 600" in refused.stderr


def _independent_verify(url: str, repo: str, digest: str, public_pem: bytes) -> list[str]:
    """cosign's specification, read directly (httpx + cryptography, none of our code): every place a
    signature over ``digest`` by this key is found ("referrer"/"tag")."""
    key = serialization.load_pem_public_key(public_pem)
    found = []
    with httpx.Client(base_url=url, timeout=10) as http:
        index = http.get(f"/v2/{repo}/referrers/{digest}").json()
        manifests = [("referrer", m["digest"]) for m in index["manifests"] if m.get("artifactType") == SIG_ARTIFACT]
        manifests.append(("tag", digest.replace(":", "-") + ".sig"))
        for where, ref in manifests:
            r = http.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            if r.status_code != 200:
                continue
            for layer in r.json()["layers"]:
                if layer["mediaType"] != SIMPLE_SIGNING:
                    continue
                payload = http.get(f"/v2/{repo}/blobs/{layer['digest']}").content
                assert sha256(payload) == layer["digest"]
                raw = base64.b64decode(layer["annotations"][SIG_ANNOTATION])
                try:
                    if isinstance(key, ed25519.Ed25519PublicKey):
                        key.verify(raw, payload)
                    else:
                        assert isinstance(key, ec.EllipticCurvePublicKey)
                        key.verify(raw, payload, ec.ECDSA(hashes.SHA256()))
                except Exception:
                    continue
                doc = json.loads(payload)
                if doc["critical"]["type"] == "cosign container image signature" and \
                        doc["critical"]["image"]["docker-manifest-digest"] == digest:
                    found.append(where)
    return found


def test_push_sign_stores_a_cosign_signature_both_ways_and_inspect_lists_it(
        tmp_path: Path, server: Any) -> None:
    ci_key, ci_pub = keys(tmp_path, "ci")
    ed_key, ed_pub = keys(tmp_path, "release", "ed25519")
    wasm = tmp_path / "hello.wasm"
    wasm.write_bytes(variant("hello", "signatures-1"))
    ref = f"{server.host}/demo/signed:1.0.0"
    digest = cli("push", ref, str(wasm), "--sign", str(ci_key)).stdout.strip()
    signed = cli("sign", ref, "--key", str(ed_key))
    assert f"signed {digest} with ed25519 key sha256:" in signed.stdout

    # a verifier that knows only the specification finds each signature in both places
    assert _independent_verify(server.url, "demo/signed", digest, ci_pub.read_bytes()) == ["referrer", "tag"]
    assert _independent_verify(server.url, "demo/signed", digest, ed_pub.read_bytes()) == ["referrer", "tag"]
    # the referrer is a cosign OCI 1.1 signature whose subject is the component manifest
    with httpx.Client(base_url=server.url) as http:
        index = http.get(f"/v2/demo/signed/referrers/{digest}", params={"artifactType": SIG_ARTIFACT}).json()
        assert len(index["manifests"]) == 2
        one = http.get(f"/v2/demo/signed/manifests/{index['manifests'][0]['digest']}").json()
        assert one["subject"]["digest"] == digest and one["artifactType"] == SIG_ARTIFACT
        tag = http.get(f"/v2/demo/signed/manifests/{digest.replace(':', '-')}.sig").json()
        assert len(tag["layers"]) == 2 and "subject" not in tag  # both signatures, appended

    out = cli("inspect", ref, "--key", str(ci_pub), "--key", str(ed_pub), "-o", "json")
    sigs = json.loads(out.stdout)["signatures"]
    assert sigs["found"] == 2 and sorted(s["algorithm"] for s in sigs["listed"]) == ["ecdsa-p256", "ed25519"]
    assert sigs["signedBy"] == ["ci", "release"]
    text = cli("inspect", ref).stdout
    assert "signatures:" in text and "ecdsa-p256 key sha256:" in text and "ed25519 key sha256:" in text

    unsigned = cli("push", f"{server.host}/demo/signed:2.0.0", str(wasm.with_name("b.wasm")), check=False)
    assert unsigned.returncode != 0  # (no such file: nothing pushed)
    wasm.with_name("b.wasm").write_bytes(variant("hello", "signatures-2"))
    other = cli("push", f"{server.host}/demo/signed:2.0.0", str(wasm.with_name("b.wasm"))).stdout.strip()
    assert "signatures: (none)" in cli("inspect", f"{server.host}/demo/signed:2.0.0").stdout
    assert _independent_verify(server.url, "demo/signed", other, ci_pub.read_bytes()) == []


def test_a_signature_made_by_the_specification_procedure_verifies_with_ours(tmp_path: Path, server: Any) -> None:
    """Written from SIGNATURE_SPEC.md alone: the spec's payload example (its ``Docker-manifest-digest``
    capitalisation and ``optional`` claims), ECDSA P-256 over the payload bytes, tag-based discovery."""
    digest = rc.push_component(f"{server.host}/demo/spec:1", variant("hello", "spec-procedure"))
    key = ec.generate_private_key(ec.SECP256R1())
    payload = json.dumps({
        "critical": {"identity": {"docker-reference": f"{server.host}/demo/spec"},
                     "image": {"Docker-manifest-digest": digest}, "type": "cosign container image signature"},
        "optional": {"creator": "atomic", "timestamp": 1458239713},
    }).encode()
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    config = json.dumps({"architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": [sha256(payload)]}}).encode()
    with httpx.Client(base_url=server.url) as http:
        for blob in (payload, config):
            assert http.post("/v2/demo/spec/blobs/uploads/", params={"digest": sha256(blob)}, content=blob).status_code == 201
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config),
                               "size": len(config)},
                    "layers": [{"mediaType": SIMPLE_SIGNING, "size": len(payload), "digest": sha256(payload),
                                "annotations": {SIG_ANNOTATION: signature}}]}
        r = http.put(f"/v2/demo/spec/manifests/{digest.replace(':', '-')}.sig", content=json.dumps(manifest),
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 201, r.text
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with rc.Session(server.url) as session:
        result = verify_digest(RegistrySignatures(session, "demo/spec"), digest,
                               keys=[trusted("spec", pem), trusted("stranger", stranger)])
    assert [k.name for k in result.signed_by] == ["spec"]
    assert "missing" in result.outcomes[1].reason
    (tmp_path / "spec.pub").write_bytes(pem)
    out = json.loads(cli("inspect", f"{server.host}/demo/spec@{digest}", "--key", str(tmp_path / "spec.pub"),
                         "-o", "json").stdout)
    assert out["signatures"]["signedBy"] == ["spec"]


def test_gc_keeps_signatures_with_their_subject_and_deletes_them_with_it(tmp_path: Path) -> None:
    from tests.registry.conftest import start_registry

    key, _ = keys(tmp_path, "ci")
    root = tmp_path / "root"
    proc, port = start_registry(root, tmp_path)
    host = f"127.0.0.1:{port}"
    try:
        wasm = tmp_path / "c.wasm"
        wasm.write_bytes(variant("hello", "gc"))
        digest = cli("push", f"{host}/demo/gc:1", str(wasm), "--sign", str(key)).stdout.strip()
        wasm.write_bytes(build("hello"))
        keep = cli("push", f"{host}/demo/gc:2", str(wasm), "--sign", str(key)).stdout.strip()
        tag = digest.replace(":", "-") + ".sig"
        with httpx.Client(base_url=f"http://{host}") as http:
            referrer = http.get(f"/v2/demo/gc/referrers/{digest}").json()["manifests"][0]["digest"]
            _age_everything(root)
            for flags in ([], ["--delete-untagged"]):  # a live subject keeps its signatures either way
                out = cli("registry", "gc", "--root", str(root), "--grace", "0s", *flags)
                assert "deleted 0 blobs" in out.stdout, out.stdout
                assert http.get(f"/v2/demo/gc/manifests/{referrer}").status_code == 200
                assert http.get(f"/v2/demo/gc/manifests/{tag}").status_code == 200
            # the subject goes: its signatures go with it at the next GC (not the other digest's)
            assert http.delete("/v2/demo/gc/manifests/1").status_code == 202
            assert http.delete(f"/v2/demo/gc/manifests/{digest}").status_code == 202
            _age_everything(root)
            out = cli("registry", "gc", "--root", str(root), "--grace", "0s")
            assert f"demo/gc@{referrer}" in out.stdout, out.stdout
            assert http.get(f"/v2/demo/gc/manifests/{referrer}").status_code == 404
            assert http.get(f"/v2/demo/gc/manifests/{tag}").status_code == 404
            kept = http.get(f"/v2/demo/gc/referrers/{keep}").json()["manifests"]
            assert len(kept) == 1 and http.get(f"/v2/demo/gc/manifests/{keep.replace(':', '-')}.sig").status_code == 200
    finally:
        proc.stop()


def test_tampered_expired_and_wrong_key_signatures_each_say_why(tmp_path: Path, server: Any) -> None:
    import datetime as dt

    from shared import signing
    from shared.signature_store import sign_image

    ci, stranger = signing.generate("ecdsa-p256"), signing.generate("ed25519")
    pem = signing.public_pem(ci.public_key())
    now = dt.datetime.now(dt.UTC)

    def check(tag: str, **key: Any) -> str:
        digest = rc.resolve(f"{server.host}/demo/why:{tag}")
        assert digest
        with rc.Session(server.url) as session:
            result = verify_digest(RegistrySignatures(session, "demo/why"), digest, keys=[trusted("ci", pem, **key)])
        (outcome,) = result.outcomes
        return "signed" if outcome.signed else outcome.reason

    for tag in ("good", "expiring", "stranger", "tampered"):
        rc.push_component(f"{server.host}/demo/why:{tag}", variant("hello", f"why-{tag}"))
    sign_image(f"{server.host}/demo/why:good", ci)
    assert check("good") == "signed"
    assert "expired: the key is trusted only until" in check("good", not_after=now - dt.timedelta(days=1))
    assert check("good", not_after=now + dt.timedelta(days=1)) == "signed"
    sign_image(f"{server.host}/demo/why:expiring", ci, expires=now - dt.timedelta(seconds=1))
    assert "expired: its signature" in check("expiring")
    sign_image(f"{server.host}/demo/why:stranger", stranger)
    assert "none of its 1 signature(s) verifies with this key" in check("stranger")
    # tampered: the payload is rewritten (to claim another digest would be the point) and the
    # manifests re-pushed around the original signature: it no longer verifies with the key
    digest = sign_image(f"{server.host}/demo/why:tampered", ci).digest
    with httpx.Client(base_url=server.url) as http:
        tag = digest.replace(":", "-") + ".sig"
        manifest = http.get(f"/v2/demo/why/manifests/{tag}").json()
        layer = manifest["layers"][0]
        payload = json.loads(http.get(f"/v2/demo/why/blobs/{layer['digest']}").content)
        payload["optional"] = {"note": "changed after signing"}
        forged = json.dumps(payload, separators=(",", ":")).encode()
        assert http.post("/v2/demo/why/blobs/uploads/", params={"digest": sha256(forged)}, content=forged).status_code == 201
        layer.update(digest=sha256(forged), size=len(forged))
        for ref in http.get(f"/v2/demo/why/referrers/{digest}").json()["manifests"]:  # the referrer copy goes
            assert http.delete(f"/v2/demo/why/manifests/{ref['digest']}").status_code == 202
        r = http.put(f"/v2/demo/why/manifests/{tag}", content=json.dumps(manifest),
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 201
    assert "payload was altered" in check("tampered")
