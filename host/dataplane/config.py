"""Desired state -> HAProxy configuration text. Pure: no I/O, unit-tested (tests/host/test_dataplane_config.py).

One frontend on the host's ``--listen`` address; per route (longest prefix first) a backend of its
``wasmtime serve`` instances (server name: :func:`server_name` of the instance id), with the Python
ingress as a ``backup`` server (an idle, restarting or stopped instance is a server in ``maint``: the
request reaches Python, which wakes the instance or answers 503 with a reason). Everything else
- in-process components, links, ``/healthz``, 404s, requests carrying ``x-driftless-track`` and the
sampled shadow copies - goes to the Python ingress (the slow path).

Canary split, computed natively: bucket = crc32(client id) mod 10000 (``x-driftless-client`` header,
else the ``driftless-client`` cookie; host/traffic.py ``client_bucket`` is the same function), else
``rand(10000)``; bucket < weight x 100 -> the canary backend.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

# headers only the host reads; a client's values are dropped at the door
INTERNAL_HEADER = "x-driftless-internal"  # the agent's secret: this request comes from the data plane
PEER_HEADER = "x-driftless-peer"  # the client's address (the Python ingress sees HAProxy's)
SHADOW_HEADER = "x-driftless-shadow"  # serve the stable side and mirror to the canary (sampled here)
PYTHON_SERVER = "python"
# the Python ingress behind HAProxy listens on a loopback address of its own (Linux routes 127/8 to lo),
# on a port the kernel picks: it never takes a 127.0.0.1 port someone else has chosen and not bound yet
PYTHON_HOST = "127.0.0.2"
# one request in LOG_SAMPLE reaches the agent's log reader (reading every one cost it ~20 µs of CPU a
# request); each sampled line counts LOG_SAMPLE times in the latency histogram
LOG_SAMPLE = 8
TRAP_PATH = "/.driftless/internal/trap"  # the Lua action asks the agent why wasmtime answered 500
_SAFE_ROUTE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


def server_name(instance_id: str) -> str:
    """A server name HAProxy accepts, stable for an instance id (ids hold '/')."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", instance_id)[:80]
    return f"{base}-{hashlib.sha256(instance_id.encode()).hexdigest()[:8]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    name: str  # server_name(instance id)
    port: int  # 0: no process now (maint at a placeholder address)
    ready: bool  # False: maint (idle, starting, restarting, draining)
    max_conn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Backend:
    name: str
    route: str
    servers: tuple[Server, ...]
    track: str | None = None  # the side this backend is under a split (the x-driftless-track answer)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    prefix: str  # "/" or "/a/b" (no trailing slash)
    stable: Backend | None = None  # None: the Python ingress serves this route (in-process components)
    canary: Backend | None = None  # a split: both sides have serving instances
    weight: int = 0  # percent to the canary
    shadow_sample: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Plane:
    listen: tuple[str, int]
    python_port: int  # the Python ingress, on loopback
    secret: str
    routes: tuple[Route, ...]
    max_body_bytes: int
    server_timeout_ms: int
    run_dir: str  # sockets, error files, the Lua action
    threads: int = 1  # HAProxy's nbthread (proxy_threads(): the components get the cores)


