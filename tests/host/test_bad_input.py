"""Bad input gives a clear per-instance error in the host's status, and everything else keeps serving:
a corrupted blob (digest mismatch), a blob that is not Wasm, a core module, a missing import, an
unknown component, a registry that is down (retried until it is back)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import wasmtime

from tests.host.conftest import Registry, instance, start_host, start_registry, write_desired
from tests.support.components import SOURCES, build, variant
from tests.support.procs import free_port, wait_until

# exports the handler interface with the wrong shape: handle(string) -> string
WRONG_SHAPE = r"""
(component
  (core module $M
    (memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "handle") (param i32 i32) (result i32) (i32.const 8)))
  (core instance $i (instantiate $M))
  (func $handle (param "input" string) (result string)
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (instance $h (export "handle" (func $handle)))
  (export "driftless:http/handler@0.1.0" (instance $h))
)
"""


def _blob_path(registry: Registry, data: bytes) -> Path:
    hexdigest = hashlib.sha256(data).hexdigest()
    return registry.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"


def test_each_bad_instance_fails_alone_with_a_clear_error(tmp_path: Path, registry: Registry, images: dict[str, str]) -> None:
    corrupt_bytes = variant("hello", "to-be-corrupted")
    corrupt = registry.push("corrupt", corrupt_bytes)
    blob = _blob_path(registry, corrupt_bytes)
    blob.write_bytes(b"\x00asm\x0d\x00\x01\x00 tampered with on the registry's disk")
    not_wasm = registry.push("notwasm", b"#!/bin/sh\necho definitely not wasm\n")
    core = registry.push("core", wasmtime.wat2wasm("(module)"))
    unknown = f"{registry.host}/demo/nope@sha256:{'0' * 64}"
    wrong = registry.push("wrongshape", wasmtime.wat2wasm(WRONG_SHAPE))
    # hello, but answering with the header name "content type" (a space: not a valid field name)
    bad_header = registry.push(
        "badheader", wasmtime.wat2wasm((SOURCES / "hello.wat").read_text().replace('"content-type"', '"content type"'))
    )
    desired = tmp_path / "desired.json"
    write_desired(
        desired,
        1,
        [
            instance(images["hello"], component="web", route="/hello"),
            instance(corrupt, component="corrupt", route="/corrupt"),
            instance(not_wasm, component="notwasm"),
            instance(core, component="core"),
            instance(images["frontend"], component="frontend", route="/front"),  # no link to a greeter
            instance(unknown, component="unknown"),
            instance(wrong, component="wrong", route="/wrong"),
            instance(bad_header, component="badheader", route="/badheader"),
        ],
    )
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running")
        errors = {
            c: host.wait_status(f"dev/demo/{c}/0", "Failed")["lastError"]
            for c in ("corrupt", "notwasm", "core", "frontend", "unknown", "wrong")
        }
        assert "expected" in errors["corrupt"] and "different bytes than the pinned digest" in errors["corrupt"]
        assert "not WebAssembly" in errors["notwasm"]
        assert "core Wasm module, not a component" in errors["core"]
        assert "imports driftless:demo/greeter" in errors["frontend"] and "add a link" in errors["frontend"]
        assert "not found" in errors["unknown"] and "404" in errors["unknown"]
        assert "not as the host's WIT defines it" in errors["wrong"]
        assert host.get("/hello").text == "hello from /hello"
        host.wait_status("dev/demo/badheader/0", "Running")
        r = host.get("/badheader")
        assert r.status_code == 502
        assert "invalid header 'content type'" in r.json()["error"]
        # a failed instance has no route: its path is simply not served
        assert host.get("/corrupt").status_code == 404
        assert host.proc.alive()


def test_registry_down_is_retried_until_it_is_back(tmp_path: Path) -> None:
    root, port = tmp_path / "reg", free_port()
    proc = start_registry(root, port)
    try:
        image = Registry(host=f"127.0.0.1:{port}", root=root).push("hello", build("hello"))
    finally:
        proc.terminate()
        proc.wait(10)
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/hello")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        status = host.wait_status("dev/demo/web/0", "Failed")
        assert "not reachable" in status["lastError"] and "retrying" in status["lastError"]
        proc = start_registry(root, port)  # the same storage comes back
        try:
            host.wait_status("dev/demo/web/0", "Running", timeout=30)
            assert host.get("/hello").text == "hello from /hello"
        finally:
            proc.terminate()
            proc.wait(10)


def test_a_bad_desired_file_is_reported_and_nothing_starts(tmp_path: Path) -> None:
    desired = tmp_path / "desired.json"
    desired.write_text('{"host": "h1", "generation": 1, "instances": [{"id": "x"}]}')
    with start_host(tmp_path, "--desired", str(desired)) as host:
        wait_until(lambda: "missing field 'env'" in host.proc.log(), timeout=10, what="error in the log")
        assert host.instances() == {}
        assert "Traceback" not in host.proc.log()


def test_bad_options_give_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "driftless", "host", "--listen", "nowhere", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2
    assert "'nowhere' is not HOST:PORT" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "driftless", "host", "--control", "http://127.0.0.1:1", "--desired", "x.yaml"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2
    assert "either --control" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "driftless", "host", "--name", "a/b", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2
    assert "host name 'a/b' is not valid" in r.stderr
