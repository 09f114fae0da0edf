"""``driftless up``: start registry, Git repository, reconciler and hosts on loopback; Ctrl-C stops them."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from driftless.client import ControlClient
from driftless.endpoints import default_data_dir
from shared.errors import DriftlessError

if TYPE_CHECKING:
    from collections.abc import Callable

    from driftless.platform import Platform


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None, help="data directory (default $DRIFTLESS_DATA or ~/.driftless)")
    p.add_argument("--hosts", type=int, default=3, help="number of hosts (default 3: aws, gcp, edge)")
    p.add_argument("--registry-port", type=int, default=5000, help="registry port on 127.0.0.1 (default 5000)")
    p.add_argument("--control-port", type=int, default=8080, help="reconciler port on 127.0.0.1 (default 8080)")
    p.add_argument("--host-port", type=int, default=8081, help="first host ingress port (default 8081, then +1)")
    p.add_argument("--admin-port", type=int, default=9081, help="first host admin port (default 9081, then +1)")
    p.add_argument("--heartbeat", type=float, default=2.0, help="host heartbeat seconds (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the example apps (default 60)")


def _step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def run(args: argparse.Namespace) -> int:
    from driftless.platform import Platform

    if args.hosts < 1:
        raise DriftlessError("--hosts must be at least 1")
    data: Path = (args.data or default_data_dir()).resolve()
    platform = Platform(
        data=data,
        registry_port=args.registry_port,
        control_port=args.control_port,
        host_count=args.hosts,
        first_host_port=args.host_port,
        first_admin_port=args.admin_port,
        heartbeat=args.heartbeat,
    )
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        resumed = (data / "git" / "manifests.git" / "HEAD").exists()
        _step(f"{'resuming' if resumed else 'starting'} Driftless in {data}")
        platform.prepare()
        platform.start_registry()
        _step(f"registry      {platform.registry_url}")
        pushed = platform.push_examples()
        for ref in pushed:
            _step(f"pushed        {ref}")
        if platform.seed_git():
            _step(f"git           seeded {platform.git_dir} from manifests/")
        platform.install_hook()
        platform.start_reconciler()
        _step(f"reconciler    {platform.control_url}")
        platform.start_hosts()
        info = platform.write_up_json()
        _wait_serving(platform, timeout=args.timeout, stopping=lambda: stopping)
        _print_summary(platform, info)
        while not stopping:
            dead = platform.dead()
            if dead:
                raise DriftlessError(
                    f"{', '.join(dead)} exited unexpectedly; see {data / 'logs'}",
                    hint="start `driftless up` again: it resumes from the data directory",
                )
            time.sleep(0.2)
        print("\n==> stopping (hosts drain in-flight calls)...", flush=True)
        return 0
    finally:
        platform.stop()
        if stopping:
            print("==> stopped", flush=True)


def _api(platform: Platform) -> ControlClient:
    return ControlClient(base_url=platform.control_url, token=platform.token(), timeout=2)


def _wait_serving(platform: Platform, *, timeout: float, stopping: Callable[[], bool]) -> None:
    """Wait until every host has registered and every example app is Healthy (progress dots)."""
    api = _api(platform)
    deadline = time.monotonic() + timeout
    print("==> waiting for hosts to pull, compile and serve the example apps ", end="", flush=True)
    while time.monotonic() < deadline and not stopping():
        try:
            ready = [h for h in api.get("/api/v1/hosts")["hosts"] if h.get("state") == "Ready"]
            envs = api.get("/api/v1/environments")["environments"]
            apps = [a for e in envs for a in e.get("apps") or []]
            if len(ready) >= platform.host_count and apps and all(a.get("health") == "Healthy" for a in apps):
                print(" ready", flush=True)
                return
        except DriftlessError:  # not listening yet, or not reconciled yet
            pass
        if platform.dead():
            print(flush=True)
            raise DriftlessError(f"{', '.join(platform.dead())} exited; see {platform.data / 'logs'}")
        print(".", end="", flush=True)
        time.sleep(0.5)
    print(" (still converging; `driftless status` shows progress)", flush=True)


def _print_summary(platform: Platform, info: dict[str, Any]) -> None:
    print()
    print("Driftless is up. What runs where:")
    try:
        by_name = {h.get("name"): h for h in _api(platform).get("/api/v1/hosts")["hosts"]}
    except DriftlessError:
        by_name = {}
    for h in info["hosts"]:
        labels = ",".join(f"{k}={v}" for k, v in h["labels"].items())
        print(f"  {h['name']:<18} {labels:<32} {h['ingress']}")
        report = (by_name.get(h["name"]) or {}).get("report") or {}
        for inst in report.get("instances") or []:
            route = inst.get("route") or "-"
            print(f"      {inst.get('id', '?'):<36} {inst.get('status', '?'):<9} {route}")
    print()
    print(f"  registry    {info['registry']}")
    print(f"  reconciler  {info['reconciler']}")
    print(f"  git remote  {info['git']}")
    print(f"  endpoints   {platform.data / 'up.json'}")
    print()
    print("Next:")
    first = info["hosts"][0]["ingress"]
    print(f"  curl {first}/hello                      # the example app")
    print(f"  git clone {info['git']} demo && cd demo  # edit manifests/, then git push")
    print("  driftless status                           # environments, apps, hosts")
    print("  driftless drift                            # what differs from Git")
    print("Ctrl-C stops everything.", flush=True)
