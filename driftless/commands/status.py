"""``driftless status [--env E] [-o table|json]``: environments, applications and hosts at a glance.

This module also holds the table/colour helpers (drawn by rich) the other read commands (drift,
history, diff, promote) use: plain, stable text when stdout is not a terminal or ``NO_COLOR`` is set.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.color import ColorSystem
from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from driftless.client import ReconcilerClient
from shared.errors import DriftlessError

GOOD = {"Synced", "Healthy", "Ready", "Running", "True", "passed"}
WARN = {"Progressing", "Pending", "Starting", "Unknown", "report"}
BAD = {"OutOfSync", "Degraded", "Lost", "Revoked", "Failed", "BackOff", "False", "refused", "Missing", "Unexpected",
       "VersionMismatch", "ConfigMismatch", "TagMoved", "HostLost", "RevisionRejected"}  # fmt: skip
COLOURS = ("green", "yellow", "red", "dim", "bold")  # the styles paint() knows
_WIDE = 1 << 16  # a table is never wrapped to the terminal: one line per row, like before


# -- shared helpers ---------------------------------------------------------------------------


def add_control_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--control",
        metavar="URL",
        default=None,
        help="reconciler API (default: $DRIFTLESS_CONTROL, else the one `driftless up` started); replicated "
        "reconcilers: several, comma-separated (writes go to the leader)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        default=None,
        help="bearer credential for the reconciler (default: $DRIFTLESS_TOKEN_FILE, $DRIFTLESS_TOKEN, "
        "else the admin credential of `driftless up`)",
    )


def add_output_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format (default table)"
    )


def use_colour() -> bool:
    """Colour only on a terminal that has colours (rich's checks: ``NO_COLOR``, ``TERM=dumb``, ...)."""
    console = Console(file=sys.stdout)
    return console.is_terminal and console.color_system is not None and not console.no_color


def paint(text: str, colour: str, *, enabled: bool | None = None) -> str:
    """``text`` in one of :data:`COLOURS` when colour is on (or ``enabled``), else unchanged."""
    if not (use_colour() if enabled is None else enabled) or colour not in COLOURS:
        return text
    return Style.parse(colour).render(text, color_system=ColorSystem.STANDARD)


def state_colour(value: str) -> str:
    if value in GOOD:
        return "green"
    if value in WARN:
        return "yellow"
    if value in BAD:
        return "red"
    return ""


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, colour_columns: Sequence[int] = ()
) -> str:
    """Columns two spaces apart, padded to their widest cell, one line per row, trailing blanks trimmed;
    on a colour terminal the headers are bold and the state columns coloured."""
    colour = use_colour()
    grid = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False, expand=False, header_style="")
    for header in headers:
        grid.add_column(Text(header, style="bold" if colour else ""), no_wrap=True, overflow="ignore")
    for row in rows:
        grid.add_row(*(Text(cell, style=state_colour(cell) if i in colour_columns else "")
                       for i, cell in enumerate(row)))
    out = io.StringIO()
    console = Console(file=out, width=_WIDE, force_terminal=colour, no_color=not colour,
                      color_system="standard" if colour else None, highlight=False, markup=False, emoji=False)
    console.print(grid)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def ago(ts: float | None, *, now: float | None = None) -> str:
    if not ts:
        return "-"
    seconds = max(0.0, (now or time.time()) - float(ts))
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def short(value: str | None) -> str:
    """Revisions and digests shortened to 12 hex digits, like git and docker show them."""
    if not value:
        return "-"
    algo, sep, rest = value.partition(":")
    if sep and algo in ("sha256", "sha512"):
        return f"{algo}:{rest[:12]}"
    if len(value) == 40 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return value


TIME_KEYS = frozenset({"at", "since", "lastSeen", "lastTransitionTime"})  # and every key ending in At or Since


def _is_time(key: str) -> bool:
    return key in TIME_KEYS or key.endswith(("At", "Since"))


