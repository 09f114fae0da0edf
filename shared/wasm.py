"""What a Wasm binary is and what it needs: :func:`inspect_wasm` (used by the registry, the host
agent and the reconciler).

    >>> info = inspect_wasm(data)
    >>> info.kind, info.imports, info.exports
    ('component', ['wasi:cli/environment@0.2.0', 'driftless:demo/host'], ['driftless:demo/greeter'])

Names are strings: interface names for a component's instance imports/exports (``ns:pkg/iface@ver``),
plain names for functions (``handle``), and ``module#name`` for a core module's imports. Parsing uses
wasmtime (imported lazily: ``import wasmtime`` costs ~60 ms); the only dependency is wasmtime.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

WASM_MAGIC = b"\0asm"
# the version/layer field after the magic: 1 0 0 0 for a core module, 0d 00 01 00 for a component
CORE_VERSION = b"\x01\x00\x00\x00"

# layer media types whose blob must be Wasm (CNCF wasm artifact, Spin, wasmCloud)
WASM_LAYER_MEDIA_TYPES = frozenset(
    {
        "application/wasm",
        "application/vnd.wasm.content.layer.v1+wasm",
        "application/vnd.module.wasm.content.layer.v1+wasm",
    }
)
WASM_CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"


class InvalidWasm(ValueError):
    """The bytes are not a valid Wasm component or module; the message says why."""


@dataclass(frozen=True, slots=True)
class WasmInfo:
    kind: str  # "component" or "module"
    imports: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)

    @property
    def os(self) -> str:
        """The CNCF wasm config ``os``: components target WASI 0.2, core modules WASI 0.1."""
        return "wasip2" if self.kind == "component" else "wasip1"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "imports": list(self.imports), "exports": list(self.exports)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WasmInfo:
        return cls(kind=str(data["kind"]), imports=list(data["imports"]), exports=list(data["exports"]))


_engine_lock = threading.Lock()
_engine: Any = None


def _shared_engine() -> Any:
    """One engine for inspection; unoptimised code generation because nothing here runs the code."""
    global _engine
    with _engine_lock:
        if _engine is None:
            import wasmtime

            config = wasmtime.Config()
            config.cranelift_opt_level = "none"
            config.wasm_component_model = True
            _engine = wasmtime.Engine(config)
        return _engine


def inspect_wasm(data: bytes) -> WasmInfo:
    """Parse ``data`` with wasmtime; return its kind, imports and exports, or raise :class:`InvalidWasm`."""
    if len(data) < 8 or data[:4] != WASM_MAGIC:
        raise InvalidWasm(f"not WebAssembly: a Wasm binary starts with \\0asm, this starts with {bytes(data[:4])!r}")
    import wasmtime
    import wasmtime.component

    engine = _shared_engine()
    if data[4:8] == CORE_VERSION:
        try:
            module = wasmtime.Module(engine, bytes(data))
        except wasmtime.WasmtimeError as exc:
            raise InvalidWasm(f"invalid core Wasm module: {_first_line(exc)}") from None
        return WasmInfo(
            kind="module",
            imports=[f"{i.module}#{i.name}" for i in module.imports],
            exports=[e.name for e in module.exports],
        )
    try:
        component = wasmtime.component.Component(engine, bytes(data))
    except wasmtime.WasmtimeError as exc:
        raise InvalidWasm(f"invalid Wasm component: {_first_line(exc)}") from None
    ctype = component.type
    return WasmInfo(kind="component", imports=list(ctype.imports(engine)), exports=list(ctype.exports(engine)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
