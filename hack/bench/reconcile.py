#!/usr/bin/env python
"""Reconciler benchmarks (figures go to hack/bench/RESULTS.md under "## Reconciler").

    python hack/bench/reconcile.py [push|scale|planner|all] [--apps 1000] [--hosts 100]

push     git push -> all 3 local `driftless host` processes report the new digest Running (goal < 1 s)
scale    1000 applications onto 100 simulated hosts (lightweight asyncio clients of the real control
         API in this process) until all apps are Ready (goal < 10 s)
planner  planner time for 10,000 hosts and 100,000 instances (goal <= 0.5 s; --planner-runs N): as the
         reconciler runs it (placing.place), plain plan(), and a reconcile's whole plan step with a
         --signature-policy (published documents without canaries, place, decorate, the publish
         step's comparison); --source DIR runs another checkout's planner (before/after in one run)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
# --source DIR: the planner (and everything else) of another checkout, e.g. `git archive main | tar -x -C DIR`
SOURCE = Path(sys.argv[sys.argv.index("--source") + 1]).resolve() if "--source" in sys.argv[:-1] else ROOT
sys.path.insert(0, str(SOURCE))

from model.types import (  # noqa: E402
    Application,
    Component,
    Environment,
    ManifestTree,
    Spread,
    SpreadRequirement,
)
from reconciler.controller.placing import place  # noqa: E402
from reconciler.controller.signing_policy import SigningPolicy  # noqa: E402
from reconciler.planner.placement import HostInfo, Plan, plan  # noqa: E402
from reconciler.planner.rollout import without_canaries  # noqa: E402
from shared import signing  # noqa: E402
from tests.reconciler.platform import (  # noqa: E402
    GitRepo,
    Reconciler,
    Registry,
    application,
    environment,
    new_token,
    with_custom_section,
)
from tests.support.components import build  # noqa: E402
from tests.support.procs import DriftlessProcess, free_port, wait_until  # noqa: E402
from wire.control import FEATURE_SIGNATURES, RUNNING, InstanceSpec  # noqa: E402


def _signing_policy(tmp: Path) -> SigningPolicy:
    """A --signature-policy requiring one key of the benchmark's environment."""
    signing.write_key_pair(signing.generate("ecdsa-p256"), private_path=tmp / "ci.key")
    (tmp / "policy.yaml").write_text("environments:\n  prod: {keys: [ci.pub]}\n")
    return SigningPolicy(tmp / "policy.yaml", registry_url="http://127.0.0.1:5000", timeout=1.0)


def _plan_step(policy: SigningPolicy, registrations: dict[str, object]) -> Callable[..., Plan]:
    """What a reconcile computes from the published documents to the ones it publishes
    (controller/pipeline.py ``_step_plan`` and the comparison of ``_step_publish``), with
    ``previous`` standing for the published documents."""
    signed = "signatures" in inspect.signature(place).parameters  # older checkouts: decorate copies each spec

    def step(*, previous: dict[str, tuple[InstanceSpec, ...]], **inputs: object) -> Plan:
        planned = {h: without_canaries(specs) for h, specs in previous.items()}
        extra = {"signatures": policy.requirements} if signed else {}
        placed = place(previous=planned, **inputs, **extra)  # type: ignore[arg-type]
        placed = policy.decorate(placed, hosts=registrations, carried=True) if signed else policy.decorate(placed, hosts=registrations)
        changed = [h for h, specs in placed.desired.items() if previous.get(h) != specs]
        assert changed or previous, "a first plan publishes"
        return placed

    return step


