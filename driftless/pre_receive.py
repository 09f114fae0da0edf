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
from typing import TYPE_CHECKING, Any

from driftless.push_feedback import pushed_revision

if TYPE_CHECKING:
    from model.types import Problem

MAX_LINES = 40  # problems shown; the count says how many more there are


def refusal(problems: list[Problem] | list[Found], *, revision: str, subdir: str) -> list[str]:
    """What to tell the pusher of a refused revision: every error, grouped by environment (the first
    folder under ``subdir``), each at its file:line; empty when nothing refuses it."""
    errors = [p for p in problems if p.level == "error"]
    if not errors:
        return []
    prefix = "" if subdir in ("", ".") else subdir.strip("/") + "/"
    by_env: dict[str, list[Problem | Found]] = defaultdict(list)
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


class Found:
    """A problem as the reconciler's ``POST /api/v1/validate`` answers it (what refusal() reads of a
    model Problem), without importing the model: the hook stays a light process."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.level, self.file = str(doc.get("level", "error")), str(doc.get("file", ""))
        self.line, self.column = int(doc.get("line") or 0), int(doc.get("column") or 0)
        self.path, self.message = str(doc.get("path") or ""), str(doc.get("message", ""))

    def __str__(self) -> str:  # as model.types.Problem says it
        where = f" at {self.path}" if self.path else ""
        return f"{self.file}:{self.line}:{self.column}: {self.level}: {self.message}{where}"


def ask_reconciler(repo: Path, revision: str, *, subdir: str, url: str, token_file: Path,
                   cacert: str | None) -> list[Found] | None:
    """The problems of ``revision`` as the running reconciler finds them (``git archive`` of
    ``subdir`` posted to it: milliseconds, where loading the model here takes a second or two on a busy
    machine); None when it cannot say (not running, an older one), and the hook checks locally."""
    import json
    import ssl
    import subprocess
    import urllib.request
    from urllib.parse import quote

    try:
        archive = subprocess.run(["git", "--git-dir", str(repo), "archive", "--format=tar", revision, "--", subdir],
                                 capture_output=True, timeout=30, check=False)
        if archive.returncode != 0:
            return None  # no such folder, say: the local check words it
        request = urllib.request.Request(
            f"{url.rstrip('/')}/api/v1/validate?subdir={quote(subdir)}", data=archive.stdout, method="POST",
            headers={"Authorization": f"Bearer {token_file.read_text().strip()}",
                     "Content-Type": "application/x-tar"})
        context = ssl.create_default_context(cafile=cacert) if cacert else None
        with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310 - our URL
            doc = json.loads(response.read())
        return [Found(p) for p in doc["problems"]]
    except (OSError, ValueError, KeyError, TypeError, subprocess.TimeoutExpired):
        return None


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
    p.add_argument("--url", default=None, help="the reconciler, asked first (POST /api/v1/validate)")
    p.add_argument("--token-file", type=Path, default=None, help="a credential for --url (any role)")
    p.add_argument("--cacert", default=None)
    args = p.parse_args(argv)
    revision = pushed_revision(sys.stdin.read().splitlines(), args.branch)
    if revision is None:
        return 0
    repo = Path(os.environ.get("GIT_DIR", "."))
    try:
        problems: list[Problem] | list[Found] | None = None
        if args.url and args.token_file and not args.registry:
            problems = ask_reconciler(repo, revision, subdir=args.subdir, url=args.url, token_file=args.token_file,
                                      cacert=args.cacert)
        if problems is None:
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
