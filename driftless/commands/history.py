"""``driftless history [--env E] [APP]``: the revisions the reconciler applied, newest first."""

from __future__ import annotations

import argparse
from typing import Any

from driftless.client import ReconcilerClient
from driftless.commands.status import add_control_argument, add_output_argument, ago, print_json, short, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", nargs="?", metavar="APP", help="only revisions that changed this application")
    p.add_argument("--env", default=None, help="only this environment")
    p.add_argument("--limit", type=int, default=20, help="at most this many entries (default 20)")
    add_output_argument(p)
    add_control_argument(p)


def run(args: argparse.Namespace) -> int:
    client = ReconcilerClient.from_args(args)
    if args.env:
        client.get(f"/api/v1/environments/{args.env}")  # a clear error for an unknown environment
    doc = client.get("/api/v1/history", env=args.env, app=args.app, limit=str(max(1, args.limit))) or {}
    entries: list[dict[str, Any]] = list(doc.get("history") or [])
    if args.output == "json":
        print_json({"history": entries})
        return 0
    if not entries:
        what = f" of {args.app}" if args.app else ""
        where = f" in {args.env}" if args.env else ""
        print(f"No applied revisions{what}{where} yet.")
        return 0
    print(render(entries, app=args.app))
    return 0


def render(entries: list[dict[str, Any]], *, app: str | None) -> str:
    rows = []
    for e in entries:
        images = []
        for a in e.get("apps") or []:
            if app and a.get("name") != app:
                continue
            for c in a.get("components") or []:
                ref = str(c.get("image") or "").rsplit("/", 1)[-1]
                name, at, digest = ref.partition("@")
                prefix = "" if app else f"{a.get('name')}/"
                images.append(f"{prefix}{c.get('name')}={name}{at}{short(digest) if digest else ''}")
        rows.append(
            [
                short(e.get("revision")),
                str(e.get("env") or "-"),
                ago(e.get("appliedAt")),
                str(e.get("author") or "-").split(" <")[0][:24],
                str(e.get("message") or "").splitlines()[0][:50] if e.get("message") else "-",
                " ".join(images) or "-",
            ]
        )
    return table(["REVISION", "ENV", "APPLIED", "AUTHOR", "MESSAGE", "IMAGES"], rows)
