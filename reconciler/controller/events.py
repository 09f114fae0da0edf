"""Events, Kubernetes style: what happened (reason, message, where), kept in the state store for
``GET /api/v1/events`` and written to the log as one ``key=value`` line each."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from reconciler.controller.state import StateStore

log = logging.getLogger("driftless.reconciler")


class EventLog:
    """``listeners`` are called with each event after it is stored (the notifier: :mod:`.notify`);
    one that fails is logged, never raised into whoever recorded the event."""

    def __init__(self, store: StateStore, *, listeners: tuple[Callable[..., Any], ...] = (),
                 leading: Callable[[], bool] = lambda: True) -> None:
        self._store = store
        self._listeners = listeners
        self._leading = leading  # replicated reconcilers: only the leader records events and notifies

    def __call__(self, *, reason: str, message: str, type: str = "Normal", env: str = "", app: str = "",
                 host: str = "", revision: str = "") -> None:
        if not self._leading():
            log.debug("event=%s not recorded: this reconciler does not lead", reason)
            return
        self._store.add_event(type=type, reason=reason, message=message, env=env, app=app, host=host,
                              revision=revision)
        fields = {"event": reason, "type": type, "env": env, "app": app, "host": host, "revision": revision[:12]}
        shown = " ".join(f"{k}={v}" for k, v in fields.items() if v)
        log.log(logging.WARNING if type == "Warning" else logging.INFO, "%s message=%r", shown, message)
        for listener in self._listeners:
            try:
                listener(type=type, reason=reason, message=message, env=env, app=app, host=host, revision=revision)
            except Exception as exc:
                log.exception("event=listener-failed listener=%r error=%r", listener, exc)