def bench_planner(*, hosts: int = 10_000, instances: int = 100_000, apps: int = 10_000,
                  runs: int = 5) -> dict[str, object]:
    """First plan and a replan with nothing changed, ``runs`` times each way: as the reconciler runs
    the planner (``reconciler.controller.placing.place``: the cyclic GC paused, as the planner itself
    did on 2026-11-23), plain ``plan()`` with the GC on, and the reconcile's whole plan step with a
    signature policy (:func:`_plan_step`). Wall and CPU seconds (process time):
    the machine is shared, so CPU time is the steadier figure; min and median over the runs."""
    clouds = ("aws", "gcp", "azure", "edge")
    host_infos = [HostInfo(name=f"h{i:05d}", labels={"cloud": clouds[i % 4], "zone": f"z{i % 16}"},
                           max_instances=100) for i in range(hosts)]
    per_app = instances // apps
    env = Environment(name="prod")
    applications = {}
    for a in range(apps):
        reqs = (SpreadRequirement(labels={"cloud": clouds[a % 4]}, weight=2),
                SpreadRequirement(labels={"cloud": clouds[(a + 1) % 4]}, weight=1))
        comp = Component(name="web", image="demo/hello:1.0.0", placement=Spread(replicas=per_app, requirements=reqs),
                         expose=f"/a{a}")
        applications[f"app{a:05d}"] = Application(name=f"app{a:05d}", env="prod", components=(comp,))
    tree = ManifestTree(revision="r", environments={"prod": env}, applications={"prod": applications})
    digests = {"demo/hello:1.0.0": "sha256:" + "a" * 64}
    # what decorate reads of each host (controller.hosts: name -> .registration.features): all can verify
    registrations = {h.name: SimpleNamespace(registration=SimpleNamespace(features=frozenset({FEATURE_SIGNATURES})))
                     for h in host_infos}
    with tempfile.TemporaryDirectory() as tmp:
        policy = _signing_policy(Path(tmp))
    ways: dict[str, Callable[..., Plan]] = {"reconciler": place, "plain": plan,
                                            "plan_step_signed": _plan_step(policy, registrations)}
    figures: dict[str, dict[str, list[float]]] = {w: {"cold_s": [], "cold_cpu_s": [], "replan_s": [], "replan_cpu_s": []}
                                                  for w in ways}
    placed = 0
    for r in range(runs):
        for way in (ways if r % 2 == 0 else reversed(list(ways))):
            run_plan, f = ways[way], figures[way]
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            first = run_plan(tree=tree, digests=digests, hosts=host_infos, previous={}, registry="127.0.0.1:5000")
            f["cold_s"].append(time.perf_counter() - t0)
            f["cold_cpu_s"].append(time.process_time() - c0)
            placed = sum(len(v) for v in first.desired.values())
            t0, c0 = time.perf_counter(), time.process_time()
            again = run_plan(tree=tree, digests=digests, hosts=host_infos, previous=first.desired,
                             registry="127.0.0.1:5000")
            f["replan_s"].append(time.perf_counter() - t0)
            f["replan_cpu_s"].append(time.process_time() - c0)
            assert again.desired == first.desired, "a replan with nothing changed must not move anything"
            del first, again
    out: dict[str, object] = {"hosts": hosts, "instances": placed, "runs": runs, "source": str(SOURCE),
                              "loadavg": [round(x, 2) for x in os.getloadavg()]}
    for way, f in figures.items():
        out[way] = {k: {"min": round(min(v), 3), "median": round(statistics.median(v), 3)} for k, v in f.items()}
    return out


def bench_push(*, rounds: int = 5) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = Registry(root / "registry", root).start()
        hosts: list[DriftlessProcess] = []
        rec = None
        try:
            registry.push("demo/hello:1.0.0", build("hello"))
            git = GitRepo(root / "git")
            token = new_token(root / "token")
            comp = {"name": "web", "image": "demo/hello:1.0.0", "expose": "/hello",
                    "placement": {"daemon": {"perHost": 1}}}
            git.push({"prod/environment.yaml": environment("prod"),
                      "prod/apps/hello.yaml": application("hello", [comp])}, "first")
            rec = Reconciler(repo=git.bare, registry=registry.url, data=root / "rec", log_dir=root, token_file=token,
                             heartbeat=1.0).start()
            for name, label in (("aws", "cloud=aws"), ("gcp", "cloud=gcp"), ("edge", "tier=edge")):
                args = ["host", "--control", rec.url, "--token-file", str(token), "--name", name, "--label", label,
                        "--listen", f"127.0.0.1:{free_port()}", "--data", str(root / name), "--heartbeat", "1"]
                hosts.append(DriftlessProcess(args, log_dir=root, name=f"host-{name}").start())
            wait_until(lambda: rec.app("prod", "hello")["health"] == "Healthy", timeout=30, what="first deploy")
            times = []
            for r in range(rounds):
                tag = f"1.0.{r + 1}"
                digest = registry.push(f"demo/hello:{tag}", with_custom_section(build("hello"), tag.encode()))
                comp = {**comp, "image": f"demo/hello:{tag}"}
                t0 = time.perf_counter()
                git.push({"prod/apps/hello.yaml": application("hello", [comp])}, f"hello {tag}")

                def serving(digest: str = digest) -> bool:
                    found = [i for h in ("aws", "gcp", "edge")
                             for i in (rec.host(h)["report"] or {}).get("instances", [])]
                    return len(found) == 3 and all(i["digest"] == digest and i["status"] == RUNNING for i in found)

                wait_until(serving, timeout=30, interval=0.005, what="new digest on all hosts")
                times.append(time.perf_counter() - t0)
            return {"rounds": rounds, "median_s": statistics.median(times), "max_s": max(times), "min_s": min(times)}
        finally:
            for h in hosts:  # all at once: each drains on its own
                h.signal(signal.SIGTERM)
            for h in hosts:
                h.stop()
            if rec:
                rec.stop()
            registry.stop()


