"""Memory quantities (``16Mi``, ``64Ki``, ``1Gi``, integer bytes) and durations (``500ms``, ``2s``, ``1h30m``)."""

from __future__ import annotations

import re

_MEMORY_UNITS = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
_MEMORY_RE = re.compile(r"^([0-9]+)(Ki|Mi|Gi)?$")
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_RE = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def memory_bytes(value: int | str) -> int:
    """Bytes of a memory quantity; raise ValueError with the accepted forms."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _MEMORY_RE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a memory quantity: use bytes or a number with Ki, Mi or Gi")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""]


def duration_seconds(text: str) -> float:
    """Seconds of a duration such as ``500ms``, ``30s``, ``5m``, ``1h30m``; raise ValueError otherwise."""
    if not _DURATION_RE.match(text):
        raise ValueError(f"{text!r} is not a duration: use a number with ms, s, m or h, e.g. 500ms, 30s, 1h30m")
    return sum(float(n) * _SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(text))


def format_memory(n: int) -> str:
    for unit in ("Gi", "Mi", "Ki"):
        if n % _MEMORY_UNITS[unit] == 0:
            return f"{n // _MEMORY_UNITS[unit]}{unit}"
    return str(n)
