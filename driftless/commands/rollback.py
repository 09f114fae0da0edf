"""``driftless rollback APP --env E --to REVISION``: restore APP's manifests from an earlier revision, as a new commit.

By default REVISION must be one the reconciler applied to E (``driftless history``); any commit
is accepted with ``--any-revision``. By default the reconciler makes the commit (``POST
/api/v1/rollback``), authored by the user of the credential sent; with ``--repo`` it is made here, in
a fresh clone of that remote or in that local working copy. History is never rewritten.
"""

from __future__ import annotations

import argparse
from typing import Any

from driftless.client import ReconcilerClient
from driftless.commands.promote import (
    add_git_target_arguments,
    add_text_output_argument,
    change_in_repository,
    print_committed,
    print_dry_run_diff,
)
from driftless.commands.status import add_control_argument, print_json, short


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", metavar="APP", help="application to roll back")
    p.add_argument("--env", required=True, help="environment")
    p.add_argument(
        "--to", dest="to_revision", required=True, metavar="REVISION", help="revision to go back to"
    )
    p.add_argument(
        "--any-revision", action="store_true", help="allow a revision the reconciler never applied"
    )
    p.add_argument("--reason", default=None, help="why (goes into the commit message)")
    add_git_target_arguments(p)
    add_text_output_argument(p)
    add_control_argument(p)


def run(args: argparse.Namespace) -> int:
    from reconciler.gitops.rollback import rollback

    client = ReconcilerClient.from_args(args)

    def locally(repo: str) -> dict[str, Any]:
        applied = None
        if not args.any_revision:
            client.get(f"/api/v1/environments/{args.env}")  # a clear error for an unknown environment
            doc = client.get("/api/v1/history", env=args.env, limit="10000") or {}
            applied = [str(e.get("revision")) for e in doc.get("history") or [] if e.get("revision")]
        return rollback(
            repo=repo, branch=args.branch, subdir=args.path, app=args.app, env=args.env,
            to_revision=args.to_revision, applied_revisions=applied, dry_run=args.dry_run, push=args.push,
            author=args.author, reason=args.reason,
        ).to_json()  # fmt: skip

    body = {"app": args.app, "env": args.env, "to": args.to_revision, "anyRevision": args.any_revision,
            "dryRun": args.dry_run, "reason": args.reason, "author": args.author}  # fmt: skip
    result, where = change_in_repository(
        args, client=client, endpoint="/api/v1/rollback", body=body, locally=locally
    )
    if args.output == "json":
        print_json(result)
        return 0
    print(
        f"Roll back {result['app']} in {result['env']} to {short(result['toRevision'])} (head {short(result['fromRevision'])})"
    )
    files = result.get("files") or []
    if not files:
        print(
            f"{result['app']} in {result['env']} is already as it was at {short(result['toRevision'])}: nothing to commit."
        )
        return 0
    for f in files:
        print(f"  {f['action']:<8} {f['path']}")
    if result.get("dryRun"):
        print_dry_run_diff(result)
        return 0
    print_committed(result, where=where, branch=args.branch)
    return 0
