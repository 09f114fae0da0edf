"""One suite for every reconciler state store (``reconciler.controller.state.StateStore``): SQLite
(the embedded default) and PostgreSQL (a real private cluster, tests/support/postgres.py). Plus what
only the shared store has: the leader lease and its fencing of writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.controller.state import Fenced, NotLeader, StateStore
from reconciler.controller.state_postgres import PostgresLease, PostgresStore, check_url
from reconciler.controller.stores import open_store
from shared.errors import UsageError
from tests.support.postgres import PostgresServer
from wire.control import (
    HostCapacity,
    HostDesiredState,
    HostRegistration,
    HostReport,
    InstanceSpec,
    InstanceStatus,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        s = open_store(None, path=tmp_path / "state.db", history_limit=3)
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        s = open_store(server.new_database(), path=tmp_path / "unused", history_limit=3)
        assert isinstance(s, PostgresStore)
        lease = PostgresLease(s, url="http://127.0.0.1:1")
        assert lease.try_acquire()  # writes need the lease on the shared store
    try:
        yield s
    finally:
        s.close()


def reg(name: str, **labels: str) -> HostRegistration:
    return HostRegistration(name=name, labels=labels, capacity=HostCapacity(memory_bytes=1 << 30, max_instances=8),
                            interfaces=("wasi:http/incoming-handler",), ingress_url=f"http://{name}:8081", version="1")


def doc(host: str, generation: int) -> HostDesiredState:
    spec = InstanceSpec(id="dev/hello/web/0", env="dev", app="hello", component="web",
                        image="127.0.0.1:5000/demo/hello@sha256:" + "a" * 64, digest="sha256:" + "a" * 64,
                        config={"GREETING": "hi"}, route="/dev/hello")
    return HostDesiredState(host=host, generation=generation, revision="r" * 40, instances=(spec,))


def test_key_values(store: StateStore) -> None:
    assert store.get("applied") is None and store.get("marks", {}) == {}
    store.put("applied", {"revision": "abc", "appliedAt": 1.5})
    store.put("applied", {"revision": "def", "appliedAt": 2.5})
    store.put("rejected", None)
    assert store.get("applied") == {"revision": "def", "appliedAt": 2.5}
    assert store.get("rejected", "default") is None


def test_hosts_credentials_published_reports(store: StateStore) -> None:
    store.save_host(reg("aws-1", cloud="aws"), registered_at=10.0, last_seen=11.0)
    store.save_host(reg("aws-1", cloud="aws", region="us"), registered_at=12.0, last_seen=12.0)
    store.save_host(reg("gcp-1", cloud="gcp"), registered_at=13.0, last_seen=13.0)
    store.touch_hosts({"aws-1": 20.0, "gone": 1.0})
    hosts = store.hosts()
    assert sorted(hosts) == ["aws-1", "gcp-1"]
    assert hosts["aws-1"].registration == reg("aws-1", cloud="aws", region="us")
    assert (hosts["aws-1"].registered_at, hosts["aws-1"].last_seen) == (12.0, 20.0)

    store.save_credential("aws-1", "1" * 64, issued_at=1.0)
    store.save_credential("aws-1", "2" * 64, issued_at=2.0)
    assert store.credentials() == {"aws-1": "2" * 64}

    store.save_published({"aws-1": (doc("aws-1", 1), 5.0), "gcp-1": (doc("gcp-1", 7), 6.0)})
    store.save_published({"aws-1": (doc("aws-1", 2**53 - 1), 8.0)})
    assert store.published() == {"aws-1": (doc("aws-1", 2**53 - 1), 8.0), "gcp-1": (doc("gcp-1", 7), 6.0)}

    status = InstanceStatus(id="dev/hello/web/0", env="dev", app="hello", component="web", digest="sha256:" + "a" * 64,
                            status="Running", restarts=2, config={"GREETING": "hi"}, route="/dev/hello")
    report = HostReport(name="aws-1", observed_generation=2, instances=(status,))
    store.save_reports({"aws-1": (report, 9.0)})
    store.save_reports({})
    assert store.reports() == {"aws-1": (report, 9.0)}


def test_tags_and_history(store: StateStore) -> None:
    store.save_tags("rev1", {"demo/hello:1.0.0": "sha256:1", "demo/x:2": "sha256:2"}, at=1.0)
    store.save_tags("rev1", {"demo/hello:1.0.0": "sha256:3"}, at=2.0)
    assert store.tags("rev1") == {"demo/hello:1.0.0": "sha256:3", "demo/x:2": "sha256:2"}
    assert store.tags("other") == {}
    for i in range(5):  # history_limit=3 per environment
        store.add_history(env="dev", revision=f"d{i}", applied_at=float(i), message=f"m{i}", author="a",
                          apps=[{"name": "hello", "components": []}])
    store.add_history(env="prod", revision="p0", applied_at=9.0, message="p", author="b", apps=[])
    dev = store.history(env="dev")
    assert [e["revision"] for e in dev] == ["d4", "d3", "d2"]
    assert dev[0] == {"revision": "d4", "env": "dev", "appliedAt": 4.0, "message": "m4", "author": "a",
                      "apps": [{"name": "hello", "components": []}]}
    assert [e["revision"] for e in store.history()] == ["p0", "d4", "d3", "d2"]
    assert [e["revision"] for e in store.history(limit=1)] == ["p0"]


def test_events(store: StateStore) -> None:
    first = store.add_event(reason="Applied", message="one", env="dev", revision="r1", at=100.0)
    store.add_event(type="Warning", reason="HostLost", message="two", host="aws-1", at=200.0)
    store.add_event(reason="Applied", message="three", env="prod", at=300.0)
    assert first.id > 0 and first.reason == "Applied" and first.at == 100.0
    assert [e.message for e in store.events()] == ["one", "two", "three"]  # oldest first
    assert [e.message for e in store.events(env="dev")] == ["one", "two"]  # env-less events belong to every env
    assert [e.message for e in store.events(since=150.0)] == ["two", "three"]
    assert [e.message for e in store.events(limit=2)] == ["two", "three"]
    assert store.events(env="dev")[1].to_json()["type"] == "Warning"


# ---------------------------------------------------------------------------- PostgreSQL only
def test_a_url_with_a_password_is_refused() -> None:
    with pytest.raises(UsageError, match="must not carry a password"):
        check_url("postgresql://driftless:s3cret@db.example.com/driftless")
    with pytest.raises(UsageError) as exc:
        check_url("mysql://u@h/d")
    assert "s3cret" not in str(exc.value)
    assert check_url("postgresql://driftless@db.example.com:5432/driftless")


def test_an_unreachable_database_is_a_usage_error(postgres: PostgresServer) -> None:
    from tests.support.procs import free_port

    with pytest.raises(UsageError, match="cannot use the PostgreSQL state"):
        PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/x", open_timeout=2)


def test_the_lease_fences_every_write(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    a, b = PostgresStore(url), PostgresStore(url)
    try:
        la = PostgresLease(a, url="http://a", lease_seconds=1.0)
        lb = PostgresLease(b, url="http://b", lease_seconds=1.0)
        with pytest.raises(NotLeader):  # a follower writes nothing
            a.put("k", 1)
        assert la.try_acquire() and la.leading() and la.epoch == 1
        assert not lb.try_acquire() and not lb.leading()  # held: nobody else takes it
        a.put("k", "from a")
        current = lb.current() or {}
        assert (current["holder"], current["url"], current["epoch"]) == (la.holder, "http://a", 1)
        assert 0 < current["expiresIn"] <= 1.0
        assert la.renew()
        # a pauses past its lease; b takes over with a new epoch
        import time

        time.sleep(1.1)
        assert not la.leading()  # known locally, without asking the database
        assert lb.try_acquire() and lb.epoch == 2
        with pytest.raises(Fenced):  # a's write carries epoch 1: refused by the database
            a.put("k", "stale")
        with pytest.raises(Fenced):
            a.add_event(reason="Published", message="stale")
        assert not la.renew() and la.epoch is None  # a learns it lost
        b.put("k", "from b")
        assert a.get("k") == "from b" and [e.message for e in a.events()] == []
        lb.release()  # a clean stop: the lease is free at once
        assert la.try_acquire() and la.epoch == 3
    finally:
        a.close()
        b.close()


def test_the_fingerprint_key_is_made_once_and_shared(tmp_path: Path, postgres: PostgresServer) -> None:
    """The key of secret fingerprints: 32 random bytes made by the first reconciler asking, the same
    after a restart (SQLite) and for every reconciler sharing PostgreSQL — a follower included (it
    holds no lease: the key is not a fenced write)."""
    first = open_store(None, path=tmp_path / "state.db")
    key = first.fingerprint_key()
    assert len(key) == 32 and first.fingerprint_key() == key
    first.close()
    again = open_store(None, path=tmp_path / "state.db")
    assert again.fingerprint_key() == key
    again.close()
    other = open_store(None, path=tmp_path / "other.db")
    assert other.fingerprint_key() != key  # another platform, another key
    other.close()

    url = postgres.new_database()
    a, b = PostgresStore(url), PostgresStore(url)
    try:
        assert a.fence is None and b.fence is None  # neither leads
        shared = b.fingerprint_key()
        assert len(shared) == 32 and a.fingerprint_key() == shared and shared != key
    finally:
        a.close()
        b.close()
