"""A simulated host: a real client of the reconciler's control API that pretends to run what it is told.

It registers, long-polls its desired state and reports every instance Running at the desired
digest (or BackOff for ids in ``crashing``; ids in ``hidden`` are left out, as if stopped by hand).
``pause()`` stops its heartbeats (a lost host).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from wire.control import BACKOFF, RUNNING, HostDesiredState


class SimHost:
    def __init__(self, *, control: str, token: str, name: str, labels: dict[str, str], max_instances: int = 100,
                 beat: float = 0.2) -> None:
        self.control, self.token, self.name, self.labels = control, token, name, labels
        self.max_instances, self.beat = max_instances, beat
        self.doc: HostDesiredState | None = None
        self.started: dict[str, float] = {}  # instance id -> when it (re)started here
        self.crashing: set[str] = set()
        self.hidden: set[str] = set()
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.control}/api/v1{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read() or b"null")

    def register(self) -> None:
        status, _ = self.call("POST", "/hosts/register", {
            "name": self.name, "labels": self.labels, "capacity": {"memoryBytes": 1 << 30,
                                                                   "maxInstances": self.max_instances},
            "interfaces": [], "ingressUrl": None, "version": "sim"})
        assert status == 200, status

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
            if status == 404:
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
        doc = self.doc
        instances = []
        for spec in doc.instances if doc else ():
            if spec.id in self.hidden:
                continue
            crash = spec.id in self.crashing
            instances.append({
                "id": spec.id, "env": spec.env, "app": spec.app, "component": spec.component, "digest": spec.digest,
                "status": BACKOFF if crash else RUNNING, "restarts": 3 if crash else 0,
                "lastError": "wasm trap: unreachable" if crash else None, "config": dict(spec.config),
                "route": spec.route, "managed": True, "startedAt": self.started.get(spec.id),
            })
        try:
            self.call("POST", f"/hosts/{self.name}/report", {
                "name": self.name, "observedGeneration": doc.generation if doc else 0, "instances": instances})
        except OSError:
            pass

    def _report_loop(self) -> None:
        while not self._stop.wait(self.beat):
            if not self.paused.is_set():
                self.report()
