"""Host enrollment on the reconciler's API (role admin only): create an enrollment (its join token is
in the answer, once), list them with the hosts each enrolled, revoke one or a single host.

    POST /api/v1/enrollments  {"labels": {"tier": ["edge"]}, "environments": ["dev"],
                               "ingress": "https://edge-1.example.com", "host": "edge-1",
                               "expiresIn": "24h", "maxUses": 1, "description": "..."}
      -> 201 {"enrollment": {...}, "token": "enr-1a2b3c4d.<secret>"}
    GET  /api/v1/enrollments  -> {"enrollments": [...], "joinToken": {bounds of --token-file's token}}
    POST /api/v1/enrollments/{id}/revoke  -> {"enrollment": {...}, "revokedHosts": [...]}
    POST /api/v1/hosts/{name}/revoke      -> {"host": name, "revoked": true}

The rules are in :mod:`reconciler.controller.enrollment`; the tokens never appear in logs or events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from reconciler.api.auth import User
from reconciler.api.context import AUTHENTICATOR, CONTROLLER, USER, Handler, json_body
from reconciler.controller.enrollment import parse_bounds, valid_id
from reconciler.controller.pipeline import Controller
from shared.units import duration_seconds
from wire.control import PREFIX

log = logging.getLogger("driftless.reconciler.api")
FIELDS = frozenset({"labels", "environments", "ingress", "host", "expiresIn", "maxUses", "description"})


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def admin_auth(handler: Handler) -> Handler:
    """A user credential (401 without one; the join and enrollment tokens are none); the handler checks
    the role with :func:`_admin_only`."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        auth = request.app[AUTHENTICATOR]
        token = request.headers.get("Authorization", "")
        token = token[7:].strip() if token.lower().startswith("bearer ") else ""
        user = auth.authenticate(token)
        if user is None or not user.token_sha256:
            what = f"{request.method} {request.path} (host enrollment, role admin)"
            return _error(401, auth.unauthenticated_message(None if user else token, what=what))
        request[USER] = user
        return await handler(request)

    return wrapped


def _admin_only(request: web.Request, action: str) -> web.Response | None:
    user: User = request[USER]
    if user.role == "admin":
        return None
    return _error(403, f"{user.describe()} may not {action}: that needs role admin")


def _controller(request: web.Request) -> Controller:
    return request.app[CONTROLLER]


def _parse(body: dict[str, Any]) -> dict[str, Any]:
    """The enrollment a request asks for; ValueError naming the field."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; fields: {', '.join(sorted(FIELDS))}")
    bounds = parse_bounds(labels=body.get("labels", {}), environments=body.get("environments"),
                          ingress=body.get("ingress"), where="enrollment")
    host = body.get("host")
    if host is not None and (not isinstance(host, str) or not host or "/" in host):
        raise ValueError("host must be a host name (no '/')")
    expires_at = None
    if body.get("expiresIn") is not None:
        try:
            seconds = duration_seconds(body["expiresIn"])
        except (TypeError, ValueError):
            seconds = -1.0
        if seconds <= 0:
            raise ValueError(f"expiresIn {body['expiresIn']!r} must be a positive duration such as 30m, 24h or 3600")
        expires_at = time.time() + seconds
    uses = body.get("maxUses")
    if uses is not None and (not isinstance(uses, int) or isinstance(uses, bool) or uses < 1):
        raise ValueError(f"maxUses {uses!r} must be a whole number of registrations, at least 1")
    description = body.get("description") or ""
    if not isinstance(description, str) or len(description) > 500:
        raise ValueError("description must be a text of at most 500 characters")
    return {"bounds": bounds, "host": host, "expires_at": expires_at, "max_uses": uses, "description": description}


@admin_auth
@json_body
async def create(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if (refused := _admin_only(request, "create a host enrollment")) is not None:
        return refused
    try:
        wanted = _parse(body)
    except ValueError as exc:
        return _error(400, f"invalid enrollment: {exc}",
                      hint='e.g. {"labels": {"tier": ["edge"]}, "environments": ["dev"], "expiresIn": "24h"}')
    user: User = request[USER]
    controller = _controller(request)
    enrollment, token = controller.fleet.enrollments.create(created_by=user.name, now=time.time(), **wanted)
    controller.event(reason="HostEnrollmentCreated",
                     message=f"{user.name} created enrollment {enrollment.id}: {enrollment.bounds.describe()}")
    log.info("event=enrollment_created id=%s user=%s", enrollment.id, user.name)
    return web.json_response({"enrollment": enrollment.to_json(), "token": token}, status=201)


@admin_auth
async def listing(request: web.Request) -> web.StreamResponse:
    """A GET, but admin only: what each host may be is the admins' business."""
    if (refused := _admin_only(request, "list host enrollments")) is not None:
        return refused
    controller = _controller(request)
    fleet = controller.fleet
    if controller.leadership.replicated and not controller.leadership.leading():
        await asyncio.to_thread(fleet.enrollments.restore)  # a follower: the leader's, from the shared state
    return web.json_response({"enrollments": [e.to_json() for e in fleet.enrollments.listing()],
                              "joinToken": fleet.join_bounds.to_json()})


@admin_auth
async def revoke(request: web.Request) -> web.StreamResponse:
    if (refused := _admin_only(request, "revoke a host enrollment")) is not None:
        return refused
    ident = request.match_info["id"]
    controller = _controller(request)
    book = controller.fleet.enrollments
    if not valid_id(ident) or book.get(ident) is None:
        known = ", ".join(e.id for e in book.listing()) or "none"
        return _error(404, f"enrollment {ident!r} not found; known: {known}")
    user: User = request[USER]
    hosts = book.revoke(ident, now=time.time())
    for host in hosts:
        controller.fleet.revoke(host, why=f"enrollment {ident} revoked by {user.name}")
    controller.event(type="Warning", reason="HostEnrollmentRevoked",
                     message=f"{user.name} revoked enrollment {ident}"
                             + (f" and its host(s) {', '.join(hosts)}" if hosts else ""))
    revoked = book.get(ident)
    return web.json_response({"enrollment": revoked.to_json() if revoked else None, "revokedHosts": list(hosts)})


@admin_auth
async def revoke_host(request: web.Request) -> web.StreamResponse:
    if (refused := _admin_only(request, "revoke a host")) is not None:
        return refused
    name = request.match_info["name"]
    fleet = _controller(request).fleet
    if name not in fleet.hosts:
        return _error(404, f"host {name!r} not found; known: {', '.join(sorted(fleet.hosts)) or 'none'}")
    user: User = request[USER]
    fleet.revoke(name, why=f"revoked by {user.name}")
    return web.json_response({"host": name, "revoked": True})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post(f"{PREFIX}/enrollments", create)
    r.add_get(f"{PREFIX}/enrollments", listing)
    r.add_post(f"{PREFIX}/enrollments/{{id}}/revoke", revoke)
    r.add_post(f"{PREFIX}/hosts/{{name}}/revoke", revoke_host)
