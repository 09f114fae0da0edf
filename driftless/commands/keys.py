"""``driftless keys generate NAME``: a key pair that signs components (``driftless sign``, ``push --sign``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="keys_command", metavar="COMMAND")
    g = sub.add_parser("generate", help="write NAME.key (private, mode 0600) and NAME.pub (public), PEM")
    g.add_argument("name", metavar="NAME", type=Path, help="path of the private key to write, e.g. ci.key")
    g.add_argument("--algorithm", choices=("ecdsa-p256", "ed25519"), default="ecdsa-p256",
                   help="ecdsa-p256 (cosign's default, what every cosign verifier supports) or ed25519")


def run(args: argparse.Namespace) -> int:
    from shared import signing

    if args.keys_command != "generate":
        raise UsageError("say what to do: driftless keys generate NAME")
    private = args.name if args.name.suffix else args.name.with_suffix(".key")
    key = signing.generate(args.algorithm)
    public = signing.write_key_pair(key, private_path=private)
    print(f"private key: {private} (keep it secret: mode 0600)")
    print(f"public key:  {public} (give it to the operator's --signature-policy)")
    print(f"key id:      {signing.key_id(key.public_key())} ({args.algorithm})")
    return 0
