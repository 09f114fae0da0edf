#!/usr/bin/env python3
"""Benchmark the host runtime: component start cold (pull + compile) and warm (from the compiled
cache), and instances held per host process with their RSS.

    python hack/bench/host.py [--instances 10000] [--runs 30] [--append hack/bench/RESULTS.md]

Starts a CNCF registry (/usr/bin/docker-registry) on loopback, pushes the `hello` example with
oras-py, then measures with the host's own code (puller, engine, compiled cache, runtime).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from host.cache import CompiledCache  # noqa: E402
from host.puller import RegistryAccess, pull_component  # noqa: E402
from host.runtime import ComponentInstance, HttpRequest, RuntimeDefaults  # noqa: E402
from host.wasm_engine import WasmEngine  # noqa: E402
from tests.host.conftest import Registry, start_registry  # noqa: E402
from tests.support.components import build, variant  # noqa: E402
from tests.support.procs import free_port  # noqa: E402
from wire.control import InstanceSpec  # noqa: E402


class NoLinks:
    def link_target(self, *, env: str, app: str, component: str) -> None:
        return None


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    return _status_kib("VmRSS")


def vm_bytes() -> int:
    return _status_kib("VmSize")


def spec(image: str, n: int = 0) -> InstanceSpec:
    return InstanceSpec(id=f"bench/app/web/{n}", env="bench", app="app", component="web", image=image,
                        digest=image.rpartition("@")[2], config={"GREETING": "hi"}, route="/hello")  # fmt: skip


def measure_starts(work: Path, runs: int) -> dict[str, float]:
    port = free_port()
    proc = start_registry(work / "registry", port)
    try:
        registry = Registry(host=f"127.0.0.1:{port}", root=work / "registry")
        images = [registry.push("hello", variant("hello", f"bench-{i}"), tag=f"b{i}") for i in range(runs)]
        engine = WasmEngine(cache=CompiledCache(root=work / "cache", engine_key="bench", max_bytes=1 << 30))
        access = RegistryAccess()
        cold, warm = [], []
        for image in images:  # cold: every digest is new: pull + verify + compile + cache + instantiate
            s = spec(image)
            t = time.perf_counter()
            component = engine.load(
                digest=s.digest,
                fetch=lambda s=s: pull_component(image=s.image, digest=s.digest, access=access),
                progress=lambda _m: None,
            )
            ComponentInstance(spec=s, component=component, engine=engine, links=NoLinks(), defaults=RuntimeDefaults())
            cold.append(time.perf_counter() - t)
        engine.close()
        # warm: the same digests again in a fresh engine (as after a host restart): from the disk cache
        engine = WasmEngine(cache=CompiledCache(root=work / "cache", engine_key="bench", max_bytes=1 << 30))
        for image in images:
            s = spec(image)
            t = time.perf_counter()
            component = engine.load(digest=s.digest, fetch=lambda: b"", progress=lambda _m: None)
            inst = ComponentInstance(spec=s, component=component, engine=engine, links=NoLinks(), defaults=RuntimeDefaults())
            warm.append(time.perf_counter() - t)
        assert engine.compilations == 0 and engine.cache_hits == runs
        calls = []
        request = HttpRequest("GET", "/hello", [], b"")
        for _ in range(200):
            t = time.perf_counter()
            inst.handle(request)
            calls.append(time.perf_counter() - t)
        engine.close()
        http_ms, host_start_s = measure_http(work, images[0])
        return {"cold_ms": statistics.median(cold) * 1e3, "warm_ms": statistics.median(warm) * 1e3,
                "call_us": statistics.median(calls) * 1e6, "http_ms": http_ms,
                "host_start_s": host_start_s}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)


def measure_http(work: Path, image: str) -> tuple[float, float]:
    """A real `driftless host` process serving hello: median HTTP round trip on loopback, and the
    time from process start to the first 200 (pull + compile included)."""
    import httpx

    from tests.host.conftest import instance, write_desired
    from tests.support.procs import DriftlessProcess

    desired = work / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/hello")], host="bench")
    port = free_port()
    t = time.perf_counter()
    proc = DriftlessProcess(["host", "--name", "bench", "--desired", str(desired), "--listen", f"127.0.0.1:{port}",
                             "--data", str(work / "host")], log_dir=work, name="host",
                            ready_url=f"http://127.0.0.1:{port}/").start()  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            while client.get("/hello").status_code != 200:
                time.sleep(0.005)
            started = time.perf_counter() - t
            times = []
            for _ in range(300):
                t = time.perf_counter()
                client.get("/hello")
                times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3, started
    finally:
        proc.stop()


def measure_instances(count: int, reservation: int | None = None) -> dict[str, float]:
    engine = WasmEngine(cache=None, memory_reservation=reservation)
    component = engine.compile(build("hello"), what="hello")
    image = f"127.0.0.1:1/demo/hello@sha256:{'0' * 64}"
    gc.collect()
    before = rss_bytes()
    t = time.perf_counter()
    vm_before = vm_bytes()
    held = [
        ComponentInstance(spec=spec(image, n), component=component, engine=engine, links=NoLinks(),
                          defaults=RuntimeDefaults())  # fmt: skip
        for n in range(count)
    ]
    elapsed = time.perf_counter() - t
    after = rss_bytes()
    vm_after = vm_bytes()
    # every instance really serves
    assert held[-1].handle(HttpRequest("GET", "/hello", [], b"")).body == b"hi from /hello"
    engine.close()
    return {"instances": count, "rss_total_mib": after / 2**20, "rss_delta_mib": (after - before) / 2**20,
            "per_instance_kib": (after - before) / count / 1024, "start_all_s": elapsed,
            "vm_delta_gib": (vm_after - vm_before) / 2**30}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--append", type=Path, default=None, help="append the figures to this Markdown file")
    p.add_argument("--only-instances", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--reservation", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only_instances:  # child process: a clean RSS baseline
        r = measure_instances(args.instances, args.reservation)
        print(" ".join(f"{k}={v}" for k, v in r.items()))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        starts = measure_starts(Path(tmp), args.runs)
    out = subprocess.run([sys.executable, __file__, "--only-instances", "--instances", str(args.instances)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    held = {k: float(v) for k, v in (x.split("=") for x in out.split())}
    out = subprocess.run([sys.executable, __file__, "--only-instances", "--instances", str(args.instances),
                          "--reservation", str(64 << 20)], capture_output=True, text=True, check=True).stdout  # fmt: skip
    small = {k: float(v) for k, v in (x.split("=") for x in out.split())}
    machine = f"{platform.machine()}, {os.cpu_count()} cpus (shared), Linux {platform.release()}, Python {platform.python_version()}"
    lines = [
        f"### {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC — `python hack/bench/host.py --runs {args.runs} --instances {args.instances}`",
        f"- machine: {machine}",
        f"- cold start (pull from local registry + verify + compile + cache + instantiate), median of {args.runs}: "
        f"**{starts['cold_ms']:.2f} ms** (goal < 50 ms)",
        f"- warm start (compiled cache + instantiate), median of {args.runs}: **{starts['warm_ms']:.3f} ms** (goal < 1 ms)",
        f"- call of the hello handler (in-process, no HTTP), median of 200: {starts['call_us']:.0f} µs",
        f"- HTTP round trip through a `driftless host` process (keep-alive, loopback), median of 300: "
        f"{starts['http_ms']:.2f} ms; process start to first 200 (cold pull + compile): {starts['host_start_s']:.2f} s",
        f"- {int(held['instances'])} instances of hello held in one process: RSS {held['rss_total_mib']:.0f} MiB total, "
        f"+{held['rss_delta_mib']:.0f} MiB for the instances ({held['per_instance_kib']:.1f} KiB each), "
        f"started in {held['start_all_s']:.1f} s, {held['vm_delta_gib']:.0f} GiB of address space (goal < 512 MiB)",
        f"- the same with `--memory-reservation 64Mi`: RSS +{small['rss_delta_mib']:.0f} MiB, "
        f"{small['vm_delta_gib']:.0f} GiB of address space",
    ]
    text = "\n".join(lines)
    print(text)
    if args.append:
        existing = args.append.read_text() if args.append.exists() else "# Benchmark results\n"
        if "## Host" not in existing:
            existing = existing.rstrip() + "\n\n## Host\n"
        head, _, tail = existing.partition("## Host\n")
        # keep other sections where they are: insert right under the heading
        args.append.write_text(head + "## Host\n\n" + text + "\n" + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
