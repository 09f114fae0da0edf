"""``driftless validate [PATH] [-o text|json] [--registry URL]``: check a manifests tree before ``git push``.

Exit 0 when valid (warnings allowed; ``--strict`` makes them errors), 1 when any error. Text output is one line per problem,
``file:line:col: level: message (path)``, then a summary; ``-o json`` prints a list of problems.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from reconciler.model import DEFAULT_MAX_FILE_BYTES, Problem, check_registry, load_tree


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", default="manifests", metavar="PATH",
                        help="the manifests tree: one folder per environment (default: manifests)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="text (one line per problem, default) or json (a list of problems)")
    parser.add_argument("--registry", metavar="URL",
                        help="also check that images exist and links fit the components' WIT imports/exports, "
                             "asking this registry (e.g. http://127.0.0.1:5000)")
    parser.add_argument("--strict", action="store_true",
                        help="treat warnings as errors (exit 1 when there is any problem)")
    parser.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES, metavar="N",
                        help=f"refuse manifest files larger than this (default {DEFAULT_MAX_FILE_BYTES})")


def run(args: argparse.Namespace) -> int:
    root = Path(args.path)
    tree = load_tree(root, max_file_bytes=args.max_file_bytes)
    problems = list(tree.problems)
    if args.registry and tree.applications:
        problems.extend(check_registry(tree, registry_url=args.registry))
    problems = [_under(root, p) for p in problems]
    problems.sort(key=lambda p: (p.file, p.line, p.column))
    if args.strict:
        problems = [replace(p, level="error") for p in problems]
    errors = sum(p.level == "error" for p in problems)
    if args.output == "json":
        json.dump([p.to_json() for p in problems], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for p in problems:
            print(_line(p))
        warnings = len(problems) - errors
        apps = sum(len(a) for a in tree.applications.values())
        verdict = "invalid" if errors else "valid"
        print(f"{root}: {verdict}: {len(tree.environments)} environment(s), {apps} application(s), "
              f"{errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


def _under(root: Path, problem: Problem) -> Problem:
    """Problem files are relative to the tree; show them relative to where the user ran the command."""
    file = str(root / problem.file) if problem.file not in ("", ".") else str(root)
    return replace(problem, file=file)


def _line(p: Problem) -> str:
    where = f" ({p.path})" if p.path else ""
    return f"{p.file}:{p.line}:{p.column}: {p.level}: {p.message}{where}"
