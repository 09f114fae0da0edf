"""The host's side of the control API (wire/control.py): register, long-poll the desired
state, report. Connects OUT (works behind NAT); backs off with jitter while the reconciler is
unreachable and keeps running what it has (static stability); registers again on 401/404."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable

import aiohttp

from wire.control import PREFIX, HostDesiredState, HostRegistration, HostReport

log = logging.getLogger("driftless.host")

LONG_POLL_SECONDS = 30
BACKOFF_FIRST = 0.2
# retries stay within a few heartbeats, so a restarted reconciler sees its hosts back before it
# would call them Lost; jitter spreads many hosts out
BACKOFF_MIN_CAP = 2.0
BACKOFF_MAX = 30.0


class Rejected(Exception):
    """The reconciler refused the registration (bad token, invalid document): retried with backoff."""


class Reregister(Exception):
    """The reconciler does not know this host (404) or rejected the token (401)."""


class ControlClient:
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
        self.ssl: ssl.SSLContext | None = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.token = token
        self.registration = registration
        self.report = report
        self.observed_generation = observed_generation
        self.on_desired = on_desired
        self.heartbeat = heartbeat
        self.changed = asyncio.Event()
        self.registered = asyncio.Event()
        self.connected = False
        self._session: aiohttp.ClientSession | None = None
        self._fresh = True
        self._last_failure = ""

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def notify_change(self) -> None:
        self.changed.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=LONG_POLL_SECONDS + 15, connect=5)
        connector = aiohttp.TCPConnector(ssl=self.ssl) if self.ssl else None
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            reporter = asyncio.create_task(self._report_loop())
            try:
                await self._poll_loop()
            finally:
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)

    async def _poll_loop(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                if not self.registered.is_set():
                    await self._register()
                await self._poll_once()
                delay = BACKOFF_FIRST
            except Reregister as exc:
                log.warning("reconciler: %s; registering again", exc)
                self.registered.clear()
            except (Rejected, TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
                message = str(exc) if isinstance(exc, Rejected) else f"{type(exc).__name__}: {exc}"
                if self.connected or message != self._last_failure:
                    log.warning("reconciler %s unreachable or refusing (%s); keeping what runs, retrying", self.url, message)
                self._last_failure = message
                self.connected = False
                self.registered.clear()
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # jitter: hosts don't retry in step
                delay = min(BACKOFF_MAX, max(BACKOFF_MIN_CAP, 2 * self.heartbeat), delay * 2)

    async def _register(self) -> None:
        assert self._session is not None
        body = self.registration().to_json()
        async with self._session.post(f"{self.url}{PREFIX}/hosts/register", json=body, headers=self._headers()) as r:
            if r.status == 401:
                raise Rejected("the reconciler rejected the join token (401); check --token / --token-file")
            if r.status >= 300:
                text = (await r.text())[:300]
                raise Rejected(f"the reconciler refused the registration ({r.status}): {text}")
            answer = await r.json()
        if isinstance(answer, dict) and answer.get("heartbeatSeconds"):
            self.heartbeat = float(answer["heartbeatSeconds"])
        self.connected = True
        self._last_failure = ""
        self._fresh = True  # the reconciler may have restarted with other generations: ask for its current one
        self.registered.set()
        log.info("registered with reconciler %s as %s", self.url, body["name"])
        self.changed.set()  # report at once after registering

    async def _poll_once(self) -> None:
        assert self._session is not None
        name = self.registration().name
        after = 0 if self._fresh else self.observed_generation()
        params = {"after": str(after), "wait": str(LONG_POLL_SECONDS)}
        async with self._session.get(
            f"{self.url}{PREFIX}/hosts/{name}/desired", params=params, headers=self._headers()
        ) as r:
            if r.status in (401, 404):
                raise Reregister(f"desired state answered {r.status}")
            if r.status == 204:
                self._fresh = False
                return
            if r.status != 200:
                raise aiohttp.ClientResponseError(r.request_info, (), status=r.status, message=await r.text())
            desired = HostDesiredState.from_json(await r.json())
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
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("report failed: %s", exc)

    async def final_report(self, *, timeout: float) -> None:
        """One last report on the way out (its own session: the loops are stopped by then)."""
        connector = aiohttp.TCPConnector(ssl=self.ssl) if self.ssl else None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), connector=connector) as session:
            self._session = session
            await self.send_report()

    async def send_report(self) -> None:
        assert self._session is not None
        report = self.report()
        async with self._session.post(
            f"{self.url}{PREFIX}/hosts/{report.name}/report", json=report.to_json(), headers=self._headers()
        ) as r:
            if r.status in (401, 404):
                raise Reregister(f"report answered {r.status}")
