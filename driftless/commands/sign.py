"""``driftless sign REF --key FILE``: sign a component's manifest digest, stored as cosign stores
key-based signatures (an OCI 1.1 referrer and the ``sha256-<hex>.sig`` tag; shared/signature_store.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from driftless.commands.push import add_registry_options, credentials_from, parse_ref
from driftless.commands.sign_options import add_sign_options, expiry
from driftless.endpoints import default_registry_url


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help="demo/hello:1.0.0 or demo/hello@sha256:... (a tag is resolved: the digest is signed)")
    p.add_argument("--key", required=True, type=Path, metavar="FILE", help="private key (driftless keys generate)")
    add_sign_options(p)
    add_registry_options(p)


def run(args: argparse.Namespace) -> int:
    from shared import signing
    from shared.signature_store import sign_image

    ref = parse_ref(args.ref)
    key = signing.load_private_key(args.key)
    signed = sign_image(ref, key, registry_url=args.registry or default_registry_url(),  # type: ignore[arg-type]
                        credentials=credentials_from(args), insecure=args.insecure,  # type: ignore[arg-type]
                        expires=expiry(args.expires_in))
    print(f"signed {signed.digest} with {signed.algorithm} key {signed.key_id}")
    print(f"  referrer {signed.referrer}, tag {signed.tag}")
    return 0
