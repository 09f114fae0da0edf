"""``driftless inspect REF``: a component's standard world(s) and WIT imports and exports, as the registry
recorded them (``-o json`` adds each export's function signatures, ``exportsDetail``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from driftless.commands.push import add_registry_options, credentials_from, parse_ref
from driftless.endpoints import default_registry_url


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help="demo/hello:1.0.0, demo/hello@sha256:... or HOST:PORT/demo/hello:1.0.0")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format (default text)")
    p.add_argument("--key", action="append", default=[], type=Path, metavar="FILE.pub",
                   help="verify the signatures with this public key (repeatable): says which keys signed")
    add_registry_options(p)


def run(args: argparse.Namespace) -> int:
    from shared.registry_client import component_info
    from shared.wasm import infer_worlds

    ref = parse_ref(args.ref)
    info = component_info(
        ref,  # type: ignore[arg-type]
        registry_url=args.registry or default_registry_url(),
        credentials=credentials_from(args),  # type: ignore[arg-type]
    )
    info["signatures"] = _signatures(args, ref, info["manifestDigest"])
    if args.output == "json":
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['repository']}@{info['manifestDigest']}")
    print(f"  kind:    {info['kind']}")
    worlds = info.get("worlds")
    if not isinstance(worlds, list):  # a registry from before worlds were recorded
        worlds = infer_worlds(info.get("exports") or []) if info.get("kind") == "component" else []
    if worlds:  # the standard worlds it targets; a library component (no handler, no run) has none
        print(f"  {'world: ' if len(worlds) == 1 else 'worlds:'}  {', '.join(worlds)}")
    print(f"  layer:   {info['layerDigest']} ({info['layerMediaType']})")
    for section in ("imports", "exports"):
        items = info.get(section) or []
        print(f"  {section}:" + ("" if items else " (none)"))
        for item in items:
            print(f"    {item}")
    sigs = info["signatures"]
    print("  signatures:" + ("" if sigs["found"] else " (none)"))
    for sig in sigs["listed"]:
        print(f"    {sig['algorithm'] or '?'} key {sig['keyId'] or '(no key id)'}  [{sig['where']}]")
    for key in sigs.get("keys", []):
        print(f"    {key['name']}: {'signed' if key['signed'] else key['reason']}")
    return 0


def _signatures(args: argparse.Namespace, ref: Any, digest: str) -> dict[str, Any]:
    """The digest's signatures as stored (key id and algorithm as the signer recorded them: hints),
    and, with --key, which of those keys verify (shared.signatures)."""
    from shared import signatures, signing
    from shared.signature_store import source_for

    source, _ = source_for(str(ref.pinned(digest)), registry_url=args.registry or default_registry_url(),
                           credentials=credentials_from(args), insecure=args.insecure)  # type: ignore[arg-type]
    found = signatures.discover(source, digest)
    out: dict[str, Any] = {
        "found": len(found),
        "listed": [{"keyId": s.key_id_hint, "algorithm": s.algorithm_hint, "where": s.where} for s in found],
    }
    if args.key:
        keys = [signatures.TrustedKey(name=p.stem, key=(k := signing.load_public_key(p)), key_id=signing.key_id(k),
                                      algorithm=signing.algorithm_of(k)) for p in args.key]
        out.update({k: v for k, v in signatures.verify_found(found, digest, keys).to_json().items()
                    if k in ("signedBy", "keys")})
    return out
