"""The reconciler's data directory and its lock: one reconciler per directory.

    DATA/
      reconciler.lock      flock'd while a reconciler runs (two would publish conflicting generations)
      state.db             the state store (SQLite, :mod:`reconciler.controller.state`)
      git/mirror.git       the bare mirror of the manifests repository (:mod:`reconciler.controller.git_source`)
      checkout-*/          short-lived exports of a revision being loaded
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from shared.errors import UsageError


def lock_data_dir(data: Path) -> IO[str]:
    """Take the data directory's lock (held until the returned file is closed)."""
    try:
        data.mkdir(parents=True, exist_ok=True)
        lock = open(data / "reconciler.lock", "a+")
    except OSError as exc:
        raise UsageError(f"cannot use --data {data}: {exc.strerror or exc}", hint="give a writable directory") from exc
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        lock.close()
        raise UsageError(f"another reconciler is using --data {data}",
                         hint="stop it, or give this one its own data directory") from exc
    return lock
