"""``spec.rollout`` of an Application: parsing its thresholds and checking it (pure, no I/O).

    rollout:
      strategy: canary              # or rolling (the default: today's rolling replacement)
      steps: [{weight: 10, pause: 1m}, {weight: 50, pause: 2m}, {weight: 100}]
      abortWhen: {errorRate: "> 2%", p99: "> 1.5x baseline", traps: "> 0", fuel: "> 1.2x baseline"}
      shadow: {sample: 20%, compare: status}

A threshold is ``> N`` with a unit that fits its metric: a percentage for ``errorRate`` (``> 2%``),
a duration for ``p99`` (``> 250ms``), a count for ``traps`` (``> 0``), fuel units per request for
``fuel`` (``> 5000000``); or, for any of them, a factor of the stable digest's figure in the same
window (``> 1.5x baseline``).
"""

from __future__ import annotations

import re
from typing import Any

from model.types import (
    Application,
    Component,
    Problem,
    RolloutPolicy,
    RolloutStep,
    ShadowPolicy,
    Spread,
    Threshold,
)
from model.yamldoc import Document, PathKey
from shared.units import duration_seconds

METRICS = ("errorRate", "p99", "traps", "fuel")
_THRESHOLD_RE = re.compile(
    r"^\s*>\s*(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?:(?P<x>x)\s*baseline|(?P<unit>%|ms|s)?)\s*$"
)
_PERCENT_RE = re.compile(r"^\s*(?P<num>[0-9]+(?:\.[0-9]+)?)\s*%\s*$")

HINTS = {
    "errorRate": '"> 2%" (share of 5xx answers) or "> 2x baseline"',
    "p99": '"> 250ms" or "> 1.5x baseline"',
    "traps": '"> 0" (traps in the window) or "> 2x baseline"',
    "fuel": '"> 1.2x baseline" (mean fuel per request against the stable digest\'s) or "> 5000000" (units)',
}


def parse_threshold(metric: str, text: str) -> Threshold | None:
    """The threshold ``text`` of ``metric``, or None when it cannot be parsed."""
    m = _THRESHOLD_RE.match(str(text))
    if m is None:
        return None
    value = float(m.group("num"))
    if m.group("x"):
        return Threshold(text=str(text).strip(), value=value, relative=True)
    unit = m.group("unit")
    if metric == "errorRate":
        if unit != "%" or value > 100:
            return None
        return Threshold(text=str(text).strip(), value=value / 100)
    if metric == "p99":
        if unit not in ("ms", "s"):
            return None
        return Threshold(text=str(text).strip(), value=value / 1000 if unit == "ms" else value)
    if metric in ("traps", "fuel"):
        if unit is not None:
            return None
        return Threshold(text=str(text).strip(), value=value)
    return None


def parse_percent(text: object) -> float | None:
    """``20%`` (or a number 0-100) as a fraction 0-1; None when it cannot be parsed."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = _PERCENT_RE.match(str(text))
        if m is None:
            return None
        value = float(m.group("num"))
    return value / 100 if 0 <= value <= 100 else None


def pause_seconds(text: object) -> float:
    return duration_seconds(str(text)) if text is not None else 0.0


def check_rollout(app: Application, doc: Document, component_paths: tuple[PathKey, ...] = ()) -> list[Problem]:
    """Problems of ``spec.rollout``: every one, each at its file:line."""
    rollout = app.rollout
    if rollout is None:
        return []
    problems: list[Problem] = []
    base: PathKey = ("spec", "rollout")
    raw = _raw(doc, base)
    for metric in METRICS:
        text = (raw.get("abortWhen") or {}).get(metric) if isinstance(raw.get("abortWhen"), dict) else None
        if text is not None and parse_threshold(metric, text) is None:
            problems.append(doc.problem((*base, "abortWhen", metric),
                                        f"abortWhen.{metric} {text!r} cannot be parsed: write e.g. {HINTS[metric]}",
                                        code="bad-threshold"))
    shadow = raw.get("shadow") if isinstance(raw.get("shadow"), dict) else None
    if shadow is not None:
        for key in ("sample", "minMatch"):
            if key in shadow and parse_percent(shadow[key]) is None:
                problems.append(doc.problem((*base, "shadow", key),
                                            f"shadow.{key} {shadow[key]!r} is not a percentage: write e.g. 20%",
                                            code="bad-threshold"))
    if rollout.strategy != "canary":
        if rollout.steps or rollout.shadow is not None or rollout.abort_when:
            problems.append(doc.problem((*base, "strategy"), "steps, abortWhen and shadow apply to strategy: canary "
                                        "only; a rolling rollout ignores them", code="ignored-rollout",
                                        level="warning"))
        return problems
    steps = rollout.steps
    if not steps:
        problems.append(doc.problem(base, "a canary needs steps, e.g. steps: [{weight: 10, pause: 1m}, "
                                    "{weight: 100}]", code="missing-field"))
    else:
        last = len(steps) - 1
        if steps[-1].weight != 100:
            problems.append(doc.problem((*base, "steps", last, "weight"),
                                        f"the last step has weight {steps[-1].weight}: a canary's steps must end "
                                        "at weight 100 (all traffic on the new digest)", code="steps-not-100"))
        for i in range(1, len(steps)):
            if steps[i].weight < steps[i - 1].weight:
                problems.append(doc.problem((*base, "steps", i, "weight"),
                                            f"step weights must not decrease ({steps[i - 1].weight} then "
                                            f"{steps[i].weight})", code="invalid-value"))
    if not any(c.expose for c in app.components) and all(_instances(c) <= 1 for c in app.components):
        problems.append(doc.problem((*base, "strategy"),
                                    f"a canary needs traffic to split: application '{app.name}' has one replica "
                                    "and no ingress route (expose); add expose to a component, more replicas, "
                                    "or use strategy: rolling", code="canary-nothing-to-split"))
    return problems


def _instances(component: Component) -> int:
    placement = component.placement
    return placement.replicas if isinstance(placement, Spread) else 2  # a daemon may run on many hosts


def _raw(doc: Document, path: PathKey) -> dict[str, Any]:
    node: object = doc.data
    for key in path:
        if not isinstance(node, dict):
            return {}
        node = node.get(key)
    return node if isinstance(node, dict) else {}


def to_rollout(data: dict[str, Any] | None) -> RolloutPolicy | None:
    """A schema-valid ``spec.rollout`` as the model (thresholds that do not parse are left out:
    the semantic check reports them)."""
    if data is None:
        return None
    abort: dict[str, Threshold] = {}
    for metric in METRICS:
        text = (data.get("abortWhen") or {}).get(metric)
        if text is not None:
            parsed = parse_threshold(metric, text)
            if parsed is not None:
                abort[metric] = parsed
    shadow = data.get("shadow")
    return RolloutPolicy(
        strategy=data.get("strategy", "rolling"),
        steps=tuple(RolloutStep(weight=s["weight"], pause_s=pause_seconds(s.get("pause"))) for s in
                    data.get("steps") or ()),
        abort_when=abort,
        shadow=None if shadow is None else ShadowPolicy(
            sample=parse_percent(shadow.get("sample")) or 0.0,
            compare=shadow.get("compare", "status"),
            min_match=parse_percent(shadow.get("minMatch", "100%")) or 0.0,
            duration_s=pause_seconds(shadow["duration"]) if "duration" in shadow else None,
        ),
    )
