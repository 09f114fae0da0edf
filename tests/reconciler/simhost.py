"""A simulated host: a real client of the reconciler's control API that pretends to run what it is told.

It is a fake ON PURPOSE, for the tests that need a host a real ``driftless host`` cannot be made into
on demand: one that crash-loops an instance (``crashing``: reported BackOff with a wasm trap, without
a component that traps), hides an instance (``hidden``: left out of its report, as if stopped behind
the reconciler's back, without racing a real supervisor), or stops its heartbeats while its process
lives on (``pause()``: a lost host that comes back with its state), and for benchmarks of many hosts.
Everything else uses real hosts (tests/support/platform.py).

It speaks the same wire types as the real host (``wire/control.py``): it registers with a
``HostRegistration`` (the join token the first time, then the credential the reconciler returned, as
a real host does), long-polls its ``HostDesiredState`` and posts ``HostReport``s of
``InstanceStatus`` (every instance Running at the desired digest, but for the misbehaviour above).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from wire.control import (
    BACKOFF,
    RUNNING,
    HostCapacity,
    HostDesiredState,
    HostRegistered,
    HostRegistration,
    HostReport,
    InstanceStatus,
)
from wire.traffic import DigestTraffic


class SimHost:
    def __init__(self, *, control: str, token: str, name: str, labels: dict[str, str], max_instances: int = 100,
                 beat: float = 0.2, ingress_url: str | None = None, features: tuple[str, ...] = ()) -> None:
        self.control, self.token, self.name, self.labels = control, token, name, labels
        self.ingress_url, self.features = ingress_url, features
        self.traffic: tuple[DigestTraffic, ...] = ()  # counters it reports (whatever it runs: a host may lie)
        self.max_instances, self.beat = max_instances, beat
        self.credential: str | None = None  # returned by the registration: desired, reports, registering again
        self.doc: HostDesiredState | None = None
        self.started: dict[str, float] = {}  # instance id -> when it (re)started here
        self.crashing: set[str] = set()
        self.hidden: set[str] = set()
        self.paused = threading.Event()
        self._stop = threading.Event()
        # a real host sends one report at a time (host/control_client.py: one loop); the two threads here
        # would otherwise race: a heartbeat built from the old desired state, delivered after the report of
        # the new one, made the reconciler see instances vanish (Healthy -> Progressing between two reads)
        self._reporting = threading.Lock()
        self._threads: list[threading.Thread] = []

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> tuple[int, Any]:
        """One control API call with this host's credential (or ``token``); OSError when the reconciler
        cannot be reached (as a real host sees it)."""
        bearer = token or self.credential or ""
        try:
            r = httpx.request(method, f"{self.control}/api/v1{path}", json=body, timeout=10,
                              headers={"Authorization": f"Bearer {bearer}"})
        except httpx.TransportError as e:
            raise OSError(str(e)) from e
        return r.status_code, r.json() if r.content else None

    def registration(self) -> HostRegistration:
        return HostRegistration(name=self.name, labels=self.labels, version="sim", ingress_url=self.ingress_url,
                                features=self.features,
                                capacity=HostCapacity(memory_bytes=1 << 30, max_instances=self.max_instances))

    def register(self) -> None:
        reg = self.registration()
        status, answer = (0, None)
        if self.credential:  # registering again: our own credential keeps our name
            status, answer = self.call("POST", "/hosts/register", reg.to_json())
        if status != 200:
            status, answer = self.call("POST", "/hosts/register", reg.to_json(), token=self.token)
        assert status == 200, (status, answer)
        self.credential = HostRegistered.from_json(answer).credential

    def start(self) -> SimHost:
        self.register()
        for target in (self._poll, self._report_loop):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop_soon(self) -> None:
        """Tell the threads to stop without waiting (to stop many hosts at once)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def pause(self) -> None:
        self.paused.set()

    def resume(self) -> None:
        self.paused.clear()

    def _poll(self) -> None:
        while not self._stop.is_set():
            if self.paused.is_set():
                time.sleep(0.05)
                continue
            after = self.doc.generation if self.doc else 0
            try:
                status, body = self.call("GET", f"/hosts/{self.name}/desired?after={after}&wait=1")
            except OSError:
                time.sleep(0.2)
                continue
            if status in (401, 404):
                self.register()
            elif status == 200 and not self.paused.is_set():
                self._converge(HostDesiredState.from_json(body))
                self.report()

    def _converge(self, doc: HostDesiredState) -> None:
        old = {i.id: i for i in (self.doc.instances if self.doc else ())}
        now = time.time()
        for spec in doc.instances:
            prev = old.get(spec.id)
            if prev is None or prev.digest != spec.digest or prev.config != spec.config:
                self.started[spec.id] = now
        for gone in set(old) - {i.id for i in doc.instances}:
            self.started.pop(gone, None)
        self.doc = doc

    def report(self) -> None:
        with self._reporting:  # built and delivered in order
            self._report()

    def _report(self) -> None:
        doc = self.doc
        instances = []
        for spec in doc.instances if doc else ():
            if spec.id in self.hidden:
                continue
            crash = spec.id in self.crashing
            instances.append(InstanceStatus(
                id=spec.id, env=spec.env, app=spec.app, component=spec.component, digest=spec.digest,
                status=BACKOFF if crash else RUNNING, restarts=3 if crash else 0,
                last_error="wasm trap: unreachable" if crash else None, config=dict(spec.config),
                route=spec.route, managed=True, started_at=self.started.get(spec.id),
            ))
        report = HostReport(name=self.name, observed_generation=doc.generation if doc else 0,
                            instances=tuple(instances), traffic=self.traffic)
        try:
            self.call("POST", f"/hosts/{self.name}/report", report.to_json())
        except OSError:
            pass

    def _report_loop(self) -> None:
        while not self._stop.wait(self.beat):
            if not self.paused.is_set():
                self.report()
