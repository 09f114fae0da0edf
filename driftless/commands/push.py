"""``driftless push REF FILE.wasm``: push a component (or core module) as a CNCF wasm OCI artifact."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from driftless.endpoints import default_registry_url
from shared.errors import UsageError


def add_registry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", default=None, help="registry URL for short references (default: the platform's, "
                   "$DRIFTLESS_REGISTRY or http://127.0.0.1:5000)")
    p.add_argument("--username", "-u", default=None, help="basic-auth user (or $DRIFTLESS_REGISTRY_USER)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input (or set $DRIFTLESS_REGISTRY_PASSWORD)")
    p.add_argument("--insecure", action="store_true", help="do not verify the registry's TLS certificate")


def credentials_from(args: argparse.Namespace) -> object:
    from shared.registry_client import Credentials

    if args.password_stdin and not args.username:
        raise UsageError("--password-stdin needs --username")
    if args.username:
        password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else ""
        if not args.password_stdin:
            import os

            password = os.environ.get("DRIFTLESS_REGISTRY_PASSWORD", "")
        return Credentials(args.username, password)
    return Credentials.from_env()


def parse_ref(text: str) -> object:
    from shared.reference import ReferenceError, parse

    try:
        return parse(text)
    except ReferenceError as exc:
        raise UsageError(str(exc), hint="for example demo/hello:1.0.0 or 127.0.0.1:5000/demo/hello:1.0.0") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help="where to push: demo/hello:1.0.0 or 127.0.0.1:5000/demo/hello:1.0.0")
    p.add_argument("file", metavar="FILE.wasm", type=Path, help="the component or module to push")
    p.add_argument("--annotation", "-a", action="append", default=[], metavar="KEY=VALUE",
                   help="add a manifest annotation (repeatable)")
    p.add_argument("--sign", type=Path, default=None, metavar="KEY",
                   help="sign the pushed digest with this private key (as `driftless sign` does)")
    from driftless.commands.sign_options import add_sign_options

    add_sign_options(p)
    add_registry_options(p)


def run(args: argparse.Namespace) -> int:
    from shared.registry_client import push_component

    ref = parse_ref(args.ref)
    if not ref.tag and not ref.digest:  # type: ignore[attr-defined]
        raise UsageError(f"{args.ref} has no tag: give one, e.g. {args.ref}:1.0.0",
                         hint="manifests refuse images without a tag (or :latest): a tag says which version runs")
    try:
        wasm = args.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    key = None
    if args.sign is not None:  # the key is read before anything is pushed: a bad key pushes nothing
        from shared import signing

        key = signing.load_private_key(args.sign)
    annotations = {}
    for item in args.annotation:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError(f"--annotation {item!r} must be KEY=VALUE")
        annotations[k] = v
    digest = push_component(
        ref,  # type: ignore[arg-type]
        wasm,
        registry_url=args.registry or default_registry_url(),
        credentials=credentials_from(args),  # type: ignore[arg-type]
        annotations=annotations or None,
        insecure=args.insecure,
    )
    print(digest)
    if key is not None:
        from driftless.commands.sign_options import expiry
        from shared.signature_store import sign_image

        pinned = ref.pinned(digest)  # type: ignore[attr-defined]
        signed = sign_image(pinned, key, registry_url=args.registry or default_registry_url(),
                            credentials=credentials_from(args), insecure=args.insecure,  # type: ignore[arg-type]
                            expires=expiry(args.expires_in))
        print(f"signed {signed.digest} with {signed.algorithm} key {signed.key_id}", file=sys.stderr)
    return 0
