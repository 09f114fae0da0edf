"""spec.rollout: the model, and every bad rollout reported at its file:line in one run."""

from __future__ import annotations

from pathlib import Path

from model import load_tree
from model.rollout import parse_percent, parse_threshold
from model.types import Threshold

ENV = """apiVersion: driftless.dev/v1alpha1
kind: Environment
metadata: {name: dev}
spec: {}
"""
GOOD = """apiVersion: driftless.dev/v1alpha1
kind: Application
metadata: {name: web}
spec:
  components:
    - {name: web, image: "demo/hello:1.0.0", expose: /web}
  rollout:
    strategy: canary
    steps: [{weight: 10, pause: 1m}, {weight: 50, pause: 2m}, {weight: 100}]
    abortWhen: {errorRate: "> 2%", p99: "> 1.5x baseline", traps: "> 0", fuel: "> 1.2x baseline"}
    shadow: {sample: 20%, compare: status}
"""
BAD = """apiVersion: driftless.dev/v1alpha1
kind: Application
metadata: {name: bad}
spec:
  components:
    - {name: job, image: "demo/hello:1.0.0"}
  rollout:
    strategy: canary
    steps:
      - {weight: 10, pause: 1s}
      - {weight: 50}
    abortWhen:
      errorRate: "more than two percent"
      p99: "> 1.5 seconds"
      fuel: "> 20%"
"""


def _tree(tmp_path: Path, **apps: str) -> Path:
    root = tmp_path / "manifests"
    (root / "dev" / "apps").mkdir(parents=True)
    (root / "dev" / "environment.yaml").write_text(ENV)
    for name, text in apps.items():
        (root / "dev" / "apps" / f"{name}.yaml").write_text(text)
    return root


def test_a_canary_rollout_loads_into_the_model(tmp_path: Path) -> None:
    tree = load_tree(_tree(tmp_path, web=GOOD))
    assert tree.ok, [str(p) for p in tree.problems]
    rollout = tree.applications["dev"]["web"].rollout
    assert rollout is not None and rollout.strategy == "canary"
    assert [(s.weight, s.pause_s) for s in rollout.steps] == [(10, 60.0), (50, 120.0), (100, 0.0)]
    assert rollout.abort_when["errorRate"] == Threshold(text="> 2%", value=0.02)
    assert rollout.abort_when["p99"] == Threshold(text="> 1.5x baseline", value=1.5, relative=True)
    assert rollout.abort_when["traps"].value == 0
    assert rollout.abort_when["fuel"] == Threshold(text="> 1.2x baseline", value=1.2, relative=True)
    assert rollout.shadow is not None and rollout.shadow.sample == 0.2 and rollout.shadow.compare == "status"
    assert rollout.shadow.min_match == 1.0


def test_no_rollout_is_rolling(tmp_path: Path) -> None:
    tree = load_tree(_tree(tmp_path, web=GOOD.split("  rollout:")[0]))
    assert tree.ok and tree.applications["dev"]["web"].rollout is None


def test_every_bad_rollout_is_reported_at_its_line(tmp_path: Path) -> None:
    tree = load_tree(_tree(tmp_path, bad=BAD))
    found = {(p.code, p.path): (p.file, p.line) for p in tree.problems}
    assert found[("steps-not-100", "spec.rollout.steps[1].weight")] == ("dev/apps/bad.yaml", 11)
    assert found[("bad-threshold", "spec.rollout.abortWhen.errorRate")] == ("dev/apps/bad.yaml", 13)
    assert found[("bad-threshold", "spec.rollout.abortWhen.p99")] == ("dev/apps/bad.yaml", 14)
    assert found[("bad-threshold", "spec.rollout.abortWhen.fuel")] == ("dev/apps/bad.yaml", 15)
    fuel = next(p for p in tree.problems if p.path == "spec.rollout.abortWhen.fuel")
    assert "1.2x baseline" in fuel.message, fuel.message
    assert found[("canary-nothing-to-split", "spec.rollout.strategy")] == ("dev/apps/bad.yaml", 8)
    assert all(p.level == "error" for p in tree.problems)


def test_thresholds_parse_or_are_refused() -> None:
    assert parse_threshold("errorRate", ">2%") == Threshold(text=">2%", value=0.02)
    assert parse_threshold("p99", "> 250ms") == Threshold(text="> 250ms", value=0.25)
    assert parse_threshold("p99", "> 2s") == Threshold(text="> 2s", value=2.0)
    assert parse_threshold("traps", "> 2x baseline") == Threshold(text="> 2x baseline", value=2.0, relative=True)
    assert parse_threshold("fuel", "> 5000000") == Threshold(text="> 5000000", value=5e6)
    for metric, text in [("errorRate", "> 2"), ("errorRate", "> 200%"), ("p99", "> 5"), ("traps", "> 1%"),
                         ("traps", "< 1"), ("p99", "fast"), ("fuel", "> 5ms"), ("fuel", "> 20%")]:
        assert parse_threshold(metric, text) is None, (metric, text)
    assert parse_percent("20%") == 0.2 and parse_percent(5) == 0.05
    assert parse_percent("120%") is None and parse_percent("lots") is None
