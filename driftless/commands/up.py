"""``driftless up``: start registry, Git repository, reconciler and hosts on loopback; Ctrl-C stops them.

On a terminal a rich spinner shows the long steps (pushing the examples, waiting for them to be served);
when stdout is not a terminal (a log file, CI) the spinner is silent and the output is plain lines.
"""

from __future__ import annotations

import argparse
import signal
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console

from driftless.client import ReconcilerClient
from driftless.endpoints import default_data_dir, sign_in_link
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
    p.add_argument("--accept-invalid-pushes", action="store_true",
                   help="let a push whose manifests do not validate land (the reconciler rejects it and keeps the "
                        "last good revision); by default the repository's pre-receive hook refuses it")


def _step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def _interactive() -> Console | None:
    """A console for spinners when stdout is a (non-dumb) terminal, else None."""
    console = Console()
    return console if console.is_terminal and not console.is_dumb_terminal else None


def _spinner(console: Console | None, text: str) -> AbstractContextManager[Any]:
    """A spinner saying ``text`` while the block runs; nothing at all without a terminal."""
    return console.status(text) if console is not None else nullcontext()


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
        refuse_invalid_pushes=not args.accept_invalid_pushes,
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
        # the reconciler and the hosts start (a second or two of Python each) while the examples are
        # pushed and the repository seeded: it follows the (empty) repository from the start, and the
        # hosts register as soon as it listens
        platform.init_git()
        platform.start_reconciler(wait=False)
        for h in platform.hosts:
            platform.start_host(h)
        with _spinner(_interactive(), "pushing the example components"):
            pushed = platform.push_examples()
        for ref in pushed:
            _step(f"pushed        {ref}")
        if platform.seed_git():
            _step(f"git           seeded {platform.git_dir} from manifests/")
        platform.install_hook()
        platform.wait_reconciler()
        _step(f"reconciler    {platform.control_url}")
        platform.wait_hosts()
        _step(f"logs          {data / 'logs'} (driftless logs [--host NAME] [--follow])")
        lost: set[str] = set()
        _wait_serving(platform, timeout=args.timeout, stopping=lambda: stopping, lost=lost)
        info = platform.write_up_json()  # once the platform is ready: what reads up.json finds it serving
        _print_summary(platform, info)
        while not stopping:
            _check_processes(platform, lost)
            time.sleep(0.2)
        print("\n==> stopping (hosts drain in-flight calls)...", flush=True)
        return 0
    finally:
        platform.stop()
        if stopping:
            print("==> stopped", flush=True)


def _api(platform: Platform) -> ReconcilerClient:
    return ReconcilerClient(base_url=platform.control_url, token=platform.admin_token(), timeout=2)


def _check_processes(platform: Platform, lost: set[str]) -> None:
    """A dead registry or reconciler stops the platform; a dead host is a host loss the reconciler heals
    (its instances move to the other hosts), said once, and the platform goes on."""
    dead = platform.dead()
    fatal = [name for name in dead if not name.startswith("host-")]
    if fatal:
        raise DriftlessError(
            f"{', '.join(fatal)} exited unexpectedly; see {platform.data / 'logs'} (driftless logs)",
            hint="start `driftless up` again: it resumes from the data directory",
        )
    for name in sorted(set(dead) - lost):
        lost.add(name)
        host = name.removeprefix("host-")
        print(f"==> host {host} exited; the reconciler heals its loss (its instances move to the other hosts). "
              f"Its log: driftless logs --host {host}", flush=True)


def _wait_serving(platform: Platform, *, timeout: float, stopping: Callable[[], bool],
                  lost: set[str] | None = None) -> None:
    """Wait until every host has registered and every example app is Healthy (a spinner with the counts
    on a terminal, progress dots otherwise)."""
    api = _api(platform)
    deadline = time.monotonic() + timeout
    what = "waiting for hosts to pull, compile and serve the example apps"
    console = _interactive()
    if console is None:
        print(f"==> {what} ", end="", flush=True)
    outcome = " (still converging; `driftless status` shows progress)"
    polls = 0
    probed: set[str] = set()  # routes that answered once (an idle app stays started after its probe)
    with _spinner(console, what) as status:
        while time.monotonic() < deadline and not stopping():
            try:
                ready = [h for h in api.get("/api/v1/hosts")["hosts"] if h.get("state") == "Ready"]
                envs = api.get("/api/v1/environments")["environments"]
                apps = [a for e in envs for a in e.get("apps") or []]
                healthy = [a for a in apps if a.get("health") == "Healthy"]
                wanted = platform.host_count - len(lost or ())
                if len(ready) >= wanted and apps and len(healthy) == len(apps) and _routes_answer(ready, probed):
                    outcome = " ready"
                    break
                if status is not None:
                    status.update(f"waiting for the example apps: {len(ready)}/{platform.host_count} hosts Ready, "
                                  f"{len(healthy)}/{len(apps)} apps Healthy")
            except DriftlessError:  # not listening yet, or not reconciled yet
                pass
            if set(platform.dead()) - (lost if lost is not None else set()):
                if console is None:
                    print(flush=True)
                _check_processes(platform, lost if lost is not None else set())
            polls += 1
            if console is None and polls % 5 == 0:
                print(".", end="", flush=True)
            time.sleep(0.1)  # a short poll: ready is said within 0.1 s of the examples answering
    print(outcome if console is None else f"==> {what}{outcome}", flush=True)


def _routes_answer(hosts: list[dict[str, Any]], probed: set[str]) -> bool:
    """Whether every route the hosts report answers through a host's ingress (one host per route; an
    idle app is woken by it): "ready" means the examples answer, not only that the hosts say they
    could. An answer is anything but a 5xx (the host's 503 while an instance starts, a 502)."""
    import httpx

    routes: dict[str, str] = {}
    for h in hosts:
        ingress = h.get("ingressUrl")
        for inst in ((h.get("report") or {}).get("instances") or []):
            route = inst.get("route")
            if route and ingress and route not in probed:
                routes.setdefault(route, str(ingress).rstrip("/"))
    with httpx.Client(timeout=10) as client:
        for route, ingress in sorted(routes.items()):
            try:
                if client.get(ingress + route).status_code >= 500:
                    return False
            except httpx.HTTPError:
                return False
            probed.add(route)
    return True


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
    print(f"  dashboard   {info['reconciler']}/  (driftless dashboard opens it signed in)")
    print(f"  sign in     {sign_in_link(info['reconciler'], platform.admin_token())}")
    print("              (one click signs the browser in as the admin; the token stays out of server logs)")
    print(f"  registry    {info['registry']}")
    print(f"  reconciler  {info['reconciler']}")
    print(f"  git remote  {info['git']}")
    print(f"  endpoints   {platform.data / 'up.json'}")
    print(f"  logs        {platform.data / 'logs'}  (driftless logs [--host NAME] [--follow])")
    print(f"  credential  {platform.admin_token_file} (admin; users in {platform.users_file}; the CLI sends it)")
    print()
    print("Next:")
    first = info["hosts"][0]["ingress"]
    print(f"  curl {first}/hello                      # the example app")
    print(f"  git clone {info['git']} demo && cd demo  # edit manifests/, then git push")
    print("  driftless status                           # environments, apps, hosts")
    print("  driftless drift                            # what differs from Git")
    print("Ctrl-C stops everything.", flush=True)