def proxy_threads(cpus: int) -> int:
    """HAProxy's threads on a machine of ``cpus``: one per four CPUs. The components, not the proxy, need
    the cores: one thread proxies tens of thousands of small requests a second, and on 2 CPUs a second
    thread took 10 % of the component's throughput (bare HAProxy before `wasmtime serve`, wrk -c16:
    0.80x plain with 2 threads, 0.87-0.89x with 1)."""
    return max(1, cpus // 4)


def routable(prefix: str) -> bool:
    """A route the config can name safely; others stay on the Python path."""
    return prefix == "/" or bool(_SAFE_ROUTE.match(prefix)) and "//" not in prefix


def structure(plane: Plane) -> Plane:
    """The plane without what the runtime API changes (ports, ready): equal -> no reload needed."""
    def strip(b: Backend | None) -> Backend | None:
        if b is None:
            return None
        return Backend(name=b.name, route=b.route, track=b.track,
                       servers=tuple(Server(name=s.name, port=0, ready=False, max_conn=s.max_conn) for s in b.servers))

    routes = tuple(Route(prefix=r.prefix, stable=strip(r.stable), canary=strip(r.canary), weight=r.weight,
                         shadow_sample=r.shadow_sample) for r in plane.routes)
    return Plane(listen=plane.listen, python_port=plane.python_port, secret=plane.secret, routes=routes,
                 max_body_bytes=plane.max_body_bytes, server_timeout_ms=plane.server_timeout_ms, run_dir=plane.run_dir,
                 threads=plane.threads)


def backends(plane: Plane) -> list[Backend]:
    return [b for r in plane.routes for b in (r.stable, r.canary) if b is not None]


def _acl(i: int, prefix: str) -> list[str]:
    if prefix == "/":
        return [f"  acl r{i} always_true"]
    return [f"  acl r{i} path -m str {prefix}", f"  acl r{i} path_beg {prefix}/"]


def _json(data: dict[str, str]) -> str:
    return json.dumps(data, separators=(",", ":"))


def error_files(plane: Plane) -> dict[str, str]:
    """HAProxy's own answers (a request caught while an instance stops or starts), as JSON with a reason."""
    def http(status: str, body: dict[str, str]) -> str:
        text = _json(body)
        return (f"HTTP/1.1 {status}\r\ncache-control: no-cache\r\nconnection: close\r\n"
                f"content-type: application/json\r\ncontent-length: {len(text)}\r\n\r\n{text}")

    return {
        "503.http": http("503 Service Unavailable", {
            "error": "no instance could take the request now (stopping, starting or busy); try again",
            "reason": "unavailable"}),
        "502.http": http("502 Bad Gateway", {"error": "the instance's process did not answer", "reason": "crash"}),
        "504.http": http("504 Gateway Timeout", {"error": "the instance did not answer in time", "reason": "deadline"}),
    }


def lua_action(plane: Plane) -> str:
    """Why did wasmtime answer 500? The agent reads the process's log (host/served.py classifies it):
    asked once per such answer, off the fast path."""
    url = f"http://{PYTHON_HOST}:{plane.python_port}{TRAP_PATH}"
    return f"""-- generated by the driftless host agent: ask it why wasmtime serve answered 500
core.register_action("driftless_trap", {{"http-res"}}, function(txn)
  local srv = txn.f:srv_name() or ""
  local t0 = txn:get_var("txn.t0") or 0
  local hc = core.httpclient()
  local r = hc:post{{url="{url}", headers={{["{INTERNAL_HEADER}"]={{"{plane.secret}"}}}},
                    body=srv .. "\\n" .. tostring(t0)}}
  if r and r.status == 200 and r.body then txn:set_var("txn.trap", r.body) end
end, 0)
"""


def render(plane: Plane) -> str:
    """The whole configuration text."""
    run = plane.run_dir
    host, port = plane.listen
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    out = [
        "# generated by the driftless host agent from its desired state: do not edit",
        "global",
        f"  nbthread {plane.threads}",
        f"  stats socket {run}/admin.sock mode 600 level admin",
        f"  lua-load {run}/trap.lua",
        f"  log {run}/log.sock len 512 format raw sample 1:{LOG_SAMPLE} local0",
        "  hard-stop-after 60s",
        "defaults",
        "  mode http",
        "  log global",
        # small answers go out at once (no MSG_MORE coalescing): -60 µs a request at one connection here
        "  option http-no-delay",
        "  option dontlognull",
        "  timeout connect 2s",
        "  timeout client 65s",
        f"  timeout server {plane.server_timeout_ms}ms",
        "  timeout http-keep-alive 5s",
        # after a reload the old worker answers a kept-alive client's next request (with connection:
        # close) instead of closing under it: no client sees a reset for a reload
        "  option idle-close-on-response",
        "  timeout queue 5s",
        "  retries 2",
        "  option redispatch",
        f"  errorfile 503 {run}/503.http",
        f"  errorfile 502 {run}/502.http",
        f"  errorfile 504 {run}/504.http",
        "",
        "frontend ingress",
        f"  bind {bind}",
        # server, status, total ms: the per-digest latency histogram (host/dataplane/stats.py)
        '  log-format "%b %s %ST %Ta"',
        f"  http-request del-header {INTERNAL_HEADER}",
        f"  http-request del-header {PEER_HEADER}",
        f"  http-request del-header {SHADOW_HEADER}",
        "  http-request set-var(txn.t0) date(0,ms)",
        f"  http-request return status 413 content-type application/json string "
        f"'{_json({'error': f'the request body is larger than {plane.max_body_bytes} bytes', 'reason': 'too-large'})}'"
        f" if {{ req.hdr_val(content-length) gt {plane.max_body_bytes} }}",
        "  acl reserved path_beg /.driftless/",
        "  acl healthz path -m str /healthz",
        # a streamed body has no length to check here: the Python ingress counts it against the limit
        "  acl streamed_body req.hdr(transfer-encoding) -m found",
    ]
    routes = sorted(plane.routes, key=lambda r: (-len(r.prefix), r.prefix))
    if any(r.canary is not None for r in routes):
        out += [
            "  http-request set-var(txn.cid) req.hdr(x-driftless-client) if { req.hdr(x-driftless-client) -m len gt 0 }",
            "  http-request set-var(txn.cid) req.cook(driftless-client) if !{ var(txn.cid) -m found } "
            "{ req.cook(driftless-client) -m len gt 0 }",
            "  http-request set-var(txn.bucket) var(txn.cid),crc32,mod(10000) if { var(txn.cid) -m found }",
            "  http-request set-var(txn.bucket) rand(10000) if !{ var(txn.bucket) -m found }",
        ]
    uses = ["  use_backend python if reserved || healthz || streamed_body"]
    for i, r in enumerate(routes):  # the longest matching route wins: its index in txn.r
        out += _acl(i, r.prefix)
        out.append(f"  http-request set-var(txn.r) int({i}) if !{{ var(txn.r) -m found }} r{i}")
        out.append(f"  acl m{i} var(txn.r) -m int {i}")
        if r.stable is None:
            uses.append(f"  use_backend python if m{i}")
            continue
        if r.canary is not None:
            uses.append(f"  use_backend python if m{i} {{ req.hdr(x-driftless-track) -m found }}")
            uses.append(f"  use_backend {r.canary.name} if m{i} {{ var(txn.bucket) -m int lt {r.weight * 100} }}")
            if r.shadow_sample > 0:
                cut = min(10_000, max(1, round(r.shadow_sample * 10_000)))
                out.append(f"  http-request set-header {SHADOW_HEADER} 1 if m{i} {{ rand(10000) lt {cut} }}")
                uses.append(f"  use_backend python if m{i} {{ req.hdr({SHADOW_HEADER}) -m found }}")
        uses.append(f"  use_backend {r.stable.name} if m{i}")
    out += uses
    out += ["  default_backend python", "", "backend python",
            f"  http-request set-header {INTERNAL_HEADER} {plane.secret}",
            f"  http-request set-header {PEER_HEADER} %[src]",
            f"  server {PYTHON_SERVER} {PYTHON_HOST}:{plane.python_port}"]
    for b in backends(plane):
        out += ["", *_backend(b, plane)]
    return "\n".join(out) + "\n"


def _backend(b: Backend, plane: Plane) -> list[str]:
    route = "" if b.route == "/" else b.route
    lines = [
        f"backend {b.name}",
        "  balance roundrobin",
        "  http-reuse always",
        "  option forwardfor",
        # what the Python path gives a component: no private header, the route and the path below it
        "  http-request del-header ^x-driftless- -m reg",
        f"  http-request set-header x-driftless-route {route or '/'}",
        f"  http-request set-var(txn.pi) pathq,bytes({len(route)})" if route else "  http-request set-var(txn.pi) pathq",
        "  http-request set-header x-driftless-path-info %[var(txn.pi)] if { var(txn.pi) -m len gt 0 }",
        "  http-request set-header x-driftless-path-info / if !{ var(txn.pi) -m len gt 0 }",
        "  http-request set-header x-forwarded-host %[req.hdr(host)]",
        "  http-request set-header x-forwarded-proto http",
        # wasmtime's own 500 (the guest trapped): the agent reads why from the process's log
        "  http-response wait-for-body time 1s if { status 500 } { res.hdr(content-type) -m beg text/html }",
        "  http-response lua.driftless_trap if { status 500 } { res.hdr(content-type) -m beg text/html } "
        "{ res.body -m sub wasmtime }",
        '  http-response return status 503 content-type application/json lf-string "%[var(txn.trap)]" '
        "if { var(txn.trap) -m found }",
    ]
    if b.track:
        lines.append(f"  http-response set-header x-driftless-track {b.track}")
    for s in b.servers:
        addr = f"127.0.0.1:{s.port or 1}"
        lines.append(f"  server {s.name} {addr} maxconn {s.max_conn}{'' if s.ready and s.port else ' disabled'}")
    lines.append(f"  server {PYTHON_SERVER} {PYTHON_HOST}:{plane.python_port} backup")
    return lines


def server_states(plane: Plane) -> dict[tuple[str, str], tuple[int, bool]]:
    """(backend, server) -> (port, ready): what the runtime API keeps current between reloads."""
    return {(b.name, s.name): (s.port, s.ready and bool(s.port)) for b in backends(plane) for s in b.servers}


def backend_name(index: int, side: str) -> str:
    return f"route{index}_{side}"


def sorted_routes(prefixes: Sequence[str]) -> list[str]:
    return sorted(set(prefixes), key=lambda p: (-len(p), p))
