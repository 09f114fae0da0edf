"""Promotion: make one environment declare exactly the digests that run Healthy in another, as a Git commit.

Library entry point (the reconciler's ``POST /api/v1/promote`` and ``driftless promote`` call it)::

    promote(*, repo: str, branch: str = "main", subdir: str = "manifests", app: str,
            from_env: str, to_env: str, source_status: Mapping[str, Any],
            approver: str | None = None, dry_run: bool = False, push: bool = True,
            now: float | None = None, author: str | None = None,
            source_drift: Sequence[Mapping[str, Any]] | None = None) -> PromotionResult

    repo           Git remote (URL or path of a bare repo) when ``push``; a local working copy
                   when not ``push`` (the commit lands there, unpushed)
    source_status  GET /api/v1/environments/{from_env}/apps/{app} of the reconciler:
                   {"revision", "sync", "health", "healthySince", "components": [{"name", "image", "digest"}]}
    source_drift   GET /api/v1/drift?env={from_env} items, when known: adds the gate "no-drift"
    returns        PromotionResult (``to_json()``); raises PromotionRefused (a ``Refused``, with
                   ``gates`` and ``to_json()``) when a gate fails, GitError/PushConflict on Git trouble.

HTTP (``POST /api/v1/promote``, wired by the reconciler to :func:`handle_request`)::

    request   {"app": "hello", "from": "staging", "to": "prod", "approve": true?, "dryRun": false?}
              (the approver and the author are the authenticated user; an "approve"/"approver" or
              "author" naming anyone else is refused with 400)
    200       PromotionResult.to_json(): {"app", "from", "to", "sourceRevision", "gates": [{"name",
              "passed", "message"}], "changes": [{"component", "old", "new", "digest"}], "file",
              "diff", "message", "dryRun", "commit", "pushed"}
    400       a field is missing or has the wrong type;  409  a gate failed (the error names it)

Gates come from the TARGET Environment's ``promotion`` block: ``from`` must name the source,
the source app must be Synced and Healthy, healthy for at least ``minSoak``, and with
``requireApproval`` an approver must be named (recorded as ``Approved-By:``). When the source app
has a canary rollout (``spec.rollout.strategy: canary``), the gate ``rollout`` wants it Completed:
the digests passed the source's ``abortWhen`` (error rate, p99, traps, fuel per request against the
stable digest) and shadow ``minMatch`` there; an aborted, held-back digest is never promoted. Only the ``image:``
values of the target app's components change (pinned ``@sha256:``, registry written as before);
every other byte of the file stays as it was.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from reconciler.controller.pipeline import Controller
from reconciler.gitops.working_copy import (
    ChangeResult,
    WorkingCopy,
    commit_change,
    in_repository,
)
from reconciler.planner.compat import breaking_changes, new_capabilities
from shared.errors import DriftlessError, Refused, UsageError
from shared.reference import DIGEST_RE, ReferenceError, parse
from shared.registry_client import component_info
from shared.units import duration_seconds

# -- public types ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    name: str  # "promotion-from", "synced", "healthy", "min-soak", "approval", "components", "rollout"
    passed: bool
    message: str
    wait_seconds: float | None = None  # a gate that passes by itself in this long (min-soak), when known

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "passed": self.passed, "message": self.message}
        if self.wait_seconds is not None:
            out["waitSeconds"] = round(self.wait_seconds, 1)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageChange:
    component: str
    old: str
    new: str
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"component": self.component, "old": self.old, "new": self.new, "digest": self.digest}


@dataclass(frozen=True, slots=True, kw_only=True)
class PromotionResult(ChangeResult):
    """Also ``diff`` (of ``file``), ``message``, ``dry_run``, ``committed``, ``pushed`` (ChangeResult)."""

    app: str
    from_env: str
    to_env: str
    source_revision: str
    gates: tuple[Gate, ...]
    changes: tuple[ImageChange, ...]  # only the images that actually change
    file: str  # the target app's manifest, relative to the repository root

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "from": self.from_env,
            "to": self.to_env,
            "sourceRevision": self.source_revision,
            "gates": [g.to_json() for g in self.gates],
            "changes": [c.to_json() for c in self.changes],
            "file": self.file,
            **self.change_json(),
        }


class PromotionRefused(Refused):
    """A gate failed; ``gates`` says which ones passed and which did not."""

    def __init__(self, message: str, *, gates: Sequence[Gate], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.gates = tuple(gates)

    def to_json(self) -> dict[str, Any]:
        return {"error": str(self), "hint": self.hint, "gates": [g.to_json() for g in self.gates]}


# -- entry point -----------------------------------------------------------------------------


def promote(
    *,
    repo: str,
    branch: str = "main",
    subdir: str = "manifests",
    app: str,
    from_env: str,
    to_env: str,
    source_status: Mapping[str, Any],
    approver: str | None = None,
    dry_run: bool = False,
    push: bool = True,
    now: float | None = None,
    author: str | None = None,
    source_drift: Sequence[Mapping[str, Any]] | None = None,
    review: Mapping[str, DigestReview] | None = None,
    approve_capabilities: bool = False,
) -> PromotionResult:
    """``review`` (component -> what its new digest breaks and newly imports, from
    :func:`review_digests`) adds the gates ``compatible`` and ``no-new-capabilities``."""
    now = time.time() if now is None else now
    if from_env == to_env:
        raise Refused(f"cannot promote {app} from {from_env} to itself", hint="--from and --to must differ")
    kwargs: dict[str, Any] = dict(
        subdir=subdir, app=app, from_env=from_env, to_env=to_env, source_status=source_status,
        approver=approver, dry_run=dry_run, now=now, author=author, source_drift=source_drift,
        review=review, approve_capabilities=approve_capabilities,
    )  # fmt: skip
    return in_repository(
        repo=repo,
        branch=branch,
        push=push,
        dry_run=dry_run,
        work=lambda wc, p: _promote_in(wc, push=p, **kwargs),
    )


async def handle_request(
    *, controller: Controller, body: Mapping[str, Any], user: str, author: str
) -> dict[str, Any]:
    """``POST /api/v1/promote``: the source status comes from the controller, Git work runs in a thread.

    ``user`` and ``author`` (``Name <email>``) are the authenticated caller's: the approval is recorded
    as ``user`` and the commit authored by ``author``. A body naming someone else is refused (UsageError).
    """
    app, from_env, to_env = (required_text(body, k) for k in ("app", "from", "to"))
    approver = approval(body, user=user, author=author)
    check_author(body, author=author)
    status = controller.tracker.app_status(from_env, app)
    if status is None:
        raise Refused(
            f"application {app} is not running in environment {from_env}", hint="check `driftless status`"
        )
    settings = controller.settings
    approve_capabilities = body.get("approveCapabilities", False)
    if not isinstance(approve_capabilities, bool):
        raise TypeError("field 'approveCapabilities' must be true or false")
    target = controller.tracker.app_status(to_env, app) or {}
    review = await asyncio.to_thread(
        review_digests, running=_component_digests(target), proposed=_component_digests(status),
        registry_url=settings.registry,
    )
    result = await asyncio.to_thread(
        promote, repo=settings.repo, branch=settings.branch, subdir=settings.path, app=app, from_env=from_env,
        to_env=to_env, source_status=status, approver=approver, dry_run=bool(body.get("dryRun", False)),
        push=True, author=author,
        source_drift=[i.to_json() for i in controller.tracker.drift_items if i.env == from_env],
        review=review, approve_capabilities=approve_capabilities,
    )  # fmt: skip
    return result.to_json()


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestReview:
    """What replacing one component's running digest with another would change of its contract."""

    running: str
    proposed: str
    breaking: tuple[str, ...] = ()  # exports removed or changed (reconciler.planner.compat)
    new_imports: tuple[str, ...] = ()  # capabilities it starts needing


