"""Which state store a reconciler uses (``--state``): SQLite by default, PostgreSQL for replicated
reconcilers. Its own module so that neither store imports the other."""

from __future__ import annotations

from pathlib import Path

from reconciler.controller.state_types import StateStore


def open_store(state: str | None, *, path: Path, history_limit: int = 20) -> StateStore:
    """The store ``--state`` names: None -> SQLite at ``path``; ``postgresql://...`` -> PostgreSQL."""
    if state is None:
        from reconciler.controller.state import Store

        return Store(path, history_limit=history_limit)
    from reconciler.controller.state_postgres import PostgresStore

    return PostgresStore(state, history_limit=history_limit)
