"""Errors the CLI turns into one clear line (details and traceback under ``-v``).

    DriftlessError            exit 1, message printed as "error: ..."
     +-- UsageError           wrong arguments or options (exit 2)
     +-- NotReachable         a server (registry, reconciler) did not answer; says which URL
     +-- Refused              a server answered no (e.g. a promotion gate failed); says why

Each package raises its own subclasses of these (e.g. ``registry.errors``), so the CLI needs no
knowledge of them.
"""

from __future__ import annotations


class DriftlessError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(DriftlessError):
    exit_code = 2


class NotReachable(DriftlessError):
    pass


class Refused(DriftlessError):
    pass