def _component_digests(status: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """component -> (image as written, digest it runs) from an app status document."""
    return {
        str(c["name"]): (str(c.get("image") or ""), str(c["digest"]))
        for c in status.get("components") or ()
        if isinstance(c, Mapping) and c.get("name") and DIGEST_RE.match(str(c.get("digest") or ""))
    }


def review_digests(*, running: Mapping[str, tuple[str, str]], proposed: Mapping[str, tuple[str, str]],
                   registry_url: str) -> dict[str, DigestReview]:
    """For each component whose digest would change, its typed compatibility and new capabilities,
    from what the registry recorded of both digests. A component the registry cannot describe (a
    plain OCI registry, a digest it no longer has) is left out: nothing to compare."""
    out = {}
    for component, (image, new) in sorted(proposed.items()):
        old = running.get(component, ("", ""))[1]
        if not old or old == new:
            continue
        try:
            ref = parse(image)
            repository = f"{ref.registry}/{ref.repository}" if ref.registry else ref.repository
            before = component_info(f"{repository}@{old}", registry_url=registry_url)
            after = component_info(f"{repository}@{new}", registry_url=registry_url)
        except (DriftlessError, ReferenceError):
            continue
        out[component] = DigestReview(
            running=old, proposed=new,
            breaking=tuple(breaking_changes(before.get("exportsDetail") or {}, after.get("exportsDetail") or {})),
            new_imports=tuple(new_capabilities(before.get("imports") or (), after.get("imports") or ())),
        )  # fmt: skip
    return out


def approval(body: Mapping[str, Any], *, user: str, author: str) -> str | None:
    """The approver of a request: the authenticated ``user`` when the body approves (``"approve": true``,
    or the user's own name or ``Name <email>``), None when it does not; someone else's name is refused."""
    given = [(k, body[k]) for k in ("approve", "approver") if body.get(k) not in (None, False, "")]
    if not given:
        return None
    for key, value in given:
        if value is True or value in (user, author):
            continue
        if not isinstance(value, str):
            raise TypeError(f"field {key!r} must be true or a string")
        raise UsageError(
            f"{key} {value!r} is not the authenticated user {user!r}: an approval is recorded as the user "
            "whose credential makes the request",
            hint=f"send \"approve\": true (recorded as Approved-By: {user}), or use {value}'s own credential",
        )
    return user


def check_author(body: Mapping[str, Any], *, author: str) -> None:
    """A body ``author`` must be the authenticated user's ``Name <email>`` (the commit is authored by it)."""
    given = optional_text(body, "author")
    if given is not None and given != author:
        raise UsageError(
            f"author {given!r} is not the authenticated user {author!r}: commits are authored by the user "
            "whose credential makes the request",
            hint="leave author out of the request",
        )


def required_text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        # TypeError: the reconciler's handler answers 400 (a client mistake) for it
        raise TypeError(f"field {key!r} is required and must be a non-empty string")
    return value


def optional_text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"field {key!r} must be a string")
    return value or None


