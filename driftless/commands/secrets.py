"""``driftless secrets keygen|encrypt``: secrets kept in Git, encrypted with age (as Flux does with SOPS).

    driftless secrets keygen --out reconciler-age.key      # the reconciler's identity (0600); prints its public key
    driftless reconcile ... --age-identity-file reconciler-age.key
    printf %s "$VALUE" | driftless secrets encrypt --recipient age1... --key API_TOKEN --env prod

``encrypt`` reads the value from stdin (never from the command line) and prints the config entry to
paste under ``spec.components[].config``::

    API_TOKEN:
      age: |
        -----BEGIN AGE ENCRYPTED FILE-----
        ...
        -----END AGE ENCRYPTED FILE-----

The Debian ``age`` CLI does the same: ``printf %s "$VALUE" | age -a -r age1...``. Only the reconciler
decrypts (pyrage); hosts get the value of the components they run, everything else a fingerprint.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from shared.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="secrets_command", metavar="SUBCOMMAND", required=True)
    keygen = sub.add_parser("keygen", help="make the reconciler's age identity (--age-identity-file); prints its "
                                           "public key")
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="write the identity here (mode 0600; an existing file is never overwritten)")
    enc = sub.add_parser("encrypt", help="encrypt a value read from stdin to the reconciler's public key")
    enc.add_argument("--recipient", "-r", action="append", default=[], metavar="AGE1...",
                     help="the reconciler's public key (repeatable; default $DRIFTLESS_AGE_RECIPIENT, else the "
                          "reconciler of a local `driftless up`)")
    enc.add_argument("--key", metavar="NAME", help="print a whole config entry NAME: {age: ...} (default: the "
                                                  "{age: ...} value alone)")
    enc.add_argument("--env", action="append", default=[], metavar="ENV",
                     help="bind the value to this environment (repeatable): the reconciler rejects it in any "
                          "other environment's files (default: unbound, usable wherever it is pasted)")
    enc.add_argument("--keep-newline", action="store_true",
                     help="keep a trailing newline of the input (default: drop one, as `echo` adds it)")


def run(args: argparse.Namespace) -> int:
    if args.secrets_command == "keygen":
        return _keygen(args.out)
    return _encrypt(args)


def _keygen(out: Path) -> int:
    from pyrage import x25519

    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{out} exists; it is never overwritten (it may decrypt secrets in Git)",
                         hint="choose another --out, or remove it on purpose") from None
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"# created: {created}\n# public key: {public}\n{identity}\n")
    print(f"public key: {public}")
    print(f"wrote the identity to {out} (mode 0600): start the reconciler with --age-identity-file {out}; "
          f"encrypt with `driftless secrets encrypt --recipient {public}`", file=sys.stderr)
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    import pyrage
    from pyrage import x25519

    from driftless.endpoints import load_up_json

    texts = args.recipient or [r for r in os.environ.get("DRIFTLESS_AGE_RECIPIENT", "").split(",") if r.strip()]
    if not texts and load_up_json().get("ageRecipient"):
        texts = [str(load_up_json()["ageRecipient"])]
    if not texts:
        raise UsageError("no recipient: give --recipient age1... (the reconciler's public key)",
                         hint="`driftless secrets keygen` printed it; or: age-keygen -y IDENTITY_FILE")
    recipients = []
    for text in texts:
        try:
            recipients.append(x25519.Recipient.from_str(text.strip()))
        except Exception:  # pyrage.RecipientError
            raise UsageError(f"{text!r} is not an age X25519 recipient (age1...)") from None
    if sys.stdin.isatty():
        print("value (end with Ctrl-D):", file=sys.stderr)
    value = sys.stdin.buffer.read()
    if not args.keep_newline and value.endswith(b"\n"):
        value = value[:-1]
    if not value:
        raise UsageError("nothing to encrypt on stdin", hint='printf %s "$VALUE" | driftless secrets encrypt -r age1...')
    if args.env:
        from reconciler.controller.secrets import bind

        odd = [e for e in args.env if not e or any(c == "," or c.isspace() for c in e)]
        if odd:
            raise UsageError(f"--env {odd[0]!r} is not an environment name")

        try:
            value = bind(value.decode(), args.env).encode()
        except UnicodeDecodeError:
            raise UsageError("a value bound with --env must be text (UTF-8)") from None
    armored = pyrage.encrypt(value, recipients, armored=True).decode().strip()
    indent = "    " if args.key else "  "
    body = "".join(f"{indent}{line}\n" for line in armored.splitlines())
    if args.key:
        print(f"{args.key}:\n  age: |\n{body}", end="")
    else:
        print(f"age: |\n{body}", end="")
    return 0
