"""The registry's HTTP server: starting and stopping it (the request handler is registry.handler).

Run it from the CLI (``driftless registry serve``), in-process in a thread::

    from registry.server import ServerOptions, serve_in_thread
    running = serve_in_thread(ServerOptions(root=Path("data/registry"), port=0))
    running.url   # "http://127.0.0.1:43121"
    running.stop()

or as a blocking call: ``serve(options)``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from registry.handler import RegistryApp
from registry.maintenance import REPLICA_HEARTBEAT, Replica
from registry.metrics import Metrics
from registry.options import ServerOptions
from registry.storage import FilesystemStorage, Storage
from registry.store import Registry

__all__ = ["RunningRegistry", "ServerOptions", "make_handler", "serve", "serve_in_thread", "start"]

log = logging.getLogger("driftless.registry")


def build_registry(root: Path, *, cache_ttl: float | None = None) -> tuple[Registry, FilesystemStorage]:
    storage = FilesystemStorage(root)
    storage.clean_temp(older_than=3600)
    return Registry(storage, cache_ttl=cache_ttl), storage


def open_storage(options: ServerOptions) -> Storage | None:
    """The driver ``options.storage`` names (an S3 bucket), or None for the filesystem under ``root``."""
    if options.storage is None:
        return None
    from registry.storage_s3 import S3Storage

    return S3Storage.from_url(options.storage, endpoint=options.s3_endpoint)


def make_handler(options: ServerOptions, *, storage: Storage | None = None) -> RegistryApp:
    if storage is None:
        storage = open_storage(options)
    if storage is None:
        registry, fs = build_registry(options.root, cache_ttl=options.cache_ttl)
        blobs_dir: Path | None = fs.root / "blobs"
    else:
        registry, blobs_dir = Registry(storage, cache_ttl=options.cache_ttl), None
    return RegistryApp(registry, options, metrics=Metrics(blobs_dir=blobs_dir))


def _ssl_context(options: ServerOptions) -> ssl.SSLContext | None:
    if not options.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(options.tls_cert), str(options.tls_key) if options.tls_key else None)
    return ctx


async def start(options: ServerOptions, *, storage: Storage | None = None, reuse_port: bool = False,
                replica_record: bool = True) -> tuple[web.BaseRunner, str]:
    """Start serving on the running loop; returns the runner (``await runner.cleanup()`` stops) and the URL.

    ``storage`` replaces the filesystem driver under ``options.root`` (e.g. ``MemoryStorage()``);
    ``reuse_port`` listens with SO_REUSEPORT (a worker of registry.workers); ``replica_record`` keeps
    this server's record in a shared store (one worker per server does)."""
    app = make_handler(options, storage=storage)
    server = web.Server(app.handle, access_log=None, handler_cancellation=True)
    runner = web.ServerRunner(server, access_log=None)
    await runner.setup()
    ctx = _ssl_context(options)
    site = web.TCPSite(runner, options.host, options.port, ssl_context=ctx, backlog=1024, reuse_port=reuse_port or None)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else options.port
    scheme = "https" if ctx else "http"
    host = f"[{options.host}]" if ":" in options.host else options.host
    url = f"{scheme}://{host}:{port}"
    _STORAGES[runner] = app.registry.storage
    if options.storage is not None and replica_record:  # shared storage: who serves it, read-only or not (gc)
        replica = Replica(app.registry.storage, read_only=options.read_only, url=url)
        await asyncio.get_running_loop().run_in_executor(None, replica.beat)
        _REPLICAS[runner] = (replica, asyncio.create_task(_heartbeat(replica)))
    return runner, url


_REPLICAS: dict[web.BaseRunner, tuple[Replica, asyncio.Task[None]]] = {}
_STORAGES: dict[web.BaseRunner, Storage] = {}


async def _heartbeat(replica: Replica) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(REPLICA_HEARTBEAT)
        try:
            await loop.run_in_executor(None, replica.beat)
        except Exception as exc:  # the storage is unreachable for a moment: the next beat retries
            log.warning("could not refresh this replica's record: %s", exc)


async def _forget_replica(runner: web.BaseRunner) -> None:
    storage = _STORAGES.pop(runner, None)
    aclose = getattr(storage, "aclose", None)  # the S3 driver's HTTP sessions on this loop
    if aclose is not None:
        await aclose()
    entry = _REPLICAS.pop(runner, None)
    if entry is not None:
        entry[1].cancel()
        try:
            await asyncio.get_running_loop().run_in_executor(None, entry[0].remove)
        except Exception as exc:
            log.warning("could not remove this replica's record: %s", exc)


def serve(options: ServerOptions, *, on_ready: Any = None, reuse_port: bool = False,
          replica_record: bool = True) -> int:
    """Serve until SIGINT/SIGTERM (blocking) from this process (``registry.workers`` runs several);
    returns the exit status."""

    async def main() -> None:
        runner, url = await start(options, reuse_port=reuse_port, replica_record=replica_record)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if on_ready:
            on_ready(url)
        else:
            log.info("registry serving %s (storage %s)", url, options.storage or options.root)
        await stop.wait()
        await runner.cleanup()
        await _forget_replica(runner)

    asyncio.run(main())
    return 0


@dataclass
class RunningRegistry:
    url: str
    _loop: asyncio.AbstractEventLoop
    _runner: web.BaseRunner
    _thread: threading.Thread

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        asyncio.run_coroutine_threadsafe(_forget_replica(self._runner), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def serve_in_thread(options: ServerOptions, *, storage: Storage | None = None) -> RunningRegistry:
    """Run the registry on a background thread's event loop (port 0 picks a free port); stop() ends it."""
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            ready["runner"], ready["url"] = loop.run_until_complete(start(options, storage=storage))
        except BaseException as exc:
            ready["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, name="driftless-registry", daemon=True)
    thread.start()
    started.wait(30)
    if "error" in ready:
        raise ready["error"]
    return RunningRegistry(url=ready["url"], _loop=loop, _runner=ready["runner"], _thread=thread)
