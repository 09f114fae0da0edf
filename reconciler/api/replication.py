"""The API of replicated reconcilers (``--state postgresql://...``): what a follower answers.

A follower serves every read (status, events, history, drift, the dashboard) from the shared state.
It refuses what only the leader may do, without doing any of it:

- the host calls (register, desired-state long-poll, report) and every write (``POST``: sync,
  promote, rollback, webhooks) answer **503** ``{"error": "...", "leader": URL | null}`` with
  ``Retry-After: 1`` and ``X-Driftless-Leader: URL`` when a leader is known. Hosts given several
  reconciler URLs go to that URL when it is one of their ``--control`` URLs with the same scheme
  (shared/control_urls.py; else to their next URL), as does the CLI; nothing is forwarded (a
  forwarded write could be applied by a deposed leader, and a 307 would replay credentials to
  another origin). A long-poll that was waiting when this reconciler stopped leading answers 503
  too, never a document;
- a Git write runs with a guard (:data:`reconciler.gitops.working_copy.push_guard`) that refuses
  each `git push` unless this reconciler still leads with ``PUSH_MARGIN`` seconds of lease left.

On a reconciler alone (SQLite) nothing changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from reconciler.controller.pipeline import Controller
from reconciler.controller.replication import PUSH_MARGIN
from reconciler.controller.state import NotLeader
from reconciler.gitops.working_copy import push_guard
from wire.control import PREFIX

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def leader_only(request: web.Request) -> bool:
    """A host call or a write: only the leader answers it."""
    if request.method not in READ_METHODS:
        return True
    return request.path.startswith(f"{PREFIX}/hosts/") and request.path.endswith("/desired")


def not_leader(controller: Controller, why: str | None = None) -> web.Response:
    leadership = controller.leadership
    url = leadership.leader_url()
    where = f"the leader is {url}" if url else "no reconciler leads right now (an election takes a few seconds)"
    message = why or f"this reconciler ({leadership.url}) is a follower: {where}"
    headers = {"Retry-After": "1", **({"X-Driftless-Leader": url} if url else {})}
    return web.json_response({"error": message, "hint": "send it to the leader" if url else "try again shortly",
                              "leader": url}, status=503, headers=headers)


def middleware(controller: Controller) -> Middleware:
    leadership = controller.leadership

    @web.middleware
    async def replication_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not leadership.replicated or not leader_only(request):
            return await handler(request)
        if not leadership.leading():
            return not_leader(controller)
        token = push_guard.set(lambda: leadership.check(margin=PUSH_MARGIN))
        try:
            response = await handler(request)
        except NotLeader as exc:
            return not_leader(controller, f"refused: {exc}")
        finally:
            push_guard.reset(token)
        if not leadership.leading():  # deposed while it waited (a long-poll): answer nothing it computed
            return not_leader(controller)
        return response

    return replication_middleware
