"""``driftless drift [--env E] [-o table|json]``: every difference between what Git declares and what runs.

Exit status, for CI and cron jobs: 0 nothing drifts (Pending items do not count), 2 something
drifts, 1 error (e.g. the reconciler is not reachable).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from driftless.client import ReconcilerClient
from driftless.commands.status import (
    add_control_argument,
    add_output_argument,
    ago,
    paint,
    print_json,
    short,
    table,
)
from driftless.endpoints import default_registry_url
from shared.errors import DriftlessError

EXIT_CLEAN = 0
EXIT_DRIFTING = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default=None, help="only this environment")
    p.add_argument(
        "--category",
        action="append",
        default=None,
        metavar="NAME",
        help="only these categories (repeatable), e.g. Missing, Unexpected, VersionMismatch",
    )
    p.add_argument(
        "--tags",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also ask the registry where deployed tags point now (TagMoved; default on)",
    )
    p.add_argument(
        "--registry", default=None, metavar="URL", help="registry for --tags (default: from `driftless up`)"
    )
    p.add_argument(
        "--recent",
        type=float,
        default=10.0,
        metavar="MINUTES",
        help="also list drift events and heals of the last MINUTES (default 10; 0: none)",
    )
    add_output_argument(p)
    add_control_argument(p)
    p.epilog = "exit status: 0 nothing drifts, 2 something drifts, 1 error"


def run(args: argparse.Namespace) -> int:
    wanted = _categories(args.category)
    client = ReconcilerClient.from_args(args)
    if args.env:
        # an unknown environment is a mistake, not "no drift"
        client.get(f"/api/v1/environments/{args.env}")
    doc = client.get("/api/v1/drift", env=args.env) or {}
    if doc.get("available") is False:
        raise DriftlessError("this reconciler does not compute drift yet", hint="upgrade the reconciler")
    items: list[dict[str, Any]] = list(doc.get("items") or [])
    if wanted:
        items = [i for i in items if str(i.get("category", "")).lower() in wanted]
    if args.tags and (not wanted or "tagmoved" in wanted):
        items += tag_drift(
            client, env=args.env, registry_url=args.registry or default_registry_url(), known=items
        )
    counted = sum(1 for i in items if i.get("category") != "Pending")
    recent = recent_heals(client, env=args.env, minutes=args.recent)
    if args.output == "json":
        print_json({"env": args.env, "counted": counted, "items": items, "recent": recent})
    else:
        print(render(items, env=args.env))
        if recent:
            print(render_recent(recent, minutes=args.recent))
    return EXIT_DRIFTING if counted else EXIT_CLEAN


def _categories(given: list[str] | None) -> set[str]:
    """The lower-cased categories asked for (empty: all); an unknown one is an error."""
    from reconciler.planner.drift import DriftCategory

    known = {str(c).lower(): str(c) for c in DriftCategory}
    unknown = [c for c in given or () if c.lower() not in known]
    if unknown:
        # exit 1, not argparse's 2: 2 means "drifting" to scripts
        raise DriftlessError(
            f"unknown drift category {', '.join(unknown)}; known: {', '.join(known.values())}"
        )
    return {c.lower() for c in given or ()}


def tag_drift(
    client: ReconcilerClient, *, env: str | None, registry_url: str, known: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """TagMoved items found by asking the registry now where each deployed tag points.

    The reconciler pins a tag to the digest it resolved when it applied the revision; a tag
    moved since then is drift the CLI can see by itself. Items the reconciler already reports
    are not repeated. A registry that does not answer is a warning, not an error.
    """
    from reconciler.planner.drift import DeployedImage, compute_drift, tag_observations
    from shared import tags

    envs = (
        [env]
        if env
        else [
            str(e.get("name")) for e in (client.get("/api/v1/environments") or {}).get("environments") or []
        ]
    )
    deployed = []
    for e in envs:
        for a in (client.get(f"/api/v1/environments/{e}/apps") or {}).get("apps") or []:
            for c in a.get("components") or []:
                if c.get("image") and c.get("digest"):
                    deployed.append(
                        DeployedImage(env=e, app=str(a.get("app")), component=str(c.get("name")),
                                      image=str(c["image"]), digest=str(c["digest"]))
                    )  # fmt: skip
    tagged = sorted({d.image for d in deployed if "@" not in d.image})
    current: dict[str, str] = {}
    for image in tagged:
        try:
            current.update(tags.resolve([image], registry_url=registry_url))
        except (tags.UnknownImage, tags.RegistryUnreachable) as exc:
            print(f"warning: cannot check tag {image}: {exc}", file=sys.stderr)
    found = compute_drift(
        desired={}, hosts={}, tags=tag_observations(deployed=deployed, current=current), now=time.time()
    )
    seen = {(i.get("category"), i.get("env"), i.get("app"), i.get("component")) for i in known}
    return [i.to_json() for i in found if (str(i.category), i.env, i.app, i.component) not in seen]


def recent_heals(client: ReconcilerClient, *, env: str | None, minutes: float) -> list[dict[str, Any]]:
    """Drift observed and healed lately (from the event log): what heal mode corrected, and when."""
    if minutes <= 0:
        return []
    doc = client.get("/api/v1/events", since=str(time.time() - minutes * 60), limit="1000") or {}
    out = []
    for e in doc.get("events") or []:
        reason = str(e.get("reason") or "")
        if not (reason.startswith("Drift") or reason == "Healed"):
            continue
        if env and e.get("env") not in (env, ""):
            continue
        out.append(e)
    out.sort(key=lambda e: float(e.get("at") or 0))
    return out


def render_recent(events: list[dict[str, Any]], *, minutes: float) -> str:
    now = time.time()
    lines = ["", f"Drift events and heals in the last {minutes:g} minutes:"]
    for e in events:
        reason = str(e.get("reason"))
        what = reason.removeprefix("Drift") if reason != "Healed" else paint("Healed", "green")
        lines.append(f"  {ago(e.get('at'), now=now):>8}  {what:<16} {e.get('message', '')}")
    return "\n".join(lines)


def render(items: list[dict[str, Any]], *, env: str | None) -> str:
    now = time.time()
    where = f" in {env}" if env else ""
    counted = [i for i in items if i.get("category") != "Pending"]
    pending = len(items) - len(counted)
    if not items:
        return paint(f"No drift{where}: what runs matches what Git declares.", "green")
    rows = []
    messages = []
    for i in items:
        healed = i.get("healedAt")
        rows.append(
            [
                str(i.get("category")),
                str(i.get("env") or "-"),
                str(i.get("app") or "-"),
                str(i.get("component") or "-"),
                str(i.get("host") or "-"),
                _cell(i.get("expected")),
                _cell(i.get("actual")),
                ago(i.get("since"), now=now),
                f"healed {ago(healed, now=now)}" if healed else "-",
            ]
        )
        messages.append(str(i.get("message") or ""))
    text = table(
        ["CATEGORY", "ENV", "APP", "COMPONENT", "HOST", "EXPECTED", "ACTUAL", "SINCE", "HEAL"],
        rows,
        colour_columns=(0,),
    )
    lines = text.splitlines()
    out = [lines[0]]
    for row, message in zip(lines[1:], messages, strict=True):
        out.append(row)
        if message:
            out.append(paint(f"    {message}", "dim"))
    summary = f"{len(counted)} drifting item(s){where}" + (
        f", {pending} pending (converging, not drift)" if pending else ""
    )
    out += ["", paint(summary, "red" if counted else "yellow")]
    return "\n".join(out)


def _cell(value: Any) -> str:
    text = short(str(value)) if value else "-"
    return text if len(text) <= 40 else text[:37] + "..."
