"""Git commit status: the commit a user pushed shows, on GitHub or GitLab, what became of it in each
environment that asks for it (``spec.commitStatus`` of its environment.yaml)::

    commitStatus:
    - provider: github                  # or gitlab
      repository: acme/manifests        # GitLab: the project id or group/project
      token: {secretRef: github-status} # a secret of the reconciler's --secrets-file, scoped to the env
      url: https://api.github.com       # default; GitLab https://gitlab.com/api/v4 (--outbound-allow)
      context: driftless/prod           # default driftless/<env>
      targetUrl: https://driftless.example.com/

The state of the branch head, per environment (GitHub spelling; GitLab's in brackets):

- ``pending`` [running] while the reconciler works on it (loading, resolving, or applied and the
  environment's hosts converging: "applied, converging: 1/2 app(s) ready");
- ``success`` once it is applied and every application of the environment is Healthy and Synced;
- ``failure`` [failed] when the revision is rejected for that environment, with the first of its
  problems at file:line (a problem in ``dev/`` fails ``driftless/dev`` only: each environment applies
  its part of a commit on its own, see controller/evaluation.py);
- ``error`` [failed] when it is applied but an application is still Degraded (stalled) once the
  reconciler's grace time (``--grace``, 10 s) has passed since the apply (before, it is converging).

It is level-triggered: :meth:`CommitStatuses.update` runs in the controller's status loop, computes
the state from what the controller knows and posts a state only when it changed. The configuration
is the applied revision's (a rejected commit cannot say where its own rejection goes). Requests run
on a small thread pool with httpx (:mod:`shared.http`), never on the event loop; one status at a time
per (target, environment, commit), always the newest (a success never overtaken by an older pending
still being retried); no answer, 429 or 5xx is retried with :class:`shared.retry.Backoff`. The token
is read at each delivery, only when the environment may use that secret and the API URL is in the
operator's allow-list (both checked when the revision is loaded too: :mod:`.boundaries`), never
logged, and never sent across a redirect (a redirect is not followed: the status is not posted).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from model.types import CommitStatusTarget, Environment
from shared import http
from shared.retry import Backoff

log = logging.getLogger("driftless.reconciler")

API = {"github": "https://api.github.com", "gitlab": "https://gitlab.com/api/v4"}
GITLAB_STATE = {"pending": "running", "success": "success", "failure": "failed", "error": "failed"}
DESCRIPTION_MAX = 140  # GitHub refuses longer descriptions
ATTEMPTS = 5
TIMEOUT = 5.0
WORKERS = 2
MAX_PENDING = 200  # statuses queued or retrying; beyond that new ones are dropped (and logged)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # pending | success | failure | error (GitHub's words)
    description: str


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DESCRIPTION_MAX else text[:DESCRIPTION_MAX - 1] + "…"


def _where(error: Mapping[str, Any]) -> str:
    file, line, column = error.get("file"), error.get("line"), error.get("column")
    if not file:
        return ""
    return f"{file}:{line}" + (f":{column}" if column else "") + ": "


def outcome(*, env: str, head: str, applied: str | None, rejected: str | None,
            rejected_errors: Sequence[Mapping[str, Any]], apps: Sequence[Mapping[str, Any]],
            last_error: str | None, settled: bool = True) -> Outcome:
    """What ``env`` says of the branch head ``head`` (pure); ``settled``: the grace time since the
    apply is over (a Degraded app is stalled then, converging before)."""
    if rejected == head:
        first = rejected_errors[0] if rejected_errors else {}
        more = f" (+{len(rejected_errors) - 1} more)" if len(rejected_errors) > 1 else ""
        what = str(first.get("message") or first.get("text") or "invalid")
        return Outcome("failure", _clip(f"rejected{more}: {_where(first)}{what}"))
    if applied != head:
        return Outcome("pending", _clip("reconciling" + (f", retrying: {last_error}" if last_error else "")))
    stalled = [a for a in apps if a.get("health") == "Degraded"]
    if stalled and settled:
        a = stalled[0]
        return Outcome("error", _clip(f"stalled in {env}: {a.get('app')} is Degraded: {a.get('message') or ''}"))
    ready = [a for a in apps if a.get("health") == "Healthy" and a.get("sync") == "Synced"]
    if len(ready) == len(apps):
        return Outcome("success", _clip(f"applied in {env}, {len(apps)} app(s) healthy"))
    return Outcome("pending", _clip(f"applied in {env}, converging: {len(ready)}/{len(apps)} app(s) ready"))


def context_of(target: CommitStatusTarget, env: str) -> str:
    return target.context or f"driftless/{env}"


def request(target: CommitStatusTarget, *, env: str, sha: str, result: Outcome,
            token: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(URL, headers, JSON body) of one status in the provider's commit-status API."""
    api = (target.api_url or API[target.provider]).rstrip("/")
    if target.provider == "gitlab":
        url = f"{api}/projects/{quote(target.repository, safe='')}/statuses/{sha}"
        headers = {"PRIVATE-TOKEN": token}
        body: dict[str, Any] = {"state": GITLAB_STATE[result.state], "name": context_of(target, env),
                                "description": result.description}
    else:
        url = f"{api}/repos/{target.repository}/statuses/{sha}"
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": "2022-11-28"}
        body = {"state": result.state, "description": result.description, "context": context_of(target, env)}
    if target.target_url:
        body["target_url"] = target.target_url
    return url, {**headers, "Content-Type": "application/json", "User-Agent": "driftless-reconciler"}, body


