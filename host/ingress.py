"""The host's HTTP ingress (``--listen``): route by longest ``route`` prefix, round-robin over its
instances, run the call in a worker thread, and turn limits into 503 with a reason."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from host.errors import HostError, Unavailable
from host.runtime import HttpRequest
from host.supervisor import Supervisor

_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
# headers aiohttp computes itself; a component's values would contradict the real body
_SKIP_RESPONSE_HEADERS = {"content-length", "transfer-encoding", "connection"}


def _json_error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def make_ingress_app(
    *, supervisor: Supervisor, pool: ThreadPoolExecutor, stopping: Callable[[], bool], max_body_bytes: int
) -> web.Application:
    async def serve(request: web.Request) -> web.StreamResponse:
        if stopping():
            return _json_error(503, "host is shutting down", reason="draining")
        match = supervisor.route(request.path)
        if match is None:
            return _json_error(404, f"no component is exposed at {request.path}", path=request.path)
        _route, instances = match
        instance = supervisor.pick(instances)
        body = await request.read()
        call = HttpRequest(
            method=request.method,
            path=request.path_qs,
            headers=[(k.lower(), v) for k, v in request.headers.items()],
            body=body,
        )
        try:
            response = await asyncio.get_running_loop().run_in_executor(pool, instance.handle, call)
        except Unavailable as exc:
            return _json_error(503, str(exc), reason=exc.reason, instance=instance.spec.id)
        except HostError as exc:
            return _json_error(502, str(exc), instance=instance.spec.id)
        out = web.Response(status=response.status, body=response.body)
        for name, value in response.headers:
            if name.lower() in _SKIP_RESPONSE_HEADERS:
                continue
            if not _TOKEN_RE.match(name) or any(c in value for c in "\r\n\0"):
                return _json_error(502, f"{instance.tag} answered an invalid header {name!r}", instance=instance.spec.id)
            out.headers.add(name, value)
        return out

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_route("*", "/{tail:.*}", serve)
    return app
