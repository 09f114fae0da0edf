"""One running component instance: its linker (imports wired by kind), a small pool of ready
wasmtime stores (one per concurrent call), per-call limits, trap accounting and draining.

Blocking: ``handle``/``invoke``/``run_job`` run in worker threads (ctypes releases the GIL).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import wasmtime
from wasmtime import component as wc

from host.errors import CapabilityDenied, HostError, Incompatible, MissingImport, Unavailable
from host.wasm_engine import WasmEngine
from shared.interfaces import (
    ALWAYS_ALLOWED_WASI,
    DRIFTLESS_HTTP_CONFIG,
    DRIFTLESS_HTTP_HANDLER,
    DRIFTLESS_HTTP_LOG,
    WASI_CLI_RUN,
    unversioned,
)
from shared.retry import Backoff
from wire.control import InstanceSpec

log = logging.getLogger("driftless.host")

HANDLER_INTERFACE = DRIFTLESS_HTTP_HANDLER
CONFIG_INTERFACE = DRIFTLESS_HTTP_CONFIG
LOG_INTERFACE = DRIFTLESS_HTTP_LOG
RUN_INTERFACE = WASI_CLI_RUN
UNLIMITED_FUEL = 2**63 - 1
TRAP_WINDOW_SECONDS = 30.0
TRAPS_BEFORE_BACKOFF = 5
MAX_BACKOFF_SECONDS = 60.0
# wasmtime-py's component type introspection is read from several worker threads when instances of one
# digest start together (they share one Component); a whole-process lock keeps those reads one at a time
# (microseconds each) after a run where one of two concurrent starts saw no exports at all
_TYPES_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    fuel: int | None = None  # fuel units the call consumed (per-digest figures of canary rollouts)


class LinkResolver(Protocol):
    def link_target(self, *, env: str, app: str, component: str) -> ComponentInstance | None:
        """A Running instance of ``component`` in the same env/app on this host, or None."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeDefaults:
    timeout_ms: int = 30_000
    max_concurrency: int = 16


class _Slot:
    __slots__ = ("store", "instance", "handle")

    def __init__(self, store: wasmtime.Store, instance: wc.Instance, handle: wc.Func | None) -> None:
        self.store = store
        self.instance = instance
        self.handle = handle


