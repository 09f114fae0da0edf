"""The gates of a promotion: each a function of one :class:`Promotion` (what is asked, what the
source runs, the target's policy) returning the gates it decides, in the order a person would check
them. :data:`GATES` lists them; a new gate is one more function appended there (and a hint in
:data:`HINTS`).

Gates come from the TARGET Environment's ``promotion`` block: ``from`` must name the source, the
source app must be Synced and Healthy, healthy for at least ``minSoak``, and with ``requireApproval``
an approver must be named. With a source canary rollout, ``rollout`` wants it Completed; with drift
known, ``no-drift`` wants none; with a compatibility review, ``compatible`` and
``no-new-capabilities`` judge it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.gitops.policy import PolicyView
from reconciler.gitops.review import DigestReview
from reconciler.gitops.signed_gate import SignedCheck
from shared.reference import DIGEST_RE, ReferenceError, parse


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    name: str  # "promotion-from", "synced", "healthy", "min-soak", "approval", "components", "rollout", ...
    passed: bool
    message: str
    wait_seconds: float | None = None  # a gate that passes by itself in this long (min-soak), when known

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "passed": self.passed, "message": self.message}
        if self.wait_seconds is not None:
            out["waitSeconds"] = round(self.wait_seconds, 1)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Promotion:
    """Everything a gate may look at."""

    policy: PolicyView
    from_env: str
    to_env: str
    app: str
    source_status: Mapping[str, Any]
    target_components: Sequence[str]
    approver: str | None
    now: float
    target_images: Mapping[str, str] | None = None
    source_drift: Sequence[Mapping[str, Any]] | None = None  # DriftItem JSON of the source, when known
    review: Mapping[str, DigestReview] | None = None  # the compatibility review, when made
    approve_capabilities: bool = False
    approvals: Sequence[str] = ()  # users who approved these digests ahead (reconciler.gitops.approvals)
    promoter: str | None = None  # the user who promotes (None: not known, e.g. a commit made with --repo)
    signed: SignedCheck | None = None  # the digests' signatures against the operator's policy, when checked

    @property
    def approved_by(self) -> list[str]:
        """Everyone who approved, once each: the approvals given ahead, then the promoter's own."""
        return list(dict.fromkeys([*self.approvals, *([self.approver] if self.approver else [])]))


GateCheck = Callable[[Promotion], Iterable[Gate]]


def promotion_from_gate(p: Promotion) -> Iterable[Gate]:
    if not p.policy.present:
        yield Gate(name="promotion-from", passed=False, message=f"environment {p.to_env} has no promotion block")
    elif p.policy.from_env != p.from_env:
        yield Gate(name="promotion-from", passed=False,
                   message=f"{p.to_env} promotes from {p.policy.from_env}, not from {p.from_env}")
    else:
        yield Gate(name="promotion-from", passed=True, message=f"{p.to_env} promotes from {p.from_env}")


def state_gates(p: Promotion) -> Iterable[Gate]:
    """The source app must be Synced and Healthy."""
    yield _state_gate("synced", app=p.app, env=p.from_env, state=p.source_status.get("sync"), wanted="Synced")
    yield _state_gate("healthy", app=p.app, env=p.from_env, state=p.source_status.get("health"), wanted="Healthy")


def min_soak_gate(p: Promotion) -> Iterable[Gate]:
    health = p.source_status.get("health")
    since = p.source_status.get("healthySince")
    soak = p.policy.min_soak_seconds
    soaked = 0.0 if health != "Healthy" or not isinstance(since, int | float) else max(0.0, p.now - float(since))
    yield Gate(
        name="min-soak",
        passed=soaked >= soak and health == "Healthy",
        message=f"healthy for {human_duration(soaked)} of the {human_duration(soak)} minSoak {p.to_env} requires",
        wait_seconds=soak - soaked if health == "Healthy" and soaked < soak else None,
    )


def approval_gate(p: Promotion) -> Iterable[Gate]:
    """``requireApproval``: enough distinct approvers; with ``distinctFromPromoter`` (four eyes) the
    promoter's own approval does not count, nor any when the promoter is not known."""
    policy = p.policy
    if not policy.require_approval:
        return
    everyone = p.approved_by
    if not policy.distinct_from_promoter and policy.approvers == 1:
        yield Gate(name="approval", passed=bool(everyone),
                   message=f"approved by {', '.join(everyone)}" if everyone
                   else f"{p.to_env} requires an approval (--approve NAME)")
        return
    counted = [a for a in everyone if not policy.distinct_from_promoter or (p.promoter and a != p.promoter)]
    who = "users other than the promoter" if policy.distinct_from_promoter else "distinct users"
    wanted = f"{policy.approvers} approval{'s' if policy.approvers > 1 else ''} by {who}"
    if len(counted) >= policy.approvers:
        yield Gate(name="approval", passed=True, message=f"approved by {', '.join(everyone)} ({p.to_env} requires "
                                                         f"{wanted})")
        return
    so_far = f"approved so far by {', '.join(everyone)}" if everyone else "no approval yet"
    if policy.distinct_from_promoter and p.promoter is None:
        so_far += " (the promoter is not known here: promote through the reconciler, without --repo)"
    elif policy.distinct_from_promoter and p.promoter in everyone:
        so_far += f" ({p.promoter} promotes: their own approval does not count)"
    yield Gate(name="approval", passed=False,
               message=f"{p.to_env} requires {wanted}: {so_far}; another user approves with "
                       f"`driftless approve {p.app} --to {p.to_env}`")


