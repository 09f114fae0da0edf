"""The reconciler runs the pure planner with the cyclic garbage collector paused (placing.py).

A regression guard for the planner's speed without a timing assertion: on 2026-12-01 the plan at
10,000 hosts / 100,000 instances took 2x as long because the pause had been dropped and full
collections rescanned the heap during every plan (hack/bench/RESULTS.md). Collections are counted
here, not timed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from model.types import Application, Component, Environment, ManifestTree, Spread, SpreadRequirement
from reconciler.controller.placing import gc_paused, place
from reconciler.planner.placement import HostInfo, plan

DIGEST = "sha256:" + "a" * 64


def fleet(*, hosts: int, apps: int, replicas: int) -> dict[str, Any]:
    clouds = ("aws", "gcp")
    tree = ManifestTree(revision="r", environments={"prod": Environment(name="prod")}, applications={"prod": {
        f"app{a}": Application(name=f"app{a}", env="prod", components=(Component(
            name="web", image="demo/hello:1.0.0", expose=f"/a{a}",
            placement=Spread(replicas=replicas, requirements=(SpreadRequirement(labels={"cloud": clouds[a % 2]}),))),))
        for a in range(apps)}})
    return {"tree": tree, "digests": {"demo/hello:1.0.0": DIGEST}, "registry": "127.0.0.1:5000",
            "hosts": [HostInfo(name=f"h{i}", labels={"cloud": clouds[i % 2]}, max_instances=1000) for i in range(hosts)]}


@contextmanager
def counting_collections() -> Iterator[list[int]]:
    """Generations of the collections that ran in the block: a young collection every 50
    allocations, so that a plan of a few thousand instances would meet dozens (thresholds restored)."""
    seen: list[int] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    thresholds = gc.get_threshold()
    gc.set_threshold(50, 1000, 1000)
    gc.collect()
    gc.callbacks.append(callback)
    try:
        yield seen
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*thresholds)


def test_the_reconcilers_placement_meets_no_garbage_collection() -> None:
    inputs = fleet(hosts=50, apps=400, replicas=5)
    with counting_collections() as plain:
        expected = plan(previous={}, **inputs)
    assert len(plain) >= 20, "the control: a plain plan this size meets collections"
    with counting_collections() as first:
        placed = place(previous={}, **inputs)
    with counting_collections() as again:
        replaced = place(previous=placed.desired, **inputs)
    # at most the one the collector runs as it resumes, when the pause ends
    assert len(first) <= 1 and len(again) <= 1, (first, again)
    assert placed.desired == expected.desired == replaced.desired  # the same plan, only sooner
    assert sum(len(v) for v in placed.desired.values()) == 2000
    assert gc.isenabled()  # paused during the plan only


def test_pauses_are_counted_and_leave_the_collector_as_found() -> None:
    assert gc.isenabled()
    with gc_paused():
        with gc_paused():  # another placement (thread) overlapping
            assert not gc.isenabled()
        assert not gc.isenabled()  # the first one still runs
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # not turned on behind the caller's back
    finally:
        gc.enable()
