#!/usr/bin/env python3
"""Benchmark standard (wasi:http/proxy) components served by a real `driftless host` against plain
`wasmtime serve` on the same precompiled component, in the same run: every figure is a ratio (or a
difference) against that reference.

    python hack/bench/standard.py [--components http-hello-wat,js-hello,py-hello] [--rounds 3]
        [--duration 5] [--connections 4] [--start-runs 5] [--cold-runs 2] [--idle-runs 5] [--record]

Setup: a CNCF registry (/usr/bin/docker-registry, as tests/host/conftest.py starts it) on loopback, each
component (tests/support/standard.py::standard_component) pushed with oras-py; `driftless host` processes
started as tests/host/conftest.py::start_host does (--desired FILE, --admin-listen, --data, --token).
Instances are added and removed through the host's admin API (POST/DELETE /api/v1/instances): the POST is
"the instance becomes desired".

Per component:
1. cold start: a host with an empty --data dir (and --compile-cache under it); POST the instance -> first
   200 at the ingress (pull + inspect + `wasmtime compile`, with Winch for components of 1 MiB and more
   (tiered: hack/bench/coldstart.py) + spawn). Reference: `wasmtime compile` + plain spawn -> first 200.
2. warm start: the host restarted on the same --data dir (compiled cache and component info kept, so no
   pull); POST -> first 200. Reference: plain `wasmtime serve` of the same .cwasm, spawn -> first 200.
3. throughput: wrk (-t1 -cN, --latency) in alternating slices against (a) the host's ingress, (b) plain
   `wasmtime serve -S cli -W epoch-interruption=y -W timeout=30000ms --allow-precompiled` on the host's own
   .cwasm (epoch interruption is compiled in, and then a deadline is needed or every call traps), and
   (c) the host's wasmtime serve process directly (its port, bypassing the ingress: separates the proxy's
   cost from the flags the host adds); figures are medians over --rounds slices.
4. memory: PSS (/proc/PID/smaps_rollup) of every wasmtime serve process after a few requests, with 1 and
   5 instances of the same digest, for the host's processes and for as many plain processes; and the
   host agent's own PSS.
5. scale to zero: an instance with "idleAfterMs": 1000; wait for status Idle on the admin API, then time
   one request (wake: spawn + first 200 through the ingress). Reference: plain spawn -> first 200.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared.interfaces import WASI_CONFIG_STORE, unversioned  # noqa: E402
from shared.wasm import inspect_wasm  # noqa: E402
from tests.host.conftest import Host, Registry, start_host, start_registry, write_desired  # noqa: E402
from tests.support.procs import free_port, wait_until  # noqa: E402
from tests.support.standard import standard_component, wasmtime_cli  # noqa: E402

HERE = Path(__file__).resolve().parent
COMPONENTS = ("http-hello-wat", "js-hello", "py-hello")
TOKEN = "bench-token"
HOST_NAME = "bench"
GREETING = "hi"
SECTION = "## Standard components (wasi:http): host vs plain wasmtime serve"


# --- small tools -------------------------------------------------------------------------------------------


def first_200(port: int, path: str = "/", *, timeout: float = 120.0) -> float:
    """Poll http://127.0.0.1:port/path until it answers 200; return the monotonic time of that answer.
    Keeps its connection while the server keeps it; 1 ms between attempts."""
    deadline = time.monotonic() + timeout
    conn: http.client.HTTPConnection | None = None
    while time.monotonic() < deadline:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                at = time.monotonic()
                conn.close()
                return at
            if r.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            if conn is not None:
                conn.close()
            conn = None
        time.sleep(0.001)
    raise AssertionError(f"no 200 from 127.0.0.1:{port}{path} within {timeout}s")


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise AssertionError(f"no Pss in /proc/{pid}/smaps_rollup")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_processes(data: Path) -> dict[int, list[str]]:
    """The wasmtime serve processes a host with --data `data` runs: pid -> argv (their .cwasm is under it)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
        except OSError:
            continue
        if (len(argv) > 2 and argv[1] == "serve" and "--no-logging-prefix" in argv  # the host's, not our Plain
                and any(a.startswith(str(data)) for a in argv)):
            out[int(entry)] = argv
    return out


