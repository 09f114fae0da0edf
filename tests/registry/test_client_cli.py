"""The registry client library, the in-process server entry point and the push/inspect commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from registry.server import RunningRegistry, ServerOptions, serve_in_thread
from shared import registry_client as client
from shared.errors import NotReachable, UsageError
from tests.registry import components
from tests.registry.conftest import Server, sha256, start_registry
from tests.support.procs import free_port


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    running = serve_in_thread(ServerOptions(root=tmp_path_factory.mktemp("inproc"), port=0))
    try:
        yield running
    finally:
        running.stop()


def test_client_round_trip_in_process(in_process: RunningRegistry) -> None:
    host = in_process.url.removeprefix("http://")
    assert client.resolve(f"{host}/lib/greeter:1.0") is None
    digest = client.push_component(f"{host}/lib/greeter:1.0", components.greeter())
    assert client.resolve(f"{host}/lib/greeter:1.0") == digest
    # short references resolve against registry_url
    assert client.resolve("lib/greeter:1.0", registry_url=in_process.url) == digest
    manifest = client.fetch_manifest(f"lib/greeter@{digest}", registry_url=in_process.url)
    assert manifest.digest == digest and manifest.media_type == "application/vnd.oci.image.manifest.v1+json"
    [layer] = manifest.layers
    assert client.fetch_blob("lib/greeter", layer["digest"], registry_url=in_process.url) == components.greeter()
    info = client.component_info("lib/greeter:1.0", registry_url=in_process.url)
    assert info["manifestDigest"] == digest and info["imports"] == ["driftless:demo/host"]
    assert client.list_tags("lib/greeter", registry_url=in_process.url) == ["1.0"]
    # pushing the same bytes again gives the same digest (config "created" pinned)
    a = client.push_component(f"{host}/lib/same:1", components.hello(), created="2026-01-01T00:00:00Z")
    b = client.push_component(f"{host}/lib/same:2", components.hello(), created="2026-01-01T00:00:00Z")
    assert a == b


def test_client_errors(in_process: RunningRegistry) -> None:
    with pytest.raises(client.RegistryClientError) as exc:
        client.fetch_manifest("lib/none:1", registry_url=in_process.url)
    assert exc.value.status == 404 and exc.value.code == "NAME_UNKNOWN"
    with pytest.raises(client.RegistryClientError) as exc:
        client.fetch_blob("lib/greeter", sha256(b"absent"), registry_url=in_process.url)
    assert exc.value.code == "BLOB_UNKNOWN"
    with pytest.raises(UsageError, match="not WebAssembly"):
        client.push_component("lib/x:1", b"not wasm", registry_url=in_process.url)
    with pytest.raises(NotReachable, match="did not answer"):
        client.resolve("lib/x:1", registry_url=f"http://127.0.0.1:{free_port()}")


def test_target_schemes() -> None:
    assert client.target("127.0.0.1:5000/a/b:1").base_url == "http://127.0.0.1:5000"
    assert client.target("localhost:5000/a/b:1").base_url == "http://localhost:5000"
    assert client.target("ghcr.io/a/b:1").base_url == "https://ghcr.io"
    t = client.target("a/b:1", registry_url="http://127.0.0.1:6000/")
    assert t.base_url == "http://127.0.0.1:6000" and t.ref.registry == "127.0.0.1:6000"
    assert client.target("reg.example:5000/a:1", registry_url="http://reg.example:5000").base_url == "http://reg.example:5000"


def driftless(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftless", *args], capture_output=True, text=True, input=stdin,
                          timeout=60, env={**os.environ, **(env or {})})


def test_push_and_inspect_commands(server: Server, tmp_path: Path) -> None:
    wasm = tmp_path / "greeter.wasm"
    wasm.write_bytes(components.greeter())
    r = driftless("push", f"{server.host}/cli/greeter:1.0.0", str(wasm), "-a", "org.example.team=edge")
    assert r.returncode == 0, r.stderr
    digest = r.stdout.strip()
    assert digest.startswith("sha256:") and len(digest) == 71
    r = driftless("inspect", "cli/greeter:1.0.0", "--registry", server.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"cli/greeter@{digest}",
        "  kind:    component",
        f"  layer:   {sha256(components.greeter())} (application/wasm)",
        "  imports:",
        "    driftless:demo/host",
        "  exports:",
        "    driftless:demo/greeter",
        "  signatures: (none)",  # unsigned (tests/registry/test_signatures.py lists signed ones)
    ]
    r = driftless("inspect", "-o", "json", "cli/greeter:1.0.0", env={"DRIFTLESS_REGISTRY": server.url})
    assert json.loads(r.stdout)["exports"] == ["driftless:demo/greeter"]


def test_push_and_inspect_errors(server: Server, tmp_path: Path) -> None:
    text = tmp_path / "not.wasm"
    text.write_text("hello")
    r = driftless("push", f"{server.host}/cli/bad:1", str(text))
    assert r.returncode == 2 and "not WebAssembly" in r.stderr
    r = driftless("push", f"{server.host}/cli/bad:1", str(tmp_path / "missing.wasm"))
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = driftless("push", "Bad/Ref:1", str(text))
    assert r.returncode == 2 and "repository" in r.stderr
    r = driftless("inspect", f"{server.host}/cli/absent:1")
    assert r.returncode == 1 and "404" in r.stderr and "Traceback" not in r.stderr
    r = driftless("inspect", "cli/x:1", "--registry", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 1 and "did not answer" in r.stderr


def test_push_with_credentials(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("dev:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode() + "\n")
    proc, port = start_registry(tmp_path / "root", tmp_path, "--htpasswd", str(htpasswd))
    wasm = tmp_path / "hello.wasm"
    wasm.write_bytes(components.hello())
    try:
        ref = f"127.0.0.1:{port}/auth/hello:1"
        r = driftless("push", ref, str(wasm))
        assert r.returncode == 1 and "401" in r.stderr and "--password-stdin" in r.stderr
        r = driftless("push", ref, str(wasm), "--username", "dev", "--password-stdin", stdin="pw\n")
        assert r.returncode == 0, r.stderr
        r = driftless("inspect", ref, env={"DRIFTLESS_REGISTRY_USER": "dev", "DRIFTLESS_REGISTRY_PASSWORD": "pw"})
        assert r.returncode == 0 and "exports:" in r.stdout
    finally:
        proc.stop()
