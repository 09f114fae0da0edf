"""Healing decisions are pure: who gets republished, and the backoff that prevents thrashing."""

from __future__ import annotations

from reconciler.planner.drift import DriftCategory, DriftItem
from reconciler.planner.healing import decide


def item(category: DriftCategory, *, host: str = "a", env: str = "prod", instance: str = "prod/x/web/0") -> DriftItem:
    return DriftItem(category=category, env=env, app="x", component="web", host=host, instance=instance)


def run(items: list[DriftItem], now: float, schedule=None, **kw):  # type: ignore[no-untyped-def]
    args = {"heal_envs": {"prod"}, "eligible_hosts": {"a", "b"}, "busy_instances": set()} | kw
    return decide(items=items, schedule=schedule or {}, now=now, base=2.0, ceiling=8.0, **args)


def test_heals_correctable_drift_and_marks_items() -> None:
    d = run([item(DriftCategory.MISSING), item(DriftCategory.TAG_MOVED, host="b")], now=100.0)
    assert d.hosts == {"a"}  # TagMoved is reported, not healed
    assert d.items[0].healed_at == 100.0 and d.items[1].healed_at is None


def test_report_mode_ineligible_hosts_and_busy_instances_are_left_alone() -> None:
    missing = item(DriftCategory.MISSING)
    assert not run([missing], now=1.0, heal_envs={"staging"}).hosts
    assert not run([missing], now=1.0, eligible_hosts={"b"}).hosts  # not yet observed its generation, or Lost
    assert not run([missing], now=1.0, busy_instances={missing.instance}).hosts  # crash-looping: the host backs off


def test_backoff_doubles_while_drift_persists_and_resets_when_clean() -> None:
    drift = [item(DriftCategory.UNEXPECTED)]
    d = run(drift, now=0.0)
    assert d.hosts == {"a"}
    assert not run(drift, now=1.9, schedule=d.schedule).hosts  # within 2 s: no thrashing
    d = run(drift, now=2.0, schedule=d.schedule)
    assert d.hosts == {"a"}
    assert not run(drift, now=5.9, schedule=d.schedule).hosts  # now 4 s
    d = run(drift, now=6.0, schedule=d.schedule)
    d = run(drift, now=14.0, schedule=d.schedule)  # 8 s
    assert d.hosts == {"a"} and d.schedule["a"].backoff == 8.0  # capped at the ceiling
    clean = run([], now=15.0, schedule=d.schedule)
    assert clean.schedule == {}
    assert run(drift, now=15.1, schedule=clean.schedule).hosts == {"a"}


def test_names_the_environments_each_heal_corrects() -> None:
    d = run([item(DriftCategory.MISSING), item(DriftCategory.UNEXPECTED, env="staging", instance="staging/x/web/0"),
             item(DriftCategory.CONFIG_MISMATCH, env="edge", instance="edge/x/web/0"),
             item(DriftCategory.MISSING, host="b")], now=1.0, heal_envs={"prod", "edge"})
    assert d.hosts == {"a", "b"}
    assert d.envs == {"a": {"prod", "edge"}, "b": {"prod"}}  # staging is report mode: not what was healed
