"""Prometheus metrics of one registry server: request counts and latency by route and status, bytes in
and out (prometheus-client objects, observed per request) and the storage size (read from disk at
scrape time). Each server has its own :class:`~prometheus_client.CollectorRegistry`, never the
process-wide default one, so several servers can run in one process."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StorageCollector(Collector):
    """Bytes and count of the blobs under blobs/, recomputed at most every 10 seconds."""

    def __init__(self, *, blobs_dir: Path | None) -> None:
        self._blobs_dir = blobs_dir
        self._cache: tuple[float, int, int] = (0.0, 0, 0)

    def _size(self) -> tuple[int, int]:
        if self._blobs_dir is None:
            return 0, 0
        now = time.monotonic()
        if self._cache[0] and now - self._cache[0] < 10:
            return self._cache[1], self._cache[2]
        total = count = 0
        for dirpath, _dirs, files in os.walk(self._blobs_dir):
            for f in files:
                try:
                    total += os.stat(os.path.join(dirpath, f)).st_size
                    count += 1
                except FileNotFoundError:
                    pass
        self._cache = (now, total, count)
        return total, count

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without walking the disk (registering would otherwise collect, and cache, at once)."""
        yield GaugeMetricFamily("driftless_registry_storage_bytes", "")
        yield GaugeMetricFamily("driftless_registry_storage_blobs", "")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size, count = self._size()
        yield GaugeMetricFamily("driftless_registry_storage_bytes",
                                "Bytes of stored blobs (content-addressed, shared).", value=size)
        yield GaugeMetricFamily("driftless_registry_storage_blobs", "Number of stored blobs.", value=count)


class Metrics:
    """The registry's metric families, registered in this server's own collector registry."""

    content_type = CONTENT_TYPE_LATEST  # of :meth:`render`'s text

    def __init__(self, *, blobs_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("driftless_registry_requests", "HTTP requests by route, method and status.",
                                ("route", "method", "status"), registry=self.registry)
        self.latency = Histogram("driftless_registry_request_duration_seconds", "Request latency by route and status.",
                                 ("route", "status"), buckets=BUCKETS, registry=self.registry)
        self.bytes_in = Counter("driftless_registry_received_bytes", "Request body bytes received.",
                                registry=self.registry)
        self.bytes_out = Counter("driftless_registry_sent_bytes", "Response body bytes sent.", registry=self.registry)
        self.registry.register(_StorageCollector(blobs_dir=blobs_dir))
        # with --workers each process counts what it served: say which one answered this scrape
        Gauge("driftless_registry_process", "The serving process (worker) that answered this scrape.", ("pid",),
              registry=self.registry).labels(pid=str(os.getpid())).set(1)

    def observe(self, *, route: str, method: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        """One answered request."""
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route, status=str(status)).observe(seconds)
        self.bytes_in.inc(bytes_in)
        self.bytes_out.inc(bytes_out)

    def render(self) -> bytes:
        """The Prometheus text exposition (served as :attr:`content_type`)."""
        return generate_latest(self.registry)
