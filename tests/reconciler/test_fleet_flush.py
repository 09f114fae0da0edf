"""The fleet's batched state writes (``HostRegistry.flush``, run in a worker thread every second): the
hosts that reported since the last flush get their last-seen time written, no other host's row is
rewritten, and hosts registered or forgotten meanwhile (the event loop goes on while the thread
writes) are no error. Real SQLite state store; no network."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from reconciler.controller.events import EventLog
from reconciler.controller.hosts import HostRegistry
from reconciler.controller.state import Store
from reconciler.settings import Settings
from wire.control import HostRegistration, HostReport


def registration(name: str) -> HostRegistration:
    return HostRegistration.from_json({"name": name, "labels": {"cloud": "aws"},
                                       "capacity": {"memoryBytes": 1 << 30, "maxInstances": 10}})


def stored_last_seen(path: Path) -> dict[str, float]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT name, last_seen FROM hosts"))


def test_flush_writes_the_last_seen_of_the_hosts_that_reported(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    fleet = HostRegistry(store=store, events=EventLog(store), replan=lambda: None, status_changed=lambda: None,
                         settings=Settings(repo="unused", data=tmp_path, registry="http://127.0.0.1:9", token="t"))
    try:
        for name in ("a", "b", "c"):
            fleet.register(registration(name))
        registered = stored_last_seen(tmp_path / "state.db")
        fleet.hosts["a"].last_seen = fleet.hosts["c"].last_seen = 1.0  # in memory only: not reported, not written
        fleet.report(HostReport.from_json({"name": "b", "observedGeneration": 0, "instances": []}))
        fleet.flush()
        stored = stored_last_seen(tmp_path / "state.db")
        assert stored["b"] == fleet.hosts["b"].last_seen >= registered["b"]
        assert stored["a"] == registered["a"] and stored["c"] == registered["c"]

        # a host registered after a report and one forgotten before the flush (a new leader clears the
        # fleet) while the flush is pending: the report of the forgotten one is dropped, nothing fails
        fleet.report(HostReport.from_json({"name": "a", "observedGeneration": 0, "instances": []}))
        fleet.report(HostReport.from_json({"name": "c", "observedGeneration": 0, "instances": []}))
        fleet.register(registration("d"))
        del fleet.hosts["c"]
        fleet.flush()
        stored = stored_last_seen(tmp_path / "state.db")
        assert stored["a"] == fleet.hosts["a"].last_seen > 1.0
        assert stored["c"] == registered["c"] and "d" in stored

        fleet.flush()  # nothing reported since: nothing to write
        assert stored_last_seen(tmp_path / "state.db") == stored
    finally:
        store.close()
