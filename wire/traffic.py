"""Traffic splitting between two digests of one component (canary and shadow rollouts), as the
reconciler and the hosts exchange it.

Desired state: every instance of a component under a canary rollout (the stable ones and the
canary ones beside them) carries the same :class:`TrafficSplit` in ``InstanceSpec.traffic``; the
host's ingress sends ``weight`` percent of the component's requests (its route and its HTTP links)
to the instances running ``canary`` and the rest to those running ``stable``, and mirrors
``shadow_sample`` of the stable requests to the canary (answers discarded, compared).

Reports: ``HostReport.traffic`` holds, for each digest of each component under a split, cumulative
counters since the host started (:class:`DigestTraffic`); the reconciler compares the two digests
over the same window by subtracting the counters it saw when the window began.

A host advertises that it can split in ``HostRegistration.features`` (:data:`FEATURE_TRAFFIC_SPLIT`);
the reconciler does not start a canary on a host that does not (an older agent), it waits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FEATURE_TRAFFIC_SPLIT = "traffic-split/v1"

# latency histogram bucket upper bounds (seconds); the last bucket is +Inf
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

# the sticky-routing keys a client may send (docs/host.md "Canary traffic")
TRACK_HEADER = "x-driftless-track"  # request: "canary" or "stable" forces one (trusted callers); response: which one served
TRACK_TOKEN_HEADER = "x-driftless-track-token"  # what makes a caller trusted: the host's --track-token-file token
CLIENT_HEADER = "x-driftless-client"  # request: a client id; the same id always lands on the same side
CLIENT_COOKIE = "driftless-client"  # the same, as a cookie
STABLE, CANARY = "stable", "canary"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficSplit:
    stable: str  # digest serving 100 - weight percent
    canary: str  # digest serving weight percent
    weight: int = 0  # 0-100
    shadow_sample: float = 0.0  # fraction 0-1 of the stable requests also sent to the canary
    shadow_compare: str = "status"  # "status" or "body"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"stable": self.stable, "canary": self.canary, "weight": self.weight}
        if self.shadow_sample:
            d["shadow"] = {"sample": self.shadow_sample, "compare": self.shadow_compare}
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TrafficSplit:
        shadow = d.get("shadow") or {}
        return cls(stable=str(d["stable"]), canary=str(d["canary"]), weight=int(d.get("weight", 0)),
                   shadow_sample=float(shadow.get("sample", 0.0)), shadow_compare=str(shadow.get("compare", "status")))


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestTraffic:
    """Cumulative counters of one digest of one component on one host (since the host started)."""

    env: str
    app: str
    component: str
    digest: str
    requests: int = 0
    errors: int = 0  # answers with status >= 500 (the component's own, and the host's 503s)
    traps: int = 0  # traps and limits hit (fuel, deadline, memory, a crashed process)
    latency: tuple[int, ...] = ()  # counts per LATENCY_BUCKETS bucket (+Inf last), not cumulative
    shadow_requests: int = 0  # mirrored requests answered by this digest (the canary)
    shadow_mismatches: int = 0  # ... whose answer differed from the stable digest's
    fuel: int = 0  # wasm fuel units the requests below consumed (deterministic: the same on every machine)
    fuel_requests: int = 0  # requests whose fuel was measured (0: a runtime that cannot count it, `wasmtime serve`)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.env, self.app, self.component, self.digest)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"env": self.env, "app": self.app, "component": self.component, "digest": self.digest,
                             "requests": self.requests, "errors": self.errors, "traps": self.traps,
                             "latency": list(self.latency)}
        if self.shadow_requests:
            d["shadowRequests"] = self.shadow_requests
            d["shadowMismatches"] = self.shadow_mismatches
        if self.fuel_requests:
            d["fuel"] = self.fuel
            d["fuelRequests"] = self.fuel_requests
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DigestTraffic:
        return cls(env=str(d.get("env", "")), app=str(d.get("app", "")), component=str(d.get("component", "")),
                   digest=str(d.get("digest", "")), requests=int(d.get("requests", 0)),
                   errors=int(d.get("errors", 0)), traps=int(d.get("traps", 0)),
                   latency=tuple(int(x) for x in d.get("latency") or ()),
                   shadow_requests=int(d.get("shadowRequests", 0)), shadow_mismatches=int(d.get("shadowMismatches", 0)),
                   fuel=int(d.get("fuel", 0)), fuel_requests=int(d.get("fuelRequests", 0)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """One digest's figures over a window (differences of :class:`DigestTraffic` counters)."""

    requests: int = 0
    errors: int = 0
    traps: int = 0
    latency: tuple[int, ...] = field(default_factory=lambda: (0,) * (len(LATENCY_BUCKETS) + 1))
    shadow_requests: int = 0
    shadow_mismatches: int = 0
    fuel: int = 0
    fuel_requests: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def fuel_per_request(self) -> float | None:
        """Mean fuel per measured request; None when none was measured (idle, or `wasmtime serve`)."""
        return self.fuel / self.fuel_requests if self.fuel_requests else None

    def p99(self) -> float | None:
        return quantile(self.latency, 0.99)

    def plus(self, other: Window) -> Window:
        n = max(len(self.latency), len(other.latency))
        a = tuple(self.latency) + (0,) * (n - len(self.latency))
        b = tuple(other.latency) + (0,) * (n - len(other.latency))
        return Window(requests=self.requests + other.requests, errors=self.errors + other.errors,
                      traps=self.traps + other.traps, latency=tuple(x + y for x, y in zip(a, b, strict=True)),
                      shadow_requests=self.shadow_requests + other.shadow_requests,
                      shadow_mismatches=self.shadow_mismatches + other.shadow_mismatches,
                      fuel=self.fuel + other.fuel, fuel_requests=self.fuel_requests + other.fuel_requests)

    def to_json(self) -> dict[str, Any]:
        p99 = self.p99()
        d: dict[str, Any] = {"requests": self.requests, "errors": self.errors, "errorRate": round(self.error_rate, 4),
                             "traps": self.traps, "p99Ms": None if p99 is None else round(p99 * 1000, 2)}
        if self.shadow_requests:
            d["shadowRequests"] = self.shadow_requests
            d["shadowMismatches"] = self.shadow_mismatches
        if self.fuel_requests:
            d["fuelPerRequest"] = round(self.fuel / self.fuel_requests, 1)
        elif self.requests:
            d["fuelPerRequest"] = None  # requests served, none with a fuel count: unmeasured (`wasmtime serve`)
        return d


