"""``driftless host``: the agent process. Wires the engine, supervisor, ingress, admin API and the
desired-state source (reconciler, or a static ``--desired`` file), and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from host.admin import ADMIN_TOKEN_FILE, METRICS_TOKEN_FILE, admin_token, make_admin_app, token_file
from host.cache import CompiledCache, default_compile_cache
from host.control_client import ControlChannel
from host.dataplane.config import PYTHON_HOST
from host.dataplane.plane import DataPlane
from host.dataplane.process import locate_haproxy
from host.errors import HostError
from host.ingress import make_ingress_app
from host.labels import host_labels, total_memory_bytes
from host.puller import RegistryAccess
from host.runtime import RuntimeDefaults
from host.served import ServeRuntime
from host.state_file import load_desired, save_desired
from host.supervisor import Supervisor
from host.tiers import TierPolicy
from host.wasm_engine import WasmEngine
from host.wasmtime_cli import ServeCaches, WasmtimeCli, stop_compiles
from shared import __version__, http
from wire.control import FEATURE_SIGNATURES, HostCapacity, HostDesiredState, HostRegistration, HostReport
from wire.traffic import FEATURE_TRAFFIC_SPLIT

log = logging.getLogger("driftless.host")

# this host's credential from the reconciler (0600): its identity on desired/report and re-registration
CREDENTIAL_FILE = "host-credential"

# what the host links for components besides links between them (registration "interfaces")
PROVIDED_INTERFACES = (
    "driftless:http/handler@0.1.0",
    "driftless:http/config@0.1.0",
    "driftless:http/log@0.1.0",
    "wasi:cli/environment@0.2",
    "wasi:cli/stdout@0.2",
    "wasi:cli/stderr@0.2",
    "wasi:cli/run@0.2",
    "wasi:clocks/wall-clock@0.2",
    "wasi:clocks/monotonic-clock@0.2",
    "wasi:random/random@0.2",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostOptions:
    name: str
    data: Path
    listen: tuple[str, int]
    control: str | None = None
    control_ca: str | None = None  # CA bundle for an https reconciler with its own CA
    token: str | None = None
    desired_file: Path | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    data_path: str = "haproxy"  # what serves --listen: HAProxy (host/dataplane) or "python" (the ingress alone)
    admin_listen: tuple[str, int] | None = None
    admin_token_file: Path | None = None  # the admin API's credential; default DATA/admin-token (created 0600)
    metrics_token_file: Path | None = None  # read-only, GET /metrics on the admin listener; default DATA/metrics-token
    track_token_file: Path | None = None  # x-driftless-track is honoured only with this token (host/traffic.py)
    advertise: str | None = None
    heartbeat: float = 3.0
    access: RegistryAccess = field(default_factory=RegistryAccess)
    max_instances: int = 10_000
    memory_bytes: int | None = None
    cache_max_bytes: int = 1 << 30
    compile_cache: Path | None = None  # shared by the hosts of a machine; default host.cache.default_compile_cache()
    fast_tier_above: int | None = 1 << 20  # served components this big start on a Winch build (None: never)
    memory_reservation: int | None = None
    drain_seconds: float = 30.0
    defaults: RuntimeDefaults = field(default_factory=RuntimeDefaults)
    max_body_bytes: int = 16 << 20
    workers: int = 64


class HostAgent:
    def __init__(self, options: HostOptions) -> None:
        self.options = options
        options.data.mkdir(parents=True, exist_ok=True)
        self.desired_path = options.data / "desired.json"
        self.labels = host_labels(options.labels)
        self.pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="wasm-call")
        self.start_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="wasm-start")
        self.engine = WasmEngine(cache=None, memory_reservation=options.memory_reservation)
        # the engine settings are known only once the engine exists: key the cache on them
        self.compile_cache = options.compile_cache or default_compile_cache()
        self.engine.cache = CompiledCache(
            root=self.compile_cache, engine_key=self.engine.settings, max_bytes=options.cache_max_bytes
        )
        listen_host, listen_port = options.listen
        loopback = "127.0.0.1" if listen_host in ("", "0.0.0.0", "::") else listen_host
        # processes reach links through this host's ingress, on the address it listens on
        self.serve = ServeRuntime(cli_locator=WasmtimeCli.locate,
                                  links_base=f"http://{_url_host(loopback)}:{listen_port}")
        self._serve_caches: ServeCaches | None = None
        self.stopping = False
        self.plane: DataPlane | None = None  # the native data plane (HAProxy), when --data-path haproxy
        self.control: ControlChannel | None = None
        self.supervisor = Supervisor(
            engine=self.engine,
            access=options.access,
            defaults=options.defaults,
            start_pool=self.start_pool,
            call_pool=self.pool,
            drain_seconds=options.drain_seconds,
            on_change=self._changed,
            max_instances=options.max_instances,
            serve=self.serve,
            serve_caches=self.serve_caches,
            info_dir=self.compile_cache / "info",  # what each digest is, inspected once per machine
            proofs_file=options.data / "verified-references",  # this host's own, never shared
            self_url=options.advertise or f"http://{options.listen[0]}:{options.listen[1]}",
            tiers=TierPolicy(fast_above=options.fast_tier_above),
        )
        self.ingress_url = options.advertise or f"http://{options.listen[0]}:{options.listen[1]}"

    def serve_caches(self) -> ServeCaches:
        """Compiled caches for ``wasmtime serve`` (keyed by its version and engine flags)."""
        if self._serve_caches is None:
            self._serve_caches = ServeCaches(root=self.compile_cache, cli=self.serve.cli,
                                             max_bytes=self.options.cache_max_bytes)
        return self._serve_caches

    async def _explain_trap(self, server: str, t0_ms: int) -> dict[str, str] | None:
        return await self.plane.explain_trap(server, t0_ms) if self.plane is not None else None

    def _changed(self) -> None:
        if self.plane is not None:
            self.plane.request_sync()
        if self.control is not None:
            self.control.notify_change()

    # -- documents ------------------------------------------------------------------------------
    def registration(self) -> HostRegistration:
        return HostRegistration(
            name=self.options.name,
            labels=self.labels,
            capacity=HostCapacity(
                memory_bytes=self.options.memory_bytes or total_memory_bytes(),
                max_instances=self.options.max_instances,
            ),
            interfaces=PROVIDED_INTERFACES,
            ingress_url=self.ingress_url,
            version=__version__,
            features=(FEATURE_TRAFFIC_SPLIT, FEATURE_SIGNATURES),
        )

    def report(self) -> HostReport:
        return HostReport(
            name=self.options.name,
            observed_generation=self.supervisor.observed_generation,
            instances=tuple(self.supervisor.statuses()),
            traffic=self.supervisor.traffic.report(),
        )

    def status(self) -> dict[str, Any]:
        cache = self.engine.cache
        return {
            "name": self.options.name,
            "labels": self.labels,
            "version": __version__,
            "ingressUrl": self.ingress_url,
            "control": self.options.control,
            "connected": bool(self.control and self.control.connected),
            "observedGeneration": self.supervisor.observed_generation,
            "instances": len(self.supervisor.entries),
            "inflight": sum(i.inflight for i in self.supervisor.serving()),
            "compilations": self.engine.compilations + (self.serve.cli.compilations if self._serve_caches else 0),
            "cacheHits": self.engine.cache_hits,
            "memoryHits": self.engine.memory_hits,
            "cache": {"entries": cache.entries(), "bytes": cache.size_bytes()} if cache else None,
            "engine": self.engine.settings,
            "dataPlane": self.plane.status() if self.plane is not None else {"kind": "python"},
            # the machine-wide compiled cache: what this host compiled, waited for (another host
            # compiling the same key) and found, per engine key (compiler and flags)
            "compileCache": {
                "dir": str(self.compile_cache),
                "engines": ({self.engine.settings: cache.counters()} if cache else {})
                | (self._serve_caches.counters() if self._serve_caches else {}),
            },
        }

    def on_desired(self, desired: HostDesiredState) -> None:
        if desired.host and desired.host != self.options.name:
            log.error("ignoring desired state for host %r (this host is %r)", desired.host, self.options.name)
            return
        try:
            save_desired(self.desired_path, desired)  # first, so a crash right after still recovers it
        except OSError as exc:
            log.error("cannot persist desired state to %s: %s", self.desired_path, exc)
        self.supervisor.apply(desired)

    # -- run --------------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        def on_signal() -> None:
            if done.is_set():  # a second signal: the operator does not want to wait for the drain
                print(f"driftless host {self.options.name}: second signal, exiting without draining", flush=True)
                os._exit(1)
            done.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)

        # a process's first HTTP client (the trust store's load, httpx's lazy imports) costs ~35-50 ms: the
        # registry checks and pulls need one, so it is made off the path of the first instance's start
        self.start_pool.submit(_warm_http_clients, ca_file=self.options.access.ca_file)
        self._recover()
        track_token = (token_file(self.options.track_token_file, option="--track-token-file")
                       if self.options.track_token_file else None)
        native = self.options.data_path == "haproxy"
        haproxy = locate_haproxy() if native else None  # missing: a clear error naming the package, at once
        # natively, HAProxy owns --listen and the Python ingress serves its slow paths on loopback
        python_listen = (PYTHON_HOST, 0) if native else self.options.listen
        # port 0 ("any free port") is the kernel's choice for a socket we bind; HAProxy needs a number
        public = self.options.listen if self.options.listen[1] else (self.options.listen[0], _free_port())
        secret = secrets.token_urlsafe(24)  # HAProxy's requests to the Python ingress carry it
        ingress = web.AppRunner(
            make_ingress_app(
                supervisor=self.supervisor,
                pool=self.pool,
                stopping=lambda: self.stopping,
                max_body_bytes=self.options.max_body_bytes,
                serve=self.serve,
                track_token=track_token,
                plane_secret=secret if native else None,
                explain_trap=self._explain_trap,
            ),
            access_log=None,
            handle_signals=False,
        )
        await ingress.setup()
        site = web.TCPSite(ingress, python_listen[0], python_listen[1])
        try:
            if native:
                _check_free(public)  # HAProxy binds with SO_REUSEPORT: it would share a taken port
            await site.start()
        except OSError as exc:
            raise HostError(f"cannot listen on {self.options.listen[0]}:{self.options.listen[1]}: {exc.strerror}",
                            hint="pick a free port with --listen") from None  # fmt: skip
        if haproxy is not None:
            python_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.plane = DataPlane(instances=self.supervisor, binary=haproxy, listen=public, python_port=python_port,
                                   max_body_bytes=self.options.max_body_bytes, secret=secret)
            self.supervisor.idle_gate = self.plane.idle_gate
            self.supervisor.drain_gate = self.plane.settled
            await self.plane.start()
            print(f"driftless host {self.options.name}: ingress on {self.ingress_url} (HAProxy, pid "
                  f"{self.plane.process.pid}; slow paths on {PYTHON_HOST}:{self.plane.python_port})", flush=True)
        else:
            print(f"driftless host {self.options.name}: ingress on {self.ingress_url}", flush=True)
        runners = [ingress]
        if self.options.admin_listen:
            admin_file = self.options.admin_token_file or self.options.data / ADMIN_TOKEN_FILE
            metrics_file = self.options.metrics_token_file or self.options.data / METRICS_TOKEN_FILE
            admin = web.AppRunner(
                make_admin_app(supervisor=self.supervisor, token=admin_token(admin_file), status=self.status,
                               metrics_token=token_file(metrics_file, option="--metrics-token-file")),
                access_log=None,
                handle_signals=False,
            )
            await admin.setup()
            try:
                await web.TCPSite(admin, *self.options.admin_listen).start()
            except OSError as exc:
                raise HostError(f"cannot listen on {self.options.admin_listen}: {exc.strerror}") from None
            runners.append(admin)
            host, port = self.options.admin_listen
            print(f"driftless host {self.options.name}: admin API on http://{host}:{port} (credential: {admin_file}; "
                  f"metrics at /metrics, credential: {metrics_file})", flush=True)

        tasks = [asyncio.create_task(self._retry_loop())]
        if self.options.control:
            self.control = ControlChannel(
                url=self.options.control,
                token=self.options.token,
                registration=self.registration,
                report=self.report,
                observed_generation=lambda: self.supervisor.observed_generation,
                on_desired=self.on_desired,
                heartbeat=self.options.heartbeat,
                ca_file=self.options.control_ca,
                credential_file=self.options.data / CREDENTIAL_FILE,
            )
            tasks.append(asyncio.create_task(self.control.run()))
        if self.options.desired_file:
            tasks.append(asyncio.create_task(self._watch_desired_file(self.options.desired_file)))

        await done.wait()
        log.info("stopping: draining in-flight calls (up to %.0fs)", self.options.drain_seconds)
        self.stopping = True
        self.supervisor.shutting_down = True
        stop_compiles()  # none outlives the host (a background optimised build runs a minute on a busy machine)
        self._changed()  # tell the reconciler at once that this host is going away
        if self.plane is not None:  # HAProxy stops listening and lets its requests in flight finish
            await loop.run_in_executor(None, self.plane.soft_stop, self.options.drain_seconds)
        await site.stop()  # no new connections; in-flight requests keep their connections
        left = await self.supervisor.drain_all(timeout=self.options.drain_seconds)
        if left:
            log.warning("%d calls still in flight after the drain timeout", left)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.control is not None and self.control.registered.is_set():
            try:
                await self.control.final_report(timeout=2)
            except Exception:  # best effort: the reconciler notices a missing host anyway
                pass
        if self.plane is not None:
            await self.plane.close()
        for r in runners:
            await r.cleanup()
        for inst in self.supervisor.serving() + list(self.supervisor.draining.values()):
            inst.close()  # wasmtime serve processes do not outlive their host
        self.serve.stop_all()  # nor those still starting (a tier swap, a wake)
        await self.serve.close()
        self.engine.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.start_pool.shutdown(wait=False, cancel_futures=True)
        print(f"driftless host {self.options.name}: stopped", flush=True)
        return 0

    def _recover(self) -> None:
        """Static stability: serve the last desired state at once, without waiting for anyone."""
        if not self.desired_path.exists():
            return
        try:
            desired = load_desired(self.desired_path)
        except HostError as exc:
            log.error("ignoring the saved desired state: %s", exc)
            return
        if desired.host != self.options.name:
            log.warning("saved desired state is for host %r, not %r; ignoring it", desired.host, self.options.name)
            return
        log.info("recovered generation %d from %s", desired.generation, self.desired_path)
        self.supervisor.apply(desired)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.supervisor.retry_due()
            self.supervisor.reap_idle()

    async def _watch_desired_file(self, path: Path) -> None:
        """Like kubelet static pods: apply the file at start and whenever it changes."""
        last: tuple[float, int] | None = None
        last_doc: dict[str, Any] | None = None
        while True:
            try:
                st = os.stat(path)
                stamp = (st.st_mtime, st.st_size)
            except OSError:
                stamp = None
            if stamp is not None and stamp != last:
                last = stamp
                try:
                    desired = load_desired(path, host=self.options.name)
                except HostError as exc:
                    log.error("%s (keeping generation %d)", exc, self.supervisor.observed_generation)
                else:
                    doc = desired.to_json()
                    if doc != last_doc:
                        last_doc = doc
                        self.on_desired(desired)
            await asyncio.sleep(0.3)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _check_free(listen: tuple[str, int]) -> None:
    """Raise OSError when ``listen`` is taken (bound without SO_REUSEPORT, as another server holds it)."""
    host, port = listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run_host(options: HostOptions) -> int:
    return asyncio.run(HostAgent(options).run())


def _warm_http_clients(*, ca_file: str | None) -> None:
    for ca in {None, ca_file}:
        with http.client(ca_file=ca):
            pass
