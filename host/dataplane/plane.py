"""The agent's side of the native data plane: what the supervisor runs -> an HAProxy configuration
(reloaded only when its structure changes), server states kept current through the runtime API
(a process that idles, restarts or moves to another port needs no reload), counters folded into the
per-digest traffic figures, idle instances stopped only once HAProxy sends them nothing, and the
data plane's troubles as events (``dataPlane`` in the admin API's status, and the log)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from host.dataplane import config as cfg
from host.dataplane.process import HAProxy
from host.dataplane.stats import Deltas, open_log, parse_stat
from host.served import ServedInstance
from host.traffic import Traffic
from wire.control import RUNNING
from wire.traffic import CANARY, STABLE

log = logging.getLogger("driftless.host")

POLL_SECONDS = 0.25
DEFAULT_SERVER_TIMEOUT_MS = 35_000


class Instances(Protocol):
    """What the plane reads of the supervisor."""

    traffic: Traffic
    draining: dict[int, Any]

    def serving(self) -> list[Any]: ...


def _prefix(route: str) -> str:
    return "/" + route.strip("/") if route.strip("/") else "/"


class DataPlane:
    def __init__(self, *, instances: Instances, binary: Path, listen: tuple[str, int], python_port: int,
                 max_body_bytes: int, secret: str) -> None:
        self.instances = instances
        # its configuration and sockets: a short path (unix socket paths hold ~100 bytes), 0700, removed at stop
        self.run_dir = Path(tempfile.mkdtemp(prefix="driftless-dataplane-"))
        self.listen = listen
        self.python_port = python_port
        self.max_body_bytes = max_body_bytes
        self.secret = secret  # only HAProxy and this agent know it (files 0600)
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self.process = HAProxy(binary=binary, run_dir=self.run_dir, on_event=self._event_from_thread)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._applied: cfg.Plane | None = None  # structure of the running configuration
        self._states: dict[tuple[str, str], tuple[int, bool]] = {}
        self._names: dict[str, ServedInstance] = {}
        self._serial: weakref.WeakKeyDictionary[ServedInstance, int] = weakref.WeakKeyDictionary()
        self._next = itertools.count(1)
        self._deltas = Deltas()
        self._pid: int | None = None  # the master whose worker got our server states
        self._sync_due = asyncio.Event()
        self._syncing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._log: asyncio.DatagramTransport | None = None
        self.log_lines = 0

    # -- events ----------------------------------------------------------------------------------
    def _event(self, reason: str, message: str) -> None:
        self.events.append({"time": time.time(), "reason": reason, "message": message})
        (log.info if reason.endswith("Restarted") else log.warning)("data plane: %s: %s", reason, message)
        if reason == "DataPlaneRestarted":
            self.request_sync()

    def _event_from_thread(self, reason: str, message: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._event, reason, message)

    def status(self) -> dict[str, Any]:
        return {"kind": "haproxy", "pid": self.process.pid, "restarts": self.process.restarts,
                "reloads": self.process.reloads, "lastError": self.process.last_error, "events": list(self.events)}

    # -- the desired configuration ---------------------------------------------------------------
    def _name(self, inst: ServedInstance) -> str:
        serial = self._serial.get(inst)
        if serial is None:
            serial = self._serial[inst] = next(self._next)
        return f"{cfg.server_name(inst.spec.id)}-{serial}"

    def _server(self, inst: ServedInstance, names: dict[str, ServedInstance]) -> cfg.Server:
        name = self._name(inst)
        names[name] = inst
        ready = inst.state == RUNNING and not inst.draining and inst.port > 0
        return cfg.Server(name=name, port=inst.port, ready=ready, max_conn=inst.max_concurrency)

    def build(self) -> tuple[cfg.Plane, dict[str, ServedInstance]]:
        by_route: dict[str, list[Any]] = {}
        for inst in self.instances.serving():
            if inst.spec.route and inst.handler_export:
                by_route.setdefault(_prefix(inst.spec.route), []).append(inst)
        draining: dict[str, list[ServedInstance]] = {}
        for inst in list(self.instances.draining.values()):
            if isinstance(inst, ServedInstance) and inst.spec.route:
                draining.setdefault(_prefix(inst.spec.route), []).append(inst)
        names: dict[str, ServedInstance] = {}
        routes = []
        timeout = DEFAULT_SERVER_TIMEOUT_MS
        for i, prefix in enumerate(cfg.sorted_routes(list(by_route))):
            found = by_route[prefix]
            if not cfg.routable(prefix) or not all(isinstance(x, ServedInstance) for x in found):
                routes.append(cfg.Route(prefix=prefix))  # in-process components: the Python ingress
                continue
            timeout = max(timeout, *(x.timeout_ms + 5_000 for x in found))
            split = self.instances.traffic.split_of(found[0].spec)
            stable = [x for x in found if split is not None and x.spec.digest == split.stable]
            canary = [x for x in found if split is not None and x.spec.digest == split.canary]
            old = draining.get(prefix, [])

            def backend(side: str, members: list[ServedInstance], track: str | None, extra: list[ServedInstance],
                        *, index: int = i, prefix: str = prefix) -> cfg.Backend:
                return cfg.Backend(name=cfg.backend_name(index, side), route=prefix, track=track,
                                   servers=tuple(self._server(x, names) for x in [*members, *extra]))

            if split is not None and stable and canary:
                routes.append(cfg.Route(prefix=prefix, stable=backend("stable", stable, STABLE, old),
                                        canary=backend("canary", canary, CANARY, []), weight=split.weight,
                                        shadow_sample=split.shadow_sample))
            elif split is not None:
                # one side not serving yet: the Python ingress decides (it reads the instances live, so a
                # request right after the other side starts is split before the reload lands)
                routes.append(cfg.Route(prefix=prefix))
            else:
                routes.append(cfg.Route(prefix=prefix, stable=backend("stable", found, None, old)))
        plane = cfg.Plane(listen=self.listen, python_port=self.python_port, secret=self.secret, routes=tuple(routes),
                          max_body_bytes=self.max_body_bytes, server_timeout_ms=timeout, run_dir=str(self.run_dir),
                          threads=cfg.proxy_threads(len(os.sched_getaffinity(0))))
        return plane, names

    # -- run -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start HAProxy on the current state (raises HostError when it cannot start)."""
        self._loop = asyncio.get_running_loop()
        self._log, reader = await open_log(self.run_dir / "log.sock", self._on_log)
        self._reader = reader
        plane, names = self.build()
        self._write_files(plane)
        if not await self._loop.run_in_executor(None, self.process.apply, cfg.render(plane)):
            from host.errors import HostError

            raise HostError(f"the data plane does not start: {self.process.last_error}")
        self._applied, self._states, self._names = cfg.structure(plane), cfg.server_states(plane), names
        self._pid = self.process.pid
        self._tasks = [asyncio.create_task(self._sync_loop()), asyncio.create_task(self._poll_loop())]

    def _write_files(self, plane: cfg.Plane) -> None:
        for name, text in {**cfg.error_files(plane), "trap.lua": cfg.lua_action(plane)}.items():
            path = self.run_dir / name
            path.write_text(text)
            path.chmod(0o600)

    def request_sync(self) -> None:
        self._sync_due.set()

    async def _sync_loop(self) -> None:
        while True:
            await self._sync_due.wait()
            self._syncing = True
            try:
                await asyncio.sleep(0.02)  # changes come in bursts (an apply, instances starting): one reload
                self._sync_due.clear()
                await self.sync()
            except Exception:  # a bug must not stop the data plane's updates
                log.exception("data plane: sync failed")
            finally:
                self._syncing = False

    async def sync(self) -> None:
        assert self._loop is not None
        plane, names = self.build()
        structure = cfg.structure(plane)
        if structure != self._applied or self.process.pid != self._pid:
            if structure != self._applied:
                ok = await self._loop.run_in_executor(None, self.process.apply, cfg.render(plane))
                if not ok:
                    return  # an event says why; the last good configuration keeps serving
                self._applied, self._states, self._names = structure, cfg.server_states(plane), names
                self._pid = self.process.pid
                return
            self._states = {}  # a restarted master read the last file: push every state again
            self._pid = self.process.pid
        self._names = names
        wanted = cfg.server_states(plane)
        commands = []
        for (backend, server), (port, ready) in wanted.items():
            if self._states.get((backend, server)) == (port, ready):
                continue
            if port:
                commands.append(f"set server {backend}/{server} addr 127.0.0.1 port {port}")
            commands.append(f"set server {backend}/{server} state {'ready' if ready else 'maint'}")
        if commands:
            await self._loop.run_in_executor(None, self._run_commands, commands)
        self._states = wanted

    def _run_commands(self, commands: list[str]) -> None:
        try:
            self.process.command(";".join(commands))
        except OSError as exc:
            log.warning("data plane: runtime API: %s", exc)
            self._states = {}

    async def _poll_loop(self) -> None:
        """Counters and requests in flight, per server, every POLL_SECONDS."""
        assert self._loop is not None
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                text = await self._loop.run_in_executor(None, self.process.command, "show stat")
            except OSError:
                self._nothing_in_flight()  # HAProxy is gone: nothing goes through it now
                continue
            self.fold(text)

    def _nothing_in_flight(self) -> None:
        for inst in list(self._names.values()):
            inst.note_native(served=False, inflight=0)

    def fold(self, text: str) -> None:
        traffic = self.instances.traffic
        for stat, requests, errors in self._deltas.update(parse_stat(text)):
            inst = self._names.get(stat.server)
            if inst is None:
                continue
            if requests or errors:
                traffic.count(inst.spec, requests=requests, errors=errors)
            inst.note_native(served=requests > 0, inflight=stat.inflight)

    def _on_log(self, server: str, seconds: float) -> None:
        inst = self._names.get(server)
        if inst is not None:
            self.instances.traffic.observe(inst.spec, seconds, weight=cfg.LOG_SAMPLE)

    # -- idle, traps -----------------------------------------------------------------------------
    async def settled(self, *, timeout: float) -> None:
        """Wait (up to ``timeout``) until HAProxy runs what the agent last wanted and no worker of an
        earlier configuration is left: a draining process is closed only once nothing can send it a request."""
        assert self._loop is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._sync_due.is_set() and not self._syncing:
                if not await self._loop.run_in_executor(None, self.process.old_workers):
                    return
            await asyncio.sleep(0.05)

    def idle_gate(self, inst: ServedInstance) -> bool:
        """Before an idle instance stops: HAProxy sends it nothing more (maint: the Python fallback
        takes a new request and wakes it), and has nothing in flight to it."""
        if self._sync_due.is_set() or self._syncing or self.process.old_workers():
            return False  # a configuration change is landing: at the next look
        name = self._name(inst)
        keys = [k for k in self._states if k[1] == name]
        if not keys:
            return True
        try:
            self.process.command(";".join(f"set server {b}/{s} state maint" for b, s in keys))
            busy = any(s.inflight for s in parse_stat(self.process.command("show stat")) if s.server == name)
        except OSError:
            return True
        for key in keys:
            self._states[key] = (self._states[key][0], False)
        if busy:
            self.request_sync()  # back to ready
            return False
        return True

    async def explain_trap(self, server: str, t0_ms: int) -> dict[str, str] | None:
        """wasmtime answered 500 for ``server``'s request started at ``t0_ms`` (wall clock): why."""
        inst = self._names.get(server)
        if inst is None:
            return None
        sent = time.monotonic() - max(0.0, time.time() - t0_ms / 1000) if t0_ms else time.monotonic() - 1
        failure = await inst.classify_failure(sent)
        self.instances.traffic.count(inst.spec, traps=1)
        return {"error": str(failure), "reason": failure.reason or "trap", "instance": inst.spec.id}

    # -- stop ------------------------------------------------------------------------------------
    def soft_stop(self, timeout: float) -> None:
        """Blocking: stop listening, let HAProxy's requests in flight finish (up to ``timeout``)."""
        self.process.soft_stop(timeout)
        self._nothing_in_flight()  # its last counters are stale: it has exited

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._log is not None:
            self._log.close()
        await asyncio.get_running_loop().run_in_executor(None, self.process.stop)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def plane_hooks(plane: DataPlane | None) -> Callable[[], str | None]:
    return (lambda: plane.secret) if plane is not None else (lambda: None)