def since(now: DigestTraffic, before: DigestTraffic | None) -> Window:
    """The window between two readings of one host's counters (a restarted host counts from 0)."""
    if before is None or now.requests < before.requests:
        return Window(requests=now.requests, errors=now.errors, traps=now.traps, latency=tuple(now.latency)
                      or Window().latency, shadow_requests=now.shadow_requests,
                      shadow_mismatches=now.shadow_mismatches, fuel=now.fuel, fuel_requests=now.fuel_requests)
    n = max(len(now.latency), len(before.latency))
    a = tuple(now.latency) + (0,) * (n - len(now.latency))
    b = tuple(before.latency) + (0,) * (n - len(before.latency))
    return Window(requests=now.requests - before.requests, errors=now.errors - before.errors,
                  traps=now.traps - before.traps, latency=tuple(max(0, x - y) for x, y in zip(a, b, strict=True)),
                  shadow_requests=max(0, now.shadow_requests - before.shadow_requests),
                  shadow_mismatches=max(0, now.shadow_mismatches - before.shadow_mismatches),
                  fuel=max(0, now.fuel - before.fuel), fuel_requests=max(0, now.fuel_requests - before.fuel_requests))


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of a latency histogram (counts per LATENCY_BUCKETS bucket, +Inf last),
    interpolated linearly inside its bucket, like Prometheus' histogram_quantile; None when empty."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(LATENCY_BUCKETS):
                return LATENCY_BUCKETS[-1]
            low = LATENCY_BUCKETS[i - 1] if i else 0.0
            return low + (LATENCY_BUCKETS[i] - low) * (rank - seen) / count
        seen += count
    return LATENCY_BUCKETS[-1]
