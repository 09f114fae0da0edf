"""The reconciler's HTTP API (aiohttp): host endpoints, read endpoints, webhooks, health and metrics.

Shapes are documented in docs/reconciler.md. Client mistakes get a 4xx with ``{"error": "..."}``
saying what is wrong and how to fix it, never a 500. Tokens are compared in constant time and
never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from reconciler.api import query
from reconciler.api.auth import Authenticator, User
from reconciler.api.context import AUTHENTICATOR, CONTROLLER, USER, Handler, json_body, read_auth
from reconciler.api.context import authenticator_of as _authenticator
from reconciler.api.context import bearer as _bearer
from reconciler.api.context import controller_of as _controller
from reconciler.api.context import error as _error
from reconciler.api.prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE
from reconciler.api.prometheus import render as render_metrics
from reconciler.controller.enrollment import JOIN_TOKEN_ID
from reconciler.controller.hosts import MAX_GENERATION, Conflict, Forbidden
from reconciler.controller.link_tokens import link_key, with_link_tokens
from reconciler.controller.pipeline import Controller
from reconciler.controller.state import Event
from reconciler.gitops import approvals, promote, rollback
from shared.errors import DriftlessError, UsageError
from shared.redact import redact_url
from wire.control import PREFIX, HostRegistered, HostRegistration, HostReport

T = TypeVar("T")
log = logging.getLogger("driftless.reconciler.api")


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


HOST_IDENTITY = "driftless.host_identity"  # request key: the host the bearer credential belongs to
JOIN_TOKEN = "driftless.join_token"  # request key: the join token's or an enrollment's id when the bearer is one


def host_auth(handler: Handler) -> Handler:
    """The bearer is a join token (--token-file's, an enrollment's) or a host's credential (``request[HOST_IDENTITY]``)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        controller = _controller(request)
        token = _bearer(request)
        enrolled = controller.fleet.enrollments.match(token)
        request[JOIN_TOKEN] = JOIN_TOKEN_ID if _same(token, controller.settings.token) else enrolled and enrolled.id
        request[HOST_IDENTITY] = controller.fleet.identify(token)
        if not request[JOIN_TOKEN] and request[HOST_IDENTITY] is None:
            return _error(401, "missing or wrong join token or host credential: register with "
                               "'Authorization: Bearer <token from --token-file>', then use the host credential "
                               "the registration returns")
        return await handler(request)

    return wrapped


def _own_host(request: web.Request, name: str) -> web.Response | None:
    """Desired state and reports belong to the host whose credential is presented (after the request is
    known to be well formed: a malformed one changes nothing)."""
    owner = request[HOST_IDENTITY]
    if owner == name:
        return None
    if owner is None:
        return _error(401, f"the join token only registers a host: POST {PREFIX}/hosts/register with it, then "
                           "send the host credential it returns as 'Authorization: Bearer <credential>'")
    return _error(403, f"this host credential belongs to host {owner!r}, not {name!r}")


def write_auth(handler: Handler) -> Handler:
    """Writes need a user credential (401 without one); the handler checks the role (403) once it knows
    the environment, with :func:`_may_write`."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        auth = _authenticator(request)
        token = _bearer(request)
        user = auth.authenticate(token)
        if user is None or not user.token_sha256:  # the read token never writes (the join token never authenticates)
            what = f"POST {request.path}"
            message = auth.unauthenticated_message(None if user else token, what=what)
            if user is not None:
                message = f"{what} needs a user credential of role operator or admin; the read token only reads"
            return _error(401, message)
        request[USER] = user
        return await handler(request)

    return wrapped


def _may_write(request: web.Request, action: str, env: str | None) -> web.Response | None:
    """403 saying what is missing when the authenticated user may not ``action`` (in ``env``)."""
    user: User = request[USER]
    if user.may_write(env):
        return None
    where = f" in environment {env}" if env else ""
    needed = f"role admin, or operator of {env}" if env else "role admin, or operator of every environment"
    return _error(403, f"{user.describe()} may not {action}{where}: that needs {needed}")


def known_host(handler: Handler) -> Handler:
    """404 for a host that is not registered (it registers again)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _controller(request).fleet.hosts:
            return _error(404, f"host {name!r} is not registered: POST {PREFIX}/hosts/register first")
        return await handler(request)

    return wrapped


