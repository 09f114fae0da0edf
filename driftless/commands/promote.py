"""``driftless promote APP --from S --to T``: declare in T exactly the digests APP runs Healthy in S, as a Git commit.

By default the reconciler promotes (``POST /api/v1/promote`` at ``--control``): the gates run there,
the approval is recorded as the user of the credential sent (``--token-file``, else the one of
``driftless up``) and the commit is authored by that user. With ``--repo`` the commit is made here
instead, in a fresh clone of that remote (pushed) or in that local working copy (``--no-push``
leaves the push to you), from the status the reconciler reports.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from driftless.client import ApiError, ReconcilerClient
from driftless.commands.status import add_control_argument, paint, print_json, short
from shared.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", metavar="APP", help="application to promote")
    p.add_argument("--from", dest="from_env", required=True, metavar="ENV", help="source environment")
    p.add_argument("--to", dest="to_env", required=True, metavar="ENV", help="target environment")
    p.add_argument("--approve", metavar="NAME", nargs="?", const=True, default=None,
                   help="approve, recorded as Approved-By: the user of your credential (NAME, if given, must be "
                        "that user; with --repo: NAME, default git config user.name)")
    p.add_argument("--approve-capabilities", action="store_true",
                   help="approve the interfaces the new digests import that the running ones did not (the "
                        "no-new-capabilities gate; recorded as Approved-Capabilities: in the commit)")
    add_git_target_arguments(p)
    p.add_argument(
        "--wait",
        metavar="DURATION",
        default=None,
        help="wait up to DURATION (e.g. 60s, 5m) for gates that pass with time (synced, healthy, min-soak, "
        "no-drift) instead of refusing at once",
    )
    add_text_output_argument(p)
    add_control_argument(p)


# Gates that can pass by themselves while the source soaks; `--wait` waits for these only.
TIME_GATES = frozenset({"synced", "healthy", "min-soak", "no-drift"})


def run(args: argparse.Namespace) -> int:
    from reconciler.gitops.promote import PromotionRefused

    if args.wait is None:
        return _promote_once(args)
    deadline = time.monotonic() + _seconds(args.wait)
    while True:
        try:
            return _promote_once(args, quiet_refusal=True)
        except PromotionRefused as refused:
            failed = [g for g in refused.to_json()["gates"] if not g.get("passed")]
            waitable = all(g.get("name") in TIME_GATES for g in failed)
            if not waitable or time.monotonic() >= deadline:
                if args.output != "json":
                    print_gates(refused.to_json()["gates"], file=sys.stderr)
                raise
            if args.output != "json":
                print("waiting: " + "; ".join(str(g.get("message", "")) for g in failed), file=sys.stderr)
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def _seconds(text: str) -> float:
    from shared.units import duration_seconds

    try:
        return duration_seconds(text)
    except ValueError as exc:
        raise UsageError(f"--wait: {exc}") from None


def _promote_once(args: argparse.Namespace, *, quiet_refusal: bool = False) -> int:
    from reconciler.gitops.promote import Gate, PromotionRefused, promote

    client = ReconcilerClient.from_args(args)

    def locally(repo: str) -> dict[str, Any]:
        status = client.get(f"/api/v1/environments/{args.from_env}/apps/{args.app}")
        drift = (client.get("/api/v1/drift", env=args.from_env) or {}).get("items")
        return promote(
            repo=repo, branch=args.branch, subdir=args.path, app=args.app, from_env=args.from_env,
            to_env=args.to_env, source_status=status, approver=_local_approver(args.approve, repo),
            dry_run=args.dry_run, push=args.push, author=args.author, source_drift=drift,
        ).to_json()  # fmt: skip

    body = {"app": args.app, "from": args.from_env, "to": args.to_env, "approve": args.approve,
            "dryRun": args.dry_run, "author": args.author,
            "approveCapabilities": args.approve_capabilities or None}  # fmt: skip
    try:
        try:
            result_json, where = change_in_repository(
                args, client=client, endpoint="/api/v1/promote", body=body, locally=locally
            )
        except ApiError as exc:
            gates = exc.body.get("gates") if isinstance(exc.body, dict) else None
            if exc.status != 409 or not isinstance(gates, list):
                raise
            raise PromotionRefused(
                str(exc), hint=exc.hint,
                gates=[Gate(name=str(g.get("name")), passed=bool(g.get("passed")), message=str(g.get("message")))
                       for g in gates if isinstance(g, dict)],
            ) from None
    except PromotionRefused as refused:
        if quiet_refusal:
            raise
        if args.output == "json":
            print_json(refused.to_json())
        else:
            print_gates(refused.to_json()["gates"], file=sys.stderr)
        raise
    if args.output == "json":
        print_json(result_json)
        return 0
    assert isinstance(result_json, dict)
    print_text(result_json, repo=where, branch=args.branch)
    return 0


def _local_approver(approve: str | bool | None, repo: str) -> str | None:
    """--approve with --repo: the NAME given, else git's user.name (there is no credential to take it from)."""
    if approve is None or isinstance(approve, str):
        return approve
    import subprocess

    cwd = repo if Path(repo).is_dir() else None
    r = subprocess.run(["git", "config", "--get", "user.name"], capture_output=True, text=True, cwd=cwd)
    name = r.stdout.strip()
    if not name:
        raise UsageError("--approve without NAME needs git config user.name when promoting with --repo",
                         hint="pass --approve NAME")
    return name


