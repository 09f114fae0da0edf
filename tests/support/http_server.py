"""A real aiohttp server on 127.0.0.1 in its own thread, for synchronous tests (a webhook receiver,
GitHub's and GitLab's commit-status API):

    server = ThreadedServer(app)     # listening once this returns
    server.url                       # http://127.0.0.1:PORT
    server.close()
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class ThreadedServer:
    def __init__(self, app: web.Application) -> None:
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app)
        self.port = 0
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10), "the test's HTTP server did not start"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        started.set()
        self._loop.run_forever()
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class PathCapture:
    """A loopback HTTP server recording every request's path and query (an attacker's endpoint, or a
    granted outbound target); answers 200 "captured"."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self._server = ThreadedServer(app)
        self.port = self._server.port
        self.url = self._server.url

    async def _record(self, request: web.Request) -> web.Response:
        self.paths.append(request.path_qs)
        return web.Response(text="captured")

    def close(self) -> None:
        self._server.close()