def compiler_args(argv: list[str]) -> list[str]:
    """The ``-C compiler=...`` of a host's wasmtime serve command line (none: Cranelift)."""
    return [x for i, a in enumerate(argv[:-1]) if a == "-C" and argv[i + 1].startswith("compiler=")
            for x in (a, argv[i + 1])]


def optimised_process(data: Path, *, timeout: float = 300.0) -> list[str]:
    """The argv of the host's wasmtime serve process once it runs its optimised (Cranelift) build: a
    component of 1 MiB or more first serves from a Winch build (host/tiers.py)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(serve_processes(data).values())
        if len(found) == 1 and not compiler_args(found[0]):
            return found[0]
        time.sleep(0.2)
    raise SystemExit(f"the host under {data} did not swap to its optimised build within {timeout:.0f} s")


def addr_port(argv: list[str]) -> int:
    return int(argv[argv.index("--addr") + 1].rpartition(":")[2])


def hit(port: int, n: int, path: str = "/") -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(n):
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, (port, r.status)
    conn.close()


@dataclass
class Wrk:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(port: int, *, connections: int, duration: float, path: str = "/") -> Wrk:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "10s",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m[1]) * _UNITS[m[2]]

    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(m[1])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return Wrk(rps=rps, p50_ms=pct("50"), p99_ms=pct("99"), errors=errors)


class Plain:
    """`wasmtime serve` started by hand on a .cwasm, the reference."""

    def __init__(self, cwasm: Path, *, log: Path, config_store: bool, compiler: list[str] | None = None) -> None:
        self.port = free_port()
        config = ["-S", "config"] if config_store else []  # as the host: py-hello imports wasi:config/store
        # a Winch build (the host's fast tier) loads only into an engine configured for Winch
        self.args = [str(wasmtime_cli()), "serve", "--allow-precompiled", *(compiler or []), "-S", "cli", *config, "-W",
                     "epoch-interruption=y", "-W", "timeout=30000ms", "--addr", f"127.0.0.1:{self.port}", "--env",
                     "GREETING", str(cwasm)]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Spawn; return seconds from spawn to the first 200."""
        with open(self.log, "ab") as log:
            t = time.monotonic()
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "GREETING": GREETING}, start_new_session=True)
        return first_200(self.port) - t

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# --- the host side -----------------------------------------------------------------------------------------


def spec(image: str, ordinal: int = 0, **extra: Any) -> dict[str, Any]:
    return {"env": "bench", "app": "std", "component": "web", "id": f"bench/std/web/{ordinal}", "image": image,
            "digest": image.rpartition("@")[2], "route": "/", "config": {"GREETING": GREETING}, **extra}