def _promote_in(
    wc: WorkingCopy,
    *,
    subdir: str,
    app: str,
    from_env: str,
    to_env: str,
    source_status: Mapping[str, Any],
    approver: str | None,
    dry_run: bool,
    push: bool,
    now: float,
    author: str | None,
    source_drift: Sequence[Mapping[str, Any]] | None,
    review: Mapping[str, DigestReview] | None,
    approve_capabilities: bool,
) -> PromotionResult:
    policy = read_promotion_policy(wc.path, subdir=subdir, env=to_env)
    located = find_app(wc.path, subdir=subdir, env=to_env, app=app)
    source_digests = _source_digests(source_status)
    gates = check_gates(
        policy=policy, from_env=from_env, to_env=to_env, app=app, source_status=source_status,
        target_components=[c for c, _ in located.images], approver=approver, now=now,
        target_images=dict(located.images), source_drift=source_drift,
    )  # fmt: skip
    if review is not None:
        gates.extend(review_gates(review, approved=approve_capabilities, to_env=to_env))
    failed = [g for g in gates if not g.passed]
    if failed:
        raise PromotionRefused(
            f"promotion of {app} from {from_env} to {to_env} refused: "
            + "; ".join(g.message for g in failed),
            gates=gates,
            hint=_hint_for(failed[0]),
        )

    text = located.text
    changes: list[ImageChange] = []
    replacements: list[tuple[int, int, str]] = []
    for (component, node), (start, end, written) in zip(located.images, located.spans, strict=True):
        digest = source_digests[component]
        new = str(parse(node).pinned(digest))
        if new != node:
            changes.append(ImageChange(component=component, old=node, new=new, digest=digest))
            replacements.append((start, end, written.replace(node, new)))
    for start, end, replacement in sorted(replacements, reverse=True):
        text = text[:start] + replacement + text[end:]

    revision = str(source_status.get("revision") or "")
    message = promotion_message(
        app=app, from_env=from_env, to_env=to_env, revision=revision, changes=changes,
        digests=source_digests, components=[c for c, _ in located.images], approver=approver,
        healthy_since=source_status.get("healthySince"), now=now,
        approved_capabilities={c: r.new_imports for c, r in (review or {}).items() if r.new_imports}
        if approve_capabilities else {},
    )  # fmt: skip
    diff = "".join(
        difflib.unified_diff(
            located.text.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"a/{located.file}", tofile=f"b/{located.file}",
        )
    )  # fmt: skip
    result = PromotionResult(
        app=app, from_env=from_env, to_env=to_env, source_revision=revision, gates=tuple(gates),
        changes=tuple(changes), file=located.file, diff=diff, message=message, dry_run=dry_run,
    )  # fmt: skip
    if dry_run or not changes:
        return result
    return commit_change(wc, result, contents={located.file: text.encode("utf-8")}, author=author, push=push)


