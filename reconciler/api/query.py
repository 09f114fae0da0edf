"""Numeric query parameters of the reconciler's API, checked before use: a value that is not a finite
number of the right kind, or is out of range, is the caller's mistake (400 naming the parameter, what
it got and what it takes), never a 500. ``limit=inf``, ``limit=1e999``, ``since=nan`` are refused."""

from __future__ import annotations

import math
from collections.abc import Mapping


class BadQuery(ValueError):
    """A query parameter the API cannot use; the message says which, what it got and what it takes."""


def _raw(query: Mapping[str, str], key: str) -> str | None:
    raw = query.get(key)
    return None if raw is None or raw.strip() == "" else raw.strip()


def integer(query: Mapping[str, str], key: str, *, default: int, minimum: int, maximum: int, what: str) -> int:
    """``?key=`` as an integer in [minimum, maximum] (``default`` when absent)."""
    raw = _raw(query, key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"?{key}={raw[:40]} is not an integer: {what}, from {minimum} to {maximum}") from None
    if not minimum <= value <= maximum:
        raise BadQuery(f"?{key}={raw[:40]} is out of range: {what}, from {minimum} to {maximum}")
    return value


def number(query: Mapping[str, str], key: str, *, default: float | None, minimum: float, what: str) -> float | None:
    """``?key=`` as a finite number >= minimum (``default`` when absent)."""
    raw = _raw(query, key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadQuery(f"?{key}={raw[:40]} is not a number: {what}") from None
    if not math.isfinite(value) or value < minimum:
        raise BadQuery(f"?{key}={raw[:40]} is out of range: {what}, a finite number >= {minimum:g}")
    return value
