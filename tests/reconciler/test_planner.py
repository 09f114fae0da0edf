"""The planner is pure: these tests build manifest trees and hosts directly."""

from __future__ import annotations

from collections import Counter

from model.types import (
    Application,
    Component,
    Daemon,
    Environment,
    HostSelector,
    Link,
    ManifestTree,
    Scale,
    Spread,
    SpreadRequirement,
    SyncPolicy,
)
from reconciler.planner.placement import LOST, HostInfo, Plan, plan, split_by_weight

DIGEST = "sha256:" + "a" * 64
DIGEST2 = "sha256:" + "b" * 64
REG = "127.0.0.1:5000"


def tree_of(*components: Component, links: tuple[Link, ...] = (), prefix: str = "/prod", prune: bool = True,
            selector: dict[str, str] | None = None) -> ManifestTree:
    env = Environment(name="prod", host_selector=HostSelector(match_labels=selector or {}), ingress_path_prefix=prefix,
                      sync=SyncPolicy(prune=prune))
    app = Application(name="shop", env="prod", components=components, links=links)
    return ManifestTree(revision="r1", environments={"prod": env}, applications={"prod": {"shop": app}})


def web(replicas: int, *reqs: SpreadRequirement, image: str = "demo/hello:1.0.0") -> Component:
    return Component(name="web", image=image, placement=Spread(replicas=replicas, requirements=reqs), expose="/hello",
                     config={"GREETING": "hi"})


def hosts_of(**groups: int) -> list[HostInfo]:
    out = []
    for cloud, n in groups.items():
        for i in range(n):
            out.append(HostInfo(name=f"{cloud}-{i}", labels={"cloud": cloud}, max_instances=100))
    return out


def per_host(p: Plan, component: str = "web") -> Counter[str]:
    return Counter(h for h, s in p.instances() if s.component == component)


def run(tree: ManifestTree, hosts: list[HostInfo], previous: Plan | None = None,
        digests: dict[str, str] | None = None) -> Plan:
    return plan(tree=tree, digests=digests or {"demo/hello:1.0.0": DIGEST, "demo/greeter:1.0.0": DIGEST},
                hosts=hosts, previous=previous.desired if previous else {}, registry=REG)


def test_split_by_weight_largest_remainder() -> None:
    assert split_by_weight(3, [2, 1]) == [2, 1]
    assert split_by_weight(5, [1, 1]) == [3, 2]
    assert split_by_weight(10, [1, 1, 1]) == [4, 3, 3]
    assert split_by_weight(0, [1, 2]) == [0, 0]
    assert sum(split_by_weight(7, [3, 5, 11])) == 7


def test_spread_by_weight_over_groups_and_across_hosts() -> None:
    t = tree_of(web(6, SpreadRequirement(labels={"cloud": "aws"}, weight=2),
                    SpreadRequirement(labels={"cloud": "gcp"}, weight=1)))
    p = run(t, hosts_of(aws=2, gcp=2))
    counts = per_host(p)
    assert counts["aws-0"] + counts["aws-1"] == 4
    assert counts["gcp-0"] + counts["gcp-1"] == 2
    assert counts["aws-0"] == counts["aws-1"] == 2  # not all on the first host
    assert counts["gcp-0"] == counts["gcp-1"] == 1
    ids = sorted(s.id for _, s in p.instances())
    assert ids == [f"prod/shop/web/{i}" for i in range(6)]
    spec = next(s for _, s in p.instances())
    assert spec.image == f"{REG}/demo/hello@{DIGEST}"
    assert spec.route == "/prod/hello"
    assert dict(spec.config) == {"GREETING": "hi"}
    assert not p.unplaced


def test_replicas_fewer_than_hosts_land_on_distinct_hosts() -> None:
    p = run(tree_of(web(3)), hosts_of(aws=5))
    assert sorted(per_host(p).values()) == [1, 1, 1]


def test_capacity_is_respected_and_shortfall_reported() -> None:
    hosts = [HostInfo(name="a", labels={}, max_instances=2), HostInfo(name="b", labels={}, max_instances=1)]
    p = run(tree_of(web(5)), hosts)
    assert per_host(p) == Counter({"a": 2, "b": 1})
    assert len(p.unplaced) == 1 and p.unplaced[0].missing == 2 and "full" in p.unplaced[0].reason


def test_no_matching_host_is_reported() -> None:
    t = tree_of(web(2, SpreadRequirement(labels={"cloud": "azure"})))
    p = run(t, hosts_of(aws=2))
    assert not list(p.instances())
    assert p.unplaced[0].missing == 2 and "no Ready host" in p.unplaced[0].reason


def test_assignments_are_stable_across_new_host_and_new_digest() -> None:
    t = tree_of(web(4))
    first = run(t, hosts_of(aws=2))
    where = {s.id: h for h, s in first.instances()}
    # a new host joins and a new digest arrives: nothing moves, ids are kept (in-place update)
    second = run(t, hosts_of(aws=3), previous=first, digests={"demo/hello:1.0.0": DIGEST2})
    assert {s.id: h for h, s in second.instances()} == where
    assert {s.digest for _, s in second.instances()} == {DIGEST2}
    assert second.desired["aws-2"] == ()


