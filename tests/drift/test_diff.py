"""diff: the real planner over constructed reconciler inputs, compared with what is published."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from model.loader import load_tree
from model.types import ManifestTree
from reconciler.planner.diff import compare, diff_tree
from reconciler.planner.placement import HostInfo, plan
from tests.drift.gitrepo import PROD_HELLO, TREE
from wire.control import HostDesiredState, InstanceSpec

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def tree_of(tmp: Path, files: dict[str, str]) -> ManifestTree:
    for rel, text in files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    tree = load_tree(tmp / "manifests")
    assert tree.ok, [str(p) for p in tree.problems]
    return tree


def resolver(table: dict[str, str]):  # type: ignore[no-untyped-def]
    def resolve(images: Iterable[str]) -> dict[str, str]:
        return {i: (i.partition("@")[2] or table[i.rsplit("/", 1)[-1]]) for i in images}

    return resolve


HOSTS = [{"name": "h1", "labels": {}, "maxInstances": 100, "state": "Ready"}]
DIGESTS = {"hello:1.0.0": D1, "greeter:1.0.0": D2, "api:2.0.0": D3}


def current(tmp: Path) -> dict[str, object]:
    """What the reconciler publishes now for TREE: plan it once and use it as the published state."""
    tree = tree_of(tmp / "a", TREE)
    first = diff_tree(
        tree=tree,
        inputs={"hosts": HOSTS, "published": {}, "registry": "127.0.0.1:5000"},
        resolve=resolver(DIGESTS),
    )
    assert {c.action for c in first.changes} == {"start"}
    result = plan(tree=tree, digests=resolver(DIGESTS)(sorted({c.image for a in tree.applications.values() for x in a.values() for c in x.components})),
                  hosts=[HostInfo(name="h1")], previous={}, registry="127.0.0.1:5000")  # fmt: skip
    specs = {h: list(s) for h, s in result.desired.items()}
    published = {
        h: HostDesiredState(host=h, generation=1, instances=tuple(s)).to_json() for h, s in specs.items()
    }
    return {"hosts": HOSTS, "published": published, "registry": "127.0.0.1:5000", "revision": "abc"}


def test_same_tree_changes_nothing(tmp_path: Path) -> None:
    inputs = current(tmp_path)
    result = diff_tree(tree=tree_of(tmp_path / "b", TREE), inputs=inputs, resolve=resolver(DIGESTS))
    assert result.changes == () and result.counts() == {"start": 0, "update": 0, "stop": 0}


def test_update_start_and_stop_host_by_host(tmp_path: Path) -> None:
    inputs = current(tmp_path)
    edited = dict(TREE)
    edited["manifests/prod/apps/hello.yaml"] = (
        PROD_HELLO.replace("image: demo/hello:1.0.0", f"image: demo/hello@{D3}")
        .replace('"hello from prod"', '"bonjour"')
        .replace("replicas: 2", "replicas: 3")
    )
    del edited["manifests/prod/apps/other.yaml"]
    result = diff_tree(
        tree=tree_of(tmp_path / "b", edited), inputs=inputs, resolve=resolver(DIGESTS), env="prod"
    )
    by_action = {(c.action, c.id) for c in result.changes}
    assert ("start", "prod/hello/web/2") in by_action
    assert ("stop", "prod/other/api/0") in by_action
    updates = [c for c in result.changes if c.action == "update" and c.id == "prod/hello/web/0"]
    assert updates and updates[0].old_digest == D1 and updates[0].new_digest == D3
    assert "config GREETING: 'hello from prod' -> 'bonjour'" in updates[0].details
    assert all(c.env == "prod" for c in result.changes)  # --env filter
    j = result.to_json()
    assert j["counts"]["start"] >= 1 and j["counts"]["stop"] == 1 and j["appliedRevision"] == "abc"


def test_compare_is_per_host() -> None:
    a = InstanceSpec(id="e/a/c/0", env="e", app="a", component="c", image=f"r/x@{D1}", digest=D1)
    moved = {"h1": [], "h2": [a]}
    changes = compare(before={"h1": [a]}, after=moved)
    assert [(c.action, c.host) for c in changes] == [("stop", "h1"), ("start", "h2")]
