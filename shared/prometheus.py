"""Prometheus text exposition (format 0.0.4) for the reconciler, without a client library."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    def __init__(self, buckets: Iterable[float] = DEFAULT_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * len(self.buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += 1
        self.sum += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.sum:.6f}")
        out.append(f"{name}_count{suffix} {self.total}")
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(**kv: str) -> str:
    return ",".join(f'{k}="{_escape(str(v))}"' for k, v in kv.items())


class Exposition:
    """Collects families and renders them with HELP/TYPE headers."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, label_text: str = "") -> None:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        self._lines.append(f"{name}{{{label_text}}} {shown}" if label_text else f"{name} {shown}")

    def single(self, name: str, kind: str, help_text: str, value: float) -> None:
        """A family of one unlabelled sample."""
        self.family(name, kind, help_text)
        self.sample(name, value)

    def gauge_by(self, name: str, help_text: str, values: Mapping[str, float]) -> None:
        self.family(name, "gauge", help_text)
        for label_text, value in sorted(values.items()):
            self.sample(name, value, label_text)

    def extend(self, lines: Iterable[str]) -> None:
        self._lines.extend(lines)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