def test_scale_up_uses_least_loaded_and_scale_down_keeps_the_rest() -> None:
    first = run(tree_of(web(2)), hosts_of(aws=3))
    up = run(tree_of(web(5)), hosts_of(aws=3), previous=first)
    kept = {s.id: h for h, s in first.instances()}
    assert all({s.id: h for h, s in up.instances()}[i] == h for i, h in kept.items())
    assert sorted(per_host(up).values()) == [1, 2, 2]
    down = run(tree_of(web(2)), hosts_of(aws=3), previous=up)
    assert {s.id: h for h, s in down.instances()} == kept


def test_lost_host_gets_nothing_and_its_instances_move() -> None:
    hosts = hosts_of(aws=3)
    first = run(tree_of(web(3)), hosts)
    lost_host = "aws-1"
    moved = [s.id for h, s in first.instances() if h == lost_host]
    hosts2 = [HostInfo(name=h.name, labels=h.labels, max_instances=100, state=LOST if h.name == lost_host else "Ready")
              for h in hosts]
    second = run(tree_of(web(3)), hosts2, previous=first)
    assert second.desired[lost_host] == ()
    assert len(list(second.instances())) == 3
    assert all(h != lost_host for h, _ in second.instances())
    # the instances that were fine stayed where they were
    for h, s in first.instances():
        if h != lost_host:
            assert s in second.desired[h]
    assert moved
    # it comes back: nothing moves back to it
    third = run(tree_of(web(3)), hosts, previous=second)
    assert third.desired == second.desired


def test_daemon_runs_on_every_matching_host() -> None:
    comp = Component(name="agent", image="demo/hello:1.0.0", placement=Daemon(per_host=2, labels={"cloud": "gcp"}))
    p = run(tree_of(comp), hosts_of(aws=2, gcp=3))
    counts = per_host(p, "agent")
    assert counts == Counter({"gcp-0": 2, "gcp-1": 2, "gcp-2": 2})
    again = run(tree_of(comp), hosts_of(aws=2, gcp=3), previous=p)
    assert again.desired == p.desired


def test_environment_host_selector_limits_hosts() -> None:
    p = run(tree_of(web(4), selector={"cloud": "gcp"}), hosts_of(aws=2, gcp=2))
    assert set(per_host(p)) == {"gcp-0", "gcp-1"}


def test_link_target_is_co_placed_with_source() -> None:
    front = Component(name="frontend", image="demo/hello:1.0.0", placement=Spread(replicas=2))
    greeter = Component(name="greeter", image="demo/greeter:1.0.0", placement=Spread(replicas=1))
    link = Link(from_component="frontend", to_component="greeter", interface="driftless:demo/greeter")
    p = run(tree_of(front, greeter, links=(link,)), hosts_of(aws=3))
    front_hosts = set(per_host(p, "frontend"))
    greeter_hosts = set(per_host(p, "greeter"))
    assert front_hosts <= greeter_hosts
    spec = next(s for _, s in p.instances() if s.component == "frontend")
    assert spec.links[0].to_component == "greeter" and spec.links[0].interface == "driftless:demo/greeter"
    again = run(tree_of(front, greeter, links=(link,)), hosts_of(aws=3), previous=p)
    assert again.desired == p.desired


def test_unresolved_image_is_not_placed() -> None:
    p = run(tree_of(web(2, image="demo/unknown:1.0.0")), hosts_of(aws=2))
    assert not list(p.instances())
    assert "no resolved digest" in p.unplaced[0].reason


def test_pinned_image_needs_no_resolution_and_keeps_registry() -> None:
    p = run(tree_of(web(1, image=f"10.0.0.5:5000/demo/hello@{DIGEST2}")), hosts_of(aws=1), digests={})
    spec = next(s for _, s in p.instances())
    assert spec.image == f"10.0.0.5:5000/demo/hello@{DIGEST2}" and spec.digest == DIGEST2


def test_prune_off_keeps_removed_components() -> None:
    extra = Component(name="old", image="demo/hello:1.0.0", placement=Spread(replicas=1))
    first = run(tree_of(web(1), extra), hosts_of(aws=1))
    pruned = run(tree_of(web(1)), hosts_of(aws=1), previous=first)
    assert set(per_host(pruned, "old")) == set()
    kept = run(tree_of(web(1), prune=False), hosts_of(aws=1), previous=first)
    assert per_host(kept, "old") == Counter({"aws-0": 1})


def test_deterministic_output() -> None:
    t = tree_of(web(7, SpreadRequirement(labels={"cloud": "aws"}, weight=3),
                    SpreadRequirement(labels={"cloud": "gcp"}, weight=1)))
    assert run(t, hosts_of(aws=3, gcp=2)).desired == run(t, list(reversed(hosts_of(aws=3, gcp=2)))).desired


def test_every_instance_is_a_whole_spec() -> None:
    """The instances of a component after its first are stamped from it (instance_specs.py): each
    one still has every field, equal to the spec its JSON gives back, and only its own id."""
    from wire.control import InstanceSpec

    comp = Component(name="web", image="demo/hello:1.0.0", placement=Spread(replicas=5), expose="/hello",
                     config={"GREETING": "hi"}, scale=Scale(min_replicas=2, idle_timeout_s=30))
    p = run(tree_of(comp), hosts_of(aws=3))
    specs = [s for _, s in p.instances()]
    assert sorted(s.id for s in specs) == [f"prod/shop/web/{i}" for i in range(5)]
    for s in specs:
        assert InstanceSpec.from_json(s.to_json()) == s
        assert s.image == f"{REG}/demo/hello@{DIGEST}" and s.route == "/prod/hello" and s.config == {"GREETING": "hi"}
        assert s.idle_after_ms == (None if s.id.endswith(("/0", "/1")) else 30_000)
