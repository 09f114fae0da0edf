"""What every part of the reconciler's HTTP face shares: the application's keys (the controller, the
authenticator), the error shape, and the read check. routes.py and dashboard.py both build on it, so
neither imports the other (routes.build_app only registers the dashboard's routes)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from reconciler.api.auth import Authenticator
from reconciler.controller.pipeline import Controller

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BodyHandler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]
CONTROLLER: web.AppKey[Controller] = web.AppKey("controller", Controller)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator", Authenticator)
USER = "driftless.user"  # request key: the authenticated User (reconciler/api/auth.py)


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def controller_of(request: web.Request) -> Controller:
    return request.app[CONTROLLER]


def authenticator_of(request: web.Request) -> Authenticator:
    return request.app[AUTHENTICATOR]


def read_auth(handler: Handler) -> Handler:
    """Reads need a credential of any role (viewer and up), unless reads are open (--open-reads)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        auth = authenticator_of(request)
        token = bearer(request)
        user = auth.authenticate(token)
        if user is None and not auth.reads_open:
            return error(401, auth.unauthenticated_message(token, what="reading"))
        request[USER] = user
        return await handler(request)

    return wrapped


def json_body(handler: BodyHandler) -> Handler:
    """Hand ``handler`` the request's JSON object, or answer 400 saying why there is none."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return error(400, "request body must be a JSON object")
        return await handler(request, body)

    return wrapped
