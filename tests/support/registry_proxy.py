"""A capture HTTP server posing as a foreign registry: it records every request (method, path and the
``Authorization`` header it carried) and forwards it to a real registry, so pulls and reviews through it
work while the test sees which credential, if any, reached it.

    with RecordingProxy(upstream="http://127.0.0.1:5000") as evil:
        evil.host                  # 127.0.0.1:PORT, as an image names its registry
        evil.authorizations()      # every Authorization header that arrived (none: [])
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp import web

from tests.support.http_server import ThreadedServer

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    path: str
    authorization: str | None


class RecordingProxy:
    def __init__(self, *, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._server = ThreadedServer(app)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.seen.append(Seen(request.method, request.path_qs, request.headers.get("Authorization")))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with aiohttp.ClientSession() as session, session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            return web.Response(status=answer.status, body=body,
                                headers={k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP})

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.port}"

    def paths(self) -> list[str]:
        with self._lock:
            return [s.path for s in self.seen]

    def authorizations(self) -> list[str]:
        with self._lock:
            return [s.authorization for s in self.seen if s.authorization is not None]

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> RecordingProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
