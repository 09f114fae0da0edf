"""Prometheus metrics: request counts and latency by route and status, bytes in/out, storage size."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, *, blobs_dir: Path | None = None) -> None:
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        # (route, status) -> [bucket counts..., +Inf count, sum]
        self.latency: dict[tuple[str, int], list[float]] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self._blobs_dir = blobs_dir
        self._size_cache: tuple[float, int, int] = (0.0, 0, 0)

    def observe(self, route: str, method: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        self.requests[(route, method, status)] += 1
        hist = self.latency.get((route, status))
        if hist is None:
            hist = self.latency[(route, status)] = [0.0] * (len(BUCKETS) + 2)
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                hist[i] += 1
                break
        else:
            hist[len(BUCKETS)] += 1
        hist[-1] += seconds
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def _storage_size(self) -> tuple[int, int]:
        """(bytes, blob count) under blobs/, recomputed at most every 10 seconds."""
        now = time.monotonic()
        if self._blobs_dir is None:
            return 0, 0
        if now - self._size_cache[0] < 10 and self._size_cache[0]:
            return self._size_cache[1], self._size_cache[2]
        total = count = 0
        for dirpath, _dirs, files in os.walk(self._blobs_dir):
            for f in files:
                try:
                    total += os.stat(os.path.join(dirpath, f)).st_size
                    count += 1
                except FileNotFoundError:
                    pass
        self._size_cache = (now, total, count)
        return total, count

    def render(self) -> str:
        lines = [
            "# HELP driftless_registry_requests_total HTTP requests by route, method and status.",
            "# TYPE driftless_registry_requests_total counter",
        ]
        for (route, method, status), n in sorted(self.requests.items()):
            lines.append(f'driftless_registry_requests_total{{route="{route}",method="{method}",status="{status}"}} {n}')
        lines += [
            "# HELP driftless_registry_request_duration_seconds Request latency by route and status.",
            "# TYPE driftless_registry_request_duration_seconds histogram",
        ]
        for (route, status), hist in sorted(self.latency.items()):
            labels = f'route="{route}",status="{status}"'
            cumulative = 0.0
            for i, bound in enumerate(BUCKETS):
                cumulative += hist[i]
                lines.append(f'driftless_registry_request_duration_seconds_bucket{{{labels},le="{bound}"}} {int(cumulative)}')
            cumulative += hist[len(BUCKETS)]
            lines.append(f'driftless_registry_request_duration_seconds_bucket{{{labels},le="+Inf"}} {int(cumulative)}')
            lines.append(f'driftless_registry_request_duration_seconds_sum{{{labels}}} {hist[-1]:.6f}')
            lines.append(f'driftless_registry_request_duration_seconds_count{{{labels}}} {int(cumulative)}')
        size, count = self._storage_size()
        lines += [
            "# HELP driftless_registry_received_bytes_total Request body bytes received.",
            "# TYPE driftless_registry_received_bytes_total counter",
            f"driftless_registry_received_bytes_total {self.bytes_in}",
            "# HELP driftless_registry_sent_bytes_total Response body bytes sent.",
            "# TYPE driftless_registry_sent_bytes_total counter",
            f"driftless_registry_sent_bytes_total {self.bytes_out}",
            "# HELP driftless_registry_storage_bytes Bytes of stored blobs (content-addressed, shared).",
            "# TYPE driftless_registry_storage_bytes gauge",
            f"driftless_registry_storage_bytes {size}",
            "# HELP driftless_registry_storage_blobs Number of stored blobs.",
            "# TYPE driftless_registry_storage_blobs gauge",
            f"driftless_registry_storage_blobs {count}",
        ]
        return "\n".join(lines) + "\n"