def print_gates(gates: list[dict[str, Any]], *, file: TextIO | None = None) -> None:
    out = file or sys.stdout
    print("Gates:", file=out)
    width = max((len(str(g.get("name", ""))) for g in gates), default=0)  # the longest name sets the column
    for g in gates:
        mark = paint("pass", "green") if g.get("passed") else paint("FAIL", "red")
        print(f"  {mark}  {g.get('name', ''):<{width}}  {g.get('message', '')}", file=out)


def print_text(r: dict[str, Any], *, repo: str, branch: str) -> None:
    print(
        f"Promote {r['app']}: {r['from']} -> {r['to']} (source revision {short(str(r.get('sourceRevision') or ''))})"
    )
    print_gates(list(r.get("gates") or []))
    changes = list(r.get("changes") or [])
    if not changes:
        print(f"\n{r['to']} already declares the digests {r['from']} runs: nothing to commit.")
        return
    print("Changes:")
    for c in changes:
        print(f"  {c['component']}: {c['old']} -> {c['new']}")
    if r.get("dryRun"):
        print_dry_run_diff(r)
        print("\nThe commit message would be:\n")
        for line in str(r.get("message") or "").splitlines():
            print(f"    {line}")
        return
    print_committed(r, where=repo, branch=branch)


# -- shared with `driftless rollback`: where the commit goes, and how the outcome is told ----------


def add_git_target_arguments(p: argparse.ArgumentParser) -> None:
    """--dry-run, --push/--no-push, --repo, --branch, --path, --author: where and how the commit is made."""
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
        help="make the commit here, in this manifests repository: a Git remote (cloned fresh) or a local "
        "clone (committed in place, pushed to its origin); default: the reconciler makes it (POST /api/v1/...)",
    )
    p.add_argument("--branch", default="main", help="branch (default main)")
    p.add_argument(
        "--path", default="manifests", help="manifests folder in the repository (default manifests)"
    )
    p.add_argument("--author", default=None,
                   help='commit author, "Name <email>" (default: the user of your credential; with --repo: git identity)')


def add_text_output_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="output format (default text)"
    )


def change_in_repository(
    args: argparse.Namespace,
    *,
    client: ReconcilerClient,
    endpoint: str,
    body: dict[str, Any],
    locally: Callable[[str], dict[str, Any]],
) -> tuple[dict[str, Any], str]:
    """Ask the reconciler to make the change (POST ``endpoint`` with ``body``, None values left out), so
    its gates and its access control apply; with --repo make it here with ``locally(repo)``.

    Returns the result JSON and where the commit went, in words for the text output.
    """
    if args.repo is None:
        if not args.push and not args.dry_run:
            raise UsageError("--no-push commits into a local clone: pass --repo PATH of one",
                             hint="without --repo the reconciler makes and pushes the commit")
        return client.post(endpoint, {k: v for k, v in body.items() if v is not None}), "the reconciler's repository"
    return locally(str(args.repo)), str(args.repo)


def print_dry_run_diff(r: dict[str, Any]) -> None:
    print("\nDry run: nothing committed. The change:\n")
    print(str(r.get("diff") or ""), end="")


def print_committed(r: dict[str, Any], *, where: str, branch: str) -> None:
    commit = short(str(r.get("commit") or ""))
    if r.get("pushed"):
        print(f"\nCommitted {commit} and pushed to {branch} of {where}; the reconciler rolls it out.")
    else:
        print(f"\nCommitted {commit} in {where} (not pushed: run `git push` there to roll it out).")