def components_gate(p: Promotion) -> Iterable[Gate]:
    """The source runs a valid digest of the same repository for every component the target declares."""
    source = source_digests(p.source_status)
    source_images = {
        str(c["name"]): str(c["image"])
        for c in p.source_status.get("components") or ()
        if isinstance(c, Mapping) and c.get("name") and c.get("image")
    }
    target_images = p.target_images or {}
    missing = [c for c in p.target_components if c not in source]
    bad = [c for c in p.target_components if c in source and not DIGEST_RE.match(source[c])]
    other_repo = [
        c for c, image in target_images.items()
        if c in source and not missing and repository(image) != repository(source_images.get(c, image))
    ]  # fmt: skip
    if not (missing or bad or other_repo):
        yield Gate(name="components", passed=True,
                   message=f"{p.from_env} runs a digest for every component of {p.app}")
        return
    what = [f"component {c} runs {repository(source_images[c])} in {p.from_env} "
            f"but {p.to_env} declares {repository(target_images[c])}" for c in other_repo]
    if missing:
        what.append(f"{p.from_env} runs no digest for component(s) {', '.join(missing)}")
    if bad:
        what.append(f"{p.from_env} reports an invalid digest for {', '.join(bad)}")
    yield Gate(name="components", passed=False, message="; ".join(what))


# drift in the source that makes "the digests it runs" uncertain
SOURCE_DRIFT = ("Missing", "VersionMismatch", "ConfigMismatch", "Unexpected")


def no_drift_gate(p: Promotion) -> Iterable[Gate]:
    """With the source's drift known: it must run exactly what it declares (no Missing, VersionMismatch,
    ConfigMismatch or Unexpected instance of the app), else its digests prove little."""
    if p.source_drift is None:
        return
    drifting = [i for i in p.source_drift
                if i.get("app") == p.app and i.get("env") == p.from_env and i.get("category") in SOURCE_DRIFT]
    if not drifting:
        yield Gate(name="no-drift", passed=True, message=f"{p.app} in {p.from_env} runs what it declares")
        return
    listed = "; ".join(f"{i.get('category')} {i.get('instance') or i.get('component')}" for i in drifting[:3])
    more = f" (and {len(drifting) - 3} more)" if len(drifting) > 3 else ""
    yield Gate(name="no-drift", passed=False, message=f"{p.app} in {p.from_env} drifts: {listed}{more}")


def rollout_gate(p: Promotion) -> Iterable[Gate]:
    """The source's canary rollout must have completed: its abortWhen (fuel per request included:
    deterministic, so the same bound on every machine) and shadow minMatch are the bounds promoted
    digests met. Aborted (held back) or still rolling out: refused, with the rollout's own words."""
    rollout = p.source_status.get("rollout")
    if not isinstance(rollout, Mapping):
        return
    app, env = p.app, p.from_env
    phase = str(rollout.get("phase") or "")
    why = str((rollout.get("condition") or {}).get("message") or "")
    if phase == "Completed":
        measured = rollout.get("measured") or {}
        canary, stable = measured.get("canary") or {}, measured.get("stable") or {}
        figures = f"{canary.get('requests', 0)} canary requests, {canary.get('errorRate', 0):.1%} errors"
        if canary.get("fuelPerRequest") and stable.get("fuelPerRequest"):
            c, b = float(canary["fuelPerRequest"]), float(stable["fuelPerRequest"])
            figures += f", fuel {c:.0f}/req vs {b:.0f}/req ({c / b:.2f}x)"
        elif "fuelPerRequest" in canary and canary["fuelPerRequest"] is None:
            figures += ", fuel unmeasured"
        yield Gate(name="rollout", passed=True,
                   message=f"the canary rollout of {app} completed in {env} within its abortWhen ({figures})")
    elif phase == "Aborted":
        yield Gate(name="rollout", passed=False,
                   message=f"{app}'s canary was aborted in {env} and is held back there: {why}")
    else:
        step = "shadow traffic" if rollout.get("shadow") else f"step {rollout.get('step')}/{rollout.get('steps')}"
        yield Gate(name="rollout", passed=False,
                   message=f"{app}'s canary is still rolling out in {env} ({phase}, {step}, weight "
                           f"{rollout.get('weight')}%): promote once it completes")


