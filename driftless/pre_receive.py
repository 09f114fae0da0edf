"""The pre-receive hook ``driftless up`` installs in the repository it owns: a push to the branch the
reconciler follows is refused when the pushed revision's manifests do not validate, so ``git push``
fails and the commit never lands (git shows the lines below as ``remote: ...``).

    printf '%s\\n' "$refs" | python -m driftless.pre_receive --branch main --subdir manifests [--registry URL]

It reads the hook's stdin (``<old> <new> <ref>`` per line) and loads the pushed revision of that branch
with model.loader (schema and semantic checks; ``--registry`` adds the registry checks: images exist,
links fit the components' WIT), straight from the objects git holds in quarantine during the hook. The
whole tree is checked; the problems are listed per environment, each at its file:line, in the same
words as the post-receive feedback (driftless/push_feedback.py) and ``driftless validate``. Warnings
never refuse a push; pushes to other branches and deletions are not checked.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

from driftless.push_feedback import pushed_revision
from model.types import Problem

MAX_LINES = 40  # problems shown; the count says how many more there are


def refusal(problems: list[Problem], *, revision: str, subdir: str) -> list[str]:
    """What to tell the pusher of a refused revision: every error, grouped by environment (the first
    folder under ``subdir``), each at its file:line; empty when nothing refuses it."""
    errors = [p for p in problems if p.level == "error"]
    if not errors:
        return []
    prefix = "" if subdir in ("", ".") else subdir.strip("/") + "/"
    by_env: dict[str, list[Problem]] = defaultdict(list)
    for p in errors:
        env, sep, _ = p.file.partition("/")
        by_env[env if sep else "(the tree)"].append(p)
    envs = ", ".join(sorted(by_env))
    out = [f"driftless: push refused: revision {revision[:12]} has {len(errors)} error(s) in {envs}; "
           "nothing was changed, fix them and push again:"]
    shown = 0
    for env in sorted(by_env):
        out.append(f"driftless: {env}:")
        for p in by_env[env]:
            if shown == MAX_LINES:
                break
            out.append(f"driftless:   {prefix if p.file else ''}{p}")
            shown += 1
    if shown < len(errors):
        out.append(f"driftless:   ... and {len(errors) - shown} more (driftless validate {subdir or '.'})")
    return out


def check(repo: Path, revision: str, *, subdir: str, registry: str | None) -> list[Problem]:
    from model import check_registry, load_revision

    tree = load_revision(repo, revision, subdir=subdir)
    problems = list(tree.problems)
    if registry and not any(p.level == "error" for p in problems):
        problems += check_registry(tree, registry_url=registry)
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m driftless.pre_receive")
    p.add_argument("--branch", default="main")
    p.add_argument("--subdir", default="manifests")
    p.add_argument("--registry", default=None, help="also check images and links against this registry")
    args = p.parse_args(argv)
    revision = pushed_revision(sys.stdin.read().splitlines(), args.branch)
    if revision is None:
        return 0
    repo = Path(os.environ.get("GIT_DIR", "."))
    try:
        problems = check(repo, revision, subdir=args.subdir, registry=args.registry)
    except Exception as exc:  # the hook itself failing must say so, not pass a push silently
        print(f"driftless: push refused: could not check revision {revision[:12]}: {exc}", flush=True)
        return 1
    lines = refusal(problems, revision=revision, subdir=args.subdir)
    if lines:
        print("\n".join(lines), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