# -- gates -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyView:
    """The target Environment's ``promotion`` block as written (None when it has none)."""

    env: str
    from_env: str | None
    min_soak_seconds: float
    require_approval: bool
    present: bool


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
    """Every gate, passed or not, in the order a person would check them.

    ``source_drift`` (DriftItem JSON of the source environment, when known) adds the gate
    ``no-drift``: the source must run exactly what it declares (no Missing, VersionMismatch,
    ConfigMismatch or Unexpected instance of the app), else its digests prove little.
    """
    gates: list[Gate] = []
    if not policy.present:
        gates.append(
            Gate(name="promotion-from", passed=False, message=f"environment {to_env} has no promotion block")
        )
    elif policy.from_env != from_env:
        gates.append(
            Gate(
                name="promotion-from",
                passed=False,
                message=f"{to_env} promotes from {policy.from_env}, not from {from_env}",
            )
        )
    else:
        gates.append(Gate(name="promotion-from", passed=True, message=f"{to_env} promotes from {from_env}"))

    sync = source_status.get("sync")
    gates.append(_state_gate("synced", app=app, env=from_env, state=sync, wanted="Synced"))
    health = source_status.get("health")
    gates.append(_state_gate("healthy", app=app, env=from_env, state=health, wanted="Healthy"))
    since = source_status.get("healthySince")
    soak = policy.min_soak_seconds
    if health != "Healthy" or not isinstance(since, int | float):
        soaked = 0.0
    else:
        soaked = max(0.0, now - float(since))
    gates.append(
        Gate(
            name="min-soak",
            passed=soaked >= soak and health == "Healthy",
            message=f"healthy for {_human(soaked)} of the {_human(soak)} minSoak {to_env} requires",
            wait_seconds=soak - soaked if health == "Healthy" and soaked < soak else None,
        )
    )
    if policy.require_approval:
        gates.append(
            Gate(
                name="approval",
                passed=bool(approver),
                message=f"approved by {approver}"
                if approver
                else f"{to_env} requires an approval (--approve NAME)",
            )
        )
    source = _source_digests(source_status)
    source_images = {
        str(c["name"]): str(c["image"])
        for c in source_status.get("components") or ()
        if isinstance(c, Mapping) and c.get("name") and c.get("image")
    }
    missing = [c for c in target_components if c not in source]
    bad = [c for c in target_components if c in source and not DIGEST_RE.match(source[c])]
    other_repo = [
        c
        for c, image in (target_images or {}).items()
        if c in source and not missing and _repository(image) != _repository(source_images.get(c, image))
    ]
    if missing or bad or other_repo:
        what = []
        for c in other_repo:
            what.append(
                f"component {c} runs {_repository(source_images[c])} in {from_env} "
                f"but {to_env} declares {_repository((target_images or {})[c])}"
            )
        if missing:
            what.append(f"{from_env} runs no digest for component(s) {', '.join(missing)}")
        if bad:
            what.append(f"{from_env} reports an invalid digest for {', '.join(bad)}")
        gates.append(Gate(name="components", passed=False, message="; ".join(what)))
    else:
        gates.append(
            Gate(
                name="components",
                passed=True,
                message=f"{from_env} runs a digest for every component of {app}",
            )
        )
    if source_drift is not None:
        drifting = [
            i
            for i in source_drift
            if i.get("app") == app and i.get("env") == from_env and i.get("category") in SOURCE_DRIFT
        ]
        gates.append(
            Gate(
                name="no-drift",
                passed=not drifting,
                message=(
                    f"{app} in {from_env} drifts: "
                    + "; ".join(
                        f"{i.get('category')} {i.get('instance') or i.get('component')}" for i in drifting[:3]
                    )
                    + (f" (and {len(drifting) - 3} more)" if len(drifting) > 3 else "")
                    if drifting
                    else f"{app} in {from_env} runs what it declares"
                ),
            )
        )
    rollout = source_status.get("rollout")
    if isinstance(rollout, Mapping):
        gates.append(_rollout_gate(rollout, app=app, env=from_env))
    return gates


