"""The dashboard: a web page served by the reconciler itself (docs/dashboard.md).

    GET /                    the page (reconciler/api/static/index.html)
    GET /static/{name}       its assets (app.js, app.css), from package data, no CDN
    GET /api/v1/stream       server-sent events: ``change`` whenever the controller's status, hosts,
                             drift, events or applied revision change (``?access_token=`` accepted here
                             only, since EventSource cannot send headers)
    GET /api/v1/commits?revision=SHA&...
                             full commit messages with their trailers (history entries keep the subject)
    GET /api/v1/whoami       who the credential is and where it may write (the page shows its promote,
                             approve and rollback buttons only there; the API decides anyway)

The page reads the ordinary JSON API (docs/reconciler.md) with the same credentials as any reader,
and writes through it (POST /api/v1/promote, /rollback) with the same rules as the CLI; this module
only serves files, says who the credential is and tells the page when to read again. The stream polls the
controller's in-memory state every 250 ms and sends an event when a hash of one part changes:
simple, and robust to every way the state can change.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import mimetypes
import re
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from reconciler.api.auth import User
from reconciler.api.context import CONTROLLER, USER, read_auth
from reconciler.controller.pipeline import Controller
from reconciler.gitops import approvals

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
STATIC_FILES = ("index.html", "app.js", "app.css")
PARTS = ("status", "hosts", "drift", "events", "applied")
REVISION_RE = re.compile(r"^[0-9a-f]{7,64}$")
MAX_COMMITS = 100


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    content_type: str


def _load_assets() -> dict[str, Asset]:
    folder = resources.files("reconciler.api") / "static"
    out: dict[str, Asset] = {}
    for name in STATIC_FILES:
        body = (folder / name).read_bytes()
        ctype = {"js": "text/javascript", "css": "text/css", "html": "text/html"}.get(name.rpartition(".")[2]) \
            or mimetypes.guess_type(name)[0] or "application/octet-stream"
        out[name] = Asset(body=body, gzipped=gzip.compress(body, 9, mtime=0),
                          etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"', content_type=ctype)
    return out


@dataclass(slots=True)
class Streams:
    """The open streams of one application: they end at shutdown (checked every poll) instead of
    holding the server for its shutdown timeout."""

    open: int = 0
    stopping: bool = False
    taken_at: float = 0.0  # the last snapshot, shared by every open stream (one computation per poll)
    last: dict[str, str] | None = None

    def snapshot(self, controller: Controller) -> dict[str, str]:
        now = time.monotonic()
        if self.last is None or now - self.taken_at >= POLL_SECONDS * 0.8:
            self.last, self.taken_at = snapshot(controller), now
        return self.last


ASSETS: web.AppKey[dict[str, Asset]] = web.AppKey("dashboard_assets", dict)
STREAMS: web.AppKey[Streams] = web.AppKey("dashboard_streams", Streams)


def _serve(request: web.Request, name: str) -> web.Response:
    asset = request.app[ASSETS].get(name)
    if asset is None:
        return web.json_response({"error": f"no static file {name!r}; known: {', '.join(STATIC_FILES)}"},
                                 status=404)
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",  # revalidate (304) every time: a new reconciler version is seen at once
        "Content-Type": f"{asset.content_type}; charset=utf-8",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if name == "index.html":
        headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        )
        headers["Referrer-Policy"] = "no-referrer"
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(body=asset.gzipped, headers={**headers, "Content-Encoding": "gzip"})
    return web.Response(body=asset.body, headers=headers)


async def index(request: web.Request) -> web.StreamResponse:
    """The page itself holds no data (it reads the API), so it is served without a token."""
    return _serve(request, "index.html")


async def static(request: web.Request) -> web.StreamResponse:
    return _serve(request, request.match_info["name"])


# ---------------------------------------------------------------- change detection
def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def snapshot(controller: Controller) -> dict[str, str]:
    """A hash per part of what the page shows; a part whose hash changes is read again by the page.
    Timestamps that move on their own (heartbeats, last seen) are left out."""
    tracker = controller.tracker
    status = [tracker.app_status(env, app) for env, app in sorted(tracker.views)]
    hosts = []
    for name, h in sorted(controller.fleet.hosts.items()):
        rep = controller.fleet.reports.get(name)
        pub = controller.fleet.published.get(name)
        instances = [
            {"id": i.get("id"), "status": i.get("status"), "restarts": i.get("restarts"),
             "lastError": i.get("lastError"), "digest": i.get("digest"), "config": i.get("config")}
            for i in (rep[0].to_json().get("instances", []) if rep else [])
        ]
        hosts.append({"name": name, "state": h.state, "labels": dict(h.registration.labels),
                      "generation": pub[0].generation if pub else 0, "instances": instances})
    last = controller.store.events(limit=1)
    return {
        "status": _digest({"status": status, "unplaced": [u.to_json() for u in controller.unplaced],
                           "rejected": controller.rejected.to_json() if controller.rejected else None,
                           "head": controller.head.revision if controller.head else None,
                           "lastError": controller.last_error,
                           "approvals": controller.store.get(approvals.STORE_KEY)}),
        "hosts": _digest(hosts),
        "drift": _digest([i.to_json() for i in tracker.drift_items]),
        "events": str(last[-1].id) if last else "0",
        "applied": _digest(controller.envs.applied),  # per environment: a change in any one shows
    }


def _with_query_token(request: web.Request) -> web.Request:
    """EventSource cannot send headers: ``?access_token=`` stands for the Bearer header, here only."""
    token = request.query.get("access_token")
    if token and "Authorization" not in request.headers:
        return request.clone(headers={**request.headers, "Authorization": f"Bearer {token}"})
    return request


@read_auth
async def _stream(request: web.Request) -> web.StreamResponse:
    controller: Controller = request.app[CONTROLLER]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache, no-transform",
        "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    })
    await response.prepare(request)
    streams = request.app[STREAMS]
    streams.open += 1
    seen = streams.snapshot(controller)
    await response.write(_sse("hello", {"parts": list(PARTS), "at": time.time()}, _digest(seen)))
    quiet_since = time.monotonic()
    try:
        while not streams.stopping:
            await asyncio.sleep(POLL_SECONDS)
            now = streams.snapshot(controller)
            changed = [p for p in PARTS if now[p] != seen.get(p)]
            if changed:
                seen = now
                await response.write(_sse("change", {"parts": changed, "at": time.time()}, _digest(now)))
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                await response.write(b": keep-alive\n\n")  # proxies keep the connection; a gone client is noticed
                quiet_since = time.monotonic()
    except ConnectionResetError:  # the page went away
        pass
    finally:
        streams.open -= 1
    return response


def _sse(event: str, data: dict[str, Any], event_id: str) -> bytes:
    return f"event: {event}\nid: {event_id}\nretry: 1000\ndata: {json.dumps(data)}\n\n".encode()


async def stream(request: web.Request) -> web.StreamResponse:
    return await _stream(_with_query_token(request))


async def _on_shutdown(app: web.Application) -> None:
    app[STREAMS].stopping = True


# ---------------------------------------------------------------- commits
def _commits(mirror: str, revisions: list[str]) -> dict[str, Any]:
    fmt = "%H%x00%an <%ae>%x00%at%x00%s%x00%b%x00%(trailers:only,unfold)%x1e"
    out: dict[str, Any] = {}
    for rev in revisions:  # one by one: an unknown revision (not fetched yet) does not hide the others
        proc = subprocess.run(["git", "--git-dir", mirror, "log", "-1", "--no-walk", f"--format={fmt}", rev, "--"],
                              capture_output=True, text=True, timeout=10)
        if proc.returncode != 0 or "\x00" not in proc.stdout:
            continue
        sha, author, at, subject, body, trailers = proc.stdout.rstrip("\n\x1e").split("\x00")[:6]
        pairs = [line.split(":", 1) for line in trailers.splitlines() if ":" in line]
        trailer_lines = {line.strip() for line in trailers.splitlines()}
        body_lines = [line for line in body.strip().splitlines() if line.strip() not in trailer_lines]
        out[rev] = {"revision": sha, "author": author, "committedAt": float(at or 0), "subject": subject,
                    "body": "\n".join(body_lines).strip(),
                    "trailers": [{"key": k.strip(), "value": v.strip()} for k, v in pairs]}
    return out


@read_auth
async def commits(request: web.Request) -> web.StreamResponse:
    controller: Controller = request.app[CONTROLLER]
    revisions = list(dict.fromkeys(request.query.getall("revision", [])))
    bad = [r for r in revisions if not REVISION_RE.match(r)]
    if bad or not revisions or len(revisions) > MAX_COMMITS:
        return web.json_response({"error": f"give 1 to {MAX_COMMITS} ?revision= values, each a hex commit id"
                                           + (f" (not: {bad[0][:80]!r})" if bad else "")}, status=400)
    found = await asyncio.to_thread(_commits, str(controller.git.mirror), revisions)
    return web.json_response({"commits": found})


@read_auth
async def whoami(request: web.Request) -> web.StreamResponse:
    controller: Controller = request.app[CONTROLLER]
    user: User | None = request[USER]
    envs = sorted(controller.tree.environments) if controller.tree else []
    writes = user is not None and bool(user.token_sha256)  # the read and join tokens never write
    return web.json_response({
        "user": user.name if user else None,
        "role": user.role if user else None,
        "environments": list(user.environments) if user and user.environments is not None else None,
        "mayWrite": {env: writes and user is not None and user.may_write(env) for env in envs},
    })


def add_routes(app: web.Application) -> None:
    """Register the dashboard on the reconciler's application (called by ``routes.build_app``)."""
    app[ASSETS] = _load_assets()
    app[STREAMS] = Streams()
    app.on_shutdown.append(_on_shutdown)
    r = app.router
    r.add_get("/", index)
    r.add_get("/static/{name}", static)
    r.add_get("/api/v1/stream", stream)
    r.add_get("/api/v1/commits", commits)
    r.add_get("/api/v1/whoami", whoami)
