"""``driftless diff [--env E] [REVISION]``: what applying a revision would change, host by host, before pushing.

Without REVISION the manifests folder of the working tree is diffed (your uncommitted edits, like
``flux diff`` / ``argocd app diff --local``); with one, that Git revision of ``--repo``. The real
planner runs over the reconciler's hosts and current desired state (``GET /api/v1/plan-inputs``);
tags are resolved through the registry. Exit status: 0 (also with changes; ``--exit-code`` makes
it 2 when something would change), 1 on error or when the manifests are invalid.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from driftless.client import ReconcilerClient
from driftless.commands.status import add_control_argument, add_output_argument, paint, print_json, short
from driftless.endpoints import default_git_remote, default_registry_url
from shared.errors import DriftlessError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "revision", nargs="?", metavar="REVISION", help="Git revision to diff (default: the working tree)"
    )
    p.add_argument("--env", default=None, help="only this environment")
    p.add_argument(
        "--repo",
        default=None,
        help="repository: a clone (default: the one around the current directory) or, with REVISION, "
        "any repository (default then: the Git remote of `driftless up`)",
    )
    p.add_argument(
        "--path", default="manifests", help="manifests folder in the repository (default manifests)"
    )
    p.add_argument(
        "--registry", default=None, help="registry URL to resolve tags (default: from `driftless up`)"
    )
    p.add_argument("--exit-code", action="store_true", help="exit 2 when applying would change something")
    add_output_argument(p)
    add_control_argument(p)


def run(args: argparse.Namespace) -> int:
    from reconciler.planner.diff import diff_tree
    from shared import tags

    tree = _load(args)
    if not tree.ok:
        for problem in tree.errors[:20]:
            print(str(problem))
        more = len(tree.errors) - 20
        raise DriftlessError(
            f"the manifests have {len(tree.errors)} error(s){f' ({more} not shown)' if more > 0 else ''}: "
            "the reconciler would reject this revision and keep the current one",
            hint="fix them (`driftless validate`) and diff again",
        )
    if args.env and args.env not in tree.environments:
        known = ", ".join(sorted(tree.environments)) or "none"
        raise DriftlessError(f"environment {args.env!r} is not in these manifests; known: {known}")
    client = ReconcilerClient.from_args(args)
    inputs = client.get("/api/v1/plan-inputs") or {}
    registry_url = args.registry or default_registry_url()

    def resolve(images: Any) -> dict[str, str]:
        try:
            return tags.resolve(images, registry_url=registry_url)
        except tags.UnknownImage as exc:
            raise DriftlessError(
                f"{exc}: the reconciler would reject this revision", hint="push the image first"
            ) from None
        except tags.RegistryUnreachable as exc:
            raise DriftlessError(
                str(exc), hint="pass --registry URL, or start the platform with `driftless up`"
            ) from None

    result = diff_tree(tree=tree, inputs=inputs, resolve=resolve, env=args.env)
    doc = result.to_json()
    doc["needsMore"] = new_needs(doc.get("changes") or [], registry_url=registry_url)
    if args.output == "json":
        print_json(doc)
    else:
        print(
            render(
                doc,
                what=args.revision
                or (f"{short(tree.revision)} (HEAD)" if tree.revision else "the working tree"),
            )
        )
    return 2 if args.exit_code and result.changes else 0


def _load(args: argparse.Namespace) -> Any:
    """The tree to diff: REVISION of a repository, else the working tree, else HEAD of the Git remote."""
    from model.loader import load_revision, load_tree
    from reconciler.gitops.working_copy import is_working_copy

    if args.revision:
        repo = args.repo or _toplevel(Path.cwd()) or default_git_remote()
        if not repo:
            raise DriftlessError("no repository to read the revision from", hint="pass --repo PATH")
        return load_revision(Path(repo), args.revision, subdir=args.path)
    root = Path(args.repo) if args.repo else _toplevel(Path.cwd())
    if root is not None and is_working_copy(root):
        folder = root / args.path
        if not folder.is_dir():
            raise DriftlessError(
                f"{folder} does not exist", hint="pass --path (the manifests folder) or --repo"
            )
        return load_tree(folder)
    remote = args.repo or default_git_remote()
    if remote:
        return load_revision(Path(remote), "HEAD", subdir=args.path)
    raise DriftlessError(
        "not inside a Git working copy: nothing to diff",
        hint="run it in a clone of the manifests repository, or pass --repo PATH or a REVISION",
    )


def _toplevel(cwd: Path) -> Path | None:
    r = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True, check=False
    )
    return Path(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip() else None


SIGNS = {"start": ("+", "green"), "stop": ("-", "red"), "update": ("~", "yellow")}


def render(result: dict[str, Any], *, what: str) -> str:
    out = [f"Applying {what} (reconciler runs {short(result.get('appliedRevision'))}):"]
    changes = result.get("changes") or []
    if not changes:
        out.append(paint("  no changes: every host keeps what it runs", "green"))
    host = None
    for c in changes:
        if c["host"] != host:
            host = c["host"]
            out.append(f"\n{host}")
        sign, colour = SIGNS[c["action"]]
        digest = c.get("newDigest") or c.get("oldDigest") or ""
        line = f"  {sign} {c['action']:<6} {c['id']:<36} {short(digest)}"
        out.append(paint(line, colour))
        for d in c.get("details") or []:
            out.append(f"             {d}")
    for u in result.get("unplaced") or []:
        out.append(
            paint(
                f"\n! unplaced {u['env']}/{u['app']}/{u['component']}: {u['missing']} replica(s): {u['reason']}",
                "red",
            )
        )
    for need in result.get("needsMore") or []:
        head = f"\n! {need['component']} {short(need['oldDigest'])} -> {short(need['newDigest'])}"
        if need.get("imports"):
            out.append(paint(f"{head} needs more than the running version: "
                             f"{', '.join('+ ' + i for i in need['imports'])}", "yellow"))
        for problem in need.get("breaking") or []:
            out.append(paint(f"{head} is not compatible: {problem}", "red"))
    n = result.get("counts") or {}
    out.append(f"\n{n.get('start', 0)} to start, {n.get('update', 0)} to update, {n.get('stop', 0)} to stop.")
    return "\n".join(out)


def new_needs(changes: list[dict[str, Any]], *, registry_url: str) -> list[dict[str, Any]]:
    """For each component whose digest changes, what to review before it rolls out: the promotion
    gates' own review (reconciler.gitops.review.review_digests) of the running and the new digest."""
    from reconciler.gitops.review import review_digests

    seen: set[tuple[str, str, str]] = set()
    out: list[dict[str, Any]] = []
    for c in changes:
        old, new, image = c.get("oldDigest"), c.get("newDigest"), c.get("image") or ""
        key = (f"{c['env']}/{c['app']}/{c['component']}", old or "", new or "")
        if c.get("action") != "update" or not old or not new or old == new or key in seen:
            continue
        seen.add(key)
        review = review_digests(running={key[0]: (image, old)}, proposed={key[0]: (image, new)},
                                registry_url=registry_url).get(key[0])
        if review is not None and (review.new_imports or review.breaking):
            out.append({"component": key[0], "oldDigest": old, "newDigest": new,
                        "imports": list(review.new_imports), "breaking": list(review.breaking)})
    return out
