"""The host's HTTP ingress (``--listen``): route by longest ``route`` prefix, round-robin over its
instances, and turn limits into 503 with a reason. In-process components are called in a worker
thread; ``wasi:http`` components are proxied to their ``wasmtime serve`` process.

It also carries HTTP links, and only declared ones (no side doors, :mod:`host.link_auth`): a
component reaches a linked component at ``/.driftless/links/<credential>/<component>/<path>`` on its
own host (given to it as ``<COMPONENT>_URL``; the credential is the instance's own and opens only the
links its application declares, from this machine), and the ingress serves it from a local instance
or forwards it to a host that runs one: one hop, to ``/.driftless/links/<env>/<app>/<component>/...``,
marked with ``x-driftless-link-hop`` (so it never loops) and carrying the reconciler's token for that
link target (``x-driftless-link-token``), which the receiving host checks against its own desired
state. Anything else on the link path gets 403 and reaches no component. When the target moves, the
reconciler sends the new endpoints and callers follow without a restart.

Metrics are not here: ``GET /metrics`` on the admin listener (host/admin.py), with a credential.
``x-driftless-track`` forces a canary side only with the host's track token (host/traffic.py).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from host.dataplane.config import INTERNAL_HEADER, PEER_HEADER, SHADOW_HEADER, TRAP_PATH
from host.errors import HostError, Unavailable
from host.link_auth import HOP_HEADER, HOP_TOKEN_HEADER, HopTokens, is_local_caller
from host.runtime import ComponentInstance, HttpRequest
from host.served import HOP_HEADERS, ServedInstance, ServeRuntime
from host.supervisor import Instance, Supervisor
from host.traffic import matches, trusted_track
from wire.traffic import STABLE, TRACK_HEADER, TRACK_TOKEN_HEADER

_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
# headers aiohttp computes itself; a component's values would contradict the real body
_SKIP_RESPONSE_HEADERS = {"content-length", "transfer-encoding", "connection"}
# the credentials the ingress reads; a component never sees them
_PRIVATE_HEADERS = frozenset({TRACK_HEADER, TRACK_TOKEN_HEADER, HOP_HEADER, HOP_TOKEN_HEADER, INTERNAL_HEADER,
                              PEER_HEADER, SHADOW_HEADER})
# never sent on to another host: this hop's own headers and the data plane's
_NOT_FORWARDED = frozenset({HOP_HEADER, HOP_TOKEN_HEADER, INTERNAL_HEADER, PEER_HEADER, SHADOW_HEADER})
RESERVED_PREFIX = "/.driftless/"  # the ingress's own paths (model/semantic.py refuses routes below it)
LINKS_PREFIX = "/.driftless/links/"
LINK_TIMEOUT_SECONDS = 60.0
OLD_METRICS_PATH = "/.driftless/metrics"  # moved to the admin listener's /metrics: answered 404 with the way
HEALTHZ_PATH = "/healthz"  # the ingress's own liveness (200, or 503 while draining), before any route


def _json_error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def make_ingress_app(
    *, supervisor: Supervisor, pool: ThreadPoolExecutor, stopping: Callable[[], bool], max_body_bytes: int,
    serve: ServeRuntime, track_token: str | None = None, plane_secret: str | None = None,
    explain_trap: Callable[[str, int], Awaitable[dict[str, str] | None]] | None = None,
) -> web.Application:
    """``track_token``: the token that makes ``x-driftless-track`` honoured (None: never).
    ``plane_secret``: behind the native data plane (host/dataplane), the secret its requests carry:
    they name the client's address and the shadow sample HAProxy took; ``explain_trap``: why wasmtime
    answered 500 to a request HAProxy sent it (its Lua action asks)."""
    rr = itertools.count()
    traffic = supervisor.traffic
    mirrors: set[asyncio.Task[None]] = set()
    hop_tokens = HopTokens()
    own_hosts = tuple(h for h in (urlsplit(serve.links_base).hostname,) if h)

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

    def from_plane(request: web.Request) -> bool:
        given = request.headers.get(INTERNAL_HEADER)
        return bool(plane_secret and given and hmac.compare_digest(given.encode(), plane_secret.encode()))

    async def split_call(instances: list[Instance], request: web.Request, path: str) -> web.StreamResponse:
        """One of ``instances`` answers; under a canary split, the side by weight (or sticky), and
        maybe a shadow copy to the canary, compared and discarded (host/traffic.py)."""
        shadowed = from_plane(request) and bool(request.headers.get(SHADOW_HEADER))  # HAProxy sampled it
        forced = trusted_track(request.headers, token=track_token) or (STABLE if shadowed else None)
        chosen, side, shadow = traffic.choose(instances, headers=request.headers, cookies=request.cookies,
                                              pick=supervisor.pick, forced=forced,
                                              mirror=True if shadowed else None)
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
        if from_plane(request) and (peer := request.headers.get(PEER_HEADER)):
            request = request.clone(remote=peer)  # the client's address, not HAProxy's
        if request.path == TRAP_PATH and request.method == "POST" and from_plane(request) and explain_trap:
            server, _, t0 = (await request.text()).partition("\n")
            explained = await explain_trap(server.strip(), int(t0.strip() or 0) if t0.strip().isdigit() else 0)
            return web.json_response(explained) if explained else _json_error(404, "no such server")
        if stopping():
            return _json_error(503, "host is shutting down", reason="draining")
        if request.path.startswith(LINKS_PREFIX):
            if request.headers.get(HOP_HEADER):
                return await serve_hop(request)
            return await serve_link(request)
        if request.path.startswith(RESERVED_PREFIX):
            hint = ("the host's metrics are served by its admin listener at /metrics (--admin-listen), with its "
                    "metrics token (--metrics-token-file) or admin token" if request.path == OLD_METRICS_PATH
                    else "paths below /.driftless/ belong to the host")
            return _json_error(404, f"nothing is served at {request.path}", hint=hint)
        if request.path == HEALTHZ_PATH and request.method in ("GET", "HEAD"):
            return web.json_response({"status": "ok"})
        match = supervisor.route(request.path)
        if match is None:
            return _json_error(404, f"no component is exposed at {request.path}", path=request.path)
        _route, instances = match
        return await split_call(instances, request, request.path_qs)

    def with_query(request: web.Request, rest: str) -> str:
        path = "/" + rest
        return path + "?" + request.query_string if request.query_string else path

    async def serve_link(request: web.Request) -> web.StreamResponse:
        """A local instance calls one of its declared links: /.driftless/links/<credential>/<component>/..."""
        parts = request.path[len(LINKS_PREFIX):].split("/", 2)
        if len(parts) < 2 or not all(parts[:2]):
            return _json_error(403, f"a link URL is {LINKS_PREFIX}<credential>/<component>/<path>, as handed to "
                                    "an instance in its <COMPONENT>_URL", reason="link-refused")
        grant = serve.links.grant(parts[0]) if is_local_caller(request.remote, own_hosts=own_hosts) else None
        if grant is None:  # the path is not echoed: it holds what was tried as a credential
            return _json_error(403, "link refused: the link path serves only the instances on this host, each "
                                    "with the URL it was given for a link its application declares",
                               reason="link-refused")
        component = parts[1]
        if component not in grant.targets:
            declared = ", ".join(sorted(grant.targets)) or "none"
            return _json_error(403, f"link refused: application {grant.env}/{grant.app} declares no HTTP link from "
                                    f"{grant.instance} to {component} (its HTTP links: {declared}); add one to "
                                    "its spec.links", reason="link-refused")
        env, app = grant.env, grant.app
        path = with_query(request, parts[2] if len(parts) > 2 else "")
        local = supervisor.http_link_targets(env=env, app=app, component=component)
        if local:
            return await split_call(local, request, path)
        endpoints = supervisor.remote_link_endpoints(env=env, app=app, component=component)
        if not endpoints:
            return _json_error(503, f"link target {env}/{app}/{component} runs nowhere (no Ready host has it)",
                               reason="link")
        token = hop_tokens.to_send(supervisor.desired, (env, app, component))
        if token is None:
            return _json_error(503, f"link target {env}/{app}/{component} runs on another host, and this host has "
                                    "no link token to reach it (only a desired state from the reconciler carries "
                                    "one)", reason="link")
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items()
                   if k.lower() not in HOP_HEADERS and k.lower() not in _NOT_FORWARDED]
        headers += [(HOP_HEADER, "1"), (HOP_TOKEN_HEADER, token)]
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

    async def serve_hop(request: web.Request) -> web.StreamResponse:
        """Another host forwards a link call: /.driftless/links/<env>/<app>/<component>/... with the
        reconciler's token for that link target."""
        parts = request.path[len(LINKS_PREFIX):].split("/", 3)
        if len(parts) < 3 or not all(parts[:3]):
            return _json_error(403, f"a forwarded link is {LINKS_PREFIX}<env>/<app>/<component>/<path> with "
                                    f"{HOP_TOKEN_HEADER}", reason="link-refused")
        env, app, component = parts[:3]
        if not hop_tokens.accepts(supervisor.desired, (env, app, component), request.headers.get(HOP_TOKEN_HEADER, "")):
            return _json_error(403, f"forwarded link to {env}/{app}/{component} refused: it needs the link token "
                                    "the reconciler gives the hosts whose instances link to it", reason="link-refused")
        local = supervisor.http_link_targets(env=env, app=app, component=component)
        if not local:
            return _json_error(503, f"no instance of {env}/{app}/{component} runs on this host", reason="link")
        return await split_call(local, request, with_query(request, parts[3] if len(parts) > 3 else ""))

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
        headers=[(k.lower(), v) for k, v in request.headers.items() if k.lower() not in _PRIVATE_HEADERS],
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
