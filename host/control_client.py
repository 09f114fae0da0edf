"""The host's side of the control API (wire/control.py): register, long-poll the desired
state, report. Connects OUT (works behind NAT) with httpx (shared.http); backs off with jitter
(shared.retry) while the reconciler is unreachable and keeps running what it has (static
stability); registers again on 401/404.

Identity: the join token only bootstraps. The registration's answer carries this host's credential,
kept in ``credential_file`` (mode 0600) and presented on desired/report and when registering again
(a restart keeps its name). A credential the reconciler does not know (its state was reset) falls
back to the join token, which works when the name is free.

Several reconcilers (replicated on PostgreSQL): ``url`` may list several, comma-separated. The host
talks to one at a time; a follower answers 503 naming the leader (``{"leader": URL}``), and the host
goes there at once when that URL is one of its ``--control`` URLs with the same scheme (another
address, or https named as http, is not followed: the host's credential goes nowhere else); a
reconciler that does not answer (or answers 503 without a leader) sends it to the next URL of the
list, with backoff. A report that fails (connection refused, no answer within
``max(5, 2 x heartbeat)`` seconds: a paused process) ends the long-poll too, so a host never waits
on a dead leader for a whole long-poll. Nothing restarts: what runs keeps running, the new leader
answers with the same generation (it is in the shared database), which the host already runs."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import httpx

from shared import http
from shared.control_urls import listed_url
from shared.retry import Backoff
from wire.control import PREFIX, HostDesiredState, HostRegistered, HostRegistration, HostReport

log = logging.getLogger("driftless.host")

LONG_POLL_SECONDS = 30
BACKOFF_FIRST = 0.2
# retries stay within a few heartbeats, so a restarted reconciler sees its hosts back before it
# would call them Lost; jitter spreads many hosts out
BACKOFF_MIN_CAP = 2.0
BACKOFF_MAX = 30.0
BACKOFF_JITTER = 0.5
# the long-poll's answer may take LONG_POLL_SECONDS to come: reads wait longer than that
POLL_TIMEOUT = http.timeout(LONG_POLL_SECONDS + 15, connect=5)


class Rejected(Exception):
    """The reconciler refused the registration (bad token, invalid document): retried with backoff."""


class Reregister(Exception):
    """The reconciler does not know this host (404) or rejected the token (401)."""


class NotLeader(Exception):
    """A follower answered 503: ``leader`` is the URL it named (None: no leader known yet)."""

    def __init__(self, message: str, leader: str | None) -> None:
        super().__init__(message)
        self.leader = leader


def _not_leader(r: httpx.Response, what: str) -> NotLeader | None:
    if r.status_code != 503:
        return None
    try:
        body = r.json()
    except ValueError:
        body = {}
    leader = body.get("leader") if isinstance(body, dict) else None
    return NotLeader(f"{what} answered 503: {_error_text(r)}", leader if isinstance(leader, str) and leader else None)


class ControlChannel:
    def __init__(
        self,
        *,
        url: str,
        token: str | None,
        registration: Callable[[], HostRegistration],
        report: Callable[[], HostReport],
        observed_generation: Callable[[], int],
        on_desired: Callable[[HostDesiredState], None],
        heartbeat: float,
        ca_file: str | None = None,
        credential_file: Path | None = None,
    ) -> None:
        self.urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()] or [url.rstrip("/")]
        self.url = self.urls[0]
        self.ca_file = ca_file
        self.token = token
        self.credential_file = credential_file
        self.credential = load_credential(credential_file)
        self.registration = registration
        self.report = report
        self.observed_generation = observed_generation
        self.on_desired = on_desired
        self.heartbeat = heartbeat
        self.changed = asyncio.Event()
        self.registered = asyncio.Event()
        self.connected = False
        self._client: httpx.AsyncClient | None = None
        self._backoff = Backoff(first=BACKOFF_FIRST, cap=BACKOFF_MAX, jitter=BACKOFF_JITTER)
        self._fresh = True
        self._last_failure = ""
        self._interrupt = asyncio.Event()  # a failed report ends the long-poll on the same reconciler

    def _fail_over(self, failed: str, leader: str | None = None) -> None:
        """Talk to ``leader`` (named by a follower) when it is one of our URLs, else the URL after
        ``failed`` in the list."""
        if self.url != failed:
            return  # the other loop moved on already
        followed = listed_url(leader, listed=self.urls)
        if leader and followed is None:
            log.warning("reconciler %s names the leader %s, which is not one of --control %s (or not with the same "
                        "scheme): not following it", failed, leader, ",".join(self.urls))
        leader = followed
        if leader:
            self.url = leader
        elif len(self.urls) > 1:
            position = self.urls.index(failed) if failed in self.urls else -1
            self.url = self.urls[(position + 1) % len(self.urls)]
        if self.url != failed:
            log.warning("reconciler %s: %s; trying %s", failed, "not the leader" if leader else "unavailable", self.url)
            self.registered.clear()
            self._interrupt.set()

    def _headers(self) -> dict[str, str]:
        """Desired state and reports: this host's credential (the join token is refused there)."""
        return {"Authorization": f"Bearer {self.credential}"} if self.credential else {}

    def notify_change(self) -> None:
        self.changed.set()

    async def run(self) -> None:
        async with http.async_client(timeout=POLL_TIMEOUT, ca_file=self.ca_file) as client:
            self._client = client
            reporter = asyncio.create_task(self._report_loop())
            try:
                await self._poll_loop()
            finally:
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)

    async def _poll_loop(self) -> None:
        while True:
            try:
                if not self.registered.is_set():
                    await self._register()
                await self._poll_once()
                self._backoff.reset()
            except Reregister as exc:
                log.warning("reconciler: %s; registering again", exc)
                self.registered.clear()
            except NotLeader as exc:
                failed = self.url
                self._fail_over(failed, exc.leader)
                self.connected = False
                self.registered.clear()
                if self.url == failed:  # no leader known and nowhere else to go: wait a little
                    self._backoff.cap = min(BACKOFF_MAX, max(BACKOFF_MIN_CAP, 2 * self.heartbeat))
                    await self._backoff.wait()
                else:
                    await asyncio.sleep(0.05)
            except (Rejected, TimeoutError, httpx.HTTPError, OSError, ValueError, KeyError) as exc:
                message = str(exc) if isinstance(exc, Rejected) else f"{type(exc).__name__}: {exc}"
                if self.connected or message != self._last_failure:
                    log.warning("reconciler %s unreachable or refusing (%s); keeping what runs, retrying", self.url, message)
                self._last_failure = message
                self.connected = False
                self.registered.clear()
                self._fail_over(self.url)
                # the cap follows the heartbeat the reconciler set; jitter: hosts don't retry in step
                self._backoff.cap = min(BACKOFF_MAX, max(BACKOFF_MIN_CAP, 2 * self.heartbeat))
                await self._backoff.wait()

    async def _register(self) -> None:
        assert self._client is not None
        body = self.registration().to_json()
        url = f"{self.url}{PREFIX}/hosts/register"
        r = None
        if self.credential:  # a restart: our own credential keeps our name
            r = await self._client.post(url, json=body, headers={"Authorization": f"Bearer {self.credential}"})
            if (follower := _not_leader(r, "registration")) is not None:
                raise follower
            if r.status_code == 403 and _reason(r) == "OutsideEnrollment":
                # our own credential, refused for asking more than our enrollment allows: the join token
                # cannot widen it (the reconciler says so too), so do not try it
                raise Rejected(f"the reconciler refused the registration (403): {_error_text(r)}")
            if r.status_code in (401, 403):
                log.warning("the reconciler does not know this host's credential (%d); registering with the join token",
                            r.status_code)
                r = None
        if r is None:
            if not self.token:
                raise Rejected("the reconciler does not know this host's credential and there is no join token; "
                               "pass --token / --token-file")
            r = await self._client.post(url, json=body, headers={"Authorization": f"Bearer {self.token}"})
        if (follower := _not_leader(r, "registration")) is not None:
            raise follower
        if r.status_code == 401:
            raise Rejected("the reconciler rejected the join token (401); check --token / --token-file")
        if r.status_code >= 300:
            raise Rejected(f"the reconciler refused the registration ({r.status_code}): {_error_text(r)}")
        answer = HostRegistered.from_json(r.json())
        if answer.heartbeat_seconds > 0:
            self.heartbeat = answer.heartbeat_seconds
        if answer.credential and answer.credential != self.credential:
            self.credential = answer.credential
            if self.credential_file is not None:
                try:
                    save_credential(self.credential_file, answer.credential)
                except OSError as exc:  # keeps working; a restart will need the join token again
                    log.error("cannot save the host credential to %s: %s", self.credential_file, exc)
        self.connected = True
        self._last_failure = ""
        self._fresh = True  # the reconciler may have restarted with other generations: ask for its current one
        self.registered.set()
        log.info("registered with reconciler %s as %s", self.url, body["name"])
        self.changed.set()  # report at once after registering

    async def _poll_once(self) -> None:
        assert self._client is not None
        name = self.registration().name
        after = 0 if self._fresh else self.observed_generation()
        params = {"after": str(after), "wait": str(LONG_POLL_SECONDS)}
        self._interrupt.clear()
        poll = asyncio.ensure_future(
            self._client.get(f"{self.url}{PREFIX}/hosts/{name}/desired", params=params, headers=self._headers()))
        interrupted = asyncio.ensure_future(self._interrupt.wait())
        try:
            await asyncio.wait({poll, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            interrupted.cancel()
            if not poll.done():
                poll.cancel()
        if not poll.done() or poll.cancelled():
            return  # a report failed over to another reconciler: register there
        r = poll.result()
        if (follower := _not_leader(r, "desired state")) is not None:
            raise follower
        if r.status_code in (401, 403, 404):
            raise Reregister(f"desired state answered {r.status_code}")
        if r.status_code == 204:
            self._fresh = False
            return
        if r.status_code != 200:
            raise httpx.HTTPStatusError(f"desired state answered {r.status_code}: {r.text[:300]}", request=r.request,
                                        response=r)
        desired = HostDesiredState.from_json(r.json())
        self._fresh = False
        if desired.generation != self.observed_generation():
            self.on_desired(desired)

    async def _report_loop(self) -> None:
        while True:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
                # races with the event being set (the host would never finish stopping)
                async with asyncio.timeout(self.heartbeat):
                    await self.changed.wait()
            except TimeoutError:
                pass
            self.changed.clear()
            if not self.registered.is_set():
                continue
            target = self.url
            try:
                await self.send_report()
            except Reregister as exc:
                log.warning("reconciler: %s; registering again", exc)
                self.registered.clear()
            except NotLeader as exc:
                self._fail_over(target, exc.leader)
            except (TimeoutError, httpx.HTTPError, OSError) as exc:
                log.debug("report failed: %s", exc)
                if len(self.urls) > 1:  # replicated reconcilers: this one may be dead or paused
                    self._fail_over(target)

    async def final_report(self, *, timeout: float) -> None:
        """One last report on the way out (its own client: the loops are stopped by then)."""
        # httpx's timeouts are per connect/read/write; the outer one bounds the whole report
        async with asyncio.timeout(timeout), http.async_client(timeout=timeout, ca_file=self.ca_file) as client:
            self._client = client
            await self.send_report()

    async def send_report(self) -> None:
        assert self._client is not None
        report = self.report()
        r = await self._client.post(
            f"{self.url}{PREFIX}/hosts/{report.name}/report", json=report.to_json(), headers=self._headers(),
            # replicated reconcilers: a paused one must not hold the host for a whole long-poll timeout
            timeout=http.timeout(max(5.0, 2 * self.heartbeat)) if len(self.urls) > 1 else POLL_TIMEOUT,
        )
        if (follower := _not_leader(r, "report")) is not None:
            raise follower
        if r.status_code in (401, 403, 404):
            raise Reregister(f"report answered {r.status_code}")


def _reason(r: httpx.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return None
    return body.get("reason") if isinstance(body, dict) else None


def _error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"]) + (f" ({body['hint']})" if body.get("hint") else "")
    return r.text[:300]


def load_credential(path: Path | None) -> str | None:
    """The host credential saved by an earlier run, or None."""
    if path is None:
        return None
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cannot read the host credential %s: %s", path, exc)
        return None
    return value or None


def save_credential(path: Path, credential: str) -> None:
    """Write the credential (mode 0600) next to its final name, then rename: never a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, credential.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
