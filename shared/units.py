"""The one parser of each unit the project reads from people: memory quantities (``16Mi``, ``64Ki``,
``1Gi``, integer bytes), durations (``500ms``, ``2s``, ``1h30m``, ``1d``) and listen addresses
(``HOST:PORT``, ``[::1]:PORT``, ``:PORT``). Manifests, the CLI and every server use these, so a
value means the same everywhere. Each raises ValueError with the accepted forms.
"""

from __future__ import annotations

import re

_MEMORY_UNITS = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
_MEMORY_RE = re.compile(r"^([0-9]+)(Ki|Mi|Gi)?$")
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_DURATION_RE = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LISTEN_RE = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*)):(?P<port>[0-9]{1,5})$")
DEFAULT_LISTEN_HOST = "127.0.0.1"  # ":PORT" stays on this machine; listening wider is said out loud


def memory_bytes(value: int | str) -> int:
    """Bytes of a memory quantity."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _MEMORY_RE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a memory quantity: use bytes or a number with Ki, Mi or Gi")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""]


def duration_seconds(value: str | int | float) -> float:
    """Seconds of a duration such as ``500ms``, ``30s``, ``5m``, ``1h30m``, ``1d``, or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{value!r} is not a duration: it is negative")
        return float(value)
    text = str(value).strip() if not isinstance(value, bool) else ""
    if not _DURATION_RE.match(text):
        raise ValueError(f"{value!r} is not a duration: use a number with ms, s, m, h or d, e.g. 500ms, 30s, 1h30m")
    return sum(float(n) * _SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(text))


def format_memory(n: int) -> str:
    for unit in ("Gi", "Mi", "Ki"):
        if n % _MEMORY_UNITS[unit] == 0:
            return f"{n // _MEMORY_UNITS[unit]}{unit}"
    return str(n)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port). ``:PORT`` means 127.0.0.1; say ``0.0.0.0:PORT`` to listen on all."""
    m = _LISTEN_RE.match(text.strip())
    if m is None or int(m["port"]) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080)")
    return (m["v6"] or m["host"] or DEFAULT_LISTEN_HOST), int(m["port"])


def seconds_from_env(name: str, default: float) -> float:
    """A positive number of seconds from environment variable ``name`` (an operator's tuning knob),
    else ``default`` (also for a value that is not a positive number)."""
    import os

    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default
