"""The host's HTTP ingress (``--listen``): route by longest ``route`` prefix, round-robin over its
instances, and turn limits into 503 with a reason. In-process components are called in a worker
thread; ``wasi:http`` components are proxied to their ``wasmtime serve`` process.

It also carries HTTP links, ``/.driftless/links/<env>/<app>/<component>/<path>``: a component
reaches a linked component by that URL on its own host (given to it as ``<COMPONENT>_URL``), and
the ingress serves it from a local instance or forwards it to a host that runs one (one hop,
marked with ``x-driftless-link-hop`` so it never loops). When the target moves, the reconciler
sends the new endpoints and callers follow without a restart.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from host.errors import HostError, Unavailable
from host.runtime import ComponentInstance, HttpRequest
from host.served import HOP_HEADERS, ServedInstance, ServeRuntime
from host.supervisor import Instance, Supervisor
from host.traffic import TrafficCollector, matches
from wire.traffic import TRACK_HEADER

_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
# headers aiohttp computes itself; a component's values would contradict the real body
_SKIP_RESPONSE_HEADERS = {"content-length", "transfer-encoding", "connection"}
LINKS_PREFIX = "/.driftless/links/"
HOP_HEADER = "x-driftless-link-hop"
LINK_TIMEOUT_SECONDS = 60.0
METRICS_PATH = "/.driftless/metrics"  # the host's Prometheus metrics (per-digest traffic)
HEALTHZ_PATH = "/healthz"  # the ingress's own liveness (200, or 503 while draining), before any route


def _json_error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def make_ingress_app(
    *, supervisor: Supervisor, pool: ThreadPoolExecutor, stopping: Callable[[], bool], max_body_bytes: int,
    serve: ServeRuntime,
) -> web.Application:
    rr = itertools.count()
    traffic = supervisor.traffic
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(TrafficCollector(traffic))
    mirrors: set[asyncio.Task[None]] = set()

    async def call(instance: Instance, request: web.Request, path: str) -> web.StreamResponse:
        started = time.perf_counter()
        reason: str | None = None
        fuel: int | None = None  # measured in-process only: `wasmtime serve` cannot tell (docs/host.md)
        try:
            if isinstance(instance, ServedInstance):
                response = await instance.forward(request, path=path)
            else:
                assert isinstance(instance, ComponentInstance)
                response, fuel = await _call_in_process(instance, request, path, pool)
        except Unavailable as exc:
            reason, fuel = exc.reason, exc.fuel
            response = _json_error(503, str(exc), reason=exc.reason, instance=instance.spec.id)
        except HostError as exc:
            response = _json_error(502, str(exc), instance=instance.spec.id)
        traffic.record(instance.spec, status=response.status, seconds=time.perf_counter() - started, reason=reason,
                       fuel=fuel)
        return response

    async def split_call(instances: list[Instance], request: web.Request, path: str) -> web.StreamResponse:
        """One of ``instances`` answers; under a canary split, the side by weight (or sticky), and
        maybe a shadow copy to the canary, compared and discarded (host/traffic.py)."""
        chosen, side, shadow = traffic.choose(instances, headers=request.headers, cookies=request.cookies,
                                              pick=supervisor.pick)
        response = await call(chosen, request, path)
        if side is not None:
            response.headers[TRACK_HEADER] = side
        if shadow is not None:
            task = asyncio.get_running_loop().create_task(mirror(shadow, request, path, response))
            mirrors.add(task)
            task.add_done_callback(mirrors.discard)
        return response

    async def mirror(shadow: Instance, request: web.Request, path: str, primary: web.StreamResponse) -> None:
        split = traffic.split_of(shadow.spec)
        answer = await call(shadow, request, path)
        compare = split.shadow_compare if split is not None else "status"
        same = matches(compare, (primary.status, getattr(primary, "body", b"") or b""),
                       (answer.status, getattr(answer, "body", b"") or b""))
        traffic.record_shadow(shadow.spec, matched=same)

    async def serve_route(request: web.Request) -> web.StreamResponse:
        if stopping():
            return _json_error(503, "host is shutting down", reason="draining")
        if request.path.startswith(LINKS_PREFIX):
            return await serve_link(request)
        if request.path == METRICS_PATH:
            return web.Response(body=generate_latest(metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})
        if request.path == HEALTHZ_PATH and request.method in ("GET", "HEAD"):
            return web.json_response({"status": "ok"})
        match = supervisor.route(request.path)
        if match is None:
            return _json_error(404, f"no component is exposed at {request.path}", path=request.path)
        _route, instances = match
        return await split_call(instances, request, request.path_qs)

    async def serve_link(request: web.Request) -> web.StreamResponse:
        parts = request.path[len(LINKS_PREFIX):].split("/", 3)
        if len(parts) < 3 or not all(parts[:3]):
            return _json_error(404, f"a link URL is {LINKS_PREFIX}<env>/<app>/<component>/<path>")
        env, app, component = parts[:3]
        path = "/" + (parts[3] if len(parts) > 3 else "")
        if request.query_string:
            path += "?" + request.query_string
        local = supervisor.http_link_targets(env=env, app=app, component=component)
        if local:
            return await split_call(local, request, path)
        if request.headers.get(HOP_HEADER):
            return _json_error(503, f"no instance of {env}/{app}/{component} runs on this host", reason="link")
        endpoints = supervisor.remote_link_endpoints(env=env, app=app, component=component)
        if not endpoints:
            return _json_error(503, f"link target {env}/{app}/{component} runs nowhere (no Ready host has it)",
                               reason="link")
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_HEADERS]
        headers.append((HOP_HEADER, "1"))
        start = next(rr)
        tried = []
        for i in range(len(endpoints)):  # the next host when one does not answer
            base = endpoints[(start + i) % len(endpoints)].rstrip("/")
            tried.append(base)
            try:
                async with serve.session().request(
                    request.method, f"{base}{LINKS_PREFIX}{env}/{app}/{component}{path}", headers=headers,
                    data=body, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=LINK_TIMEOUT_SECONDS),
                ) as upstream:
                    data = await upstream.read()
                    out = web.Response(status=upstream.status, body=data)
                    for name, value in upstream.headers.items():
                        if name.lower() not in HOP_HEADERS:
                            out.headers.add(name, value)
                    return out
            except (aiohttp.ClientError, TimeoutError):
                continue
        return _json_error(503, f"link target {env}/{app}/{component}: no host answered ({', '.join(tried)})",
                           reason="link")

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_route("*", "/{tail:.*}", serve_route)
    return app


async def _call_in_process(instance: ComponentInstance, request: web.Request, path: str,
                           pool: ThreadPoolExecutor) -> tuple[web.StreamResponse, int | None]:
    """The component's answer, and the fuel the call consumed."""
    body = await request.read()
    call = HttpRequest(
        method=request.method,
        path=path,
        headers=[(k.lower(), v) for k, v in request.headers.items()],
        body=body,
    )
    response = await asyncio.get_running_loop().run_in_executor(pool, instance.handle, call)
    out = web.Response(status=response.status, body=response.body)
    for name, value in response.headers:
        if name.lower() in _SKIP_RESPONSE_HEADERS:
            continue
        if not _TOKEN_RE.match(name) or any(c in value for c in "\r\n\0"):
            return _json_error(502, f"{instance.tag} answered an invalid header {name!r}",
                               instance=instance.spec.id), response.fuel
        out.headers.add(name, value)
    return out, response.fuel
