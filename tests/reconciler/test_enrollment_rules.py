"""The rules of host enrollment without processes: the ingress URL check, label bounds, the planner's
environment gate, the publish-time check behind it, the join token's bounds, and enrollments kept in
the state store across a restart. The HTTP paths are in test_enrollment.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from model.types import Application, Component, Environment, HostSelector, ManifestTree, Spread, SyncPolicy
from reconciler.controller.enrollment import Bounds, ingress_problem, join_bounds, parse_bounds
from reconciler.controller.events import EventLog
from reconciler.controller.hosts import REVOKED, HostRegistry, OutsideEnrollment
from reconciler.controller.state import StateStore, Store
from reconciler.controller.state_postgres import PostgresLease, PostgresStore
from reconciler.controller.stores import open_store
from reconciler.planner.placement import HostInfo, plan
from reconciler.settings import Settings
from tests.support.postgres import PostgresServer
from wire.control import HostCapacity, HostDesiredState, HostRegistration, InstanceSpec

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data", "http://169.254.1.2:8081", "http://[fe80::1%25eth0]:80/",
    "http://[fd00:ec2::254]/", "http://[::ffff:169.254.169.254]/", "http://metadata.google.internal./",
    "http://100.100.100.200/", "file:///etc/passwd", "ftp://example.com/", "http://user:pw@example.com/",
    "http://0.0.0.0:8081", "http:///nohost", "http://example.com:99999/",
])
def test_dangerous_ingress_urls_are_refused(url: str) -> None:
    assert ingress_problem(url, allowed=None)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8081", "https://edge-1.example.com/", "http://10.0.0.5:8081/x",
                                 "http://[::1]:8081"])
def test_ordinary_ingress_urls_pass(url: str) -> None:
    assert ingress_problem(url, allowed=None) is None


def test_an_ingress_prefix_is_a_path_prefix_not_a_string_prefix() -> None:
    assert ingress_problem("https://edge-1.example.com/a", allowed="https://edge-1.example.com") is None
    assert ingress_problem("https://edge-1.example.com", allowed="https://edge-1.example.com/") is None
    assert ingress_problem("https://edge-1.example.com.evil.net/", allowed="https://edge-1.example.com")
    assert ingress_problem("https://edge-2.example.com/", allowed="https://edge-1.example.com")


def test_label_bounds_name_keys_and_values() -> None:
    bounds = parse_bounds(labels={"tier": ["edge", "kiosk"], "zone": "eu"}, environments=["dev"], ingress=None,
                          where="test")
    assert bounds.label_problems({"tier": "kiosk", "zone": "eu", "os": "linux", "arch": "amd64"}) == []
    [problem] = bounds.label_problems({"tier": "prod", "zone": "eu"})
    assert "tier=prod" in problem and "edge or kiosk" in problem
    [problem] = bounds.label_problems({"tier": "edge", "gpu": "yes"})
    assert "gpu=yes" in problem
    pinned = parse_bounds(labels={"os": "linux"}, environments=["dev"], ingress=None, where="test")
    assert pinned.label_problems({"os": "windows"})  # an automatic label the enrollment names is bounded too
    with pytest.raises(ValueError, match="environments"):
        parse_bounds(labels={}, environments=[], ingress=None, where="test")
    with pytest.raises(ValueError, match="link-local"):
        parse_bounds(labels={}, environments=["dev"], ingress="http://169.254.10.10/", where="test")


def test_the_join_token_is_unbounded_unless_the_operator_bounds_it() -> None:
    assert join_bounds(labels=[], environments=None, ingress=None).unbounded
    bounds = join_bounds(labels=["tier=edge,kiosk", "zone=eu"], environments="dev,staging", ingress=None)
    assert bounds.labels == {"tier": ("edge", "kiosk"), "zone": ("eu",)}
    assert bounds.environment_set() == {"dev", "staging"}
    with pytest.raises(ValueError, match="--join-label"):
        join_bounds(labels=["tier"], environments=None, ingress=None)
    with pytest.raises(ValueError, match="--join-ingress"):
        join_bounds(labels=[], environments=None, ingress="file:///x")


def _tree() -> ManifestTree:
    envs = {name: Environment(name=name, host_selector=HostSelector(match_labels={"tier": "prod"}),
                              ingress_path_prefix=f"/{name}", sync=SyncPolicy())
            for name in ("dev", "prod")}
    apps = {name: {"pay": Application(name="pay", env=name, components=(
        Component(name="api", image="demo/pay:1.0.0", placement=Spread(replicas=2)),))} for name in envs}
    return ManifestTree(revision="r1", environments=envs, applications=apps)


def test_the_planner_gives_a_host_only_the_environments_it_is_enrolled_for() -> None:
    hosts = [HostInfo(name="edge", labels={"tier": "prod"}, environments=frozenset({"dev"})),
             HostInfo(name="prod", labels={"tier": "prod"})]
    result = plan(tree=_tree(), digests={"demo/pay:1.0.0": DIGEST}, hosts=hosts, previous={}, registry="r:5000")
    assert {s.env for s in result.desired["edge"]} == {"dev"}
    assert [s.env for s in result.desired["prod"]].count("prod") == 2


def _registry(tmp_path: Path, store: StateStore, **settings: object) -> HostRegistry:
    config = Settings(repo="r", data=tmp_path, registry="http://127.0.0.1:9", token="join", **settings)  # type: ignore[arg-type]
    fleet = HostRegistry(store=store, events=EventLog(store), settings=config, replan=lambda: None,
                         status_changed=lambda: None)
    fleet.restore()
    return fleet


def _reg(name: str, **labels: str) -> HostRegistration:
    return HostRegistration(name=name, labels=labels, capacity=HostCapacity(memory_bytes=1 << 30, max_instances=10))


def _spec(env: str) -> InstanceSpec:
    return InstanceSpec(id=f"{env}/pay/api/0", env=env, app="pay", component="api", image=f"r:5000/pay@{DIGEST}",
                        digest=DIGEST)


def test_publishing_checks_the_environments_again(tmp_path: Path) -> None:
    """Behind the planner: a document naming an environment the host is not enrolled for loses those instances."""
    store = Store(tmp_path / "state.db")
    fleet = _registry(tmp_path, store)
    enrollment, _ = fleet.enrollments.create(bounds=Bounds(labels={"tier": ("prod",)}, environments=("dev",)),
                                             created_by="test", now=0.0)
    fleet.enroll(_reg("edge", tier="prod"), credential=None, via=enrollment.id)
    fleet.register(_reg("edge", tier="prod"))
    doc = HostDesiredState(host="edge", generation=1, revision="r1", instances=(_spec("dev"), _spec("prod")))
    asyncio.run(fleet.publish({"edge": (doc, 0.0)}))
    assert [s.env for s in fleet.published["edge"][0].instances] == ["dev"]
    assert [s.env for s in store.published()["edge"][0].instances] == ["dev"]
    assert store.events()[-1].reason == "PublishRefused"
    fleet.revoke("edge", why="test")  # a plan made just before: nothing reaches a revoked host
    asyncio.run(fleet.publish({"edge": (replace(doc, generation=2, instances=(_spec("dev"),)), 0.0)}))
    assert fleet.published["edge"][0].instances == ()
    store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        s = open_store(None, path=tmp_path / "state.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        s = open_store(server.new_database(), path=tmp_path / "unused")
        assert isinstance(s, PostgresStore) and PostgresLease(s, url="http://127.0.0.1:1").try_acquire()
    try:
        yield s
    finally:
        s.close()


def test_enrollments_bindings_and_revocations_survive_a_restart(tmp_path: Path, any_store: StateStore) -> None:
    """Both stores (SQLite, PostgreSQL): enrollments live in their key/value table."""
    store = any_store
    fleet = _registry(tmp_path, store, join_environments="dev")
    enrollment, token = fleet.enrollments.create(bounds=Bounds(labels={"tier": ("edge",)}, environments=("dev",)),
                                                 created_by="test", now=0.0)
    assert fleet.enrollments.match(token) == enrollment and fleet.enrollments.match(token + "x") is None
    edge = fleet.enroll(_reg("edge", tier="edge"), credential=None, via=enrollment.id)
    fleet.register(_reg("edge", tier="edge"))
    other = fleet.enroll(_reg("other", tier="edge"), credential=None, via=enrollment.id)
    fleet.register(_reg("other", tier="edge"))
    fleet.revoke("other", why="test")

    again = _registry(tmp_path, store, join_environments="dev")
    assert again.identify(edge) == "edge" and again.identify(other) is None
    assert again.hosts["other"].state == REVOKED and again.hosts["edge"].state == "Ready"
    assert again.enrollments.get(enrollment.id).uses == 2  # type: ignore[union-attr]
    with pytest.raises(OutsideEnrollment, match="tier=prod"):
        again.enroll(_reg("edge", tier="prod"), credential=edge, via=None)
    assert {i.name: i.environments for i in again.infos()}["edge"] == frozenset({"dev"})


def test_a_revoked_host_is_no_drift_to_heal() -> None:
    """Its credential is gone: what it last reported is no longer observed, and a heal could not reach it."""
    from reconciler.planner.drift import HostObservation, compute_drift
    from wire.control import RUNNING, HostReport, InstanceStatus

    running = HostReport(name="edge", observed_generation=1, instances=(InstanceStatus(
        id="dev/pay/api/0", env="dev", app="pay", component="api", digest=DIGEST, status=RUNNING),))
    empty = {"edge": HostDesiredState(host="edge", generation=2, revision="r1", instances=())}
    for state, expected in (("Ready", True), ("Revoked", False)):
        observed = {"edge": HostObservation(name="edge", state=state, published_generation=2, published_at=0.0,
                                            report=running)}
        assert bool(compute_drift(desired=empty, hosts=observed, now=100.0, grace_seconds=1.0)) is expected, state
