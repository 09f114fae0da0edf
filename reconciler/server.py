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
import logging
import signal
import ssl
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


def run(settings: Settings, *, listen: str, ssl_context: ssl.SSLContext | None = None) -> int:
    async def main() -> None:
        server = ReconcilerServer(settings, listen=listen, ssl_context=ssl_context)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await server.start()
        try:
            await stop.wait()
        finally:
            log.info("event=stopping")
            await server.stop()

    asyncio.run(main())
    return 0
