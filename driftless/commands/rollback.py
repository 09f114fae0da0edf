"""``driftless rollback APP --env E --to REVISION``: restore APP's manifests from an earlier revision, as a new commit.

By default REVISION must be one the reconciler applied to E (``driftless history``); any commit
is accepted with ``--any-revision``. The commit is made in a fresh clone of ``--repo`` (default:
the Git remote ``driftless up`` serves) and pushed; history is never rewritten.
"""

from __future__ import annotations

import argparse

from driftless.client import ControlClient
from driftless.commands.status import add_control_argument, print_json, short
from driftless.endpoints import default_git_remote


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
    p.add_argument(
        "--dry-run", action="store_true", help="show the diff and the commit message; change nothing"
    )
    p.add_argument(
        "--push",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="push the commit (default); --no-push commits into --repo, which must be a local clone",
    )
    p.add_argument(
        "--repo",
        default=None,
        help="manifests repository: a Git remote (cloned fresh) or a local clone (committed in place, "
        "pushed to its origin); default: the one `driftless up` serves",
    )
    p.add_argument("--branch", default="main", help="branch (default main)")
    p.add_argument(
        "--path", default="manifests", help="manifests folder in the repository (default manifests)"
    )
    p.add_argument("--author", default=None, help='commit author, "Name <email>" (default: git identity)')
    p.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="output format (default text)"
    )
    add_control_argument(p)


def run(args: argparse.Namespace) -> int:
    from reconciler.rollback import rollback

    client = ControlClient(base_url=args.control)
    repo = args.repo or default_git_remote()
    if repo is None:
        body = {"app": args.app, "env": args.env, "to": args.to_revision, "anyRevision": args.any_revision,
                "dryRun": args.dry_run, "reason": args.reason, "author": args.author}  # fmt: skip
        result = client.post("/api/v1/rollback", {k: v for k, v in body.items() if v is not None})
    else:
        applied = None
        if not args.any_revision:
            client.get(f"/api/v1/environments/{args.env}")  # a clear error for an unknown environment
            doc = client.get("/api/v1/history", env=args.env, limit="10000") or {}
            applied = [str(e.get("revision")) for e in doc.get("history") or [] if e.get("revision")]
        result = rollback(
            repo=str(repo), branch=args.branch, subdir=args.path, app=args.app, env=args.env,
            to_revision=args.to_revision, applied_revisions=applied, dry_run=args.dry_run, push=args.push,
            author=args.author, reason=args.reason,
        ).to_json()  # fmt: skip
    if args.output == "json":
        print_json(result)
        return 0
    where = str(repo) if repo else "the reconciler's repository"
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
        print("\nDry run: nothing committed. The change:\n")
        print(str(result.get("diff") or ""), end="")
        return 0
    if result.get("pushed"):
        print(
            f"\nCommitted {short(result['commit'])} and pushed to {args.branch} of {where}; the reconciler rolls it out."
        )
    else:
        print(
            f"\nCommitted {short(result['commit'])} in {where} (not pushed: run `git push` there to roll it out)."
        )
    return 0
