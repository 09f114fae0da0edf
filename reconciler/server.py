"""Run a reconciler: the controller plus its HTTP API, in this process.

    server = ReconcilerServer(settings, listen="127.0.0.1:8080")
    await server.start()        # inside a running event loop
    ...
    await server.stop()

    run(settings, listen="127.0.0.1:8080")   # blocking, until SIGINT/SIGTERM (what the CLI does)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import ssl
import time
from pathlib import Path

from aiohttp import web

from reconciler.api.routes import build_app
from reconciler.controller.pipeline import Controller
from reconciler.settings import Settings
from shared import units
from shared.errors import UsageError

log = logging.getLogger("driftless.reconciler")


def parse_listen(listen: str) -> tuple[str, int]:
    try:
        return units.parse_listen(listen)
    except ValueError as exc:
        raise UsageError(f"--listen {exc}") from None


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from exc
    return ctx


class ReconcilerServer:
    def __init__(self, settings: Settings, *, listen: str = "127.0.0.1:8080",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = parse_listen(listen)
        self.ssl_context = ssl_context
        if settings.advertise_url is None:  # how followers name this one when it leads
            settings = dataclasses.replace(settings, advertise_url=self.url)
        self.settings = settings
        self.controller: Controller | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    async def start(self) -> None:
        self.controller = Controller(self.settings)
        await self.controller.start()
        self._runner = web.AppRunner(build_app(self.controller), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context, shutdown_timeout=1.0)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise UsageError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        log.info("event=listening url=%s repo=%s branch=%s path=%s", self.url, self.controller.git.url,
                 self.settings.branch, self.settings.path)
        s = self.settings
        if s.users_file is None:
            log.warning("event=no_users writes (promote, rollback, sync) are refused: start with --users-file; "
                        "reads are %s", "open" if s.read_token is None else "for the read token")
        elif s.open_reads:
            log.warning("event=open_reads reads need no credential (--open-reads); writes need a user of %s",
                        s.users_file)

    async def stop(self) -> None:
        if self.controller is not None:
            await self.controller.halt()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.controller is not None:
            await self.controller.stop()
            self.controller = None


GC_PAUSE_LOGGED = 0.05  # seconds: a garbage collection longer than this is logged (it stops the event loop)
GC_FREEZE_EVERY = 1.0  # seconds between moves of the surviving objects out of the collector's generations
GC_FULL_EVERY = 3600.0  # seconds between full collections of everything (cycles frozen meanwhile)


def log_gc_pauses() -> None:
    """Log each collection of the cyclic garbage collector that holds the event loop longer than
    GC_PAUSE_LOGGED (``event=gc-pause generation=2 seconds=0.412 objects=...``)."""
    started: list[float] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            took = time.perf_counter() - started[0]
            if took > GC_PAUSE_LOGGED:
                log.warning("event=gc-pause generation=%d seconds=%.3f collected=%d objects=%d", info["generation"],
                            took, info["collected"], len(gc.get_objects(info["generation"])))

    gc.callbacks.append(callback)


async def freeze_survivors(every: float = GC_FREEZE_EVERY, full_every: float = GC_FULL_EVERY) -> None:
    """Keep the cyclic garbage collector's full collections short.

    With 10,000 hosts the process holds ~900,000 objects the collector tracks (hosts, documents,
    reports, one open long-poll per host); a full collection walks them all, ~1 s during which the
    event loop stops, and the survivors of the hosts' requests trigger one every few seconds to a
    minute (hack/bench/control_plane.py: that was the ~1 s p99 of the report round trip). So every
    ``every`` seconds what the process holds is frozen (``gc.freeze``: O(1), out of every later
    collection; the automatic young collections in between still free the cycles that die young).
    Frozen objects are still freed by reference counting as usual; only a reference cycle that dies
    after being frozen (rare: the full collections of the benchmark found none) waits for the full
    collection done every ``full_every`` seconds (``gc.unfreeze`` then ``gc.collect``: one pause of
    ~1 s an hour at 10,000 hosts, logged as ``event=gc-pause``)."""
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(every)
        if time.monotonic() - last_full >= full_every:
            last_full = time.monotonic()
            gc.unfreeze()
            gc.collect()
        gc.freeze()


def run(settings: Settings, *, listen: str, ssl_context: ssl.SSLContext | None = None) -> int:
    log_gc_pauses()

    async def main() -> None:
        server = ReconcilerServer(settings, listen=listen, ssl_context=ssl_context)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await server.start()
        freezing = asyncio.create_task(freeze_survivors(), name="gc")  # this process only (not a test's)
        try:
            await stop.wait()
        finally:
            freezing.cancel()
            log.info("event=stopping")
            await server.stop()

    asyncio.run(main())
    return 0