class ComponentInstance:
    """A component instantiated from ``spec``; raises HostError from the constructor if it cannot run."""

    runtime = "in-process"
    warnings: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        spec: InstanceSpec,
        component: wc.Component,
        engine: WasmEngine,
        links: LinkResolver,
        defaults: RuntimeDefaults,
        managed: bool = True,
        on_trap: Callable[[], None] = lambda: None,
    ) -> None:
        self.spec = spec
        self._on_trap = on_trap  # thread-safe: called from worker threads
        self.managed = managed
        self.component = component
        self._engine = engine
        self._links = links
        self.tag = f"{spec.env}/{spec.app}/{spec.component}"
        self.timeout_ms = spec.limits.timeout_ms or defaults.timeout_ms
        self.max_concurrency = spec.limits.max_concurrency or defaults.max_concurrency
        self.restarts = 0
        self.last_error: str | None = None
        self.started_at = time.time()
        self.draining = False
        self.backoff_until = 0.0
        self._trap_backoff = Backoff(first=2.0, cap=MAX_BACKOFF_SECONDS, jitter=0.0)
        self._traps: list[float] = []
        self._lock = threading.Lock()
        self._idle_cv = threading.Condition(self._lock)
        self._inflight = 0
        self._admission = threading.BoundedSemaphore(self.max_concurrency)
        self._idle: list[_Slot] = []
        self._uses_wasi = False
        with _TYPES_LOCK:
            exports = dict(component.type.exports(engine.engine))
        self.handler_export = next((n for n in exports if unversioned(n) == HANDLER_INTERFACE), None)
        self.run_export = next((n for n in exports if unversioned(n) == RUN_INTERFACE), None)
        self.exports = tuple(exports)
        if spec.route and not self.handler_export:
            raise Incompatible(
                f"{self.tag} has route {spec.route} but exports no {HANDLER_INTERFACE}; "
                "build it for the driftless:http/http-handler world or remove `expose`"
            )
        with _TYPES_LOCK:
            if self.handler_export:
                self._check_handler_shape(exports[self.handler_export])
            self._handle_index = (
                component.get_export_index("handle", component.get_export_index(self.handler_export))
                if self.handler_export
                else None
            )
        self.linker = self._build_linker()
        self._idle.append(self._new_slot())  # instantiate once now: a broken component fails at start

    def _check_handler_shape(self, extern: Any) -> None:
        """The handler must match the WIT (host/wit/http.wit), else calls could never work."""
        wanted = "handle: func(req: request{method, path, headers, body}) -> response{status, headers, body}"
        try:
            func = extern.ty.exports(self._engine.engine)["handle"].ty
            (param,) = func.params
            request = [name for name, _ in param[1].fields]
            response = [name for name, _ in func.result.fields]
        except (AttributeError, KeyError, TypeError, ValueError):
            request = response = []
        if request != ["method", "path", "headers", "body"] or response != ["status", "headers", "body"]:
            raise Incompatible(
                f"{self.tag} exports {self.handler_export} but not as the host's WIT defines it ({wanted}); "
                "build it against host/wit/http.wit"
            )

    # -- wiring ---------------------------------------------------------------------------------
    def _build_linker(self) -> wc.Linker:
        linker = wc.Linker(self._engine.engine)
        with _TYPES_LOCK:
            imports = dict(self.component.type.imports(self._engine.engine))
        wasi = [n for n in imports if n.startswith("wasi:")]
        # grants, not import lists: every WASI import is linked (no directories, no sockets, the
        # environment is the config); a component that lists capabilities opts into strict mode
        strict = bool(self.spec.capabilities)
        allowed = {unversioned(c) for c in self.spec.capabilities} | ALWAYS_ALLOWED_WASI
        denied = [n for n in wasi if strict and unversioned(n) not in allowed]
        if denied:
            raise CapabilityDenied(
                f"{self.tag} imports {', '.join(denied)}, which its manifest does not allow (its capabilities "
                "list is strict); "
                f"add {', '.join(sorted({unversioned(n) for n in denied}))} to the component's capabilities"
            )
        if wasi:
            linker.add_wasip2()
            self._uses_wasi = True
        with linker.root() as root:
            for name, extern in imports.items():
                if name.startswith("wasi:"):
                    continue
                functions = self._functions_of(name, extern)
                base = unversioned(name)
                with root.add_instance(name) as inst:
                    if base == CONFIG_INTERFACE:
                        self._wire_config(name, inst, functions)
                    elif base == LOG_INTERFACE:
                        self._wire_log(name, inst, functions)
                    else:
                        self._wire_link(name, inst, functions)
        return linker

    def _functions_of(self, name: str, extern: Any) -> list[str]:
        ty = extern.ty
        if not isinstance(ty, wc.ComponentInstanceType):
            raise MissingImport(f"{self.tag} imports {name!r}, which is not an interface instance; the host provides interfaces only")
        with _TYPES_LOCK:
            return list(ty.exports(self._engine.engine))

    def _wire_config(self, name: str, inst: wc.LinkerInstance, functions: list[str]) -> None:
        config = dict(self.spec.config)
        for fn in functions:
            if fn == "get":
                inst.add_func("get", lambda _store, key: config.get(key))
            elif fn == "get-all":
                inst.add_func("get-all", lambda _store: sorted(config.items()))
            else:
                raise MissingImport(f"{self.tag} imports {name}#{fn}, which this host does not provide (config has get, get-all)")

    def _wire_log(self, name: str, inst: wc.LinkerInstance, functions: list[str]) -> None:
        for fn in functions:
            if fn != "log":
                raise MissingImport(f"{self.tag} imports {name}#{fn}, which this host does not provide (log has log)")
            inst.add_func("log", lambda _store, message: log.info("[%s] %s", self.tag, message))

    def _wire_link(self, name: str, inst: wc.LinkerInstance, functions: list[str]) -> None:
        base = unversioned(name)
        link = next((x for x in self.spec.links if unversioned(x.interface) == base), None)
        if link is None:
            raise MissingImport(
                f"{self.tag} imports {name}, which this host does not provide; add a link "
                f"{{from: {self.spec.component}, to: <component exporting it>, interface: {base}}} to the application"
            )
        for fn in functions:
            inst.add_func(fn, self._link_proxy(name, link.to_component, fn))

    def _link_proxy(self, interface: str, to_component: str, fn: str) -> Callable[..., Any]:
        def call(_store: wasmtime.Store, *args: Any) -> Any:
            target = self._links.link_target(env=self.spec.env, app=self.spec.app, component=to_component)
            if target is None:
                raise Unavailable(
                    f"link {interface} -> {to_component}: no running {to_component} instance on this host",
                    reason="link",
                )
            return target.invoke(interface, fn, list(args))

        return call

    def _new_slot(self) -> _Slot:
        store = wasmtime.Store(self._engine.engine)
        if self.spec.limits.memory_bytes:
            store.set_limits(memory_size=self.spec.limits.memory_bytes)
        if self._uses_wasi:
            store.set_wasi(self._wasi_config())
        store.set_fuel(UNLIMITED_FUEL)
        store.set_epoch_deadline(self._engine.deadline_ticks(self.timeout_ms))
        try:
            instance = self.linker.instantiate(store, self.component)
        except wasmtime.WasmtimeError as exc:
            raise HostError(f"{self.tag} could not be instantiated: {_first_line(exc)}") from None
        handle = instance.get_func(store, self._handle_index) if self._handle_index is not None else None
        return _Slot(store, instance, handle)

    def _wasi_config(self) -> wasmtime.WasiConfig:
        wasi = wasmtime.WasiConfig()
        allowed = {unversioned(c) for c in self.spec.capabilities}
        if not allowed or "wasi:cli/environment" in allowed:
            wasi.env = sorted(self.spec.config.items())  # config reaches WASI programs as environment
        wasi.stdout_custom = self._output("stdout")
        wasi.stderr_custom = self._output("stderr")
        return wasi

    def _output(self, stream: str) -> Callable[[bytes], None]:
        def write(data: bytes) -> None:
            for line in data.decode(errors="replace").splitlines():
                log.info("[%s %s] %s", self.tag, stream, line)

        return write

    # -- calls ----------------------------------------------------------------------------------
    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def in_backoff(self) -> bool:
        return time.monotonic() < self.backoff_until

    @contextmanager
    def _admitted(self) -> Any:
        if self.in_backoff:
            raise Unavailable(
                f"{self.tag} is backing off after repeated traps (last: {self.last_error})", reason="backoff"
            )
        if not self._admission.acquire(blocking=False):
            raise Unavailable(
                f"{self.tag} is at its limit of {self.max_concurrency} concurrent calls", reason="concurrency"
            )
        with self._lock:
            self._inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1
                self._idle_cv.notify_all()
            self._admission.release()

    def _take_slot(self) -> _Slot:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._new_slot()

    def _give_back(self, slot: _Slot) -> None:
        with self._lock:
            self._idle.append(slot)

    def _arm(self, slot: _Slot) -> int:
        """Arm the store for one call; returns the fuel it starts with (consumed = that - get_fuel())."""
        fuel = self.spec.limits.fuel or UNLIMITED_FUEL
        slot.store.set_fuel(fuel)
        slot.store.set_epoch_deadline(self._engine.deadline_ticks(self.timeout_ms))
        return fuel

    def handle(self, request: HttpRequest) -> HttpResponse:
        assert self._handle_index is not None
        with self._admitted():
            slot = self._take_slot()
            budget = self._arm(slot)
            record = wc.Record()
            record.__dict__.update(
                method=request.method, path=request.path, headers=request.headers, body=request.body
            )
            try:
                out = slot.handle(slot.store, record)  # type: ignore[misc]
            except Exception as exc:
                trapped = self._trapped(exc)
                trapped.fuel = _consumed(slot, budget)  # what it burned before trapping (all of it: reason fuel)
                raise trapped from None
            fuel = _consumed(slot, budget)
            self._give_back(slot)
        status = int(out.status)
        if not 100 <= status <= 599:
            return HttpResponse(502, [("content-type", "text/plain")], f"{self.tag} answered status {status}\n".encode(),
                                fuel=fuel)
        return HttpResponse(status, [(str(k), str(v)) for k, v in out.headers], bytes(out.body), fuel=fuel)

    def invoke(self, interface: str, fn: str, args: list[Any]) -> Any:
        """Call ``fn`` of the exported ``interface`` (a link from another component)."""
        name = next((n for n in self.exports if unversioned(n) == unversioned(interface)), None)
        if name is None:
            raise HostError(f"{self.tag} does not export {interface}")
        with self._admitted():
            slot = self._take_slot()
            self._arm(slot)
            index = self.component.get_export_index(fn, self.component.get_export_index(name))
            func = slot.instance.get_func(slot.store, index) if index is not None else None
            if func is None:
                self._give_back(slot)
                raise HostError(f"{self.tag} export {name} has no function {fn}")
            try:
                result = func(slot.store, *args)
            except Exception as exc:
                raise self._trapped(exc) from None
            self._give_back(slot)
            return result

    def run_job(self) -> None:
        """Run ``wasi:cli/run`` once (a job); raises HostError when it traps or returns an error."""
        assert self.run_export is not None
        with self._admitted():
            slot = self._take_slot()
            self._arm(slot)
            index = self.component.get_export_index("run", self.component.get_export_index(self.run_export))
            func = slot.instance.get_func(slot.store, index) if index is not None else None
            if func is None:
                self._give_back(slot)
                raise HostError(f"{self.tag} exports {self.run_export} without a run function")
            try:
                result = func(slot.store)
            except Exception as exc:
                code = _exit_code(exc)  # wasi:cli/exit.exit(N) ends the program, not a trap
                if code == 0:
                    return
                if code is not None:
                    raise HostError(f"{self.tag} job exited with code {code}") from None
                raise self._trapped(exc) from None
            self._give_back(slot)
        if getattr(result, "tag", "ok") != "ok":
            raise HostError(f"{self.tag} job exited with code 1 (run returned an error)")

    def _trapped(self, exc: BaseException) -> Unavailable:
        """Account a trap: the poisoned store is dropped, a fresh one replaces it (a restart)."""
        cause = _first_cause(exc)
        limits = self.spec.limits
        if isinstance(exc, Unavailable):  # raised by a linked component (or its absence)
            reason, text = exc.reason, f"{self.tag}: {exc}"
        elif isinstance(exc, HostError):
            reason, text = "link", f"{self.tag}: {exc}"
        elif "all fuel consumed" in cause:
            reason, text = "fuel", f"{self.tag} ran out of fuel ({limits.fuel} units per call)"
        elif "interrupt" in cause:
            reason, text = "deadline", f"{self.tag} exceeded its deadline of {self.timeout_ms} ms per call"
        elif limits.memory_bytes and ("unreachable" in cause or "memory" in cause):
            reason = "memory"
            text = f"{self.tag} trapped ({cause}) with memory capped at {limits.memory_bytes} bytes: memory.grow was refused"
        else:
            reason, text = "trap", f"{self.tag} trapped: {cause}"
        now = time.monotonic()
        with self._lock:
            self.restarts += 1
            self.last_error = text
            self._traps = [t for t in self._traps if now - t < TRAP_WINDOW_SECONDS] + [now]
            if len(self._traps) >= TRAPS_BEFORE_BACKOFF:
                self.backoff_until = now + self._trap_backoff.next_delay()
                self._traps = []
        log.warning("%s (restart %d)", text, self.restarts)
        self._on_trap()
        try:
            self._give_back(self._new_slot())
        except HostError as again:
            log.warning("%s", again)
        return Unavailable(text, reason=reason)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is in flight (draining); False if ``timeout`` ran out first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle_cv.wait(left)
        return True

    def close(self) -> None:
        with self._lock:
            self._idle.clear()


def _consumed(slot: _Slot, budget: int) -> int | None:
    """Fuel a call consumed (the store was armed with ``budget``); None if wasmtime cannot say."""
    try:
        return max(0, budget - slot.store.get_fuel())
    except wasmtime.WasmtimeError:
        return None


def _exit_code(exc: BaseException) -> int | None:
    """The status of a ``wasi:cli/exit`` call that ended the program, if that is what ``exc`` is."""
    match = re.search(r"[Ee]xited with i32 exit status (\d+)", str(exc))
    return int(match[1]) if match else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _first_cause(exc: BaseException) -> str:
    """The interesting line of a wasmtime error: the 'Caused by' part, else the first line."""
    if isinstance(exc, HostError):
        return str(exc)
    lines = [x.strip() for x in str(exc).strip().splitlines() if x.strip()]
    if "Caused by:" in lines:
        rest = lines[lines.index("Caused by:") + 1 :]
        if rest:
            return rest[-1].removeprefix("wasm trap: ")
    return lines[0] if lines else type(exc).__name__