def _rollout_gate(rollout: Mapping[str, Any], *, app: str, env: str) -> Gate:
    """The source's canary rollout must have completed: its abortWhen (fuel per request included:
    deterministic, so the same bound on every machine) and shadow minMatch are the bounds promoted
    digests met. Aborted (held back) or still rolling out: refused, with the rollout's own words."""
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
        return Gate(name="rollout", passed=True,
                    message=f"the canary rollout of {app} completed in {env} within its abortWhen ({figures})")
    if phase == "Aborted":
        return Gate(name="rollout", passed=False,
                    message=f"{app}'s canary was aborted in {env} and is held back there: {why}")
    step = "shadow traffic" if rollout.get("shadow") else f"step {rollout.get('step')}/{rollout.get('steps')}"
    return Gate(name="rollout", passed=False,
                message=f"{app}'s canary is still rolling out in {env} ({phase}, {step}, weight "
                        f"{rollout.get('weight')}%): promote once it completes")


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


def _state_gate(name: str, *, app: str, env: str, state: Any, wanted: str) -> Gate:
    """The source app's ``state`` (its sync or its health) must be ``wanted``."""
    return Gate(
        name=name,
        passed=state == wanted,
        message=f"{app} in {env} is {state or 'unknown'}" + ("" if state == wanted else f", not {wanted}"),
    )


# drift in the source that makes "the digests it runs" uncertain
SOURCE_DRIFT = ("Missing", "VersionMismatch", "ConfigMismatch", "Unexpected")


