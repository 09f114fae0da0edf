"""``driftless inspect REF``: a component's standard world(s) and WIT imports and exports, as the registry
recorded them (``-o json`` adds each export's function signatures, ``exportsDetail``)."""

from __future__ import annotations

import argparse
import json

from driftless.commands.push import add_registry_options, credentials_from, parse_ref
from driftless.endpoints import default_registry_url


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help="demo/hello:1.0.0, demo/hello@sha256:... or HOST:PORT/demo/hello:1.0.0")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format (default text)")
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
    return 0
