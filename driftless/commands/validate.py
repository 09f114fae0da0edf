"""``driftless validate [PATH] [-o text|json] [--registry URL] [--strict]``: check manifests before ``git push``.

PATH is a tree (one folder per environment) or a single manifest file. Exit 0 when valid (warnings
allowed; ``--strict`` makes them errors), 1 when any error. Text output is one line per problem,
``file:line:col: level: message (path)``, then a summary; ``-o json`` prints a list of problems.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from model import (
    DEFAULT_MAX_FILE_BYTES,
    ManifestTree,
    Problem,
    check_file,
    check_registry,
    load_tree,
)
from model.loader import ENVIRONMENT_FILES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", default="manifests", metavar="PATH",
                        help="the manifests tree (one folder per environment), or one manifest file "
                             "(default: manifests)")
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
    path = Path(args.path)
    if path.is_file():
        problems, summary = _one_file(path, args)
    else:
        tree = load_tree(path, max_file_bytes=args.max_file_bytes)
        problems = [_under(path, p) for p in [*tree.problems, *_registry_problems(tree, args)]]
        apps = sum(len(a) for a in tree.applications.values())
        summary = f"{len(tree.environments)} environment(s), {apps} application(s)"
    if args.strict:
        problems = [replace(p, level="error") for p in problems]
    problems.sort(key=lambda p: (p.file, p.line, p.column))
    errors = sum(p.level == "error" for p in problems)
    if args.output == "json":
        print(json.dumps([p.to_json() for p in problems], indent=2))
    else:
        for p in problems:
            print(_line(p))
        verdict = "invalid" if errors else "valid"
        print(f"{path}: {verdict}: {summary}, {errors} error(s), {len(problems) - errors} warning(s)")
    return 1 if errors else 0


def _one_file(path: Path, args: argparse.Namespace) -> tuple[list[Problem], str]:
    """A file inside a tree (<root>/<env>/environment.yaml or <root>/<env>/apps/x.yaml) is checked with
    its tree, so environment rules apply; any other file is checked on its own."""
    resolved = path.resolve()
    env_folder = resolved.parent.parent if resolved.parent.name == "apps" else resolved.parent
    in_tree = resolved.parent.name == "apps" or resolved.name in ENVIRONMENT_FILES
    if in_tree and any((env_folder / name).is_file() for name in ENVIRONMENT_FILES):
        root = env_folder.parent
        tree = load_tree(root, max_file_bytes=args.max_file_bytes)
        rel = resolved.relative_to(root).as_posix()
        mine = [p for p in [*tree.problems, *_registry_problems(tree, args)] if p.file == rel]
        return [replace(p, file=str(path)) for p in mine], "checked with its tree"
    problems = check_file(path, max_file_bytes=args.max_file_bytes)
    return [replace(p, file=str(path)) for p in problems], "checked on its own"


def _registry_problems(tree: ManifestTree, args: argparse.Namespace) -> list[Problem]:
    if not args.registry or not tree.applications:
        return []
    return check_registry(tree, registry_url=args.registry)


def _under(root: Path, problem: Problem) -> Problem:
    """Problem files are relative to the tree; show them relative to where the user ran the command."""
    file = str(root / problem.file) if problem.file not in ("", ".") else str(root)
    return replace(problem, file=file)


def _line(p: Problem) -> str:
    where = f" ({p.path})" if p.path else ""
    return f"{p.file}:{p.line}:{p.column}: {p.level}: {p.message}{where}"
