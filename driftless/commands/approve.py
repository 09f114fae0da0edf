"""``driftless approve APP --to ENV [--from ENV]``: approve promoting the digests APP runs in the source now.

The approval is recorded on the reconciler (``POST /api/v1/approvals``) as the user of the credential sent,
tied to those exact digests; a later ``driftless promote`` of them, by anyone, counts it and records it as
an ``Approved-By:`` trailer. Where the target's ``requireApproval`` has ``distinctFromPromoter: true`` (four
eyes), this is how a second person approves: the promoter's own approval does not count there.
"""

from __future__ import annotations

import argparse
import time

from driftless.client import ReconcilerClient
from driftless.commands.status import add_control_argument, print_json, short


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", metavar="APP", help="application whose promotion is approved")
    p.add_argument("--to", "--env", dest="to_env", required=True, metavar="ENV", help="target environment")
    p.add_argument("--from", dest="from_env", default=None, metavar="ENV",
                   help="source environment (default: the one the target's spec.promotion.from names)")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format (default text)")
    add_control_argument(p)


def run(args: argparse.Namespace) -> int:
    body = {"app": args.app, "to": args.to_env, **({"from": args.from_env} if args.from_env else {})}
    result = ReconcilerClient.from_args(args).post("/api/v1/approvals", body)
    if args.output == "json":
        print_json(result)
        return 0
    a = result["approval"]
    print(f"Approved as {a['user']}: promoting {a['app']} {a['from']} -> {a['to']} at")
    for component, digest in sorted(a["digests"].items()):
        print(f"  {component}: {short(digest)}")
    others = [p["user"] for p in result.get("approvals") or []]
    print(f"Approvals of these digests so far: {', '.join(others)} (valid until promoted, until {a['from']} runs "
          f"other digests, or for 24h; recorded at {time.strftime('%H:%M:%S', time.localtime(a['at']))}).")
    return 0
