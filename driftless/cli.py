"""``driftless``: the command line. Each sub-command lives in ``driftless/commands/<name>.py`` with
``add_arguments(parser)`` and ``run(args) -> int``; they are imported only when used, so the CLI
starts fast (``import wasmtime`` alone costs ~60 ms).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from shared import __version__
from shared.errors import DriftlessError

COMMANDS: dict[str, str] = {
    "up": "start the whole platform on this machine (registry, git, reconciler, hosts)",
    "registry": "run and maintain the OCI registry (serve, gc, fsck)",
    "push": "push a .wasm component to a registry as a CNCF wasm OCI artifact",
    "inspect": "print a component's WIT imports and exports (and its signatures) from the registry",
    "keys": "key pairs that sign components (generate)",
    "sign": "sign a component's manifest digest (cosign's format: OCI 1.1 referrer and .sig tag)",
    "reconcile": "run the reconciler: watch Git, place components on hosts, converge",
    "host": "run a host agent that runs components with wasmtime",
    "hosts": "host enrollment (admin): enroll hosts within labels and environments, list, revoke",
    "validate": "validate a manifests tree (schemas and semantic checks)",
    "status": "environments, applications and hosts at a glance",
    "drift": "differences between what Git declares and what runs (exit 2 when drifting)",
    "diff": "what applying a revision would change, host by host",
    "promote": "promote the digests running healthy in one environment to the next, as a Git commit",
    "approve": "approve a promotion ahead (as a second person where four eyes are required)",
    "history": "revisions applied to an environment",
    "rollback": "revert an application to an earlier applied revision, as a new Git commit",
    "secrets": "age keys and encrypted values for secrets kept in Git (keygen, encrypt)",
    "logs": "show (or --follow) the logs of the platform `driftless up` runs",
    "dashboard": "open the reconciler's dashboard in the browser, signed in (prints the link without a browser)",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftless", description="Run WebAssembly components, the GitOps way.")
    parser.add_argument("--version", action="version", version=f"driftless {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show details and tracebacks on error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        # only the chosen command's module is imported; the others show their help line only
        if name == wanted:
            importlib.import_module(f"driftless.commands.{name}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(f"driftless.commands.{args.command}")
    try:
        code = int(module.run(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `driftless status -o json | head -1`: the reader has what it wanted
        _quiet_stdout()
        return 0
    except DriftlessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        if verbose:
            traceback.print_exc()
        return exc.exit_code
    except Exception as exc:  # one line for users; the traceback is for -v
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if verbose:
            traceback.print_exc()
        else:
            print("(run with -v for details)", file=sys.stderr)
        return 1


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush does not complain of the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
