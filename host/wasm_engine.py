"""One wasmtime Engine per host: fuel and epoch interruption on, an epoch ticker thread, and
compilation through the on-disk compiled cache (counted, so tests and status can see cache hits)."""

from __future__ import annotations

import logging
import platform
import threading
import time
import weakref
from collections.abc import Callable
from importlib.metadata import version as dist_version
from pathlib import Path

import wasmtime
from wasmtime import component as wc

from host.cache import CompiledCache
from host.errors import NotAComponent

log = logging.getLogger("driftless.host")

EPOCH_TICK_SECONDS = 0.01  # wall-time deadlines are enforced with this granularity
CORE_MODULE_PREAMBLE = b"\x00asm\x01\x00\x00\x00"
COMPONENT_PREAMBLE = b"\x00asm\x0d\x00\x01\x00"


def wasmtime_version() -> str:
    try:
        return dist_version("wasmtime")
    except Exception:  # not installed as a distribution (vendored): still a stable key
        return "unknown"


class WasmEngine:
    """The host's engine. ``load`` gives a Component from the cache or compiles (and caches) it."""

    def __init__(self, *, cache: CompiledCache | None, memory_reservation: int | None = None) -> None:
        config = wasmtime.Config()
        config.consume_fuel = True  # per-call fuel limits
        config.epoch_interruption = True  # per-call wall-time deadlines
        if memory_reservation is not None:
            # each linear memory reserves this much address space (wasmtime's default: 4 GiB + guard);
            # smaller lets many thousands of stores fit in a process's address space, at the price of
            # explicit bounds checks and moving memories when they grow past it
            config.memory_reservation = memory_reservation
            config.memory_guard_size = 64 << 10
        self.engine = wasmtime.Engine(config)
        self.settings = f"wasmtime {wasmtime_version()}; {platform.machine()}; fuel=1; epoch=1"
        if memory_reservation is not None:
            self.settings += f"; reservation={memory_reservation}"
        self.cache = cache
        self.compilations = 0
        self.cache_hits = 0
        self.memory_hits = 0
        self._lock = threading.Lock()
        # instances of one digest share one loaded Component (code mapped once); per-digest locks
        # make concurrent starts of a digest compile it once
        self._loaded: weakref.WeakValueDictionary[str, wc.Component] = weakref.WeakValueDictionary()
        self._digest_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="epoch-ticker", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(EPOCH_TICK_SECONDS):
            self.engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()

    def deadline_ticks(self, timeout_ms: int) -> int:
        return max(1, int(timeout_ms / 1000 / EPOCH_TICK_SECONDS) + 1)

    def load(self, *, digest: str, fetch: Callable[[], bytes], progress: Callable[[str], None]) -> wc.Component:
        """The component for ``digest``: already loaded, deserialized from the compiled cache, else
        fetched and compiled (then cached)."""
        with self._lock:
            lock = self._digest_locks.setdefault(digest, threading.Lock())
        with lock:
            component = self._loaded.get(digest)
            if component is not None:
                with self._lock:
                    self.memory_hits += 1
                return component
            component = self._load(digest=digest, fetch=fetch, progress=progress)
            self._loaded[digest] = component
            return component

    def _load(self, *, digest: str, fetch: Callable[[], bytes], progress: Callable[[str], None]) -> wc.Component:
        if self.cache is None:
            return self.compile(fetch(), what=digest)
        for attempt in range(2):
            compiled_here: list[wc.Component] = []

            def compile_to(out: Path, compiled_here: list[wc.Component] = compiled_here) -> None:
                component = self.compile(fetch(), what=digest)
                out.write_bytes(bytes(component.serialize()))
                compiled_here.append(component)

            # one compile per digest on this machine: other hosts sharing the cache wait and load it
            with self.cache.obtain(digest, compile=compile_to, what=digest) as artifact:
                if compiled_here:
                    return compiled_here[0]
                try:
                    component = wc.Component.deserialize_file(self.engine, str(artifact.path))
                except wasmtime.WasmtimeError as exc:  # corrupt or foreign file: compile again
                    log.warning("compiled cache entry %s unusable (%s); compiling again", artifact.path.name, exc)
                    artifact.close()
                    self.cache.discard(digest)
                    if attempt:
                        raise NotAComponent(f"{digest[:19]}: its compiled form does not load: {exc}") from None
                    continue
                with self._lock:
                    self.cache_hits += 1
                return component
        raise AssertionError("unreachable")

    def compile(self, data: bytes, *, what: str) -> wc.Component:
        check_component_bytes(data, what=what)
        started = time.perf_counter()
        try:
            component = wc.Component(self.engine, data)
        except wasmtime.WasmtimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise NotAComponent(f"{what} is not a valid component: {first}") from None
        with self._lock:
            self.compilations += 1
        log.info("compiled %s (%d bytes) in %.1f ms", what[:19], len(data), (time.perf_counter() - started) * 1e3)
        return component


def check_component_bytes(data: bytes, *, what: str) -> None:
    if data[:8] == CORE_MODULE_PREAMBLE:
        raise NotAComponent(
            f"{what} is a core Wasm module, not a component; wrap it with `wasm-tools component new`"
        )
    if data[:8] != COMPONENT_PREAMBLE:
        raise NotAComponent(f"{what} is not WebAssembly: it starts with {data[:8]!r}, not the Wasm magic '\\0asm'")