class _Revision(Protocol):
    """What the reporter reads of the controller (reconciler.controller.pipeline.Controller)."""

    head: Any  # CommitInfo | None
    envs: Any  # EnvRevisions: per environment applied {"revision", "appliedAt", ...} and rejected
    settings: Any  # Settings (grace_seconds)
    @property
    def tree(self) -> Any: ...  # ManifestTree | None (the composite: each environment's configuration as applied)
    tracker: Any  # StatusTracker
    last_error: str | None


@dataclass(frozen=True, slots=True)
class _Job:
    target: CommitStatusTarget
    env: str
    sha: str
    result: Outcome


class CommitStatuses:
    """Posts the branch head's state per environment and target whenever it changes."""

    def __init__(self, revision: _Revision, *, secret: Callable[[str, str], str | None],
                 allowed: Callable[[str], bool], attempts: int = ATTEMPTS, backoff: Callable[[], Backoff] | None = None,
                 timeout: float = TIMEOUT) -> None:
        """``secret(name, env)``: the value of the reconciler's secret when ``env`` may use it;
        ``allowed(url)``: the URL is in the operator's outbound allow-list."""
        self._rev = revision
        self._secret = secret
        self._allowed = allowed
        self._attempts = max(1, attempts)
        self._backoff = backoff or (lambda: Backoff(first=0.5, cap=10.0))
        self._timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="commit-status")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: dict[tuple[Any, ...], _Job] = {}  # newest job per (target, env, sha) not sent yet
        self._busy: set[tuple[Any, ...]] = set()
        self._posted: dict[tuple[Any, ...], Outcome] = {}  # what was last decided per (target, env, sha)
        self._seen: tuple[Any, ...] | None = None
        self.sent = 0
        self.failed = 0

    # ------------------------------------------------------------------ deciding (event loop)
    def update(self) -> None:
        """Cheap when nothing moved: called every status-loop tick."""
        rev = self._rev
        tree, head = rev.tree, rev.head
        if tree is None or head is None or self._stop.is_set():
            return
        environments: Mapping[str, Environment] = tree.environments
        if not any(e.commit_status for e in environments.values()):
            return
        envs = rev.envs
        grace, now = float(rev.settings.grace_seconds), time.time()
        per_env = tuple(
            (name, envs.applied_revision(name), id(envs.rejected.get(name)),
             not (at := (envs.applied.get(name) or {}).get("appliedAt")) or now - float(at) >= grace)
            for name in sorted(environments))
        seen = (head.revision, id(tree), id(rev.tracker.views), rev.last_error, per_env)
        if seen == self._seen:
            return
        self._seen = seen
        sha = head.revision
        for name, applied, _, settled in per_env:
            environment = environments[name]
            if not environment.commit_status:
                continue
            rejected = envs.rejected.get(name)
            apps = [rev.tracker.app_status(name, a) or {"app": a} for a in sorted(tree.applications.get(name, {}))]
            result = outcome(env=name, head=sha, applied=applied, rejected=rejected.revision if rejected else None,
                             rejected_errors=rejected.errors if rejected else (), apps=apps, last_error=rev.last_error,
                             settled=settled)
            for target in environment.commit_status:
                key = (target, name, sha)
                if self._posted.get(key) == result:
                    continue
                if target.provider == "gitlab" and (old := self._posted.get(key)) is not None \
                        and GITLAB_STATE[old.state] == GITLAB_STATE[result.state]:
                    continue  # GitLab refuses a transition to the state a status already has
                self._posted[key] = result
                self._submit(key, _Job(target, name, sha, result))
        for key in [k for k in self._posted if k[2] != sha]:  # older commits are never reported again
            del self._posted[key]

    # ------------------------------------------------------------------ delivering (threads)
    def _submit(self, key: tuple[Any, ...], job: _Job) -> None:
        with self._lock:
            if key not in self._latest and len(self._latest) >= MAX_PENDING:
                log.warning("event=commit-status-dropped context=%s sha=%s state=%s pending=%d",
                            context_of(job.target, job.env), job.sha[:12], job.result.state, len(self._latest))
                return
            self._latest[key] = job
            if key in self._busy:
                return  # the worker on this key sends the newest job next
            self._busy.add(key)
        try:
            self._pool.submit(self._run, key)
        except RuntimeError:  # shut down meanwhile
            with self._lock:
                self._busy.discard(key)

    def _run(self, key: tuple[Any, ...]) -> None:
        try:
            while True:
                with self._lock:
                    job = self._latest.get(key)
                    if job is None:
                        self._busy.discard(key)
                        return
                try:
                    job = self._send(key, job)
                except Exception as exc:  # a delivery never takes anything else down
                    log.exception("event=commit-status-crashed context=%s error=%r", context_of(job.target, job.env),
                                  exc)
                with self._lock:
                    if self._latest.get(key) is job:
                        del self._latest[key]
        except BaseException:
            with self._lock:
                self._busy.discard(key)
            raise

    def _token(self, target: CommitStatusTarget, env: str) -> tuple[str | None, str]:
        """(token, why not) — the reason names where the token should be, never a value."""
        if not target.token_secret:
            return None, "no token configured"
        value = self._secret(target.token_secret, env)
        return (value, "") if value else (None, f"secret {target.token_secret!r} is not in the reconciler's "
                                                f"--secrets-file for environment {env!r}")

    def _send(self, key: tuple[Any, ...], job: _Job) -> _Job:
        """Post ``job`` (or a newer one for the same key, taken at each attempt); the job last tried."""
        context = context_of(job.target, job.env)
        token, why = self._token(job.target, job.env)
        api = job.target.api_url or API[job.target.provider]
        if token is not None and not self._allowed(api):
            token, why = None, f"{http.origin(api)} is not in the reconciler's --outbound-allow"
        if token is None:
            self.failed += 1
            log.error("event=commit-status-failed provider=%s context=%s sha=%s state=%s error=%s",
                      job.target.provider, context, job.sha[:12], job.result.state, why)
            return job
        backoff = self._backoff()
        attempt = 0
        # redirects are not followed: the token goes to the allowed URL only, never where a 3xx points
        with http.client(timeout=http.timeout(self._timeout), follow_redirects=False) as client:
            while True:
                attempt += 1
                with self._lock:  # a newer state for the same commit replaces this one, even between retries
                    job = self._latest.get(key, job)
                url, headers, body = request(job.target, env=job.env, sha=job.sha, result=job.result, token=token)
                shown = http.origin(url)
                try:
                    r = client.post(url, content=json.dumps(body).encode(), headers=headers)
                    if r.is_success:
                        self.sent += 1
                        log.info("event=commit-status provider=%s url=%s context=%s sha=%s state=%s attempt=%d",
                                 job.target.provider, shown, context, job.sha[:12], body["state"], attempt)
                        return job
                    why = f"HTTP {r.status_code}"
                    if not http.worth_retrying(r.status_code):
                        break  # refused (a wrong token, an unknown repository): sending it again changes nothing
                except httpx.HTTPError as exc:
                    why = http.reason(exc)
                if attempt >= self._attempts or self._stop.wait(backoff.next_delay()):
                    break
        self.failed += 1
        log.warning("event=commit-status-failed provider=%s url=%s context=%s sha=%s state=%s attempts=%d error=%s",
                    job.target.provider, shown, context, job.sha[:12], job.result.state, attempt, why)
        return job

    def idle(self) -> bool:
        with self._lock:
            return not self._busy

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