def review_gates_of(p: Promotion) -> Iterable[Gate]:
    if p.review is not None:
        yield from review_gates(p.review, approved=p.approve_capabilities, to_env=p.to_env)


def review_gates(review: Mapping[str, DigestReview], *, approved: bool, to_env: str) -> list[Gate]:
    """``compatible``: no export the running digests offer is removed or changed; ``no-new-capabilities``:
    the new digests import nothing the running ones did not, unless approved (recorded in the commit)."""
    breaking = [f"{c}: {b}" for c, r in sorted(review.items()) for b in r.breaking]
    needs = [f"{c}: {', '.join(r.new_imports)}" for c, r in sorted(review.items()) if r.new_imports]
    gates = [Gate(
        name="compatible", passed=not breaking,
        message=("not compatible with what runs in " + to_env + ": " + "; ".join(breaking[:3])
                 + (f" (and {len(breaking) - 3} more)" if len(breaking) > 3 else ""))
        if breaking else f"the new digests keep every export what runs in {to_env} offers",
    )]  # fmt: skip
    if not needs:
        gates.append(Gate(name="no-new-capabilities", passed=True,
                          message=f"the new digests need nothing more than what runs in {to_env}"))
    else:
        gates.append(Gate(
            name="no-new-capabilities", passed=approved,
            message=("new capabilities approved: " if approved else "new capabilities need an approval "
                     "(--approve-capabilities): ") + "; ".join(needs),
        ))  # fmt: skip
    return gates


def signed_gate(p: Promotion) -> Iterable[Gate]:
    """``signed``: each digest signed as the TARGET requires (--signature-policy); says who signed."""
    if p.signed is not None:
        yield Gate(name=p.signed.name, passed=p.signed.passed, message=p.signed.message)


# every gate, in the order a person would check them
GATES: list[GateCheck] = [
    promotion_from_gate, state_gates, min_soak_gate, approval_gate, components_gate, no_drift_gate,
    rollout_gate, signed_gate, review_gates_of,
]  # fmt: skip


def run_gates(promotion: Promotion, *, gates: Sequence[GateCheck] = GATES) -> list[Gate]:
    return [gate for check in gates for gate in check(promotion)]


def check_gates(
    *,
    policy: PolicyView,
    from_env: str,
    to_env: str,
    app: str,
    source_status: Mapping[str, Any],
    target_components: Sequence[str],
    approver: str | None,
    now: float,
    target_images: Mapping[str, str] | None = None,
    source_drift: Sequence[Mapping[str, Any]] | None = None,
) -> list[Gate]:
    """Every gate but the review's, passed or not (:func:`run_gates` of a :class:`Promotion`)."""
    return run_gates(Promotion(
        policy=policy, from_env=from_env, to_env=to_env, app=app, source_status=source_status,
        target_components=target_components, approver=approver, now=now, target_images=target_images,
        source_drift=source_drift,
    ))  # fmt: skip


def _state_gate(name: str, *, app: str, env: str, state: Any, wanted: str) -> Gate:
    """The source app's ``state`` (its sync or its health) must be ``wanted``."""
    return Gate(
        name=name,
        passed=state == wanted,
        message=f"{app} in {env} is {state or 'unknown'}" + ("" if state == wanted else f", not {wanted}"),
    )


HINTS = {
    "no-drift": "see `driftless drift --env` of the source; fix or heal it first",
    "promotion-from": "set spec.promotion.from in the target environment.yaml, or promote from the environment it names",
    "synced": "wait until the source has applied its newest revision (`driftless status`)",
    "healthy": "fix the source first (`driftless status`, `driftless drift`)",
    "min-soak": "wait for the soak time to pass, then promote again",
    "approval": "add --approve (recorded in the commit as Approved-By); where the promoter's own approval does "
                "not count, another user runs `driftless approve APP --to ENV` first",
    "components": "the source must run every component the target declares",
    "signed": "sign each digest with the keys the target requires (`driftless sign REF --key FILE`), then "
              "promote again",
    "rollout": "wait for the source's canary rollout to complete (`driftless status`); an aborted digest "
               "stays held back until a fixed one is pushed there",
}


def hint_for(gate: Gate) -> str:
    return HINTS.get(gate.name, "")


def repository(image: str) -> str:
    try:
        return parse(image).repository
    except ReferenceError:
        return image


def source_digests(source_status: Mapping[str, Any]) -> dict[str, str]:
    """component -> the digest the source runs."""
    out: dict[str, str] = {}
    for c in source_status.get("components") or ():
        if isinstance(c, Mapping) and c.get("name") and c.get("digest"):
            out[str(c["name"])] = str(c["digest"])
    return out


def human_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
