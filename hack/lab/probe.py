"""A bounded client loop inside a site: GET a URL every ``interval`` seconds from a thread in the
site's namespace, recording each answer (monotonic time, ok, body) until stopped or ``limit`` passes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

from hack.lab.netns import Namespaced


@dataclass
class Sample:
    at: float
    ok: bool
    body: str


@dataclass
class Probe:
    site: str
    url: str
    interval: float = 0.1
    limit: float = 300.0  # never runs longer than this
    timeout: float = 1.0
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._ns = Namespaced(self.site)
        self._done = self._ns.submit(self._loop)

    def _loop(self) -> None:
        end = time.monotonic() + self.limit
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set() and time.monotonic() < end:
                at = time.monotonic()
                try:
                    r = client.get(self.url)
                    self.samples.append(Sample(at, r.status_code == 200, r.text))
                except httpx.HTTPError as exc:
                    self.samples.append(Sample(at, False, repr(exc)))
                self._stop.wait(self.interval)

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._done.result(timeout=30)
        self._ns.close()
        return self.samples

    def failed(self, since: float = 0.0, until: float = float("inf")) -> list[Sample]:
        return [s for s in self.samples if since <= s.at <= until and not s.ok]

    def first(self, text: str, since: float = 0.0) -> float | None:
        """When an answer containing ``text`` first came, at or after ``since``."""
        return next((s.at for s in self.samples if s.at >= since and s.ok and text in s.body), None)
