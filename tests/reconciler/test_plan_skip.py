"""A reconcile whose placement inputs did not change (a Git poll finding the same revision, heartbeats,
a status update) computes no placement and publishes nothing; any input that changes (a host registering
or Lost, a new tree, a heal request) plans again. Observed through the controller's counters, the
published generations and the events; in process, no Git, registry or network."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

from model.loader import load_tree
from model.types import ManifestTree
from reconciler.controller.pipeline import Context, Controller
from reconciler.settings import Settings
from tests.support.platform import application, environment
from wire.control import HostRegistration, HostReport

DIGEST = "sha256:" + "a" * 64


def tree(root: Path) -> ManifestTree:
    (root / "prod" / "apps").mkdir(parents=True, exist_ok=True)
    (root / "prod" / "environment.yaml").write_text(textwrap.dedent(environment("prod")))
    comp = {"name": "web", "image": "demo/hello:1.0.0", "expose": "/web", "placement": {"spread": {"replicas": 2}}}
    (root / "prod" / "apps" / "web.yaml").write_text(application("web", [comp]))
    loaded = load_tree(root)
    assert loaded.ok, loaded.errors
    return loaded


def registration(name: str) -> HostRegistration:
    return HostRegistration.from_json({"name": name, "labels": {"cloud": "aws"},
                                       "capacity": {"memoryBytes": 1 << 30, "maxInstances": 10}})


def test_a_reconcile_with_unchanged_inputs_skips_the_placement(tmp_path: Path) -> None:
    controller = Controller(Settings(repo=str(tmp_path / "none.git"), data=tmp_path / "data",
                                     registry="http://127.0.0.1:9", token="t"))

    async def reconcile(**heal: frozenset[str]) -> None:  # what the loop does on a poll (fetch aside)
        await controller.reconcile(Context(fetch=False, heal=heal))

    def generations() -> dict[str, int]:
        return {h: doc.generation for h, (doc, _) in controller.fleet.published.items()}

    def published_events() -> int:
        return sum(1 for e in controller.store.events(limit=1000) if e.reason in ("Published", "Healed"))

    async def scenario() -> None:
        controller.envs.tree, controller.envs.merged = tree(tmp_path / "t1"), {"demo/hello:1.0.0": DIGEST}
        for name in ("h1", "h2"):
            controller.fleet.register(registration(name))
        await reconcile()
        assert controller.plans == 1 and generations() == {"h1": 1, "h2": 1}
        await reconcile()  # once more after a publication (its documents are the previous placement now)
        assert controller.plans == 2 and controller.plans_skipped == 0
        published, events = controller.generations_published, published_events()

        for _ in range(3):  # polls finding the same revision, heartbeats that change nothing: no placement
            for name in ("h1", "h2"):
                controller.fleet.report(HostReport.from_json({"name": name, "observedGeneration": 1, "instances": []}))
            await reconcile()
        assert controller.plans == 2 and controller.plans_skipped == 3
        assert generations() == {"h1": 1, "h2": 1}
        assert controller.generations_published == published and published_events() == events

        controller.fleet.register(registration("h3"))  # a new host: placed again (and published its document)
        await reconcile()
        await reconcile()
        await reconcile()
        assert controller.plans == 4 and controller.plans_skipped == 4 and generations()["h3"] == 1
        events = published_events()

        await reconcile(h1=frozenset({"prod"}))  # a heal republishes, whatever the inputs
        assert controller.plans == 5 and generations()["h1"] == 2 and published_events() == events + 1

        await reconcile()  # after that publication: once more, then skipped
        await reconcile()
        assert controller.plans == 6 and controller.plans_skipped == 5

        before = generations()
        controller.envs.tree = tree(tmp_path / "t2")  # a new tree (same content): placed, nothing to publish
        await reconcile()
        assert controller.plans == 7 and generations() == before and published_events() == events + 1

        controller.fleet.hosts["h2"].last_seen = 0.0  # Lost: its instances move
        controller.fleet.check_lost()
        await reconcile()
        assert controller.plans == 8 and generations()["h2"] == 2

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(controller.stop())