def iso_times(value: Any, key: str = "") -> Any:
    """``value`` with the API's unix times (seconds) as ISO 8601 UTC, e.g. ``2026-12-01T16:50:47.123Z``:
    every number under a key ending in ``At`` or ``Since`` (appliedAt, healthySince...) or named at,
    since, lastSeen, lastTransitionTime."""
    if isinstance(value, dict):
        return {k: iso_times(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [iso_times(v, key) for v in value]
    if key and isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and _is_time(key):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def print_json(value: Any) -> None:
    """``-o json``: the API's document, its times in ISO 8601 (``iso_times``)."""
    print(json.dumps(iso_times(value), indent=2, sort_keys=False))


# -- the command ------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default=None, help="only this environment (its apps and hosts)")
    add_output_argument(p)
    add_control_argument(p)


def run(args: argparse.Namespace) -> int:
    client = ReconcilerClient.from_args(args)
    envs_doc = client.get("/api/v1/environments") or {}
    hosts_doc = client.get("/api/v1/hosts") or {}
    environments = list(envs_doc.get("environments") or [])
    hosts = list(hosts_doc.get("hosts") or [])
    if args.env:
        known = [e.get("name") for e in environments]
        if args.env not in known:
            raise DriftlessError(
                f"environment {args.env!r} not found; known: {', '.join(map(str, known)) or 'none (nothing applied yet)'}"
            )
        environments = [e for e in environments if e.get("name") == args.env]
        served = set(environments[0].get("hosts") or [])
        hosts = [h for h in hosts if h.get("name") in served]
    drifting = _drift_counts(client)
    if args.output == "json":
        print_json(
            {
                "source": envs_doc.get("source"),
                "environments": environments,
                "hosts": hosts,
                "drift": drifting,
            }
        )
        return 0
    print(render(source=envs_doc.get("source") or {}, environments=environments, hosts=hosts, drift=drifting))
    return 0


def _drift_counts(client: ReconcilerClient) -> dict[str, int]:
    """Counted drift items per environment (an older reconciler without drift: none)."""
    try:
        doc = client.get("/api/v1/drift") or {}
    except DriftlessError:
        return {}
    counts: dict[str, int] = {}
    for item in doc.get("items") or []:
        if item.get("category") != "Pending":
            env = str(item.get("env") or "")
            counts[env] = counts.get(env, 0) + 1
    return counts


def _worst_health(apps: list[dict[str, Any]]) -> str:
    healths = {str(a.get("health") or "Unknown") for a in apps}
    for h in ("Degraded", "Unknown", "Progressing"):
        if h in healths:
            return h
    return "Healthy" if apps else "-"


MAX_PROBLEMS = 5  # of a rejected revision, under the Git line


def render(
    *,
    source: dict[str, Any],
    environments: list[dict[str, Any]],
    hosts: list[dict[str, Any]],
    drift: dict[str, int] | None = None,
) -> str:
    now = time.time()
    out: list[str] = []
    applied = (source.get("applied") or {}) if isinstance(source, dict) else {}
    if source:
        line = f"Git {source.get('repo', '?')} {source.get('branch', '')}/{source.get('path', '')}: "
        line += f"applied {short(applied.get('revision'))} ({ago(applied.get('appliedAt'), now=now)})"
        if source.get("rejected"):
            rej = source["rejected"]
            errors = [e for e in rej.get("errors") or [] if isinstance(e, dict)]
            envs = sorted({str(e["env"]) for e in errors if e.get("env")})  # each environment applies on its own
            where = f" in {', '.join(envs)}" if envs else ""
            line += "  " + paint(f"head {short(rej.get('revision'))} REJECTED{where}", "red")
            for e in errors[:MAX_PROBLEMS]:  # where and why, as `driftless validate` says it
                env = f"{e['env']}: " if e.get("env") else ""
                line += "\n  " + paint(env + str(e.get("text") or e.get("message") or e), "red")
            if len(errors) > MAX_PROBLEMS:
                line += f"\n  ... and {len(errors) - MAX_PROBLEMS} more (driftless status -o json)"
        out.append(line)
        leadership = source.get("leadership") or {}
        if leadership.get("mode") == "replicated":  # several reconcilers on PostgreSQL: who leads
            leader = leadership.get("leader") or {}
            said = f"leader {leader['url']} (epoch {leader.get('epoch')})" if leader.get("url") else \
                paint("no leader right now (an election takes a few seconds)", "red")
            out.append(f"Reconcilers: {said}; this answer from {leadership.get('url')} ({leadership.get('role')})")
        out.append("")
    env_rows = []
    app_rows = []
    signed_rows = []  # under a signature policy: each digest and the keys that signed it
    for e in environments:
        apps = e.get("apps") or []
        out_of_sync = sum(1 for a in apps if a.get("sync") != "Synced")
        sync_mode = (e.get("sync") or {}).get("mode", "-")
        promotion = e.get("promotion") or {}
        env_rows.append(
            [
                str(e.get("name")),
                short(e.get("revision")),
                "OutOfSync" if out_of_sync else "Synced",
                _worst_health(apps),
                str((drift or {}).get(str(e.get("name")), 0)),
                sync_mode,
                str(len(e.get("hosts") or [])),
                str(len(apps)),
                f"from {promotion['from']}" if promotion.get("from") else "-",
            ]
        )
        for a in apps:
            app_rows.append(
                [
                    str(e.get("name")),
                    str(a.get("name") or a.get("app")),
                    str(a.get("sync") or "Unknown"),
                    str(a.get("health") or "Unknown"),
                    f"{a.get('ready', 0)}/{a.get('desired', 0)}",
                    ago(a.get("healthySince"), now=now).replace(" ago", "") if a.get("healthySince") else "-",
                    str(a.get("message") or "")[:80],
                ]
            )
            for sig in a.get("signatures") or []:
                signed_rows.append([str(e.get("name")), str(a.get("name") or a.get("app")), str(sig.get("component")),
                                    short(sig.get("digest")), ", ".join(sig.get("signedBy") or []) or "unsigned"])
        for u in e.get("unplaced") or []:
            app_rows.append([str(e.get("name")), str(u.get("app", "?")), "OutOfSync", "Degraded", "-", "-",
                             f"unplaced: {u.get('message') or u.get('reason') or u}"])  # fmt: skip
    out.append(
        table(
            ["ENVIRONMENT", "REVISION", "SYNC", "HEALTH", "DRIFT", "MODE", "HOSTS", "APPS", "PROMOTION"],
            env_rows,
            colour_columns=(2, 3),
        )  # fmt: skip
    )
    out.append("")
    if app_rows:
        out.append(
            table(
                ["ENVIRONMENT", "APPLICATION", "SYNC", "HEALTH", "READY", "HEALTHY FOR", "MESSAGE"],
                app_rows,
                colour_columns=(2, 3),
            )  # fmt: skip
        )
    else:
        out.append("No applications.")
    if signed_rows:
        out.append("")
        out.append(table(["ENVIRONMENT", "APPLICATION", "COMPONENT", "DIGEST", "SIGNED BY"], signed_rows))
    out.append("")
    rollouts = rollout_rows(environments)
    if rollouts:  # canary rollouts: phase, step, weight and the figures of the window
        out.extend([table(["ENVIRONMENT", "APPLICATION", "ROLLOUT", "STEP", "WEIGHT", "CANARY", "STABLE",
                           "MESSAGE"], rollouts, colour_columns=(2,)), ""])
    host_rows = []
    for h in hosts:
        report = h.get("report") or {}
        instances = report.get("instances") or []
        running = sum(1 for i in instances if i.get("status") == "Running")
        unmanaged = sum(1 for i in instances if i.get("managed") is False)
        labels = ",".join(
            f"{k}={v}"
            for k, v in sorted((h.get("labels") or {}).items())
            if "/" not in k and k not in ("os", "arch")
        )
        host_rows.append(
            [
                str(h.get("name")),
                str(h.get("state")),
                f"{running}/{h.get('desiredInstances', 0)}"
                + (f" +{unmanaged} unmanaged" if unmanaged else ""),
                f"{h.get('observedGeneration', 0)}/{h.get('generation', 0)}",
                ago(h.get("lastSeen"), now=now),
                labels or "-",
            ]
        )
    if host_rows:
        out.append(
            table(
                ["HOST", "STATE", "RUNNING", "GENERATION", "LAST SEEN", "LABELS"],
                host_rows,
                colour_columns=(1,),
            )
        )
    else:
        out.append("No hosts registered.")
    return "\n".join(out)


def rollout_rows(environments: list[dict[str, Any]]) -> list[list[str]]:
    """One row per canary rollout: its phase, step, weight and what both digests measured."""

    def figures(w: dict[str, Any] | None) -> str:
        if not w:
            return "-"
        p99 = f", p99 {w['p99Ms']:g}ms" if w.get("p99Ms") is not None else ""
        fuel = ""
        if "fuelPerRequest" in w:  # null: served by a runtime that cannot count fuel (`wasmtime serve`)
            fuel = ", fuel unmeasured" if w["fuelPerRequest"] is None else f", {w['fuelPerRequest']:.0f} fuel/req"
        return f"{w.get('requests', 0)} req, {w.get('errorRate', 0):.1%} err{p99}, {w.get('traps', 0)} traps{fuel}"

    rows = []
    for e in environments:
        for a in e.get("apps") or []:
            r = a.get("rollout")
            if not r:
                continue
            measured = r.get("measured") or {}
            step = "shadow" if r.get("shadow") else f"{r.get('step', 0)}/{r.get('steps', 0)}"
            rows.append([str(e.get("name")), str(a.get("name") or a.get("app")), str(r.get("phase")), step,
                         f"{r.get('weight', 0)}%", figures(measured.get("canary")), figures(measured.get("stable")),
                         str((r.get("condition") or {}).get("message") or "")[:100]])
    return rows
