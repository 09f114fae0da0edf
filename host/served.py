"""Standard HTTP components (the ``wasi:http/proxy`` world), each instance a supervised
``wasmtime serve`` process on a loopback port behind the host's ingress.

Why a process: wasmtime-py cannot create the request/response resources that
``wasi:http/incoming-handler.handle`` takes; wasmtime's own wasi:http implementation can. Each
request gets a fresh component instance inside the process (componentize-js output breaks when an
instance is reused), so one process serves many requests in parallel.

An instance's life:

    Idle (scale to zero: compiled, no process) --first request--> Starting --port answers--> Running
    Running --exit--> BackOff (1 s, 2 s, ... 30 s) --> Starting        Running --idle timeout--> Idle
    any --close()--> SIGTERM, then SIGKILL after a grace

What it runs with (the grants, enforced by the command line we build):
- limits: ``-W timeout`` (always: the host default when the manifest sets none), ``-W fuel``,
  ``-W max-memory-size``, ``--max-concurrent-requests``; the proxy also refuses calls beyond
  ``maxConcurrency`` with 503 ``concurrency``;
- environment: exactly the component's config plus ``<LINK>_URL`` for each HTTP link, passed as
  ``--env NAME`` with the value in the child's environment, so no value is on a command line; the
  link URL holds the instance's link credential (:mod:`host.link_auth`), issued when the instance is
  created and revoked when it closes;
- ``wasi:config/store``: the same config, read from the environment by an adapter composed into the
  component before it is compiled (:mod:`host.compose`);
- no directories; sockets only when granted (else ``-S tcp=n -S udp=n -S allow-ip-name-lookup=n``);
  outbound HTTP only to ``grants.outboundHosts`` and the links, by a policy adapter composed into the
  component before it is compiled (:mod:`host.outbound`; ``wasmtime serve`` has no allow-list).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from host.cache import Artifact
from host.errors import HostError, Unavailable
from host.link_auth import LinkCredentials
from host.wasmtime_cli import EngineFlags, WasmtimeCli, first_error
from shared.interfaces import WASI_HTTP_HANDLER
from shared.retry import Backoff
from wire.control import BACKOFF, IDLE, RUNNING, STARTING, InstanceSpec

log = logging.getLogger("driftless.host")

READY_TIMEOUT_SECONDS = 15.0  # a process that does not answer on its port by then failed to start
STOP_GRACE_SECONDS = 5.0
RESTART_FIRST_SECONDS, RESTART_MAX_SECONDS = 1.0, 30.0
STABLE_SECONDS = 30.0  # running this long resets the restart backoff
# request/response headers that describe one hop, not the message (RFC 9110 7.6.1)
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade", "host", "content-length"})
PORT_ATTEMPTS = 3


class PortTaken(Exception):
    """The loopback port chosen for a process was taken before it could bind it."""


class ServeRuntime:
    """What every served instance on a host shares: the CLI, the HTTP client to the processes, and
    the ingress URL the processes reach links through."""

    def __init__(self, *, cli_locator: Callable[[], WasmtimeCli], links_base: str) -> None:
        self._locate = cli_locator
        self._cli: WasmtimeCli | None = None
        self._lock = threading.Lock()
        self.links_base = links_base.rstrip("/")
        self.links = LinkCredentials()  # the link credentials of the instances (the ingress checks them)
        self._session: aiohttp.ClientSession | None = None
        # every instance made, so a host stopping closes also those still starting in a worker thread
        # (a tier swap, a wake): their processes must not outlive the host
        self._instances: weakref.WeakSet[ServedInstance] = weakref.WeakSet()
        self._stopped = False

    def register(self, instance: ServedInstance) -> None:
        with self._lock:
            self._instances.add(instance)
            stopped = self._stopped
        if stopped:
            instance.close()

    def stop_all(self) -> None:
        """The host stops: close every instance, and any made from now on."""
        with self._lock:
            self._stopped = True
            instances = list(self._instances)
        for instance in instances:
            instance.close()

    @property
    def cli(self) -> WasmtimeCli:
        """Located on first use: a host without the CLI still runs in-process components."""
        with self._lock:
            if self._cli is None:
                self._cli = self._locate()
            return self._cli

    def session(self) -> aiohttp.ClientSession:
        # the data path uses aiohttp's client: it shares the ingress's event loop and its pooled
        # keep-alive connections to each process (hack/bench/standard.py measures the proxy)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def link_url(self, credential: str, to_component: str) -> str:
        """The URL an instance reaches its link to ``to_component`` at: the credential names its
        env, app and declared links (host/link_auth.py)."""
        return f"{self.links_base}/.driftless/links/{credential}/{to_component}"


def link_env_name(component: str) -> str:
    """``user-db`` -> ``USER_DB_URL``: the variable a caller reads its link's URL from."""
    return re.sub(r"[^A-Za-z0-9]", "_", component).upper() + "_URL"


