"""wasi:config/store from the environment: host/adapters/config-from-env.wat composed into a component
(host/compose.py), so a served component reads its config from the process environment and no config
value is ever on a command line."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from wasmtime import Engine, Store
from wasmtime.component import Component, Linker

from host.compose import (
    ADAPTER_ID,
    CONFIG_STORE_EXPORT,
    ComposeError,
    _adapter,
    _imports,
    imports_config_store,
    with_config_from_env,
)
from host.errors import HostError
from shared.wasm import wasm_tools_path
from tests.support.procs import free_port, wait_until
from tests.support.standard import standard_component, wasmtime_cli


@pytest.fixture(scope="module")
def wasm_tools() -> Path:
    return Path(wasm_tools_path())


@pytest.fixture(scope="module")
def composed(wasm_tools: Path) -> bytes:
    return with_config_from_env(standard_component("py-hello").read_bytes(), wasm_tools=wasm_tools)


class AdapterAlone:
    """The adapter instantiated by wasmtime-py with a host-provided wasi:cli/environment."""

    def __init__(self, wasm_tools: Path, env: list[tuple[str, str]]) -> None:
        engine = Engine()
        component = Component(engine, _adapter(str(wasm_tools), "0.2.0"))
        linker = Linker(engine)
        with linker.root() as root, root.add_instance("wasi:cli/environment@0.2.0") as environment:
            environment.add_func("get-environment", lambda store: list(env))
        self.store = Store(engine)
        instance = linker.instantiate(self.store, component)
        store_index = component.get_export_index(CONFIG_STORE_EXPORT)
        assert store_index is not None
        get, get_all = (component.get_export_index(name, store_index) for name in ("get", "get-all"))
        assert get is not None and get_all is not None
        self._get, self._get_all = instance.get_func(self.store, get), instance.get_func(self.store, get_all)
        assert self._get is not None and self._get_all is not None

    def get(self, key: str) -> str | None:
        assert self._get is not None
        value: str | None = self._get(self.store, key)  # ok(v) arrives as v
        return value

    def get_all(self) -> list[tuple[str, str]]:
        assert self._get_all is not None
        return list(self._get_all(self.store))


def test_the_adapter_reads_config_from_the_environment(wasm_tools: Path) -> None:
    env = [("color", "blue"), ("INSTANCE_ID", "7"), ("USER_DB_URL", "http://x"), ("empty", ""), ("é", "ü")]
    adapter = AdapterAlone(wasm_tools, env)
    assert adapter.get("color") == "blue"
    assert adapter.get("empty") == ""
    assert adapter.get("é") == "ü"
    for absent in ("absent", "colo", "colorx", "COLOR", "", "INSTANCE_ID"):
        assert adapter.get(absent) is None, absent
    for _ in range(3):  # the heap is reset after each call
        assert adapter.get_all() == [("color", "blue"), ("USER_DB_URL", "http://x"), ("empty", ""), ("é", "ü")]
        assert adapter.get("color") == "blue"


def test_the_adapter_grows_its_memory_for_a_large_environment(wasm_tools: Path) -> None:
    env = [(f"KEY_{i}", f"{i}-" + "v" * 20_000) for i in range(200)]  # ~4 MB, the adapter starts with 64 KiB
    adapter = AdapterAlone(wasm_tools, env)
    assert adapter.get("KEY_199") == "199-" + "v" * 20_000
    assert adapter.get("k" * 300_000) is None
    assert len(adapter.get_all()) == 200


def test_imports_config_store() -> None:
    assert imports_config_store(["wasi:cli/environment@0.2.9", "wasi:config/store@0.2.0-rc.1"])
    assert imports_config_store(["wasi:config/store"])
    assert not imports_config_store(["wasi:cli/environment@0.2.9", "wasi:config/runtime@0.2.0"])
    assert not imports_config_store([])


def test_the_composed_component_no_longer_imports_the_config_store(composed: bytes, wasm_tools: Path) -> None:
    original = _imports(standard_component("py-hello").read_bytes(), wasm_tools)
    assert CONFIG_STORE_EXPORT in original
    imports = _imports(composed, wasm_tools)
    assert not imports_config_store(imports)
    # the adapter's environment import took the component's version: the interface is imported once
    assert [i for i in imports if i.startswith("wasi:cli/environment@")] == ["wasi:cli/environment@0.2.9"]
    assert sorted(imports) == sorted(i for i in original if i != CONFIG_STORE_EXPORT)
    assert len(ADAPTER_ID) == 16


def test_composing_a_component_without_the_config_store_import_is_a_clear_error(wasm_tools: Path) -> None:
    with pytest.raises(ComposeError, match="does not import wasi:config/store") as raised:
        with_config_from_env(standard_component("http-hello-wat").read_bytes(), wasm_tools=wasm_tools)
    assert isinstance(raised.value, HostError)
    with pytest.raises(ComposeError, match="wasm-tools"):
        with_config_from_env(b"\0asm\x0d\0\x01\0garbage", wasm_tools=wasm_tools,
                             imports=[CONFIG_STORE_EXPORT])
    with pytest.raises(ComposeError, match="cannot run"):
        with_config_from_env(b"", wasm_tools=Path("/nonexistent/wasm-tools"), imports=[CONFIG_STORE_EXPORT])


@pytest.fixture
def served(tmp_path: Path, composed: bytes) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    wasm = tmp_path / "py-hello-config-from-env.wasm"
    wasm.write_bytes(composed)
    port = free_port()
    # config as environment only: no -S config, no -S config-var
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(wasmtime_cli()), "serve", "-S", "cli", "--env", "color", "--addr", f"127.0.0.1:{port}", str(wasm)],
            env={**os.environ, "color": "blue"}, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            if proc.poll() is not None:
                output = log.read_text(errors="replace")
                raise RuntimeError(f"wasmtime serve exited with {proc.returncode}: {output[-2000:]}")
            return httpx.get(f"{base}/config/absent", timeout=2).status_code in (200, 404)

        try:
            wait_until(up, timeout=240, interval=0.2, what="wasmtime serve to answer")  # a cold compile: ~5-40 s
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(300)
def test_a_served_component_reads_its_config_from_the_environment(
        served: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, proc = served
    r = httpx.get(f"{base}/config/color", timeout=10)
    assert (r.status_code, r.text) == (200, "blue")
    assert httpx.get(f"{base}/config/absent", timeout=10).status_code == 404
    assert httpx.get(f"{base}/config/INSTANCE_ID", timeout=10).status_code == 404
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"blue" not in b" ".join(cmdline)
    assert b"color" in cmdline
    assert not any(arg.startswith(b"config") for arg in cmdline)  # neither -S config nor -S config-var
