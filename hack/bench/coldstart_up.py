"""hack/bench/coldstart.py --up: `driftless up` on a fresh data directory, and a git push of a new component
to it, against plain `wasmtime serve` cold of the same files in the same rounds (see coldstart.py)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from coldstart import SECTION, plain_cold
from standard import loadavg, record
from up_push import push_new, start_up, stop_up, wait_up

from shared.interfaces import WASI_CONFIG_STORE, unversioned
from shared.wasm import inspect_wasm
from tests.support.standard import standard_component, wasmtime_cli

EXAMPLE = "py-hello"  # what driftless up serves at /dev/py (hello-py)
STEPS = [  # (key, what happened by then), in order: the breakdown of a push
    ("checked", "`git push` -> ref moved (pre-receive hook: the tree checked)"),
    ("applied", "-> applied (post-receive hook, fetch, load, resolve)"),
    ("published", "-> desired states published"),
    ("converging", "-> the first host took its generation (long-poll)"),
    ("pulled", "-> pulled (13 MB, by the first host that needs it: the others find it inspected)"),
    ("compile_started", "-> compile started (inspect, compose the outbound adapter)"),
    ("compiled", "-> Winch build done (one host compiles, the others wait for it)"),
    ("spawned", "-> `wasmtime serve` listening"),
    ("first_200", "-> **first 200** at the first host"),
    ("all_200", "-> every host answered"),
]


def main_up(args: argparse.Namespace) -> int:
    command = "python hack/bench/coldstart.py " + " ".join(sys.argv[1:])
    load_start = loadavg()
    example, pushed = standard_component(EXAMPLE), standard_component(args.push_component)
    figs: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        figs.setdefault(key, []).append(value)

    with contextlib.ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-up-")))
        else:
            work = args.work.resolve()
            work.mkdir(parents=True, exist_ok=True)
        for i in range(args.runs):
            def plain() -> None:
                for key, wasm in (("example", example), ("pushed", pushed)):
                    store = any(unversioned(x) == WASI_CONFIG_STORE for x in inspect_wasm(wasm.read_bytes()).imports)
                    add(f"plain_{key}", plain_cold(wasm, work=work, config_store=store, winch=False))
                    add(f"plain_{key}_winch", plain_cold(wasm, work=work, config_store=store, winch=True))

            def platform_round(i: int = i) -> None:
                up = start_up(work / f"up-{i}")
                try:
                    for key, value in wait_up(up, route="/dev/py/").items():
                        add(key, value)
                    for key, value in push_new(up, pushed, name="hello-js", route="/js", work=work).items():
                        add(key, value)
                finally:
                    stop_up(up)

            for step in ([plain, platform_round] if i % 2 == 0 else [platform_round, plain]):
                step()
            print(f"round {i}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in figs.items()), flush=True)
    text = report(figs, args, command.strip(), load_start, example, pushed)
    print(text)
    if args.record:
        record(text, section=SECTION)
    return 0


def med(figs: dict[str, list[float]], key: str) -> float:
    xs = [x for x in figs.get(key, []) if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def report(figs: dict[str, list[float]], args: argparse.Namespace, command: str, load_start: str,
           example: Path, pushed: Path) -> str:
    version = subprocess.run([str(wasmtime_cli()), "--version"], capture_output=True, text=True).stdout.strip()
    plain_ex, plain_push = med(figs, "plain_example"), med(figs, "plain_pushed")
    rows = [
        (f"plain `wasmtime serve` of {EXAMPLE}, cold (Cranelift at start)", plain_ex, 1.0),
        (f"plain `wasmtime serve -C compiler=winch` of {EXAMPLE}, cold", med(figs, "plain_example_winch"),
         med(figs, "plain_example_winch") / plain_ex),
        ("`driftless up`, fresh data dir: says it is up", med(figs, "said_up"), med(figs, "said_up") / plain_ex),
        ("**`driftless up`, fresh data dir: /dev/py answers at a host**", med(figs, "example_200"),
         med(figs, "example_200") / plain_ex),
        (f"plain `wasmtime serve` of {args.push_component}, cold (Cranelift)", plain_push, 1.0),
        (f"plain `wasmtime serve -C compiler=winch` of {args.push_component}, cold", med(figs, "plain_pushed_winch"),
         med(figs, "plain_pushed_winch") / plain_push),
        (f"`driftless push` of {args.push_component} to the registry", med(figs, "registry"), float("nan")),
        ("**`git push` of a manifest naming it -> first 200**", med(figs, "first_200"),
         med(figs, "first_200") / plain_push),
    ]
    lines = ["| measurement | median | × plain cold of the same file |", "|---|---|---|"]
    lines += [f"| {a} | {b:.2f} s | {'-' if math.isnan(c) else f'{c:.2f}'} |" for a, b, c in rows]
    steps = ["| since the start of `git push` | median (s) | step (s) |", "|---|---|---|"]
    before = 0.0
    for key, what in STEPS:
        at = med(figs, key)
        steps.append(f"| {what} | {at:.2f} | {at - before:.2f} |")
        before = at
    steps.append(f"| `git push` returned (its post-receive feedback waits for the outcome) | "
                 f"{med(figs, 'git_returned'):.2f} | |")
    return "\n".join([
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — `{command}`",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs **shared with other people's work** (load average "
        f"{load_start} at the start, {loadavg()} at the end), Linux {platform.release()}, Python "
        f"{platform.python_version()}, {version}",
        f"- `driftless up --hosts 3` on a fresh data directory and free ports each round (its registry, reconciler, "
        f"three hosts sharing DATA/compiled); the example {EXAMPLE} ({example.stat().st_size / 1e6:.1f} MB, built by "
        f"setup); then {args.push_component} ({pushed.stat().st_size / 1e6:.1f} MB, never seen by the platform) "
        f"pushed, and a dev app naming it (a daemon: all three hosts) `git push`ed; medians of {args.runs} rounds",
        "",
        *lines,
        "",
        "Where the push's time goes (timestamps from the reconciler's and hosts' logs):",
        "",
        *steps,
        "",
    ])
