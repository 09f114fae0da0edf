"""``driftless hosts enroll|list|revoke``: what hosts may be, fixed when they enroll (role admin).

    driftless hosts enroll --label tier=edge --env dev --ingress https://edge-1.example.com \\
        --host edge-1 --expires 24h --max-uses 1 --token-out edge-1.token
    driftless host --name edge-1 --label tier=edge --token-file edge-1.token ...   # on the edge box
    driftless hosts list
    driftless hosts revoke enr-1a2b3c4d          # its token and the hosts it enrolled
    driftless hosts revoke --host edge-1         # one host

The join token is written to ``--token-out`` (mode 0600, never overwritten; ``-`` prints it), never
passed on a command line. See docs/reconciler.md, "Host enrollment".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from driftless.client import ReconcilerClient
from driftless.commands.status import add_control_argument, add_output_argument, ago, print_json, table
from shared.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="hosts_command", metavar="SUBCOMMAND", required=True)
    enroll = sub.add_parser("enroll", help="create an enrollment: a join token bound to labels and environments")
    enroll.add_argument("--label", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                        help="a label the hosts may carry, with its allowed values (repeatable); other label keys "
                             "are refused (os, arch, platform and driftless.dev/version stay free)")
    enroll.add_argument("--env", action="append", default=[], required=True, metavar="ENV",
                        help="an environment the hosts may serve (repeatable; '*' for every one, on purpose)")
    enroll.add_argument("--ingress", metavar="URL", help="the hosts' ingress URL must be under this URL prefix")
    enroll.add_argument("--host", metavar="NAME", help="only a host of this name may use the token")
    enroll.add_argument("--expires", metavar="DURATION", help="the token stops enrolling after this (e.g. 24h); "
                                                               "hosts enrolled before keep working")
    enroll.add_argument("--max-uses", type=int, metavar="N", help="registrations the token allows (default: any)")
    enroll.add_argument("--description", default="", metavar="TEXT")
    enroll.add_argument("--token-out", required=True, metavar="FILE",
                        help="write the join token here (mode 0600, never overwritten); '-' prints it")
    add_control_argument(enroll)
    add_output_argument(enroll)
    listing = sub.add_parser("list", help="enrollments, their bounds and the hosts each enrolled")
    add_control_argument(listing)
    add_output_argument(listing)
    revoke = sub.add_parser("revoke", help="revoke an enrollment (its token and its hosts' credentials) or a host")
    revoke.add_argument("enrollment", nargs="?", metavar="ENROLLMENT_ID")
    revoke.add_argument("--host", metavar="NAME", help="revoke this host alone")
    add_control_argument(revoke)
    add_output_argument(revoke)


def run(args: argparse.Namespace) -> int:
    client = ReconcilerClient.from_args(args)
    if args.hosts_command == "enroll":
        return _enroll(client, args)
    if args.hosts_command == "list":
        doc = client.get("/api/v1/enrollments") or {}
        if args.output == "json":
            print_json(doc)
        else:
            print(render(doc))
        return 0
    if bool(args.enrollment) == bool(args.host):
        raise UsageError("name an enrollment (driftless hosts revoke ENROLLMENT_ID) or --host NAME, not both")
    path = f"/api/v1/hosts/{args.host}/revoke" if args.host else f"/api/v1/enrollments/{args.enrollment}/revoke"
    answer = client.post(path, {})
    if args.output == "json":
        print_json(answer)
    elif args.host:
        print(f"host {args.host} revoked: its credential no longer works, its instances are placed elsewhere")
    else:
        hosts = answer.get("revokedHosts") or []
        print(f"enrollment {args.enrollment} revoked" + (f", and its host(s) {', '.join(hosts)}" if hosts else ""))
    return 0


def _labels(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        found = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not found:
            raise UsageError(f"--label {item!r}: expected KEY=VALUE[,VALUE...]")
        out.setdefault(key, []).extend(v for v in found if v not in out.get(key, []))
    return out


def _enroll(client: ReconcilerClient, args: argparse.Namespace) -> int:
    out = None if args.token_out == "-" else Path(args.token_out)
    if out is not None and out.exists():
        raise UsageError(f"{out} exists; a join token is never overwritten", hint="choose another --token-out")
    body: dict[str, Any] = {"labels": _labels(args.label), "environments": args.env, "description": args.description}
    for key, value in (("ingress", args.ingress), ("host", args.host), ("expiresIn", args.expires),
                       ("maxUses", args.max_uses)):
        if value is not None:
            body[key] = value
    answer = client.post("/api/v1/enrollments", body)
    token, enrollment = answer["token"], answer["enrollment"]
    if out is None:
        print(token)
    else:
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise UsageError(f"cannot create {out}: {exc.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    if args.output == "json":
        print_json({"enrollment": enrollment, "tokenFile": str(out) if out else None})
    elif out is not None:
        print(f"enrollment {enrollment['id']}: wrote its join token to {out} (mode 0600); on the host: "
              f"driftless host --token-file {out} ...", file=sys.stderr)
    return 0


def _bounds(e: dict[str, Any]) -> tuple[str, str]:
    labels = e.get("labels")
    shown = "any" if labels is None else (", ".join(f"{k}={'|'.join(v)}" for k, v in sorted(labels.items())) or "-")
    envs = e.get("environments")
    return shown, "every" if envs is None else (", ".join(envs) or "-")


def render(doc: dict[str, Any]) -> str:
    now = time.time()
    rows = []
    join = doc.get("joinToken") or {}
    labels, envs = _bounds(join)
    rows.append(["join-token", labels, envs, join.get("ingress") or "-", "(--token-file)", "-", "-", "active"])
    for e in doc.get("enrollments") or []:
        labels, envs = _bounds(e)
        state = "revoked" if e.get("revokedAt") else \
            "expired" if e.get("expiresAt") and e["expiresAt"] <= now else \
            "used up" if e.get("maxUses") is not None and e.get("uses", 0) >= e["maxUses"] else "active"
        uses = f"{e.get('uses', 0)}/{e['maxUses']}" if e.get("maxUses") is not None else str(e.get("uses", 0))
        at = e.get("expiresAt")
        expires = "-" if not at else ago(at, now=now) if at <= now else \
            "in " + ago(now - (at - now), now=now).removesuffix(" ago")
        rows.append([e["id"], labels, envs, e.get("ingress") or "-", ", ".join(e.get("hosts") or []) or "-", uses,
                     expires, state])
    return table(["ENROLLMENT", "LABELS", "ENVIRONMENTS", "INGRESS", "HOSTS", "USES", "EXPIRES", "STATE"], rows)
