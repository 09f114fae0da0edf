"""The signing options ``driftless sign`` and ``driftless push --sign`` share (a module of its own, so
push and sign need not import each other)."""

from __future__ import annotations

import argparse
import datetime as dt


def add_sign_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--expires-in", default=None, metavar="DURATION",
                   help="the signature is void after this long (e.g. 90d; recorded in the signed payload)")


def expiry(text: str | None) -> dt.datetime | None:
    from shared.errors import UsageError
    from shared.units import duration_seconds

    if not text:
        return None
    try:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=duration_seconds(text))
    except ValueError as exc:
        raise UsageError(f"--expires-in {text!r}: {exc}", hint="e.g. 90d, 12h") from None