class ServedInstance:
    runtime = "wasmtime-serve"
    run_export: str | None = None
    warnings: tuple[str, ...] = ()

    def __init__(self, *, spec: InstanceSpec, cwasm: Path, flags: EngineFlags, imports: list[str],
                 serve: ServeRuntime, timeout_ms: int, max_concurrency: int, managed: bool,
                 on_change: Callable[[], None]) -> None:
        self.spec = spec
        self.tag = f"{spec.env}/{spec.app}/{spec.component}"
        self.cwasm = cwasm
        self.flags = flags
        self.imports = imports
        self._serve = serve
        self.handler_export: str | None = WASI_HTTP_HANDLER
        self.timeout_ms = timeout_ms
        self.max_concurrency = max_concurrency
        self.managed = managed
        self._on_change = on_change  # thread-safe (the supervisor marshals it to its loop)
        self.restarts = 0
        self.last_error: str | None = None
        self.started_at = time.time()
        self.draining = False
        self.idle_after = spec.idle_after_ms / 1000 if spec.idle_after_ms else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._state = IDLE if self.idle_after else STARTING
        self._closing = threading.Event()
        self._lock = threading.Lock()
        # one start at a time: the watcher's restart and a request's wake (after the backoff) raced, each
        # started a process, and the one overwritten in _proc ran on, never stopped (a leak)
        self._spawning = threading.Lock()
        self._restart = Backoff(first=RESTART_FIRST_SECONDS, cap=RESTART_MAX_SECONDS, jitter=0.2)
        self._backoff_until = 0.0
        self._inflight = 0  # through the Python ingress
        self._native_inflight = 0  # through the native data plane (its counters, host/dataplane)
        self._last_request = time.monotonic()
        self._errors: collections.deque[tuple[float, str]] = collections.deque(maxlen=32)
        self._starting: asyncio.Future[None] | None = None
        self.artifact: Artifact | None = None  # the compiled file, share-locked: not evicted while we may start
        self.tier = flags.compiler
        self.upgrade: Callable[[], ServedInstance] | None = None  # fast tier: builds the optimised instance
        # held in memory only; revoked by close()
        self._link_credential = serve.links.issue(spec) if any(x.is_http for x in spec.links) else None
        serve.register(self)

    # -- reads -----------------------------------------------------------------------------------
    @property
    def inflight(self) -> int:
        return self._inflight + self._native_inflight

    @property
    def port(self) -> int:
        """The loopback port of the running process; 0 when none runs."""
        proc = self._proc
        return self._port if proc is not None and proc.poll() is None and self._state == RUNNING else 0

    def note_native(self, *, served: bool, inflight: int) -> None:
        """What the native data plane saw since its last poll: requests served, and in flight now."""
        self._native_inflight = inflight
        if served or inflight:
            self._last_request = time.monotonic()

    @property
    def in_backoff(self) -> bool:
        return time.monotonic() < self._backoff_until

    @property
    def state(self) -> str:
        if self.in_backoff:
            return BACKOFF
        return self._state

    # -- process ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Blocking (a worker thread): start the process now, unless it idles at zero until a request."""
        if self.idle_after is None:
            self._spawn()

    def _command(self, port: int) -> tuple[list[str], dict[str, str]]:
        spec, limits = self.spec, self.spec.limits
        args = [str(self._serve.cli.binary), "serve", "--allow-precompiled", "--addr", f"127.0.0.1:{port}",
                "--no-logging-prefix", "-S", "cli", *self.flags.args(), "-W", f"timeout={self.timeout_ms}ms",
                "--max-concurrent-requests", str(self.max_concurrency)]
        if limits.fuel:
            args += ["-W", f"fuel={limits.fuel}"]
        if limits.memory_bytes:
            args += ["-W", f"max-memory-size={limits.memory_bytes}"]
        if spec.grants.sockets:
            args += ["-S", "inherit-network=y", "-S", "allow-ip-name-lookup=y"]
        else:
            args += ["-S", "tcp=n", "-S", "udp=n", "-S", "allow-ip-name-lookup=n"]
        env = dict(spec.config)
        for link in spec.links:
            if link.is_http and self._link_credential:
                env.setdefault(link_env_name(link.to_component),
                               self._serve.link_url(self._link_credential, link.to_component))
        for name in sorted(env):
            args += ["--env", name]  # the value comes from the child's environment, never argv
        args.append(str(self.cwasm))
        return args, env

    def _spawn(self) -> None:
        with self._spawning:
            self._spawn_unlocked()

    def _spawn_unlocked(self) -> None:
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._spawn_on(_free_port())
                return
            except PortTaken:
                if attempt == PORT_ATTEMPTS - 1:
                    raise HostError(f"{self.tag}: no free loopback port after {PORT_ATTEMPTS} attempts") from None

    def _spawn_on(self, port: int) -> None:
        with self._lock:
            if self._closing.is_set():
                raise HostError(f"{self.tag} is stopping")
            if self._proc is not None and self._proc.poll() is None:
                return
            self._state = STARTING
        args, env = self._command(port)
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read_output, args=(proc,), name=f"out-{self.spec.id}", daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            code = proc.poll()
            if code is not None:
                proc.wait()
                why = self._last_errors()
                if "address in use" in why.lower() or "addrinuse" in why.lower():
                    raise PortTaken(port)  # another process took the port between our probe and the bind
                raise HostError(f"{self.tag}: wasmtime serve exited with code {code} at start: {why}")
            if _answers(port):
                break
            if time.monotonic() > deadline or self._closing.is_set():
                _stop(proc)
                raise HostError(f"{self.tag}: wasmtime serve did not answer on its port within "
                                f"{READY_TIMEOUT_SECONDS:.0f}s")
            time.sleep(0.002)
        with self._lock:
            if self._closing.is_set():  # closed while it started: it must not outlive the instance
                _stop(proc)
                raise HostError(f"{self.tag} is stopping")
            if self._proc is not None and self._proc.poll() is None:  # never two: keep the one we know
                _stop(proc)
                return
            self._proc, self._port = proc, port
            self._state = RUNNING
            self._last_request = time.monotonic()
        log.info("%s: wasmtime serve pid %d on 127.0.0.1:%d ready in %.0f ms", self.spec.id, proc.pid, port,
                 (time.perf_counter() - started) * 1e3)
        threading.Thread(target=self._watch, args=(proc,), name=f"watch-{self.spec.id}", daemon=True).start()

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        """Restart a process that dies (not one we stopped), with a growing backoff."""
        began = time.monotonic()
        code = proc.wait()
        with self._lock:
            if self._proc is not proc or self._closing.is_set() or self._state == IDLE:
                return
            self._proc = None
            if time.monotonic() - began > STABLE_SECONDS:
                self._restart.reset()
            delay = self._restart.next_delay()
            self._backoff_until = time.monotonic() + delay
            self.restarts += 1
            self.last_error = f"{self.tag}: wasmtime serve exited with code {code}: {self._last_errors()}; " \
                              f"restarting in {delay:.0f}s"
        log.warning("%s (restart %d)", self.last_error, self.restarts)
        self._on_change()
        if self._closing.wait(delay):
            return
        try:
            self._spawn()
        except HostError as exc:
            with self._lock:
                self.last_error = str(exc)
            log.warning("%s", exc)
            self._watch_failed_start()
        self._on_change()

    def _watch_failed_start(self) -> None:
        """A restart that failed at start: try again later, still backing off."""
        with self._lock:
            delay = self._restart.next_delay()
            self._backoff_until = time.monotonic() + delay
        if not self._closing.wait(delay):
            try:
                self._spawn()
            except HostError as exc:
                with self._lock:
                    self.last_error = str(exc)
                self._watch_failed_start()

    def _read_output(self, proc: subprocess.Popen[bytes]) -> None:
        """The process's output to the host log, tagged; Rust backtraces folded to their cause."""
        assert proc.stdout is not None
        in_backtrace = False
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            if line.startswith("Stack backtrace:"):
                in_backtrace = True
                continue
            if in_backtrace and re.match(r"^\s+(\d+:|at )", line):
                continue
            in_backtrace = False
            if re.match(r"^\s+\d+:\s+0x[0-9a-f]+ - ", line):
                continue  # a wasm backtrace frame
            self._errors.append((time.monotonic(), line.strip()))
            log.info("[%s] %s", self.tag, line)

    def _last_errors(self) -> str:
        lines = [text for _, text in self._errors]
        return first_error("\n".join(lines)) if lines else "no error output"

    def idle_due(self, now: float) -> bool:
        """Idle long enough to scale to zero."""
        return (self.idle_after is not None and self._proc is not None and not self.inflight and not self.draining
                and now - self._last_request >= self.idle_after)

    def stop_idle(self, now: float) -> bool:
        """Scale to zero when idle long enough; True when it stopped."""
        with self._lock:
            proc = self._proc
            if proc is None or not self.idle_due(now):
                return False
            self._proc, self._state = None, IDLE
        log.info("%s: idle for %.0fs, stopping (scaled to zero)", self.spec.id, self.idle_after)
        _stop(proc)
        return True

    def close(self) -> None:
        self._closing.set()
        if self._link_credential is not None:
            self._serve.links.revoke(self._link_credential)
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc)
        if self.artifact is not None:
            self.artifact.close()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._inflight and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._inflight

    # -- requests --------------------------------------------------------------------------------
    async def _ensure_running(self) -> None:
        if self._proc is not None and self._state == RUNNING:
            return
        if self._starting is None or self._starting.done():
            loop = asyncio.get_running_loop()
            self._starting = loop.create_future()
            starting = self._starting

            def settle(error: BaseException | None) -> None:
                if starting.done():
                    return
                if error is not None:
                    starting.set_exception(error)
                else:
                    starting.set_result(None)

            def start() -> None:
                error: BaseException | None = None
                try:
                    self._spawn()
                except BaseException as exc:  # delivered to every waiting request
                    error = exc
                loop.call_soon_threadsafe(settle, error)

            threading.Thread(target=start, name=f"wake-{self.spec.id}", daemon=True).start()
            self._on_change()
        await asyncio.shield(self._starting)

    async def forward(self, request: web.Request, *, path: str) -> web.StreamResponse:
        """Serve one ingress request through the process (started first if it idles at zero)."""
        if self.in_backoff:
            raise Unavailable(f"{self.tag} is restarting after its process exited ({self.last_error})",
                              reason="backoff")
        if self._inflight >= self.max_concurrency:
            raise Unavailable(f"{self.tag} is at its limit of {self.max_concurrency} concurrent calls",
                              reason="concurrency")
        self._inflight += 1
        self._last_request = time.monotonic()
        try:
            try:
                await self._ensure_running()
            except HostError as exc:
                raise Unavailable(str(exc), reason="start") from None
            body = await request.read()
            headers = [(k, v) for k, v in request.headers.items()
                       if k.lower() not in HOP_HEADERS and not k.lower().startswith("x-driftless-")]
            route = (self.spec.route or "").rstrip("/") if path == request.path_qs else ""
            # like Spin's spin-path-info: the path below the route, for apps that route on their own paths
            headers.append(("x-driftless-route", route or "/"))
            headers.append(("x-driftless-path-info", path[len(route):] or "/"))
            headers.append(("x-forwarded-host", request.host))
            headers.append(("x-forwarded-proto", request.scheme))
            if request.remote:
                headers.append(("x-forwarded-for", request.remote))
            sent = time.monotonic()
            try:
                async with self._serve.session().request(
                    request.method, f"http://127.0.0.1:{self._port}{path}", headers=headers, data=body,
                    allow_redirects=False, timeout=aiohttp.ClientTimeout(total=self.timeout_ms / 1000 + 5),
                ) as upstream:
                    data = await upstream.read()
                    status, out_headers = upstream.status, list(upstream.headers.items())
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise Unavailable(f"{self.tag}: its process did not answer ({type(exc).__name__}: {exc})",
                                  reason="crash") from None
            if status == 500 and _from_wasmtime(out_headers, data):
                raise await self.classify_failure(sent)
            response = web.Response(status=status, body=data)
            for name, value in out_headers:
                if name.lower() not in HOP_HEADERS:
                    response.headers.add(name, value)
            return response
        finally:
            self._inflight -= 1
            self._last_request = time.monotonic()

    async def classify_failure(self, sent: float) -> Unavailable:
        """wasmtime serve answers a trapped request with an empty 500 and logs why: read the why."""
        lines: list[str] = []
        for _ in range(40):  # wasmtime logs why after it answered: wait (briefly) for its "worker failed"
            lines = [text for at, text in self._errors if at >= sent - 0.01]
            if any(line.startswith("worker failed:") for line in lines):
                await asyncio.sleep(0.005)  # and for the cause lines that follow it
                lines = [text for at, text in self._errors if at >= sent - 0.01]
                break
            await asyncio.sleep(0.005)
        causes = [line for line in lines if _is_cause(line)]
        cause = causes[-1].removeprefix("wasm trap: ") if causes else (lines[-1] if lines else "no error output")
        limits = self.spec.limits
        low = " ".join(lines).lower()
        if "timed out" in low or "interrupt" in low:
            reason, text = "deadline", f"{self.tag} exceeded its deadline of {self.timeout_ms} ms per call"
        elif "fuel" in low:
            reason, text = "fuel", f"{self.tag} ran out of fuel ({limits.fuel} units per call)"
        elif limits.memory_bytes and ("memory" in low or "unreachable" in low):
            reason = "memory"
            text = f"{self.tag} trapped ({cause}) with memory capped at {limits.memory_bytes} bytes"
        else:
            reason, text = "trap", f"{self.tag} trapped: {cause}"
        self.restarts += 1  # a fresh instance serves the next request, as a restart would
        self.last_error = text
        self._on_change()
        return Unavailable(text, reason=reason)


def _from_wasmtime(headers: list[tuple[str, str]], body: bytes) -> bool:
    """wasmtime serve's own answer when the guest failed (not a 500 the component chose to send)."""
    html = any(k.lower() == "content-type" and v.startswith("text/html") for k, v in headers)
    return html and b"<h1>500 Internal Server Error</h1>" in body and b"wasmtime" in body


def _is_cause(line: str) -> bool:
    return line.startswith(("worker failed:", "wasm trap:", "error:", "Error:")) or "trap" in line


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.05):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