async def _sim_host(session: object, control: str, token: str, name: str, stop: asyncio.Event) -> None:
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    headers = {"Authorization": f"Bearer {token}"}
    reg = {"name": name, "labels": {"cloud": ("aws", "gcp")[int(name[1:]) % 2]},
           "capacity": {"memoryBytes": 1 << 32, "maxInstances": 1000}, "interfaces": [], "version": "sim"}
    async with session.post(f"{control}/api/v1/hosts/register", json=reg, headers=headers) as r:
        r.raise_for_status()
        # the join token only registers: the host's own credential reads its state and reports
        headers = {"Authorization": f"Bearer {(await r.json())['credential']}"}
    generation = 0
    instances: list[dict[str, object]] = []

    async def report() -> None:
        body = {"name": name, "observedGeneration": generation, "instances": instances}
        async with session.post(f"{control}/api/v1/hosts/{name}/report", json=body, headers=headers) as r:
            await r.read()

    async def heartbeat() -> None:
        while not stop.is_set():
            await asyncio.sleep(1.0)
            await report()

    beat = asyncio.create_task(heartbeat())
    try:
        while not stop.is_set():
            async with session.get(f"{control}/api/v1/hosts/{name}/desired?after={generation}&wait=2",
                                   headers=headers) as r:
                if r.status != 200:
                    continue
                doc = await r.json()
            generation = doc["generation"]
            instances = [{"id": i["id"], "env": i["env"], "app": i["app"], "component": i["component"],
                          "digest": i["digest"], "status": RUNNING, "config": i.get("config", {}),
                          "route": i.get("route"), "startedAt": time.time()} for i in doc["instances"]]
            await report()
    finally:
        beat.cancel()


def bench_scale(*, apps: int = 1000, hosts: int = 100) -> dict[str, float]:
    import aiohttp

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = Registry(root / "registry", root).start()
        rec = None
        try:
            registry.push("demo/hello:1.0.0", build("hello"))
            git = GitRepo(root / "git")
            token = new_token(root / "token")
            git.push({"prod/environment.yaml": environment("prod")}, "empty environment")
            rec = Reconciler(repo=git.bare, registry=registry.url, data=root / "rec", log_dir=root, token_file=token,
                             heartbeat=2.0).start()

            async def main() -> float:
                stop = asyncio.Event()
                conn = aiohttp.TCPConnector(limit=0)
                async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:
                    tasks = [asyncio.create_task(_sim_host(session, rec.url, token.read_text(), f"h{i:03d}", stop))
                             for i in range(hosts)]
                    await asyncio.sleep(1.0)
                    files: dict[str, str | None] = {}
                    for a in range(apps):
                        comp = {"name": "web", "image": "demo/hello:1.0.0", "expose": f"/a{a}",
                                "placement": {"spread": {"replicas": 2}}}
                        files[f"prod/apps/a{a:04d}.yaml"] = application(f"a{a:04d}", [comp])
                    git.write(files)
                    t0 = time.perf_counter()
                    await asyncio.to_thread(git.push, {}, f"{apps} applications")
                    while True:
                        async with session.get(f"{rec.url}/api/v1/environments/prod") as r:
                            env = await r.json()
                        ready = [a for a in env["apps"] if a["health"] == "Healthy" and a["sync"] == "Synced"]
                        if len(env["apps"]) == apps and len(ready) == apps:
                            elapsed = time.perf_counter() - t0
                            break
                        await asyncio.sleep(0.05)
                    stop.set()
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    return elapsed

            elapsed = asyncio.run(main())
            return {"apps": apps, "hosts": hosts, "instances": apps * 2, "all_ready_s": elapsed}
        finally:
            if rec:
                rec.stop()
            registry.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="?", default="all", choices=["push", "scale", "planner", "all"])
    ap.add_argument("--apps", type=int, default=1000)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--planner-runs", type=int, default=5)
    ap.add_argument("--source", type=Path, default=ROOT, help="the checkout whose code runs (read at import)")
    args = ap.parse_args()
    results = {}
    if args.which in ("planner", "all"):
        results["planner"] = bench_planner(runs=args.planner_runs)
        print(json.dumps({"planner": results["planner"]}), flush=True)
    if args.which in ("push", "all"):
        results["push"] = bench_push()
        print(json.dumps({"push": results["push"]}), flush=True)
    if args.which in ("scale", "all"):
        results["scale"] = bench_scale(apps=args.apps, hosts=args.hosts)
        print(json.dumps({"scale": results["scale"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