def _hint_for(gate: Gate) -> str:
    return {
        "no-drift": "see `driftless drift --env` of the source; fix or heal it first",
        "promotion-from": "set spec.promotion.from in the target environment.yaml, or promote from the environment it names",
        "synced": "wait until the source has applied its newest revision (`driftless status`)",
        "healthy": "fix the source first (`driftless status`, `driftless drift`)",
        "min-soak": "wait for the soak time to pass, then promote again",
        "approval": "add --approve NAME (recorded in the commit as Approved-By)",
        "components": "the source must run every component the target declares",
        "rollout": "wait for the source's canary rollout to complete (`driftless status`); an aborted digest "
                   "stays held back until a fixed one is pushed there",
    }.get(gate.name, "")


def _repository(image: str) -> str:
    try:
        return parse(image).repository
    except ReferenceError:
        return image


def _source_digests(source_status: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in source_status.get("components") or ():
        if isinstance(c, Mapping) and c.get("name") and c.get("digest"):
            out[str(c["name"])] = str(c["digest"])
    return out


# -- the manifests ---------------------------------------------------------------------------


def _yaml() -> YAML:
    """A new round-trip loader per use: ruamel.yaml instances are not thread-safe (the API runs
    promotions in threads)."""
    return YAML(typ="rt")


@dataclass(frozen=True, slots=True, kw_only=True)
class LocatedApp:
    file: str  # relative to the repository root
    text: str
    images: tuple[tuple[str, str], ...]  # (component, image as written)
    spans: tuple[tuple[int, int, str], ...] = field(default=())  # (start, end, text) of each image scalar


def read_promotion_policy(root: Path, *, subdir: str, env: str) -> PolicyView:
    env_file = root / subdir / env / "environment.yaml"
    if not env_file.is_file():
        env_file = root / subdir / env / "environment.yml"
    if not env_file.is_file():
        raise Refused(
            f"environment {env} not found: {Path(subdir) / env / 'environment.yaml'} does not exist",
            hint="check --to (the environment folders are under " + subdir + "/)",
        )
    try:
        doc = _yaml().load(env_file.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise Refused(f"{env_file.relative_to(root)} is not valid YAML: {exc}".splitlines()[0]) from None
    spec = doc.get("spec") if isinstance(doc, Mapping) else None
    block = spec.get("promotion") if isinstance(spec, Mapping) else None
    if not isinstance(block, Mapping):
        return PolicyView(env=env, from_env=None, min_soak_seconds=0.0, require_approval=False, present=False)
    return PolicyView(
        env=env,
        from_env=str(block.get("from")) if block.get("from") is not None else None,
        min_soak_seconds=parse_duration(block.get("minSoak", 0)),
        require_approval=bool(block.get("requireApproval", False)),
        present=True,
    )


def app_files(root: Path, *, subdir: str, env: str) -> list[Path]:
    apps = root / subdir / env / "apps"
    return (
        sorted(p for p in apps.glob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        if apps.is_dir()
        else []
    )


def application_name(text: str) -> list[str]:
    """Names of the Application documents in ``text`` (a file may hold several)."""
    names = []
    try:
        for doc in _yaml().load_all(text):
            if isinstance(doc, Mapping) and doc.get("kind") == "Application":
                meta = doc.get("metadata")
                if isinstance(meta, Mapping) and meta.get("name"):
                    names.append(str(meta["name"]))
    except YAMLError:
        return []
    return names


def find_app(root: Path, *, subdir: str, env: str, app: str) -> LocatedApp:
    """The target Application: its file, and where each component's ``image:`` value is written."""
    for path in app_files(root, subdir=subdir, env=env):
        text = path.read_bytes().decode("utf-8")
        if app not in application_name(text):
            continue
        rel = str(path.relative_to(root))
        docs = list(_yaml().load_all(text))
        if len(docs) != 1:
            raise Refused(
                f"{rel} holds {len(docs)} YAML documents; promotion rewrites files with one Application",
                hint=f"move {app} into a file of its own",
            )
        return _locate_images(rel, text, docs[0])
    raise Refused(
        f"application {app} not found in {subdir}/{env}/apps/",
        hint=f"declare {app} in {env} first; promotion only updates images of an existing application",
    )


def _locate_images(rel: str, text: str, doc: Any) -> LocatedApp:
    line_starts = [0]
    for m in re.finditer("\n", text):
        line_starts.append(m.end())
    spec = doc.get("spec") if isinstance(doc, Mapping) else None
    components = spec.get("components") if isinstance(spec, Mapping) else None
    if not isinstance(components, list) or not components:
        raise Refused(f"{rel} declares no components under spec.components")
    images: list[tuple[str, str]] = []
    spans: list[tuple[int, int, str]] = []
    for i, comp in enumerate(components):
        if (
            not isinstance(comp, CommentedMap)
            or not isinstance(comp.get("image"), str)
            or not comp.get("name")
        ):
            raise Refused(f"{rel}: spec.components[{i}] needs a name and an image")
        image = comp["image"]
        try:
            parse(image)
        except ReferenceError as exc:
            raise Refused(f"{rel}: spec.components[{i}].image: {exc}") from None
        line, col = comp.lc.value("image")
        start = line_starts[line] + col
        end = _scalar_end(text, start, image)
        if end is None:
            raise Refused(
                f"{rel}:{line + 1}:{col + 1}: the image of {comp['name']} is written in a form promotion cannot "
                "rewrite in place (escapes or a multi-line scalar)",
                hint="write it on one line, plain or quoted",
            )
        images.append((str(comp["name"]), image))
        spans.append((start, end, text[start:end]))
    return LocatedApp(file=rel, text=text, images=tuple(images), spans=tuple(spans))


def _scalar_end(text: str, start: int, value: str) -> int | None:
    """End offset of the scalar ``value`` written at ``start`` (plain, 'single' or "double" quoted)."""
    quote = text[start : start + 1]
    if quote in ("'", '"'):
        end = start + 1 + len(value) + 1
        return end if text[start:end] == f"{quote}{value}{quote}" else None
    end = start + len(value)
    return end if text[start:end] == value else None


# -- commit message --------------------------------------------------------------------------


def promotion_message(
    *,
    app: str,
    from_env: str,
    to_env: str,
    revision: str,
    changes: Sequence[ImageChange],
    digests: Mapping[str, str],
    components: Sequence[str],
    approver: str | None,
    healthy_since: Any,
    now: float,
    approved_capabilities: Mapping[str, Sequence[str]] | None = None,
) -> str:
    lines = [f"promote({app}): {from_env} -> {to_env}", ""]
    soaked = (
        f", healthy for {_human(now - float(healthy_since))}"
        if isinstance(healthy_since, int | float)
        else ""
    )
    lines.append(f"Declare in {to_env} the digests {app} runs Synced and Healthy in {from_env}{soaked}.")
    lines.append("")
    for c in changes:
        lines.append(f"  {c.component}: {c.old} -> {c.new}")
    if changes:
        lines.append("")
    lines.append(f"Promoted-From: {from_env}@{revision or 'unknown'}")
    for component in components:
        lines.append(f"Promoted-Digest: {component}={digests[component]}")
    if approver:
        lines.append(f"Approved-By: {approver}")
    for component, imports in sorted((approved_capabilities or {}).items()):
        lines.append(f"Approved-Capabilities: {component}={','.join(imports)}")
    return "\n".join(lines) + "\n"


# -- durations -------------------------------------------------------------------------------

def parse_duration(value: Any) -> float:
    """minSoak as seconds (:func:`shared.units.duration_seconds`); a promotion refuses anything else."""
    try:
        return duration_seconds(value)
    except ValueError as exc:
        raise Refused(f"minSoak {value!r} is not a duration (e.g. 30s, 5m, 1h)") from exc


def _human(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
