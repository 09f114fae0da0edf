#!/usr/bin/env python
"""Plans of this checkout's planner against another checkout's, on random fleets (for a planner change
that must not change a plan, e.g. a speed-up).

    git archive main | tar -x -C /tmp/main-src
    python hack/bench/planner_equivalence.py --against /tmp/main-src [--fleets 1500] [--signatures]

Each checkout plans the same seeded fleets in its own process (``--emit``): a first plan and two
replans, each from its own previous plan, with hosts turning Lost or full, new hosts and a new digest in
between (environments with host selectors and enrollments, spread and daemon placement, links, secrets,
scale to zero, missing digests, prune off). Their desired documents and unplaced lists are compared as
JSON. ``--signatures``: the environment prod requires a signature; a checkout whose planner does not
take ``signatures`` gets it the way its signature policy added it (a copy of each spec of prod).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def fleet(rng: random.Random) -> tuple[Any, dict[str, str], list[Any], dict[str, str] | None]:
    from model.types import (
        Application,
        Component,
        Daemon,
        Environment,
        Grants,
        HostSelector,
        Link,
        ManifestTree,
        Scale,
        SecretRef,
        Spread,
        SpreadRequirement,
        SyncPolicy,
    )
    from reconciler.planner.placement import HostInfo

    clouds = ["aws", "gcp", "edge"]
    envs = {}
    for e in rng.sample(["prod", "dev", "stage"], rng.randint(1, 3)):
        selector = HostSelector(match_labels={"tier": "t1"}) if rng.random() < 0.2 else HostSelector()
        envs[e] = Environment(name=e, host_selector=selector, ingress_path_prefix=rng.choice(["", "/p"]),
                              sync=SyncPolicy(prune=rng.random() < 0.7))
    hosts = {}
    for i in range(rng.randint(0, 14)):
        name = f"h{rng.randint(0, 30):02d}"
        hosts[name] = HostInfo(name=name, labels={"cloud": rng.choice(clouds), "tier": rng.choice(["t1", "t2"])},
                               max_instances=rng.choice([1, 2, 3, 5, 100]), state=rng.choice(["Ready"] * 5 + ["Lost"]),
                               ingress_url=rng.choice([None, f"http://x{i}"]),
                               environments=rng.choice([None, None, frozenset({"prod"}), frozenset({"dev", "stage"})]))
    images = ["demo/a:1", "demo/b:1", "demo/c:2", "demo/d@sha256:" + "d" * 64, "demo/missing:1"]
    apps: dict[str, dict[str, Any]] = {}
    for e in envs:
        apps[e] = {}
        for a in range(rng.randint(0, 5)):
            comps = []
            for c in range(rng.randint(1, 3)):
                placement: Any
                if rng.random() < 0.25:
                    placement = Daemon(per_host=rng.randint(1, 2), labels=rng.choice([{}, {"cloud": "aws"}]))
                else:
                    reqs = tuple(SpreadRequirement(labels={"cloud": cl}, weight=rng.randint(0, 3))
                                 for cl in rng.sample(clouds, rng.randint(0, 2)))
                    placement = Spread(replicas=rng.randint(0, 6), requirements=reqs)
                config: dict[str, Any] = {}
                if rng.random() < 0.3:
                    config["k"] = "v"
                if rng.random() < 0.2:
                    config["s"] = SecretRef(name=rng.choice(["s1", "s2"]))
                comps.append(Component(name=f"c{c}", image=rng.choice(images), placement=placement, config=config,
                                       expose=rng.choice([None, f"/a{a}c{c}"]),
                                       scale=rng.choice([None, Scale(min_replicas=rng.randint(0, 2), idle_timeout_s=5)]),
                                       grants=rng.choice([Grants(), Grants(outbound_hosts=("x.com",))])))
            links: tuple[Any, ...] = ()
            if len(comps) > 1 and rng.random() < 0.5:
                links = (Link(from_component="c0", to_component="c1",
                              interface=rng.choice(["driftless:demo/greeter", "wasi:http/incoming-handler@0.2.0"])),)
            apps[e][f"app{a}"] = Application(name=f"app{a}", env=e, components=tuple(comps), links=links)
    digests = {"demo/a:1": "sha256:" + "a" * 64, "demo/b:1": "sha256:" + "b" * 64, "demo/c:2": "sha256:" + "c" * 64}
    if rng.random() < 0.3:
        digests["demo/a:1"] = "sha256:" + "e" * 64
    secrets = rng.choice([None, {"s1": "fp1"}, {"s1": "fp1", "s2": "fp2"}])
    return ManifestTree(revision="r", environments=envs, applications=apps), digests, list(hosts.values()), secrets


def changed(rng: random.Random, digests: dict[str, str], hosts: list[Any]) -> tuple[dict[str, str], list[Any]]:
    """Between two plans: some hosts Lost, back or resized, maybe a new host and a new digest."""
    from reconciler.planner.placement import HostInfo

    hosts = [h if rng.random() < 0.8 else dataclasses.replace(h, max_instances=rng.choice([1, 3, 100]),
                                                               state=rng.choice(["Ready", "Lost"])) for h in hosts]
    if rng.random() < 0.3:
        name = f"n{rng.randint(0, 9)}"
        hosts = [h for h in hosts if h.name != name] + [HostInfo(name=name, labels={"cloud": "aws", "tier": "t1"})]
    if rng.random() < 0.3:
        digests = {**digests, "demo/b:1": "sha256:" + "f" * 64}
    return digests, hosts


def emit(fleets: int, signed: bool) -> None:
    """Plan the fleets with the planner importable here; one JSON line per plan."""
    from reconciler.planner.placement import plan
    from wire.control import SignatureRequirement, TrustedKeySpec

    takes_signatures = "signatures" in inspect.signature(plan).parameters
    required = {"prod": SignatureRequirement(require="all", keys=(TrustedKeySpec(name="ci", public_key="PEM"),))}
    for seed in range(fleets):
        rng = random.Random(seed)
        tree, digests, hosts, secrets = fleet(rng)
        previous: dict[str, Any] = {}
        for step in range(3):
            extra = {"signatures": required} if signed and takes_signatures else {}
            result = plan(tree=tree, digests=digests, hosts=hosts, previous=previous, registry="127.0.0.1:5000",
                          secrets=secrets, **extra)
            desired = result.desired
            if signed and not takes_signatures:  # what the signature policy's decorate did to each spec
                desired = {h: tuple(dataclasses.replace(s, signature=required[s.env]) if s.env in required else s
                                    for s in specs) for h, specs in desired.items()}
            print(json.dumps({"seed": seed, "step": step,
                              "desired": {h: [s.to_json() for s in specs] for h, specs in sorted(desired.items())},
                              "unplaced": [u.to_json() for u in result.unplaced]}, sort_keys=True))
            previous = desired
            digests, hosts = changed(rng, digests, hosts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", type=Path, help="the other checkout (its source tree)")
    ap.add_argument("--fleets", type=int, default=1500)
    ap.add_argument("--signatures", action="store_true")
    ap.add_argument("--emit", type=Path, help=argparse.SUPPRESS)  # the source tree to plan with
    args = ap.parse_args()
    if args.emit:
        sys.path.insert(0, str(args.emit))
        emit(args.fleets, args.signatures)
        return 0
    if args.against is None:
        ap.error("--against DIR is required")
    outputs = []
    for source in (ROOT, args.against.resolve()):
        cmd = [sys.executable, __file__, "--emit", str(source), "--fleets", str(args.fleets)]
        outputs.append(subprocess.run(cmd + (["--signatures"] if args.signatures else []), check=True,
                                      capture_output=True, text=True).stdout.splitlines())
    ours, theirs = outputs
    differing = [json.loads(a)["seed"] for a, b in zip(ours, theirs, strict=True) if a != b]
    instances = sum(len(specs) for line in ours for specs in json.loads(line)["desired"].values())
    print(json.dumps({"fleets": args.fleets, "plans": len(ours), "instances": instances,
                      "differing_seeds": sorted(set(differing))}))
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
