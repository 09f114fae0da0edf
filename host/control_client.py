"""The host's side of the control API (wire/control.py): register, long-poll the desired
state, report. Connects OUT (works behind NAT) with httpx (shared.http); backs off with jitter
(shared.retry) while the reconciler is unreachable and keeps running what it has (static
stability); registers again on 401/404."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx

from shared import http
from shared.retry import Backoff
from wire.control import PREFIX, HostDesiredState, HostRegistration, HostReport

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
    ) -> None:
        self.url = url.rstrip("/")
        self.ca_file = ca_file
        self.token = token
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

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

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
            except (Rejected, TimeoutError, httpx.HTTPError, OSError, ValueError, KeyError) as exc:
                message = str(exc) if isinstance(exc, Rejected) else f"{type(exc).__name__}: {exc}"
                if self.connected or message != self._last_failure:
                    log.warning("reconciler %s unreachable or refusing (%s); keeping what runs, retrying", self.url, message)
                self._last_failure = message
                self.connected = False
                self.registered.clear()
                # the cap follows the heartbeat the reconciler set; jitter: hosts don't retry in step
                self._backoff.cap = min(BACKOFF_MAX, max(BACKOFF_MIN_CAP, 2 * self.heartbeat))
                await self._backoff.wait()

    async def _register(self) -> None:
        assert self._client is not None
        body = self.registration().to_json()
        r = await self._client.post(f"{self.url}{PREFIX}/hosts/register", json=body, headers=self._headers())
        if r.status_code == 401:
            raise Rejected("the reconciler rejected the join token (401); check --token / --token-file")
        if r.status_code >= 300:
            raise Rejected(f"the reconciler refused the registration ({r.status_code}): {r.text[:300]}")
        answer = r.json()
        if isinstance(answer, dict) and answer.get("heartbeatSeconds"):
            self.heartbeat = float(answer["heartbeatSeconds"])
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
        r = await self._client.get(f"{self.url}{PREFIX}/hosts/{name}/desired", params=params, headers=self._headers())
        if r.status_code in (401, 404):
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
            try:
                await self.send_report()
            except Reregister as exc:
                log.warning("reconciler: %s; registering again", exc)
                self.registered.clear()
            except (TimeoutError, httpx.HTTPError, OSError) as exc:
                log.debug("report failed: %s", exc)

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
            f"{self.url}{PREFIX}/hosts/{report.name}/report", json=report.to_json(), headers=self._headers()
        )
        if r.status_code in (401, 404):
            raise Reregister(f"report answered {r.status_code}")
