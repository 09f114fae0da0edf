"""Secret fingerprints as a reconciler computes them: keyed with the key in its state (``state.db``),
so a test can say which fingerprint a value must have without the reconciler telling it.

    fingerprint(p.data / "reconciler" / "state.db", "greeting", value)
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from wire.control import secret_fingerprint


def state_key(state_db: Path) -> bytes:
    with sqlite3.connect(f"file:{state_db}?mode=ro", uri=True) as db:
        (key,), = db.execute("SELECT key FROM fingerprint_key WHERE id=1").fetchall()
    return bytes(key)


def fingerprint(state_db: Path, name: str, value: str) -> str:
    return secret_fingerprint(name, value, key=state_key(state_db))


def unkeyed(name: str, value: str) -> str:
    """The fingerprint of older reconcilers: a plain SHA-256 prefix anyone can test guesses against."""
    return f"secret:{name}:sha256:{hashlib.sha256(value.encode()).hexdigest()[:16]}"