def _decode(from_json: Callable[[dict[str, Any]], T], body: dict[str, Any], *, kind: str) -> T | web.Response:
    try:
        return from_json(body)
    except (KeyError, TypeError, ValueError) as exc:
        return _error(400, f"invalid {kind}: missing or bad field {exc}; see wire/control.py")


# ---------------------------------------------------------------- host endpoints
@host_auth
@json_body
async def register(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    reg = _decode(HostRegistration.from_json, body, kind="HostRegistration")
    if isinstance(reg, web.Response):
        return reg
    if not reg.name or "/" in reg.name:
        return _error(400, "host name must be non-empty and contain no '/'")
    controller = _controller(request)
    try:
        credential = controller.fleet.enroll(reg, credential=_bearer(request), via=request[JOIN_TOKEN])
    except Forbidden as exc:  # reason OutsideEnrollment: a host does not fall back to its join token
        return _error(403, str(exc), hint=exc.hint, reason=type(exc).__name__)
    except Conflict as exc:
        return _error(409, str(exc), hint=exc.hint)
    controller.fleet.register(reg)
    return web.json_response(HostRegistered(heartbeat_seconds=controller.settings.heartbeat, credential=credential,
                                            generation=controller.fleet.generation(reg.name)).to_json())


@host_auth
@known_host
async def desired(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    name = request.match_info["name"]
    try:
        after = query.integer(request.query, "after", default=0, minimum=0, maximum=MAX_GENERATION - 1,
                              what="the generation of the last desired state received (0 for none)")
        wait = query.number(request.query, "wait", default=0.0, minimum=0,
                            what=f"seconds to wait (capped at {controller.settings.long_poll_max:g})") or 0.0
    except query.BadQuery as exc:
        return _error(400, str(exc))
    if (refused := _own_host(request, name)) is not None:
        return refused
    controller.fleet.ensure_generation_above(name, after)
    doc = await controller.fleet.wait_desired(name, after=after, wait=max(0.0, min(wait, controller.settings.long_poll_max)))
    if doc is None:
        return web.Response(status=204)
    # the one place a secret's value leaves the reconciler: this host's own answer (its credential);
    # so do the host-to-host tokens of its HTTP links (controller/link_tokens.py)
    doc = with_link_tokens(controller.secrets.reveal(doc), key=link_key(controller.store))
    return web.json_response(doc.to_json())


@host_auth
@known_host
@json_body
async def report(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    controller = _controller(request)
    name = request.match_info["name"]
    rep = _decode(HostReport.from_json, body, kind="HostReport")
    if isinstance(rep, web.Response):
        return rep
    if rep.name != name:
        return _error(400, f"report names host {rep.name!r} but was posted for {name!r}")
    if not 0 <= rep.observed_generation < MAX_GENERATION:
        return _error(400, f"invalid HostReport: observedGeneration {rep.observed_generation} is out of range "
                           f"(0 to {MAX_GENERATION - 1})")
    if (refused := _own_host(request, name)) is not None:
        return refused
    return web.json_response({"generation": controller.fleet.report(rep)})


# ---------------------------------------------------------------- read endpoints
def with_signers(controller: Controller, doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """An app status document with, under --signature-policy, each component's ``signedBy``: the
    policy's keys whose signatures verified over its digest (reconciler.controller.signing_policy)."""
    if doc is None or controller.signatures.policy is None:
        return doc
    signed = controller.signatures.signed_by
    return {**doc, "components": [{**c, "signedBy": signed.get(c.get("digest") or "", [])}
                                  for c in doc.get("components") or []]}


def _app_summary(controller: Controller, env: str, app: str) -> dict[str, Any]:
    full = with_signers(controller, controller.tracker.app_status(env, app)) or {}
    comps = full.get("components", [])
    signatures = {"signatures": [{"component": c["name"], "digest": c["digest"], "signedBy": c["signedBy"]}
                                 for c in comps]} if controller.signatures.policy is not None else {}
    return {
        **signatures,
        "app": app,
        "name": app,
        "revision": full.get("revision"),
        "sync": full.get("sync"),
        "health": full.get("health"),
        "healthySince": full.get("healthySince"),
        "message": full.get("message"),
        "desired": sum(c["desired"] for c in comps),
        "ready": sum(c["ready"] for c in comps),
        "rollout": full.get("rollout"),  # a canary rollout: phase, step, weight, measured figures
    }


def env_json(controller: Controller, name: str) -> dict[str, Any] | None:
    """One environment as it applied its own last good revision, with its own rejection (if any)."""
    tree = controller.tree
    revisions = controller.envs.env_json(name)
    rejected = revisions["rejected"]
    if tree is None or name not in tree.environments:
        if rejected is None:
            return None
        return {"name": name, "revision": None, "appliedAt": None,  # rejected before anything of it applied
                "head": controller.head.revision if controller.head else None, "rejected": rejected,
                "hostSelector": {}, "ingressPathPrefix": "", "sync": None, "promotion": None, "hosts": [],
                "apps": [], "unplaced": []}
    env = tree.environments[name]
    hosts = sorted(
        n for n, h in controller.fleet.hosts.items()
        if env.host_selector.matches(h.registration.labels) and controller.fleet.bounds(n).allows_env(name)
    )
    apps = [_app_summary(controller, name, a) for a in sorted(tree.applications.get(name, {}))]
    applied = revisions["applied"] or {}
    return {
        "name": name,
        "revision": applied.get("revision"),
        "appliedAt": applied.get("appliedAt"),
        "head": controller.head.revision if controller.head else None,
        "rejected": rejected,
        "hostSelector": dict(env.host_selector.match_labels),
        "ingressPathPrefix": env.ingress_path_prefix,
        "sync": {"prune": env.sync.prune, "mode": str(env.sync.mode)},
        "promotion": (
            {"from": env.promotion.from_env, "minSoakSeconds": env.promotion.min_soak_seconds,
             "requireApproval": env.promotion.require_approval, "approvers": env.promotion.approvers,
             "distinctFromPromoter": env.promotion.distinct_from_promoter,
             "approvals": approvals.list_json(controller.store, env=name)["approvals"]}
            if env.promotion else None
        ),
        "hosts": hosts,
        "apps": apps,
        "unplaced": [u.to_json() for u in controller.unplaced if u.env == name],
    }


def source_json(controller: Controller) -> dict[str, Any]:
    s = controller.settings
    return {
        "repo": redact_url(controller.git.url),  # never the credentials a --repo URL may carry
        "branch": s.branch,
        "path": s.path,
        "head": controller.head.revision if controller.head else None,
        # the newest revision applied anywhere, and the newest rejected one with every environment's problems
        # (each naming its "env"); per environment: "environments" (and GET /api/v1/environments/{env})
        "applied": controller.applied,
        "resolved": dict(sorted(controller.digests.items())),  # image as written -> digest, at the applied revision
        "rejected": controller.rejected.to_json() if controller.rejected else None,
        "environments": {name: controller.envs.env_json(name)
                         for name in sorted(set(controller.envs.applied) | set(controller.envs.rejected))},
        "lastReconcile": controller.last_reconcile,
        "lastError": controller.last_error,
        "leadership": controller.leadership.to_json(),  # who leads (replicated reconcilers on PostgreSQL)
    }


@read_auth
async def environments(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    names = sorted(set(controller.tree.environments if controller.tree else ()) | set(controller.envs.rejected))
    return web.json_response({"source": source_json(controller),
                              "environments": [e for n in names if (e := env_json(controller, n)) is not None]})


def _unknown_env(controller: Controller, env: str) -> web.Response:
    known = ", ".join(sorted(controller.tree.environments)) if controller.tree else "none (no revision applied yet)"
    return _error(404, f"environment {env!r} not found; known: {known}")


@read_auth
async def environment(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    out = env_json(controller, request.match_info["env"])
    return web.json_response(out) if out else _unknown_env(controller, request.match_info["env"])


@read_auth
async def apps_list(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    env = request.match_info["env"]
    if controller.tree is None or env not in controller.tree.environments:
        return _unknown_env(controller, env)
    names = sorted(controller.tree.applications.get(env, {}))
    return web.json_response({"env": env, "apps": [with_signers(controller, controller.tracker.app_status(env, a))
                                                   for a in names]})


@read_auth
async def app_status(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    env, name = request.match_info["env"], request.match_info["app"]
    if controller.tree is None or env not in controller.tree.environments:
        return _unknown_env(controller, env)
    out = with_signers(controller, controller.tracker.app_status(env, name))
    if out is None:
        known = ", ".join(sorted(controller.tree.applications.get(env, {}))) or "none"
        return _error(404, f"application {name!r} not found in environment {env!r}; known: {known}")
    return web.json_response(out)


def host_json(controller: Controller, name: str, *, detail: bool) -> dict[str, Any]:
    h = controller.fleet.hosts[name]
    pub = controller.fleet.published.get(name)
    rep = controller.fleet.reports.get(name)
    reg = h.registration
    out: dict[str, Any] = {
        "name": name,
        "state": h.state,
        "labels": dict(reg.labels),
        "capacity": reg.capacity.to_json(),
        "interfaces": list(reg.interfaces),
        "ingressUrl": reg.ingress_url,
        "version": reg.version,
        "registeredAt": h.registered_at,
        "lastSeen": h.last_seen,
        "generation": pub[0].generation if pub else 0,
        "publishedAt": pub[1] if pub else None,
        "observedGeneration": rep[0].observed_generation if rep else 0,
        "desiredInstances": len(pub[0].instances) if pub else 0,
        "report": rep[0].to_json() if rep else None,
        "reportedAt": rep[1] if rep else None,
        "enrollment": controller.fleet.enrollments.binding(name),  # None: the join token (--token-file)
    }
    if detail:
        out["desired"] = pub[0].to_json() if pub else None
    return out


@read_auth
async def hosts(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    return web.json_response({"hosts": [host_json(controller, n, detail=False) for n in sorted(controller.fleet.hosts)]})


@read_auth
async def host(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    name = request.match_info["name"]
    if name not in controller.fleet.hosts:
        return _error(404, f"host {name!r} not found; known: {', '.join(sorted(controller.fleet.hosts)) or 'none'}")
    return web.json_response(host_json(controller, name, detail=True))


@read_auth
async def events(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    try:
        since = query.number(request.query, "since", default=None, minimum=0, what="unix seconds")
        limit = query.integer(request.query, "limit", default=100, minimum=1, maximum=10_000,
                              what="how many events at most")
    except query.BadQuery as exc:
        return _error(400, str(exc))
    found: list[Event] = controller.store.events(env=request.query.get("env") or None, since=since, limit=limit)
    app_filter = request.query.get("app")
    host_filter = request.query.get("host")
    items = [e.to_json() for e in found if (not app_filter or e.app in ("", app_filter))
             and (not host_filter or e.host == host_filter)]
    return web.json_response({"events": items})


@read_auth
async def history(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    env = request.query.get("env") or None
    app_name = request.query.get("app") or None
    try:
        limit = query.integer(request.query, "limit", default=100, minimum=1, maximum=10_000,
                              what="how many history entries at most")
    except query.BadQuery as exc:
        return _error(400, str(exc))
    entries = controller.store.history(env=env, limit=limit)
    if app_name:
        entries = [
            {**e, "apps": [a for a in e["apps"] if a.get("name") == app_name]}
            for e in entries
            if any(a.get("name") == app_name for a in e["apps"])
        ]
    return web.json_response({"history": entries})


@read_auth
async def drift(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    env = request.query.get("env") or None
    items = [i for i in controller.tracker.drift_items if env is None or i.env in (env, "")]
    return web.json_response({
        "items": [i.to_json() for i in items],
        "counted": sum(1 for i in items if i.counted),
        "available": controller.tracker.drift_available,
    })


@write_auth
async def sync(request: web.Request) -> web.StreamResponse:
    if (refused := _may_write(request, "sync", None)) is not None:
        return refused
    _controller(request).trigger(fetch=True)
    return web.json_response({"status": "accepted", "message": "fetch and reconcile scheduled"}, status=202)


@read_auth
async def plan_inputs(request: web.Request) -> web.StreamResponse:
    """What the planner was last given (for `driftless diff`): hosts and published documents."""
    controller = _controller(request)
    return web.json_response({
        "registry": controller.registry_host,
        "revision": (controller.applied or {}).get("revision"),
        "digests": controller.digests,
        "secrets": controller.secrets.fingerprints(),  # name -> fingerprint, never a value
        "hosts": [
            {"name": n, "labels": dict(h.registration.labels), "maxInstances": h.registration.capacity.max_instances,
             "state": h.state, "ingressUrl": h.registration.ingress_url, "environments": sorted(envs)
             if (envs := controller.fleet.bounds(n).environment_set()) is not None else None}
            for n, h in sorted(controller.fleet.hosts.items())
        ],
        "published": {n: d.to_json() for n, (d, _) in sorted(controller.fleet.published.items())},
    })


GitWriter = Callable[..., Awaitable[dict[str, Any]]]


def _git_write(function: str, write: GitWriter, *, env_field: str) -> Handler:
    """POST /api/v1/promote and /rollback: thin handlers over the GitOps writers. The user must be
    allowed to write the environment named by ``env_field`` (a promotion's target, a rollback's env);
    the commit's author and approver are that user, never the body's."""

    @write_auth
    @json_body
    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        user: User = request[USER]
        env = body.get(env_field)
        if not isinstance(env, str) or not env:
            return _error(400, f"invalid {function} request: field {env_field!r} is required and must be a non-empty string")
        if (refused := _may_write(request, function, env)) is not None:
            return refused
        try:
            result = await write(controller=_controller(request), body=body, user=user.name, author=user.identity)
        except TypeError as exc:
            return _error(400, f"invalid {function} request: {exc}")
        except UsageError as exc:
            return _error(400, str(exc), hint=exc.hint)
        except DriftlessError as exc:
            gates = getattr(exc, "gates", None)
            extra = {"gates": [g.to_json() for g in gates]} if gates else {}
            return _error(409, str(exc), hint=exc.hint, **extra)
        log.info("event=git_write action=%s env=%s user=%s commit=%s", function, env, user.name, result.get("commit"))
        _controller(request).trigger(fetch=True)
        return web.json_response(result)

    return handler


# ---------------------------------------------------------------- webhooks
def _hmac_ok(secret: str | None, body: bytes, header: str | None) -> bool:
    if not secret or not header:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.strip())


def _accepted(controller: Controller, source: str) -> web.Response:
    controller.trigger(fetch=True)
    controller.store.add_event(reason="WebhookReceived", message=f"{source} webhook: fetching now")
    return web.json_response({"status": "accepted"}, status=202)


async def hook_github(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    if not controller.settings.webhook_secret:
        return _error(403, "GitHub webhooks need a secret: start the reconciler with --webhook-secret-file")
    body = await request.read()
    if not _hmac_ok(controller.settings.webhook_secret, body, request.headers.get("X-Hub-Signature-256")):
        return _error(401, "X-Hub-Signature-256 is missing or does not match the webhook secret")
    if request.headers.get("X-GitHub-Event") == "ping":
        return web.json_response({"status": "pong"})
    return _accepted(controller, "github")


async def hook_gitlab(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    if not controller.settings.webhook_secret:
        return _error(403, "GitLab webhooks need a secret: start the reconciler with --webhook-secret-file")
    if not _same(request.headers.get("X-Gitlab-Token"), controller.settings.webhook_secret):
        return _error(401, "X-Gitlab-Token is missing or does not match the webhook secret")
    return _accepted(controller, "gitlab")


async def hook_generic(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    s = controller.settings
    body = await request.read()
    token = _bearer(request)
    ok = _same(token, s.webhook_secret) or _hmac_ok(  # never the join token: it only registers hosts
        s.webhook_secret, body, request.headers.get("X-Signature-256") or request.headers.get("X-Hub-Signature-256")
    )
    if not ok:
        return _error(401, "send 'Authorization: Bearer <webhook secret>' (--webhook-secret-file) or an "
                           "X-Signature-256 HMAC; the join token only registers hosts")
    return _accepted(controller, "generic")


# ---------------------------------------------------------------- health, metrics
async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok", "time": time.time(),
                              "leadership": _controller(request).leadership.to_json()})


async def readyz(request: web.Request) -> web.StreamResponse:
    controller = _controller(request)
    if not controller.ready:
        return _error(503, "not ready: the first reconcile has not finished")
    return web.json_response({"status": "ready", "applied": (controller.applied or {}).get("revision")})


@read_auth
async def metrics(request: web.Request) -> web.StreamResponse:
    return web.Response(body=render_metrics(_controller(request)).encode(),
                        headers={"Content-Type": METRICS_CONTENT_TYPE})


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return _error(exc.status, f"{exc.reason}: {request.method} {request.path}")
        raise


def build_app(controller: Controller) -> web.Application:
    from reconciler.api import replication  # followers refuse host calls and writes (503 naming the leader)

    web_app = web.Application(middlewares=[errors_middleware, replication.middleware(controller)],
                              client_max_size=8 * 1024 * 1024)
    web_app[CONTROLLER] = controller
    s = controller.settings
    web_app[AUTHENTICATOR] = Authenticator(users_file=s.users_file, read_token=s.read_token, join_token=s.token,
                                           open_reads=s.open_reads)
    r = web_app.router
    r.add_post(f"{PREFIX}/hosts/register", register)
    r.add_get(f"{PREFIX}/hosts/{{name}}/desired", desired)
    r.add_post(f"{PREFIX}/hosts/{{name}}/report", report)
    r.add_get(f"{PREFIX}/environments", environments)
    r.add_get(f"{PREFIX}/environments/{{env}}", environment)
    r.add_get(f"{PREFIX}/environments/{{env}}/apps", apps_list)
    r.add_get(f"{PREFIX}/environments/{{env}}/apps/{{app}}", app_status)
    r.add_get(f"{PREFIX}/hosts", hosts)
    r.add_get(f"{PREFIX}/hosts/{{name}}", host)
    r.add_get(f"{PREFIX}/events", events)
    r.add_get(f"{PREFIX}/history", history)
    r.add_get(f"{PREFIX}/drift", drift)
    r.add_get(f"{PREFIX}/plan-inputs", plan_inputs)
    r.add_post(f"{PREFIX}/sync", sync)
    r.add_post(f"{PREFIX}/promote", _git_write("promote", promote.handle_request, env_field="to"))
    r.add_post(f"{PREFIX}/rollback", _git_write("rollback", rollback.handle_request, env_field="env"))
    r.add_post(f"{PREFIX}/approvals", _git_write("approve", approvals.handle_request, env_field="to"))
    r.add_post("/hooks/github", hook_github)
    r.add_post("/hooks/gitlab", hook_gitlab)
    r.add_post("/hooks/generic", hook_generic)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    # the web page at /, its assets and its live stream; host enrollment (admins)
    from reconciler.api import dashboard, enrollments, validate

    dashboard.add_routes(web_app)
    enrollments.add_routes(web_app)
    validate.add_routes(web_app)  # the pre-receive hook's check of a pushed tree
    return web_app
