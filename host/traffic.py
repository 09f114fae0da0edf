"""Traffic splitting at the host's ingress (canary rollouts) and per-digest traffic figures.

The reconciler marks every instance of a component under a canary rollout with the same
:class:`wire.traffic.TrafficSplit` (stable digest, canary digest, weight, shadow sample). For each
request of that component (its route and its HTTP links, whichever runtime serves it), the ingress
picks a side:

1. ``x-driftless-track: canary`` / ``stable`` forces a side (a tester trying the canary), from a
   trusted caller only: with ``x-driftless-track-token: <the host's --track-token-file token>``
   (:func:`trusted_track`); from anyone else the header is ignored and never reaches the component;
2. else a client id, ``x-driftless-client: ID`` or the cookie ``driftless-client=ID``, makes it
   sticky: the side is a hash of the id (bucket 0-9999) against the weight, the same on every host,
   and a client on the canary stays there while the weight grows;
3. else weighted at random.

The answer says which side served it (``x-driftless-track``). A stable request is also mirrored to
the canary with probability ``shadow_sample``: the canary's answer is discarded, compared with the
stable one (status, or status and body) and counted. Every answer is counted per digest: requests,
errors (status >= 500), traps (and limits hit), a latency histogram (wire.traffic.LATENCY_BUCKETS)
and the fuel each call consumed where the runtime can measure it (in-process; not `wasmtime serve`)
- in the host's Prometheus metrics (``GET /metrics`` on the admin listener) and, for components
under a split, in its reports to the reconciler.
"""

from __future__ import annotations

import bisect
import hmac
import random
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from wire.control import InstanceSpec
from wire.traffic import (
    CANARY,
    CLIENT_COOKIE,
    CLIENT_HEADER,
    LATENCY_BUCKETS,
    STABLE,
    TRACK_HEADER,
    TRACK_TOKEN_HEADER,
    DigestTraffic,
    TrafficSplit,
)

TRAP_REASONS = frozenset({"trap", "fuel", "deadline", "memory", "crash"})
REPORT_EVERY = 0.5  # seconds: while a split is active, counters reach the reconciler at least this often

Key = tuple[str, str, str]  # env, app, component


class _HasSpec(Protocol):
    spec: InstanceSpec


T = TypeVar("T", bound=_HasSpec)


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    errors: int = 0
    traps: int = 0
    seconds: float = 0.0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    shadow_requests: int = 0
    shadow_mismatches: int = 0
    fuel: int = 0
    fuel_requests: int = 0


def client_bucket(client: str) -> int:
    """0-9999 from a client id: the same on every host and in both data paths (CRC-32, which HAProxy
    computes natively as its ``crc32`` converter: host/dataplane/config.py; not Python's salted hash)."""
    return zlib.crc32(client.encode()) % 10_000


def trusted_track(headers: Mapping[str, str], *, token: str | None) -> str | None:
    """The side ``x-driftless-track`` forces, when the request proves it may (``x-driftless-track-token``
    equal to the host's ``token``); None otherwise, and always when the host has no token."""
    side = (headers.get(TRACK_HEADER) or "").strip().lower()
    if not token or side not in (CANARY, STABLE):
        return None
    given = (headers.get(TRACK_TOKEN_HEADER) or "").encode()
    return side if hmac.compare_digest(given, token.encode()) else None


