#!/usr/bin/env python3
"""Cold start of a new standard component, host vs plain `wasmtime serve` of the same file cold, in the
same run: what the machine-wide compile cache and tiered compilation (Winch first, Cranelift in the
background) buy.

    python hack/bench/coldstart.py [--component py-hello] [--runs 2] [--record]

Each round (the order of the measurements rotates from round to round):
- plain cold: `wasmtime serve -C cache=n -S cli [-S config] -W epoch-interruption=y -W timeout=30000ms APP.wasm` (it
  compiles with Cranelift at start), spawn -> first 200; and the same with `-C compiler=winch`;
- host, tiered (now): a `driftless host` with an empty --data and an empty --compile-cache; the instance is
  POSTed to its admin API -> first 200 through its ingress (pull + inspect + compose + Winch compile +
  spawn); then until the optimised (Cranelift) build has been swapped in (the host's log says so);
- host, untiered (before: `--fast-tier-above off`, one Cranelift compile before the first answer);
- two hosts on one machine, one shared --compile-cache (now) vs each its own (before): both get the
  instance at the same moment -> both answered 200; compiles run on the machine (the hosts' own counters,
  GET /api/v1/status compileCache).

Setup as hack/bench/standard.py: /usr/bin/docker-registry on loopback, the component pushed with oras-py.

    python hack/bench/coldstart.py --up [--push-component js-hello] [--runs 2] [--record]

The platform as a user meets it (hack/bench/up_push.py), each round on a fresh data directory and free
ports: `driftless up` (its three hosts, one shared compile cache) -> it says it is up, and -> the
componentize-py example answers at /dev/py through a host; then a new component (js-hello, 13 MB) is
pushed (`driftless push`) and a manifest naming it is `git push`ed -> its first 200 at a host, with each
step between from the processes' logs. Reference in the same round: plain `wasmtime serve` cold of each
file (Cranelift, as it starts by default; and Winch).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from standard import GREETING, TOKEN, first_200, loadavg, port_of, post, record, spec  # noqa: E402

from shared.interfaces import WASI_CONFIG_STORE, unversioned  # noqa: E402
from shared.wasm import inspect_wasm  # noqa: E402
from tests.host.conftest import Host, Registry, start_host, start_registry, write_desired  # noqa: E402
from tests.support.procs import free_port, wait_until  # noqa: E402
from tests.support.standard import standard_component, wasmtime_cli  # noqa: E402

SECTION = "## Cold start of a new component (hack/bench/coldstart.py)"
SWAPPED = "swapped to the optimised"


def plain_cold(wasm: Path, *, work: Path, config_store: bool, winch: bool) -> float:
    """Plain `wasmtime serve` of the .wasm (compiled at start), spawn -> first 200."""
    port = free_port()
    # -C cache=n: wasmtime's own compile cache (~/.cache/wasmtime) would make every run after the first warm
    args = [str(wasmtime_cli()), "serve", "-C", "cache=n", "-S", "cli", *(["-S", "config"] if config_store else []),
            *(["-C", "compiler=winch"] if winch else []), "-W", "epoch-interruption=y", "-W", "timeout=30000ms",
            "--addr", f"127.0.0.1:{port}", "--env", "GREETING", str(wasm)]
    with open(work / "plain.log", "ab") as log:
        t = time.monotonic()
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "GREETING": GREETING}, start_new_session=True)
    try:
        return first_200(port, timeout=300) - t
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@contextlib.contextmanager
def hosts(work: Path, tag: str, count: int, *, shared: bool, tiered: bool) -> Iterator[list[Host]]:
    token_file = work / "token"
    token_file.write_text(TOKEN)
    started: list[Host] = []
    try:
        for i in range(count):
            name = f"bench{i}"
            data = work / f"{tag}-{name}"
            desired = work / f"{tag}-{name}.json"
            write_desired(desired, 1, [], host=name)
            cache = work / f"{tag}-compiled" if shared else data / "compiled"
            started.append(start_host(work, "--desired", str(desired), "--compile-cache", str(cache),
                                      *([] if tiered else ["--fast-tier-above", "off"]),
                                      data=data, name=name, token_file=token_file))
        yield started
    finally:
        for host in started:
            host.proc.stop()


def compiles(host: Host) -> int:
    engines = host.admin_get("/api/v1/status")["compileCache"]["engines"]
    return sum(c["compiled"] for key, c in engines.items() if key.startswith("wasmtime-cli"))


def host_cold(image: str, work: Path, tag: str, *, tiered: bool) -> tuple[float, float | None]:
    """POST -> first 200 on a fresh host; and POST -> optimised build serving (tiered only)."""
    with hosts(work, tag, 1, shared=False, tiered=tiered) as (host,):
        t = time.monotonic()
        post(host, spec(image))
        first = first_200(port_of(host), timeout=300) - t
        settled = None
        if tiered:
            wait_until(lambda: optimised(host), timeout=300, interval=0.005, what="the optimised build")
            settled = time.monotonic() - t
        return first, settled


def two_hosts(image: str, work: Path, tag: str, *, shared: bool) -> tuple[float, float, int]:
    """Both hosts get the instance at once -> both answered 200 (the slower one), and -> both serve from
    the optimised build; compiles run on the machine (counted then)."""
    with hosts(work, tag, 2, shared=shared, tiered=True) as pair:
        times: list[float] = []
        t = time.monotonic()

        def one(host: Host) -> None:
            post(host, spec(image))
            times.append(first_200(port_of(host), timeout=300) - t)

        threads = [threading.Thread(target=one, args=(h,)) for h in pair]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wait_until(lambda: all(optimised(h) for h in pair), timeout=300, interval=0.005,
                   what="both on the optimised build")
        return max(times), time.monotonic() - t, sum(compiles(h) for h in pair)


def optimised(host: Host) -> bool:
    """Serving from the optimised build: swapped in, or started on it (another host had compiled it)."""
    text = host.proc.log_path.read_text(errors="replace")
    return SWAPPED in text or "from its cranelift build" in text


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s" if xs else "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--component", default="py-hello")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--record", action="store_true", help="add the figures to hack/bench/RESULTS.md")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--up", action="store_true", help="driftless up and a git push of a new component (up_push.py)")
    p.add_argument("--push-component", default="js-hello", help="what --up pushes (default js-hello)")
    args = p.parse_args()
    if args.up:
        from coldstart_up import main_up

        return main_up(args)
    command = "python hack/bench/coldstart.py " + " ".join(sys.argv[1:])
    load_start = loadavg()
    wasm = standard_component(args.component)
    config_store = any(unversioned(i) == WASI_CONFIG_STORE for i in inspect_wasm(wasm.read_bytes()).imports)
    figs: dict[str, list[float]] = {k: [] for k in (
        "plain", "plain_winch", "tiered", "tiered_optimised", "untiered", "pair_shared", "pair_separate",
        "pair_shared_optimised", "pair_separate_optimised")}
    pair_compiles: dict[str, list[int]] = {"pair_shared": [], "pair_separate": []}
    with contextlib.ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-coldstart-")))
        else:
            work = args.work.resolve()
            work.mkdir(parents=True, exist_ok=True)
        port = free_port()
        reg = start_registry(work / "registry", port)
        stack.callback(lambda: (reg.terminate(), reg.wait(10)))
        registry = Registry(host=f"127.0.0.1:{port}", root=work / "registry")
        image = registry.push(args.component, wasm.read_bytes(), tag="bench")
        print(f"pushed {wasm.stat().st_size} bytes as {image}", flush=True)

        def run_plain(i: int) -> None:
            figs["plain"].append(plain_cold(wasm, work=work, config_store=config_store, winch=False))
            figs["plain_winch"].append(plain_cold(wasm, work=work, config_store=config_store, winch=True))

        def run_tiered(i: int) -> None:
            first, optimised = host_cold(image, work, f"tiered-{i}", tiered=True)
            figs["tiered"].append(first)
            figs["tiered_optimised"].append(optimised or 0.0)

        def run_untiered(i: int) -> None:
            figs["untiered"].append(host_cold(image, work, f"untiered-{i}", tiered=False)[0])

        def run_pairs(i: int) -> None:
            for key, shared in (("pair_shared", True), ("pair_separate", False)):
                took, settled, n = two_hosts(image, work, f"{key}-{i}", shared=shared)
                figs[key].append(took)
                figs[f"{key}_optimised"].append(settled)
                pair_compiles[key].append(n)

        steps: list[Any] = [run_plain, run_tiered, run_untiered, run_pairs]
        for i in range(args.runs):
            order = steps[i % len(steps):] + steps[: i % len(steps)]
            for step in order:
                step(i)
            print(f"round {i}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in figs.items() if v), flush=True)
    text = report(figs, pair_compiles, args, command.strip(), load_start, wasm)
    print(text)
    if args.record:
        record(text, section=SECTION)
    return 0


def report(figs: dict[str, list[float]], pair_compiles: dict[str, list[int]], args: argparse.Namespace,
           command: str, load_start: str, wasm: Path) -> str:
    version = subprocess.run([str(wasmtime_cli()), "--version"], capture_output=True, text=True).stdout.strip()
    plain = statistics.median(figs["plain"])
    rows = [
        ("plain `wasmtime serve` of the .wasm, cold (Cranelift at start)", med(figs["plain"]), "1.00"),
        ("plain `wasmtime serve -C compiler=winch`, cold", med(figs["plain_winch"]),
         f"{statistics.median(figs['plain_winch']) / plain:.2f}"),
        ("host, untiered (before: Cranelift, then start)", med(figs["untiered"]),
         f"{statistics.median(figs['untiered']) / plain:.2f}"),
        ("**host, tiered (now): first answer from the Winch build**", f"**{med(figs['tiered'])}**",
         f"**{statistics.median(figs['tiered']) / plain:.2f}**"),
        ("host, tiered: optimised build swapped in", med(figs["tiered_optimised"]),
         f"{statistics.median(figs['tiered_optimised']) / plain:.2f}"),
        ("two hosts, each its own cache (before): both answered", med(figs["pair_separate"]),
         f"{statistics.median(figs['pair_separate']) / plain:.2f}"),
        ("**two hosts, one shared --compile-cache (now): both answered**", f"**{med(figs['pair_shared'])}**",
         f"**{statistics.median(figs['pair_shared']) / plain:.2f}**"),
        ("two hosts, each its own cache (before): both on the optimised build", med(figs["pair_separate_optimised"]),
         f"{statistics.median(figs['pair_separate_optimised']) / plain:.2f}"),
        ("**two hosts, one shared cache (now): both on the optimised build**",
         f"**{med(figs['pair_shared_optimised'])}**",
         f"**{statistics.median(figs['pair_shared_optimised']) / plain:.2f}**"),
    ]
    lines = ["| measurement | median | × plain cold |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join([
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — `{command}`",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs **shared with other people's work** (load average "
        f"{load_start} at the start, {loadavg()} at the end), Linux {platform.release()}, Python "
        f"{platform.python_version()}, {version}",
        f"- component: {args.component} ({wasm.stat().st_size / 1e6:.1f} MB), pushed to /usr/bin/docker-registry on "
        f"loopback; host figures are POST to the admin API -> first 200 at the ingress (pull + inspect + compose + "
        f"compile + spawn), fresh --data and --compile-cache each time; medians of {args.runs} rounds, the order "
        f"rotating",
        "- compiles run on the machine by the two hosts (their compile-cache counters): shared "
        + "/".join(map(str, pair_compiles["pair_shared"])) + ", separate "
        + "/".join(map(str, pair_compiles["pair_separate"])) + " (a Winch and a Cranelift build per cache)",
        "",
        *lines,
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
