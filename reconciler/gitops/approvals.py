"""Approvals of promotions given ahead of them (four eyes): a user approves promoting APP from one
environment to another at the exact digests the source runs now; a later promotion of those digests,
by anyone, counts the approval and records it as an ``Approved-By:`` trailer.

HTTP (wired by the reconciler; the approver is the authenticated user, who must be allowed to write
the target environment, like a promoter)::

    POST /api/v1/approvals  {"app": "hello", "to": "prod", "from": "staging"?}   ("from" defaults to the
                            target's spec.promotion.from)
    200  {"approval": {"user", "app", "from", "to", "digests": {component: digest}, "at"},
          "approvals": [the pending approvals of these digests]}
    GET  /api/v1/environments/prod  ... "promotion": {..., "approvals": [...]}   pending approvals into it

An approval is kept in the reconciler's state store (shared by replicated reconcilers) until a
promotion of its digests commits, until the source runs other digests (it no longer applies), or
for ``APPROVAL_TTL`` seconds. A user approving again replaces their earlier approval. Each approval is
an event (``PromotionApproved``) too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.controller.pipeline import Controller
from reconciler.controller.state import StateStore
from reconciler.gitops.gates import source_digests
from reconciler.gitops.request_fields import optional_text, required_text
from shared.errors import Refused, UsageError

STORE_KEY = "approvals"
APPROVAL_TTL = 24 * 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    user: str
    app: str
    from_env: str
    to_env: str
    digests: Mapping[str, str] = field(default_factory=dict)  # component -> the digest approved
    at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "app": self.app, "from": self.from_env, "to": self.to_env,
                "digests": dict(sorted(self.digests.items())), "at": self.at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Approval:
        return cls(user=str(data["user"]), app=str(data["app"]), from_env=str(data["from"]), to_env=str(data["to"]),
                   digests={str(k): str(v) for k, v in (data.get("digests") or {}).items()}, at=float(data["at"]))

    def of(self, *, app: str, from_env: str, to_env: str) -> bool:
        return (self.app, self.from_env, self.to_env) == (app, from_env, to_env)


def _load(store: StateStore, *, now: float) -> list[Approval]:
    kept = []
    for item in store.get(STORE_KEY, []) or []:
        try:
            approval = Approval.from_json(item)
        except (KeyError, TypeError, ValueError):
            continue  # a record this version cannot read approves nothing
        if now - approval.at <= APPROVAL_TTL:
            kept.append(approval)
    return kept


def _save(store: StateStore, approvals: list[Approval]) -> None:
    store.put(STORE_KEY, [a.to_json() for a in approvals])


def pending(store: StateStore, *, app: str, from_env: str, to_env: str, digests: Mapping[str, str],
            now: float | None = None) -> list[Approval]:
    """The approvals of promoting exactly ``digests`` of ``app`` from ``from_env`` to ``to_env``, oldest first."""
    now = time.time() if now is None else now
    return sorted((a for a in _load(store, now=now)
                   if a.of(app=app, from_env=from_env, to_env=to_env) and dict(a.digests) == dict(digests)),
                  key=lambda a: a.at)  # fmt: skip


def record(store: StateStore, approval: Approval) -> None:
    """Keep ``approval``, replacing the same user's earlier one of the same promotion; drop expired ones."""
    kept = [a for a in _load(store, now=approval.at)
            if not (a.user == approval.user and a.of(app=approval.app, from_env=approval.from_env,
                                                     to_env=approval.to_env))]  # fmt: skip
    _save(store, [*kept, approval])


def consume(store: StateStore, *, app: str, from_env: str, to_env: str, digests: Mapping[str, str]) -> None:
    """Forget the approvals a committed promotion used."""
    used = {a.user for a in pending(store, app=app, from_env=from_env, to_env=to_env, digests=digests)}
    if used:
        _save(store, [a for a in _load(store, now=time.time())
                      if not (a.user in used and a.of(app=app, from_env=from_env, to_env=to_env))])


async def handle_request(
    *, controller: Controller, body: Mapping[str, Any], user: str, author: str
) -> dict[str, Any]:
    """``POST /api/v1/approvals``: ``user`` approves the digests the source runs now (see the module doc)."""
    del author  # an approval commits nothing
    app, to_env = required_text(body, "app"), required_text(body, "to")
    from_env = optional_text(body, "from")
    tree = controller.tree
    env = tree.environments.get(to_env) if tree is not None else None
    if env is None or env.promotion is None:
        raise Refused(f"environment {to_env} has no promotion block: there is nothing to approve",
                      hint="approve into an environment whose environment.yaml has spec.promotion")
    if from_env is None:
        from_env = env.promotion.from_env
    elif from_env != env.promotion.from_env:
        raise UsageError(f"{to_env} promotes from {env.promotion.from_env}, not from {from_env}",
                         hint=f"leave out 'from', or send \"from\": \"{env.promotion.from_env}\"")
    status = controller.tracker.app_status(from_env, app)
    digests = source_digests(status or {})
    if not digests:
        raise Refused(f"application {app} runs no digest in environment {from_env}: nothing to approve yet",
                      hint="check `driftless status`")
    approval = Approval(user=user, app=app, from_env=from_env, to_env=to_env, digests=digests, at=time.time())
    record(controller.store, approval)
    pinned = ", ".join(f"{c}={d[:19]}" for c, d in sorted(digests.items()))
    controller.event(reason="PromotionApproved", env=to_env, app=app,
                     message=f"{user} approved promoting {app} from {from_env} to {to_env} at {pinned}")
    return {"approval": approval.to_json(),
            "approvals": [a.to_json() for a in pending(controller.store, app=app, from_env=from_env, to_env=to_env,
                                                       digests=digests)]}


def list_json(store: StateStore, *, env: str | None = None) -> dict[str, Any]:
    """The approvals kept (into ``env``): the ``approvals`` of an environment's promotion block."""
    return {"approvals": [a.to_json() for a in _load(store, now=time.time()) if env in (None, a.to_env)]}
