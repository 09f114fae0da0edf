"""Outbound notifications: the events people want to hear about, POSTed to the webhooks each
environment declares (``spec.notifications`` of its environment.yaml).

    notifications:
    - url: https://ci.example.com/driftless
      secretName: ci                      # the reconciler's secret "ci" signs each body
      events: [Rejected, AppDegraded]     # default: every event below
    - url: https://hooks.slack.com/services/...
      format: slack                       # {"text": "..."}

Events sent: ``Rejected`` (to the environment it was rejected for: each applies its part of a commit on its own),
``AppDegraded``, ``Healed``, every ``Drift*`` (``Drift`` selects them all), ``Promoted`` and
``RolledBack`` (when the promotion's or rollback's commit is applied). The configuration is the
one of the applied revision: a commit changing it takes effect once it is applied.

Secrets never come from Git: ``secretName`` names a secret of the reconciler's ``--secrets-file``,
scoped like any secret (the environment must be in its ``environments``), read at each delivery.
The body is signed with HMAC-SHA256: ``X-Driftless-Signature-256: sha256=<hex>``. The URL must be in
the operator's outbound allow-list (``--outbound-allow``); both are checked when the revision is
loaded (:mod:`.boundaries`) and again here. Redirects are not followed.

Deliveries run on a small thread pool (httpx via :mod:`shared.http`), never on the event loop and
never in the reconcile's way; a failed delivery (no answer, 429, 5xx) is retried with
:class:`shared.retry.Backoff` up to ``attempts`` times, then dropped with a log line.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from model.types import Environment, Notification
from shared import http
from shared.retry import Backoff

log = logging.getLogger("driftless.reconciler")

SIGNATURE_HEADER = "X-Driftless-Signature-256"
NOTIFIED = frozenset({"Rejected", "AppDegraded", "Healed", "Promoted", "RolledBack",  # and every Drift*
                      "RolloutAborted", "RolloutCompleted", "RolloutWaiting"})  # canary rollouts
ATTEMPTS = 5  # per delivery
TIMEOUT = 5.0  # per attempt (connect, each read)
WORKERS = 4
MAX_PENDING = 1000  # deliveries queued or retrying; beyond that new ones are dropped (and logged)

_PROMOTE = re.compile(r"^promote\((?P<app>[^)]+)\): (?P<src>\S+) -> (?P<env>\S+)$")
_ROLLBACK = re.compile(r"^rollback\((?P<app>[^)]+)\): (?P<env>\S+) to (?P<target>[0-9a-f]+)$")


def notified(reason: str) -> bool:
    # DriftRevisionRejected repeats Rejected, which is sent already
    return reason in NOTIFIED or (reason.startswith("Drift") and reason != "DriftRevisionRejected")


def commit_event(subject: str) -> tuple[str, str, str, str] | None:
    """(reason, env, app, message) of a commit ``driftless promote`` / ``rollback`` wrote, from its subject."""
    if m := _PROMOTE.match(subject):
        return "Promoted", m["env"], m["app"], f"{m['app']} promoted from {m['src']} to {m['env']}"
    if m := _ROLLBACK.match(subject):
        return "RolledBack", m["env"], m["app"], f"{m['app']} in {m['env']} rolled back to {m['target']}"
    return None


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(event: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """The JSON body: the event as is (generic) or a Slack message (``{"text": ...}``)."""
    if fmt == "slack":
        where = "/".join(p for p in (event["env"], event["app"]) if p) or "all environments"
        rev = f" (revision {event['revision'][:12]})" if event["revision"] else ""
        icon = ":warning:" if event["type"] == "Warning" else ":white_check_mark:"
        return {"text": f"{icon} *{event['reason']}* in {where}{rev}: {event['message']}"}
    return dict(event)


class Notifier:
    """Called with every event the controller records; sends those its environments ask for."""

    def __init__(self, *, environments: Callable[[], Mapping[str, Environment]],
                 secret: Callable[[str, str], str | None], allowed: Callable[[str], bool],
                 attempts: int = ATTEMPTS, backoff: Callable[[], Backoff] | None = None,
                 timeout: float = TIMEOUT) -> None:
        """``secret(name, env)``: the value of the reconciler's secret when ``env`` may use it;
        ``allowed(url)``: the URL is in the operator's outbound allow-list."""
        self._environments = environments
        self._secret = secret
        self._allowed = allowed
        self._attempts = max(1, attempts)
        self._backoff = backoff or (lambda: Backoff(first=0.5, cap=10.0))
        self._timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="notify")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending = 0
        self.sent = 0
        self.failed = 0

    def __call__(self, *, type: str, reason: str, message: str, env: str = "", app: str = "", host: str = "",
                 revision: str = "", at: float | None = None) -> None:
        if not notified(reason) or self._stop.is_set():
            return
        environments = self._environments()
        names = [env] if env else sorted(environments)  # no environment (Rejected): every one
        event = {"event": reason, "type": type, "reason": reason, "message": message, "env": env, "app": app,
                 "host": host, "revision": revision,
                 "time": datetime.fromtimestamp(at or time.time(), UTC).isoformat().replace("+00:00", "Z")}
        for name in names:
            environment = environments.get(name)
            for target in environment.notifications if environment is not None else ():
                if target.wants(reason):
                    self._submit(target, {**event, "env": env or name})

    def _submit(self, target: Notification, event: dict[str, Any]) -> None:
        with self._lock:
            if self._pending >= MAX_PENDING:
                log.warning("event=notify-dropped url=%s reason=%s pending=%d", http.origin(target.url), event["reason"],
                            self._pending)
                return
            self._pending += 1
        try:
            self._pool.submit(self._deliver, target, event)
        except RuntimeError:  # shut down meanwhile
            with self._lock:
                self._pending -= 1

    def _deliver(self, target: Notification, event: dict[str, Any]) -> None:
        try:
            self._send(target, event)
        except Exception as exc:  # a delivery never takes anything else down
            log.exception("event=notify-crashed url=%s error=%r", http.origin(target.url), exc)
        finally:
            with self._lock:
                self._pending -= 1

    def _send(self, target: Notification, event: dict[str, Any]) -> None:
        shown = http.origin(target.url)
        body = json.dumps(payload(event, target.format), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Driftless-Event": event["reason"],
                   "X-Driftless-Delivery": str(uuid.uuid4())}
        if not self._allowed(target.url):
            self.failed += 1
            log.error("event=notify-failed url=%s reason=%s error=not in the reconciler's --outbound-allow", shown,
                      event["reason"])
            return
        if target.secret_name:
            secret = self._secret(target.secret_name, event["env"])
            if secret is None:
                self.failed += 1
                log.error("event=notify-failed url=%s reason=%s error=%s", shown, event["reason"],
                          f"secret {target.secret_name!r} is not in the reconciler's --secrets-file for "
                          f"environment {event['env']!r}")
                return
            headers[SIGNATURE_HEADER] = sign(secret, body)
        backoff = self._backoff()
        why = ""
        # redirects are not followed: the body and its signature go to the allowed URL only
        with http.client(timeout=http.timeout(self._timeout), follow_redirects=False) as client:
            for attempt in range(1, self._attempts + 1):
                try:
                    r = client.post(target.url, content=body, headers=headers)
                    if r.is_success:
                        self.sent += 1
                        log.info("event=notified url=%s reason=%s env=%s attempt=%d", shown, event["reason"],
                                 event["env"], attempt)
                        return
                    why = f"HTTP {r.status_code}"
                    if not http.worth_retrying(r.status_code):
                        break  # the receiver refuses this body: sending it again changes nothing
                except httpx.HTTPError as exc:
                    why = http.reason(exc)
                if attempt < self._attempts and self._stop.wait(backoff.next_delay()):
                    break  # shutting down
        self.failed += 1
        log.warning("event=notify-failed url=%s reason=%s env=%s attempts=%d error=%s", shown, event["reason"],
                    event["env"], attempt, why)

    def idle(self) -> bool:
        """No delivery queued or being retried (for tests and shutdown)."""
        with self._lock:
            return self._pending == 0

    def close(self) -> None:
        """Stop retrying; deliveries in flight end at their next wait."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