def _client_id(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
    return headers.get(CLIENT_HEADER) or cookies.get(CLIENT_COOKIE) or None


class Traffic:
    """The splits this host applies (from its desired state) and the per-digest counters."""

    def __init__(self, *, on_report_due: Callable[[], None] = lambda: None,
                 rand: Callable[[], float] = random.random) -> None:
        self.splits: dict[Key, TrafficSplit] = {}
        self.counters: dict[tuple[str, str, str, str], _Counters] = {}
        self._on_report_due = on_report_due
        self._rand = rand
        self._last_due = 0.0

    def update(self, specs: Iterable[InstanceSpec]) -> None:
        """The splits of a new desired state: every instance of a component carries the same one."""
        self.splits = {(s.env, s.app, s.component): s.traffic for s in specs if s.traffic is not None}

    def split_of(self, spec: InstanceSpec) -> TrafficSplit | None:
        return self.splits.get((spec.env, spec.app, spec.component))

    def choose(self, instances: Sequence[T], *, headers: Mapping[str, str], cookies: Mapping[str, str],
               pick: Callable[[list[T]], T], forced: str | None = None,
               mirror: bool | None = None) -> tuple[T, str | None, T | None]:
        """The instance that serves, its side (None: no split), and the canary instance that gets a
        shadow copy (None: no mirror). ``forced``: the side a trusted caller asked for (trusted_track);
        ``mirror``: the shadow decision already taken (the native data plane samples it), None: sample
        here; ``headers`` are read for the client id only."""
        first = instances[0]
        split = self.split_of(first.spec)
        if split is None:
            return pick(list(instances)), None, None
        stable = [i for i in instances if i.spec.digest == split.stable]
        canary = [i for i in instances if i.spec.digest == split.canary]
        if not canary or not stable:  # one side not serving (yet): the other takes everything
            only = canary or stable or list(instances)
            side = CANARY if canary else STABLE
            return pick(only), side if (canary or stable) else None, None
        if forced in (CANARY, STABLE):
            side = forced
        else:
            client = _client_id(headers, cookies)
            bucket = client_bucket(client) if client else int(self._rand() * 10_000)
            side = CANARY if bucket < split.weight * 100 else STABLE
        if side == CANARY:
            return pick(canary), CANARY, None
        sampled = mirror if mirror is not None else bool(split.shadow_sample and self._rand() < split.shadow_sample)
        shadow = pick(canary) if sampled else None
        return pick(stable), STABLE, shadow

    # -- counting ------------------------------------------------------------------------------
    def _counter(self, spec: InstanceSpec) -> _Counters:
        key = (spec.env, spec.app, spec.component, spec.digest)
        found = self.counters.get(key)
        if found is None:
            found = self.counters[key] = _Counters()
        return found

    def record(self, spec: InstanceSpec, *, status: int, seconds: float, reason: str | None = None,
               fuel: int | None = None) -> None:
        """Count one answer; ``fuel``: the units the call consumed, None where the runtime cannot
        measure it (`wasmtime serve` processes, answers the host gave itself)."""
        c = self._counter(spec)
        c.requests += 1
        if fuel is not None:
            c.fuel += fuel
            c.fuel_requests += 1
        c.seconds += seconds
        c.latency[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        if status >= 500:
            c.errors += 1
        if reason in TRAP_REASONS:
            c.traps += 1
        if (spec.env, spec.app, spec.component) in self.splits:
            now = time.monotonic()
            if now - self._last_due >= REPORT_EVERY:
                self._last_due = now
                self._on_report_due()

    def count(self, spec: InstanceSpec, *, requests: int = 0, errors: int = 0, traps: int = 0) -> None:
        """Counts the native data plane read from HAProxy's per-server counters (host/dataplane)."""
        c = self._counter(spec)
        c.requests += requests
        c.errors += errors
        c.traps += traps
        if requests and (spec.env, spec.app, spec.component) in self.splits:
            now = time.monotonic()
            if now - self._last_due >= REPORT_EVERY:
                self._last_due = now
                self._on_report_due()

    def observe(self, spec: InstanceSpec, seconds: float, *, weight: int = 1) -> None:
        """An answer's latency from the native data plane's request log (its count is in ``count``);
        ``weight``: the requests this sampled one stands for."""
        c = self._counter(spec)
        c.seconds += seconds * weight
        c.latency[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += weight

    def record_shadow(self, spec: InstanceSpec, *, matched: bool) -> None:
        c = self._counter(spec)
        c.shadow_requests += 1
        if not matched:
            c.shadow_mismatches += 1

    def report(self) -> tuple[DigestTraffic, ...]:
        """Counters of the components under a split (what the reconciler compares)."""
        return tuple(
            DigestTraffic(env=env, app=app, component=comp, digest=digest, requests=c.requests, errors=c.errors,
                          traps=c.traps, latency=tuple(c.latency), shadow_requests=c.shadow_requests,
                          shadow_mismatches=c.shadow_mismatches, fuel=c.fuel, fuel_requests=c.fuel_requests)
            for (env, app, comp, digest), c in sorted(self.counters.items())
            if (env, app, comp) in self.splits
        )


def matches(compare: str, a: tuple[int, bytes], b: tuple[int, bytes]) -> bool:
    """Whether a shadow answer matches the stable one: status, or status and body."""
    if compare == "body":
        return a == b
    return a[0] == b[0]


class TrafficCollector(Collector):
    """``driftless_host_requests_total`` & co., per env, app, component and digest."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic

    def collect(self) -> Iterable[Metric]:
        labels = ["env", "app", "component", "digest"]
        requests = CounterMetricFamily("driftless_host_requests", "Requests served, per digest.", labels=labels)
        errors = CounterMetricFamily("driftless_host_request_errors", "Answers with status >= 500, per digest.",
                                     labels=labels)
        traps = CounterMetricFamily("driftless_host_traps", "Traps and limits hit while serving, per digest.",
                                    labels=labels)
        shadow = CounterMetricFamily("driftless_host_shadow_requests", "Mirrored requests a canary answered.",
                                     labels=[*labels, "match"])
        latency = HistogramMetricFamily("driftless_host_request_duration_seconds",
                                        "Time to answer a request through the ingress, per digest.", labels=labels)
        fuel = CounterMetricFamily("driftless_host_fuel_consumed", "Wasm fuel units consumed by the requests "
                                   "whose fuel was measured (in-process components), per digest.", labels=labels)
        fuel_requests = CounterMetricFamily("driftless_host_fuel_measured_requests", "Requests whose fuel was "
                                            "measured; 0 for `wasmtime serve` components (fuel unmeasured).",
                                            labels=labels)
        fuel_mean = GaugeMetricFamily("driftless_host_fuel_per_request", "Mean fuel units per measured request "
                                      "since the host started, per digest (absent: unmeasured).", labels=labels)
        split = GaugeMetricFamily("driftless_host_traffic_split_weight", "Canary weight (percent) per component.",
                                    labels=["env", "app", "component", "stable", "canary"])
        for (env, app, comp, digest), c in sorted(self.traffic.counters.items()):
            values = [env, app, comp, digest]
            requests.add_metric(values, c.requests)
            errors.add_metric(values, c.errors)
            traps.add_metric(values, c.traps)
            if c.shadow_requests:
                shadow.add_metric([*values, "true"], c.shadow_requests - c.shadow_mismatches)
                shadow.add_metric([*values, "false"], c.shadow_mismatches)
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], c.latency, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric(values, buckets, c.seconds)
            fuel.add_metric(values, c.fuel)
            fuel_requests.add_metric(values, c.fuel_requests)
            if c.fuel_requests:
                fuel_mean.add_metric(values, c.fuel / c.fuel_requests)
        for (env, app, comp), s in sorted(self.traffic.splits.items()):
            split.add_metric([env, app, comp, s.stable, s.canary], s.weight)
        yield from (requests, errors, traps, shadow, latency, fuel, fuel_requests, fuel_mean, split)
