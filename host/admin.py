"""The host-local admin API (``--admin-listen``): list, start out of band, stop, reconfigure and
re-image instances. Out-of-band changes last until the next desired generation arrives.

Its credential is the host's own admin token, never the join token nor the host's credential from the
reconciler: ``--admin-token-file FILE`` (default ``DATA/admin-token``), created with a fresh random
token (mode 0600) when it does not exist, refused when group or others may read it. ``driftless host
exec --token-file FILE`` sends it (``Authorization: Bearer <admin token>``); without it every endpoint
but ``/healthz`` answers 401 and changes nothing.

    GET    /api/v1/status                      host, generation, compile/cache counters
    GET    /api/v1/instances                   {"observedGeneration": G, "instances": [InstanceStatus]}
    POST   /api/v1/instances                   InstanceSpec JSON (id optional) -> 201 {"instance": spec}
    DELETE /api/v1/instances?id=ID             -> 200 {"stopped": ID}
    PATCH  /api/v1/instances?id=ID             {"config": {...}} and/or {"image": "REG/REPO@sha256:...",
                                               "digest": "sha256:..."} -> 200 {"instance": spec}
    GET    /metrics                            Prometheus text: per-digest traffic (host/traffic.py)

``/metrics`` also takes the host's read-only metrics token (``--metrics-token-file FILE``, default
``DATA/metrics-token``, created like the admin token): give Prometheus that one, not the admin token.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from host.errors import HostError
from host.supervisor import Supervisor
from host.traffic import TrafficCollector
from shared.reference import ReferenceError, parse
from wire.control import InstanceSpec

REQUIRED_FIELDS = ("image", "digest", "env", "app", "component")
PATCH_FIELDS = frozenset({"config", "image", "digest"})


ADMIN_TOKEN_FILE = "admin-token"  # in the host's data directory, unless --admin-token-file says otherwise
METRICS_TOKEN_FILE = "metrics-token"  # read-only: opens GET /metrics only (--metrics-token-file)
METRICS_PATH = "/metrics"


def admin_token(path: Path) -> str:
    """The admin API's token kept in ``path``: created (random, mode 0600) when missing; HostError when
    the file is empty, unreadable, or readable by group or others."""
    return token_file(path, option="--admin-token-file")


def token_file(path: Path, *, option: str) -> str:
    """A credential kept in ``path`` (``option`` names the flag that moves it), created like the admin token."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise HostError(f"cannot create the token file {path}: {exc.strerror}",
                        hint=f"pass a writable --data DIR or {option} FILE") from None
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    try:
        mode = os.stat(path).st_mode
        token = path.read_text().strip()
    except OSError as exc:
        raise HostError(f"cannot read the token file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise HostError(f"the token file {path} is readable by group or others (mode {stat.S_IMODE(mode):04o})",
                        hint=f"chmod 600 {path}")
    if not token:
        raise HostError(f"the token file {path} is empty", hint="remove it: the host creates a new one")
    return token


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _patch_from(body: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``Supervisor.change`` for a PATCH body; ValueError says what is wrong."""
    unknown = sorted(set(body) - PATCH_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; PATCH accepts config, image and digest")
    if not PATCH_FIELDS & set(body):
        raise ValueError('body must give "config", "image" (with "digest"), or both')
    change: dict[str, Any] = {}
    if "config" in body:
        config = body["config"]
        if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
            raise ValueError('config must be {"KEY": "value", ...} with string values')
        change["config"] = config
    if "digest" in body and "image" not in body:
        raise ValueError('digest needs the image: {"image": "REGISTRY/REPO@sha256:...", "digest": "sha256:..."}')
    if "image" in body:
        image = body["image"]
        if not isinstance(image, str) or not image:
            raise ValueError("image must be a string: REGISTRY/REPO@sha256:...")
        try:
            ref = parse(image)
        except ReferenceError as exc:
            raise ValueError(f"image: {exc}") from None
        if ref.registry is None:
            raise ValueError(f"image {image} must be fully qualified: REGISTRY/REPO@sha256:...")
        if ref.digest is None:
            raise ValueError(
                f"image {image} is not pinned: give REGISTRY/REPO@sha256:... "
                "(`driftless host exec set-image` resolves a tag to its digest)"
            )
        digest = body.get("digest", ref.digest)
        if digest != ref.digest:
            raise ValueError(f"digest {digest!r} does not match the digest of image {image} ({ref.digest})")
        change["image"], change["digest"] = image, ref.digest
    return change


def _shown(spec: InstanceSpec) -> dict[str, Any]:
    """An instance as the admin API shows it: a secret key's fingerprint, never its value."""
    out = spec.to_json()
    out["config"] = spec.reported_config()
    out.pop("secretFingerprints", None)
    out.pop("linkToken", None)  # host-to-host link tokens are credentials too
    for link in out.get("links") or ():
        link.pop("token", None)
    return out


def make_admin_app(
    *, supervisor: Supervisor, token: str, status: Callable[[], dict[str, Any]], metrics_token: str | None = None,
) -> web.Application:
    """The admin API; every endpoint but /healthz needs ``Authorization: Bearer <token>``; /metrics
    also takes ``metrics_token``."""
    if not token:
        raise ValueError("the admin API needs a token")
    expected = f"Bearer {token}".encode()
    metrics_expected = f"Bearer {metrics_token}".encode() if metrics_token else None
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(TrafficCollector(supervisor.traffic))

    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if request.path == METRICS_PATH and metrics_expected is not None \
                and hmac.compare_digest(given, metrics_expected):
            return await handler(request)
        if not hmac.compare_digest(given, expected):
            if request.path == METRICS_PATH:
                return _error(401, "missing or wrong credential for the host's metrics: send its metrics token "
                                   "(--metrics-token-file, default DATA/metrics-token) or its admin token as "
                                   "Authorization: Bearer")
            return _error(401, "missing or wrong admin credential: send the host's admin token (its "
                               "--admin-token-file, default DATA/admin-token; `driftless host exec --token-file "
                               "FILE`); the join token and the host's credential are not accepted here")
        return await handler(request)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def get_metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_status(_request: web.Request) -> web.Response:
        return web.json_response(status())

    async def list_instances(_request: web.Request) -> web.Response:
        return web.json_response(
            {
                "observedGeneration": supervisor.observed_generation,
                "instances": [s.to_json() for s in supervisor.statuses()],
            }
        )

    async def read_json(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='{"error": "body is not JSON"}', content_type="application/json") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
        return body

    async def start(request: web.Request) -> web.Response:
        body = await read_json(request)
        missing = [f for f in REQUIRED_FIELDS if not isinstance(body.get(f), str) or not body.get(f)]
        if missing:
            return _error(400, f"missing or non-string field(s): {', '.join(missing)}")
        config = body.get("config") or {}
        if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
            return _error(400, "config must be an object of string values")
        try:
            ref = parse(body["image"])
        except ReferenceError as exc:
            return _error(400, f"image: {exc}")
        if ref.registry is None:
            return _error(400, "image must be fully qualified (registry/repository@digest)")
        try:
            spec = InstanceSpec.from_json({"id": "", **body})
        except (KeyError, TypeError, ValueError) as exc:
            return _error(400, f"not a valid instance: {exc}")
        try:
            spec = supervisor.start_unmanaged(spec)
        except HostError as exc:
            return _error(409, str(exc))
        return web.json_response({"instance": _shown(spec)}, status=201)

    def instance_id(request: web.Request) -> str:
        value = request.query.get("id")
        if not value:
            raise web.HTTPBadRequest(text='{"error": "query parameter id is required"}', content_type="application/json")
        return value

    async def stop(request: web.Request) -> web.Response:
        iid = instance_id(request)
        if not supervisor.remove(iid):
            return _error(404, f"no instance {iid} on this host")
        return web.json_response({"stopped": iid})

    async def patch(request: web.Request) -> web.Response:
        iid = instance_id(request)
        body = await read_json(request)
        try:
            change = _patch_from(body)
        except ValueError as exc:
            return _error(400, str(exc))
        try:
            spec = supervisor.change(iid, **change)
        except KeyError:
            return _error(404, f"no instance {iid} on this host")
        return web.json_response({"instance": _shown(spec)})

    app = web.Application(middlewares=[auth])
    app.router.add_get("/healthz", healthz)
    app.router.add_get(METRICS_PATH, get_metrics)
    app.router.add_get("/api/v1/status", get_status)
    app.router.add_get("/api/v1/instances", list_instances)
    app.router.add_post("/api/v1/instances", start)
    app.router.add_delete("/api/v1/instances", stop)
    app.router.add_patch("/api/v1/instances", patch)
    return app