def _admin(host: Host, method: str, query: str = "", body: dict[str, Any] | None = None) -> tuple[int, str]:
    """One admin API call over http.client (cheap: httpx.post builds an SSL context per call, ~10 ms)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(host.admin.rpartition(":")[2]), timeout=10)
    try:
        conn.request(method, "/api/v1/instances" + query, body=json.dumps(body) if body is not None else None,
                     headers={"Authorization": f"Bearer {host.admin_token}", "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def post(host: Host, body: dict[str, Any]) -> None:
    status, text = _admin(host, "POST", body=body)
    assert status == 201, text


def delete(host: Host, instance_id: str) -> None:
    status, text = _admin(host, "DELETE", "?id=" + urllib.parse.quote(instance_id, safe=""))
    assert status == 200, text


def port_of(host: Host) -> int:
    return int(host.url.rpartition(":")[2])


@contextlib.contextmanager
def running_host(work: Path, data: Path) -> Iterator[Host]:
    desired = work / "desired-empty.json"
    write_desired(desired, 1, [], host=HOST_NAME)
    token_file = work / "token"
    token_file.write_text(TOKEN)
    host = start_host(work, "--desired", str(desired), data=data, name=HOST_NAME, token_file=token_file)
    try:
        yield host
    finally:
        host.proc.stop()
        wait_until(lambda: not serve_processes(data), timeout=15, what="the host's wasmtime serve processes gone")


def desired_to_200(host: Host, body: dict[str, Any]) -> float:
    t = time.monotonic()
    post(host, body)
    return first_200(port_of(host)) - t


@dataclass
class Figures:
    name: str
    size: int
    cold_host: list[float] = field(default_factory=list)
    cold_plain: list[float] = field(default_factory=list)  # wasmtime compile + spawn -> first 200
    warm_host: list[float] = field(default_factory=list)
    warm_plain: list[float] = field(default_factory=list)
    host_ready: list[float] = field(default_factory=list)  # host process spawn -> admin API answers
    idle_host: list[float] = field(default_factory=list)
    load: dict[str, list[Wrk]] = field(default_factory=lambda: {"host": [], "plain": [], "direct": []})
    # one connection (wrk -c1): the latency a request pays, without queueing: the host's added µs at p50
    load1: dict[str, list[Wrk]] = field(default_factory=lambda: {"host": [], "plain": [], "direct": []})
    pss: dict[str, list[int]] = field(default_factory=dict)  # "host1", "plain1", "host5", "plain5", "agent1", ...
    agent_cpu: list[float] = field(default_factory=list)  # the agent's CPU seconds per 1000 requests (-c N slices)


def bench_component(name: str, registry: Registry, work: Path, args: argparse.Namespace) -> Figures:
    wasm = standard_component(name)
    fig = Figures(name=name, size=wasm.stat().st_size)
    image = registry.push(name, wasm.read_bytes(), tag="bench")
    print(f"[{name}] pushed {fig.size} bytes as {image}", flush=True)
    cli = str(wasmtime_cli())
    config_store = any(unversioned(i) == WASI_CONFIG_STORE for i in inspect_wasm(wasm.read_bytes()).imports)

    # 1. cold: empty data dir each time; reference: wasmtime compile + spawn
    for i in range(args.cold_runs):
        data = work / f"{name}-cold-{i}"
        with running_host(work, data) as host:
            fig.cold_host.append(desired_to_200(host, spec(image)))
        ref = work / f"{name}-ref-{i}.cwasm"
        t = time.monotonic()
        subprocess.run([cli, "compile", "-W", "epoch-interruption=y", "-o", str(ref), str(wasm)], check=True)
        compiled = time.monotonic() - t
        plain = Plain(ref, log=work / "plain.log", config_store=config_store)
        try:
            fig.cold_plain.append(compiled + plain.start())
        finally:
            plain.stop()
        print(f"[{name}] cold {i}: host {fig.cold_host[-1] * 1e3:.0f} ms, plain {fig.cold_plain[-1] * 1e3:.0f} ms",
              flush=True)

    # 2. warm: restart the host on the cold run's data dir (its desired state is empty: the POST is the
    # moment the instance becomes desired); alternate with the plain reference on the same .cwasm
    data = work / f"{name}-cold-0"
    cwasm: Path | None = None
    for i in range(args.start_runs):
        t = time.monotonic()
        with running_host(work, data) as host:
            fig.host_ready.append(time.monotonic() - t)
            fig.warm_host.append(desired_to_200(host, spec(image)))
            (pid, argv), = serve_processes(data).items()
            cwasm = Path(argv[-1])
        plain = Plain(cwasm, log=work / "plain.log", config_store=config_store, compiler=compiler_args(argv))
        try:
            fig.warm_plain.append(plain.start())
        finally:
            plain.stop()
        print(f"[{name}] warm {i}: host {fig.warm_host[-1] * 1e3:.1f} ms, plain {fig.warm_plain[-1] * 1e3:.1f} ms",
              flush=True)
    assert cwasm is not None

    # 3.-5. on one host
    with running_host(work, data) as host:
        post(host, spec(image))
        first_200(port_of(host))
        argv = optimised_process(data)  # throughput and memory on the build a component serves from for good
        cwasm = Path(argv[-1])
        direct = addr_port(argv)
        plains = [Plain(cwasm, log=work / "plain.log", config_store=config_store)]
        try:
            plains[0].start()
            targets = {"host": port_of(host), "plain": plains[0].port, "direct": direct}
            for port in targets.values():
                wrk(port, connections=args.connections, duration=1)  # warm-up
            for r in range(args.rounds):
                for label, port in targets.items():
                    cpu = cpu_seconds(host.proc.pid)
                    fig.load[label].append(wrk(port, connections=args.connections, duration=args.duration))
                    if label == "host":  # the agent's share: what the native data path still costs it
                        w = fig.load[label][-1]
                        fig.agent_cpu.append((cpu_seconds(host.proc.pid) - cpu) / (w.rps * args.duration) * 1000)
                for label, port in targets.items():
                    fig.load1[label].append(wrk(port, connections=1, duration=args.duration))
                print(f"[{name}] load round {r}: " + ", ".join(f"{k} {v[-1].rps:.0f} req/s" for k, v in fig.load.items()),
                      flush=True)

        finally:
            for p in plains:
                p.stop()

        # 4. memory: 1, then 5 instances of the same digest, each side measured alone (processes mapping
        # the same .cwasm and binary share those pages: PSS splits them)
        hit(port_of(host), 20)
        fig.pss["host1"] = [pss_kib(p) for p in serve_processes(data)]
        fig.pss["agent1"] = [pss_kib(host.proc.pid)]
        for k in range(1, 5):
            post(host, spec(image, k))
        for k in range(1, 5):
            host.wait_status(f"bench/std/web/{k}", "Running", timeout=60)
        procs = serve_processes(data)
        assert len(procs) == 5, procs
        for argv in procs.values():
            hit(addr_port(argv), 10)
        hit(port_of(host), 20)
        fig.pss["host5"] = [pss_kib(p) for p in procs]
        fig.pss["agent5"] = [pss_kib(host.proc.pid)]
        for k in range(5):
            delete(host, f"bench/std/web/{k}")
        wait_until(lambda: not serve_processes(data), timeout=120, what="instances stopped")
        plains = []
        try:
            for n in (1, 5):
                while len(plains) < n:
                    plains.append(Plain(cwasm, log=work / "plain.log", config_store=config_store))
                    plains[-1].start()
                for p in plains:
                    hit(p.port, 10)
                fig.pss[f"plain{n}"] = [pss_kib(p.proc.pid) for p in plains]  # type: ignore[union-attr]
        finally:
            for p in plains:
                p.stop()
        print(f"[{name}] pss: " + ", ".join(f"{k} {sum(v) / len(v) / 1024:.1f} MiB" for k, v in fig.pss.items()),
              flush=True)

        # 5. scale to zero
        post(host, spec(image, 9, idleAfterMs=1000))
        for i in range(args.idle_runs):
            host.wait_status("bench/std/web/9", "Idle", timeout=30)
            assert not serve_processes(data)
            t = time.monotonic()
            fig.idle_host.append(first_200(port_of(host)) - t)
            print(f"[{name}] wake {i}: {fig.idle_host[-1] * 1e3:.1f} ms", flush=True)
    return fig


# --- report ------------------------------------------------------------------------------------------------


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def table(figs: list[Figures], args: argparse.Namespace) -> str:
    rows: list[tuple[str, ...]] = []

    def row(*cells: str) -> None:
        rows.append(cells)

    row("measure", *(f.name for f in figs))
    row("component size", *(f"{f.size / 1e6:.2f} MB" if f.size > 1e5 else f"{f.size / 1e3:.0f} KB" for f in figs))
    for label, key in (("req/s host", "host"), ("req/s plain", "plain"), ("req/s host's process direct", "direct")):
        row(label, *(f"{med([w.rps for w in f.load[key]]):.0f}" for f in figs))
    row("**ratio host/plain (goal ≥ 0.9)**",
        *(f"**{med([w.rps for w in f.load['host']]) / med([w.rps for w in f.load['plain']]):.2f}**" for f in figs))
    row("ratio direct/plain (the host's flags)",
        *(f"{med([w.rps for w in f.load['direct']]) / med([w.rps for w in f.load['plain']]):.2f}" for f in figs))
    for key in ("host", "plain", "direct"):
        row(f"p50 / p99 ms {key}",
            *(f"{med([w.p50_ms for w in f.load[key]]):.2f} / {med([w.p99_ms for w in f.load[key]]):.2f}" for f in figs))
    for key in ("host", "plain", "direct"):
        row(f"-c1: req/s, p50 / p99 µs {key}",
            *(f"{med([w.rps for w in f.load1[key]]):.0f}, {med([w.p50_ms for w in f.load1[key]]) * 1e3:.0f} / "
              f"{med([w.p99_ms for w in f.load1[key]]) * 1e3:.0f}" for f in figs))
    row("**-c1: host adds at p50 over its process direct (goal ≤ 50 µs)**",
        *(f"**{(med([w.p50_ms for w in f.load1['host']]) - med([w.p50_ms for w in f.load1['direct']])) * 1e3:+.0f} µs**"
          for f in figs))
    row("-c1: host adds at p50 over plain",
        *(f"{(med([w.p50_ms for w in f.load1['host']]) - med([w.p50_ms for w in f.load1['plain']])) * 1e3:+.0f} µs"
          for f in figs))
    row("host agent (Python) CPU per 1000 requests under -c N", *(f"{med(f.agent_cpu) * 1e3:.1f} ms" for f in figs))
    row("warm start, host: instance desired -> first 200",
        *(f"{med(f.warm_host) * 1e3:.1f} ms" for f in figs))
    row("warm start, plain: spawn -> first 200", *(f"{med(f.warm_plain) * 1e3:.1f} ms" for f in figs))
    row("**warm: host beyond process start (goal < 50 ms)**",
        *(f"**{(med(f.warm_host) - med(f.warm_plain)) * 1e3:+.1f} ms**" for f in figs))
    row("(host restart: spawn -> admin API up)", *(f"{med(f.host_ready) * 1e3:.0f} ms" for f in figs))
    row("cold start, host: pull + inspect + compile + start", *(f"{med(f.cold_host):.2f} s" for f in figs))
    row("cold start, plain: compile + start", *(f"{med(f.cold_plain):.2f} s" for f in figs))
    row("cold ratio host/plain", *(f"{med(f.cold_host) / med(f.cold_plain):.2f}" for f in figs))
    row("**wake from Idle, first request (goal < 100 ms)**", *(f"**{med(f.idle_host) * 1e3:.1f} ms**" for f in figs))
    row("  (its reference: plain spawn -> first 200)", *(f"{med(f.warm_plain) * 1e3:.1f} ms" for f in figs))

    def mib(xs: list[int]) -> str:
        return f"{sum(xs) / len(xs) / 1024:.1f}"

    row("PSS per wasmtime serve, N=1: host / plain (MiB)", *(f"{mib(f.pss['host1'])} / {mib(f.pss['plain1'])}" for f in figs))
    row("PSS per wasmtime serve, N=5: host / plain (MiB, mean)",
        *(f"{mib(f.pss['host5'])} / {mib(f.pss['plain5'])}" for f in figs))
    row("PSS total of the 5: host / plain (MiB)",
        *(f"{sum(f.pss['host5']) / 1024:.1f} / {sum(f.pss['plain5']) / 1024:.1f}" for f in figs))
    row("host agent (Python) PSS with 1 / 5 instances (MiB)",
        *(f"{mib(f.pss['agent1'])} / {mib(f.pss['agent5'])}" for f in figs))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def report(figs: list[Figures], args: argparse.Namespace, command: str, load_start: str) -> str:
    version = subprocess.run([str(wasmtime_cli()), "--version"], capture_output=True, text=True).stdout.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0].split(" [")[0]
    return "\n".join([
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — `{command}`",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other work (load average {load_start} "
        f"at the start, {loadavg()} at the end), Linux {platform.release()}, Python {platform.python_version()}, "
        f"{version}, {wrk_v}",
        "- host: a `driftless host` process (--desired with no instances, --admin-listen, --data, --token); the "
        "instance is POSTed to its admin API (route `/`, config GREETING); registry: /usr/bin/docker-registry on "
        "loopback, pushed with oras-py",
        "- plain: `wasmtime serve --allow-precompiled -S cli -W epoch-interruption=y -W timeout=30000ms --env "
        "GREETING` on the host's own .cwasm (plus `-S config` for a component importing wasi:config/store, as the host does; its cache compiles with epoch interruption, which then needs a deadline: "
        "without -W timeout every request traps with 'interrupt'; 30 s is the host's default); \"direct\": wrk against the host's wasmtime "
        "serve process's port, bypassing the ingress (it adds `--max-concurrent-requests 16 -S tcp=n -S udp=n "
        "-S allow-ip-name-lookup=n --no-logging-prefix`)",
        f"- load: `wrk -t1 -c{args.connections} -d{args.duration:g}s --latency` on `GET /`, {args.rounds} alternating "
        f"slices per target, then as many `-c1` slices (latency without queueing), medians (the machine is noisy: "
        "wrk, the host and wasmtime share 2 CPUs)",
        f"- starts: medians of {args.start_runs} warm, {args.cold_runs} cold and {args.idle_runs} wake-from-Idle "
        f"runs; \"first 200\" is polled with a 1 ms sleep between attempts",
        "",
        table(figs, args),
        "",
        "Errors under load (non-2xx + socket errors, all slices): "
        + ", ".join(f"{f.name} " + "/".join(str(sum(w.errors for w in f.load[k])) for k in ("host", "plain", "direct"))
                    for f in figs) + " (host/plain/direct).",
        "",
    ])


def record(text: str, *, section: str = SECTION) -> None:
    """Append ``text`` to ``section`` of RESULTS.md (the section is added at the end when absent)."""
    path = HERE / "RESULTS.md"
    content = path.read_text()
    if section not in content:
        path.write_text(content.rstrip() + f"\n\n{section}\n\n{text}")
        return
    start = content.index(section) + len(section)
    nxt = content.find("\n## ", start)
    end = len(content) if nxt < 0 else nxt
    path.write_text(content[:end].rstrip() + f"\n\n{text}" + content[end:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--components", default=",".join(COMPONENTS))
    p.add_argument("--rounds", type=int, default=3, help="wrk slices per target (median)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk slice")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--start-runs", type=int, default=5)
    p.add_argument("--cold-runs", type=int, default=2)
    p.add_argument("--idle-runs", type=int, default=5)
    p.add_argument("--record", action="store_true", help="add the figures to hack/bench/RESULTS.md")
    p.add_argument("--work", type=Path, default=None, help="keep the logs and data here (default: a temp dir)")
    args = p.parse_args()
    if not shutil.which("wrk"):
        p.error("wrk is needed (apt-get install wrk)")
    command = "python hack/bench/standard.py " + " ".join(sys.argv[1:])
    load_start = loadavg()
    figs = []
    with contextlib.ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-standard-")))
        else:
            work = args.work.resolve()
            work.mkdir(parents=True, exist_ok=True)
        port = free_port()
        reg = start_registry(work / "registry", port)
        try:
            registry = Registry(host=f"127.0.0.1:{port}", root=work / "registry")
            for name in args.components.split(","):
                figs.append(bench_component(name, registry, work, args))
        finally:
            reg.terminate()
            reg.wait(10)
    text = report(figs, args, command.strip(), load_start)
    print(text)
    if args.record:
        record(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
