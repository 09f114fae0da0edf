"""Wasm awareness: inspection with wasmtime, refusal of invalid Wasm layers, the component endpoint."""

from __future__ import annotations

import json

import pytest

from shared import registry_client as client
from shared.wasm import InvalidWasm, inspect_wasm
from tests.registry import components
from tests.registry.conftest import EMPTY_CONFIG, OCI_MANIFEST, Oci, Server, error_code, sha256


def test_inspect_component_module_and_garbage() -> None:
    info = inspect_wasm(components.greeter())
    assert (info.kind, info.imports, info.exports, info.os) == (
        "component", ["driftless:demo/host"], ["driftless:demo/greeter"], "wasip2")
    assert inspect_wasm(components.hello()).exports == ["answer"]
    module = inspect_wasm(components.core_module())
    assert module.kind == "module" and module.os == "wasip1"
    assert module.imports == ["wasi_snapshot_preview1#proc_exit"]
    assert module.exports == ["memory", "_start"]
    with pytest.raises(InvalidWasm, match="not WebAssembly"):
        inspect_wasm(b"#!/bin/sh\necho hi\n")
    with pytest.raises(InvalidWasm, match="invalid Wasm component"):
        inspect_wasm(components.greeter()[:-20])
    with pytest.raises(InvalidWasm, match="invalid core Wasm module"):
        inspect_wasm(components.core_module()[:30])


def _wasm_manifest(oci: Oci, repo: str, wasm: bytes, media_type: str) -> dict:
    oci.push_blob(repo, b"{}")
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.wasm.config.v0+json",
            "config": EMPTY_CONFIG,
            "layers": [{"mediaType": media_type, "digest": oci.push_blob(repo, wasm), "size": len(wasm)}]}


@pytest.mark.parametrize("media_type", [
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
])
def test_invalid_wasm_layer_is_refused(oci: Oci, media_type: str) -> None:
    repo = "wasm/invalid-" + sha256(media_type.encode())[7:15]
    manifest = _wasm_manifest(oci, repo, b"\0asm\x0d\x00\x01\x00not really a component", media_type)
    r = oci.put(f"/v2/{repo}/manifests/v1", json=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID"
    detail = r.json()["errors"][0]["detail"]
    assert media_type in detail and "not a valid Wasm component or module" in detail
    assert oci.get(f"/v2/{repo}/manifests/v1").status_code == 404
    # the same layer type with real Wasm is accepted
    manifest = _wasm_manifest(oci, repo, components.hello(), media_type)
    assert oci.put(f"/v2/{repo}/manifests/v1", json=manifest, headers={"Content-Type": OCI_MANIFEST}).status_code == 201


def test_component_endpoint(server: Server, oci: Oci) -> None:
    digest = client.push_component(f"{server.host}/wasm/greeter:1.0.0", components.greeter())
    layer = sha256(components.greeter())
    expected = {
        "repository": "wasm/greeter", "reference": "1.0.0", "manifestDigest": digest, "layerDigest": layer,
        "layerMediaType": "application/wasm", "kind": "component",
        "imports": ["driftless:demo/host"], "exports": ["driftless:demo/greeter"],
    }
    r = oci.get("/v2/_driftless/components/wasm/greeter/1.0.0")
    assert r.status_code == 200 and r.json() == expected
    r = oci.get(f"/v2/_driftless/components/wasm/greeter/{digest}")
    assert r.json() == {**expected, "reference": digest}
    # recorded at push time, next to the blobs
    assert json.loads((server.root / "components" / "sha256" / f"{layer.split(':')[1]}.json").read_text())["kind"] == "component"
    r = oci.get("/v2/_driftless/components/wasm/greeter/9.9.9")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    r = oci.get("/v2/_driftless/components/wasm/nothing/1.0.0")
    assert r.status_code == 404 and error_code(r) == "NAME_UNKNOWN"
    r = oci.get("/v2/_driftless/components/Bad_Name/1.0.0")
    assert r.status_code == 400 and error_code(r) == "NAME_INVALID"
    # a manifest without a Wasm layer is not a component
    oci.image("wasm/not-wasm", "v1")
    r = oci.get("/v2/_driftless/components/wasm/not-wasm/v1")
    assert r.status_code == 404 and "no Wasm layer" in r.json()["errors"][0]["detail"]


def test_push_component_writes_cncf_wasm_layout(server: Server, oci: Oci) -> None:
    digest = client.push_component(f"{server.host}/wasm/module:0.1", components.core_module(),
                                   annotations={"org.opencontainers.image.source": "https://example.com/x"})
    manifest = oci.get(f"/v2/wasm/module/manifests/{digest}").json()
    assert manifest["artifactType"] == "application/vnd.wasm.config.v0+json"
    assert manifest["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    assert manifest["annotations"] == {"org.opencontainers.image.source": "https://example.com/x"}
    [layer] = manifest["layers"]
    assert layer == {"mediaType": "application/wasm", "digest": sha256(components.core_module()),
                     "size": len(components.core_module())}
    config = oci.get(f"/v2/wasm/module/blobs/{manifest['config']['digest']}").json()
    assert config["architecture"] == "wasm" and config["os"] == "wasip1"
    assert config["layerDigests"] == [layer["digest"]]
    assert config["component"] == {"imports": ["wasi_snapshot_preview1#proc_exit"], "exports": ["memory", "_start"]}
    assert config["created"].endswith("Z")
