"""oras-py, a real OCI client, pushing, pulling and listing a real component built from WAT."""

from __future__ import annotations

import os
from pathlib import Path

import oras.client
import pytest

from shared import registry_client as client
from tests.registry import components
from tests.registry.conftest import Oci, Server, sha256


@pytest.fixture
def wasm_file(tmp_path: Path) -> Path:
    path = tmp_path / "greeter.wasm"
    path.write_bytes(components.greeter())
    return path


def test_oras_push_pull_tags(server: Server, oci: Oci, wasm_file: Path, tmp_path: Path) -> None:
    oras_client = oras.client.OrasClient(hostname=server.host, insecure=True)
    cwd = os.getcwd()
    os.chdir(wasm_file.parent)  # oras-py names layers after paths relative to the working directory
    try:
        for tag in ("1.0.0", "1.1.0"):
            r = oras_client.push(target=f"{server.host}/oras/greeter:{tag}", files=["greeter.wasm:application/wasm"],
                                 quiet=True)
            assert r.status_code == 201
    finally:
        os.chdir(cwd)
    assert oras_client.get_tags(f"{server.host}/oras/greeter") == ["1.0.0", "1.1.0"]
    out = tmp_path / "pulled"
    files = oras_client.pull(target=f"{server.host}/oras/greeter:1.0.0", outdir=str(out))
    assert [Path(f).name for f in files] == ["greeter.wasm"]
    assert Path(files[0]).read_bytes() == components.greeter()
    # plain `oras push FILE.wasm:application/wasm` (empty config) is understood as a component
    info = client.component_info(f"{server.host}/oras/greeter:1.1.0")
    assert info["kind"] == "component"
    assert info["layerDigest"] == sha256(components.greeter())
    assert info["exports"] == ["driftless:demo/greeter"]


def test_oras_pulls_what_driftless_pushed(server: Server, tmp_path: Path) -> None:
    digest = client.push_component(f"{server.host}/oras/hello:2.0", components.hello())
    oras_client = oras.client.OrasClient(hostname=server.host, insecure=True)
    manifest = oras_client.get_manifest(f"{server.host}/oras/hello@{digest}")
    assert manifest["artifactType"] == "application/vnd.wasm.config.v0+json"
    blob = oras_client.get_blob(f"{server.host}/oras/hello", manifest["layers"][0]["digest"])
    assert blob.content == components.hello()


def test_oras_with_basic_auth(tmp_path: Path, wasm_file: Path) -> None:
    import bcrypt

    from tests.registry.conftest import start_registry

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("ci:" + bcrypt.hashpw(b"token", bcrypt.gensalt(rounds=4)).decode() + "\n")
    proc, port = start_registry(tmp_path / "root", tmp_path, "--htpasswd", str(htpasswd))
    try:
        host = f"127.0.0.1:{port}"
        oras_client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
        oras_client.login(username="ci", password="token", hostname=host, tls_verify=False)
        cwd = os.getcwd()
        os.chdir(wasm_file.parent)
        try:
            r = oras_client.push(target=f"{host}/secure/greeter:1.0", files=["greeter.wasm:application/wasm"], quiet=True)
        finally:
            os.chdir(cwd)
        assert r.status_code == 201
        assert oras_client.get_tags(f"{host}/secure/greeter") == ["1.0"]
    finally:
        proc.stop()
