"""The machine-wide compile cache and tiered compilation, on real hosts with real components:
two hosts sharing one --compile-cache compile a new component once; a served component swaps from
its fast (Winch) build to its optimised (Cranelift) build without losing a request; a component
Winch refuses serves from Cranelift with a warning naming it; a corrupt cached build is compiled
again; an idle instance compiles at placement; eviction never removes a build in use."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from host.cache import CompiledCache
from host.wasmtime_cli import EngineFlags, WasmtimeCli
from tests.host.conftest import Host, Registry, instance, start_host, write_desired
from tests.support.procs import wait_until
from tests.support.standard import standard_component, wat_variant

# a function Winch does not compile (relaxed SIMD), Cranelift does
WINCH_REFUSES = ("(func $relaxed (result v128) (f32x4.relaxed_madd (v128.const i32x4 0 0 0 0) "
                 "(v128.const i32x4 0 0 0 0) (v128.const i32x4 0 0 0 0)))")


def compiled_by_tier(host: Host) -> dict[str, int]:
    """How many compiles this host ran, per compiler (from its compile cache counters)."""
    engines = host.admin_get("/api/v1/status")["compileCache"]["engines"]
    out = {"winch": 0, "cranelift": 0}
    for key, counters in engines.items():
        if key.startswith("wasmtime-cli"):
            out["winch" if "compiler=winch" in key else "cranelift"] += counters["compiled"]
    return out


def log_text(host: Host) -> str:
    return host.proc.log_path.read_text(errors="replace")


def serve_argvs() -> list[list[str]]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[1] == "serve" and "--no-logging-prefix" in argv:
            out.append(argv)
    return out


class Load:
    """A bounded loop of GETs on loopback in a thread, every status kept."""

    def __init__(self, url: str, *, max_requests: int = 20_000) -> None:
        self.url, self.max_requests = url, max_requests
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set() and len(self.statuses) < self.max_requests:
                try:
                    r = client.get(self.url)
                    self.statuses.append(r.status_code)
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.statuses.append(0)
                    self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def blocked_on(lock_file: Path) -> int:
    """How many flock requests wait for ``lock_file`` (/proc/locks lists waiters with '->')."""
    inode = lock_file.stat().st_ino
    return sum(1 for line in Path("/proc/locks").read_text().splitlines()
               if "->" in line and line.split()[-3].rsplit(":", 1)[-1] == str(inode))


def test_two_hosts_on_one_machine_compile_a_new_component_once(tmp_path: Path, registry: Registry) -> None:
    image = registry.push("shared-once", standard_component("http-hello-wat").read_bytes())
    digest = image.rpartition("@")[2]
    shared = tmp_path / "compiled"
    fast = CompiledCache(root=shared, engine_key=WasmtimeCli.locate().engine_key(EngineFlags(compiler="winch")),
                         max_bytes=1 << 30)
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    for name, path in zip(("a", "b"), files, strict=True):
        write_desired(path, 0, [], host=name)
    args = ("--compile-cache", str(shared), "--fast-tier-above", "0")
    with start_host(tmp_path, "--desired", str(files[0]), *args, name="a") as a, \
            start_host(tmp_path, "--desired", str(files[1]), *args, name="b") as b:
        # both get the new component while a third party holds its compile lock: both queue on it
        with fast.key_lock(digest):
            for name, path in zip(("a", "b"), files, strict=True):
                write_desired(path, 1, [instance(image, component="web", route="/hello")], host=name)
            wait_until(lambda: blocked_on(fast.lock_path(digest)) == 2, timeout=60, what="both hosts waiting")
        for host in (a, b):
            host.wait_status("dev/demo/web/0", "Running", timeout=60)
            assert host.get("/hello").status_code == 200
        # each host runs its own process, both from the one shared optimised file (the Winch ones drained)
        running = wait_until(lambda: len(found := [argv for argv in serve_argvs() if argv[-1].startswith(str(shared))
                                                   and "compiler=winch" not in argv]) == 2 and found,
                             timeout=60, what="two processes on the optimised build")
        assert len({argv[-1] for argv in running}) == 1, running
        counts = [compiled_by_tier(a), compiled_by_tier(b)]
        # one compile per tier on the machine, whichever host ran it; the other waited for it or found it
        assert sum(c["winch"] for c in counts) == 1, counts
        assert sum(c["cranelift"] for c in counts) == 1, counts
        compile_lines = [line for host in (a, b) for line in log_text(host).splitlines()
                         if f"compiled dev/demo/web: {digest}" in line]
        assert len(compile_lines) == 2, compile_lines
        assert "was compiled by another host" in log_text(a) + log_text(b)
        for host in (a, b):
            assert host.get("/hello").status_code == 200


def test_a_swap_from_the_fast_build_to_the_optimised_build_loses_no_request(
    tmp_path: Path, registry: Registry
) -> None:
    image = registry.push("swap-under-load", standard_component("http-hello-wat").read_bytes())
    digest = image.rpartition("@")[2]
    shared = tmp_path / "compiled"
    cli = WasmtimeCli.locate()
    optimised = CompiledCache(root=shared, engine_key=cli.engine_key(EngineFlags()), max_bytes=1 << 30)
    desired = tmp_path / "desired.json"
    write_desired(desired, 0, [])
    with start_host(tmp_path, "--desired", str(desired), "--compile-cache", str(shared),
                    "--fast-tier-above", "0") as host:
        # another "host" holds the optimised build's compile lock: this host serves from Winch meanwhile
        with optimised.key_lock(digest):
            write_desired(desired, 1, [instance(image, component="web", route="/hello")])
            host.wait_status("dev/demo/web/0", "Running", timeout=60)
            assert any("compiler=winch" in argv for argv in serve_argvs() if argv[-1].startswith(str(shared)))
            load = Load(host.url + "/hello").__enter__()
            wait_until(lambda: len(load.statuses) >= 50, timeout=30, what="requests served by the Winch build")
        try:
            wait_until(lambda: "swapped to the optimised (cranelift) build" in log_text(host), timeout=60,
                       what="the swap")
            served_at_swap = len(load.statuses)
            wait_until(lambda: len(load.statuses) >= served_at_swap + 50, timeout=30, what="requests after the swap")
            # the Winch process drained and stopped; the one left runs the optimised build
            wait_until(lambda: not any("compiler=winch" in a for a in serve_argvs() if a[-1].startswith(str(shared))),
                       timeout=30, what="the Winch process gone")
        finally:
            load.__exit__()
        assert load.failures == [], load.failures[:5]
        assert len(load.statuses) > 100 and set(load.statuses) == {200}
        assert host.instances()["dev/demo/web/0"]["status"] == "Running"


def test_a_component_winch_refuses_serves_from_cranelift_with_a_warning_and_the_old_one_serves_meanwhile(
    tmp_path: Path, registry: Registry
) -> None:
    good = registry.push("refused", standard_component("http-hello-wat").read_bytes(), tag="1")
    refused = registry.push("refused", wat_variant("http-hello-wat", WINCH_REFUSES, work=tmp_path / "wat"), tag="2")
    digest = refused.rpartition("@")[2]
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(good, component="web", route="/hello")])
    with start_host(tmp_path, "--desired", str(desired), "--fast-tier-above", "0") as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=60)
        with Load(host.url + "/hello") as load:
            wait_until(lambda: len(load.statuses) >= 20, timeout=30, what="requests to the good version")
            write_desired(desired, 2, [instance(refused, component="web", route="/hello")])
            status: dict[str, Any] = wait_until(
                lambda: (i := host.instances()["dev/demo/web/0"])["digest"] == digest and i["warnings"] and i,
                timeout=60, what="the new version with its warning")
            seen = len(load.statuses)
            wait_until(lambda: len(load.statuses) >= seen + 20, timeout=30, what="requests to the new version")
        assert load.failures == [], load.failures[:5]
        assert status["status"] == "Running"
        warning = status["warnings"][0]
        assert "dev/demo/web" in warning and digest in warning and "(winch)" in warning
        assert "relaxed SIMD support is not enabled" in warning
        # the old version: Winch, then Cranelift; the new one: Cranelift only (Winch refused it)
        assert compiled_by_tier(host) == {"winch": 1, "cranelift": 2}


def test_an_idle_instance_compiles_both_tiers_at_placement_and_its_first_request_compiles_nothing(
    tmp_path: Path, registry: Registry
) -> None:
    image = registry.push("idle-tiers", standard_component("http-hello-wat").read_bytes())
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/hello", idleAfterMs=60_000)])
    with start_host(tmp_path, "--desired", str(desired), "--fast-tier-above", "0") as host:
        host.wait_status("dev/demo/web/0", "Idle", timeout=60)
        wait_until(lambda: "swapped to the optimised (cranelift) build" in log_text(host), timeout=60,
                   what="the optimised build swapped in while idle")
        assert compiled_by_tier(host) == {"winch": 1, "cranelift": 1}
        assert not [a for a in serve_argvs() if a[-1].startswith(str(host.data))]  # still no process
        assert host.get("/hello").status_code == 200  # the wake only starts a process
        assert compiled_by_tier(host) == {"winch": 1, "cranelift": 1}
        running = [a for a in serve_argvs() if a[-1].startswith(str(host.data))]
        assert len(running) == 1 and "compiler=winch" not in running[0]


def test_a_corrupt_cached_build_is_compiled_again(tmp_path: Path, registry: Registry) -> None:
    image = registry.push("corrupt-cwasm", standard_component("http-hello-wat").read_bytes())
    digest = image.rpartition("@")[2]
    shared = tmp_path / "compiled"
    cache = CompiledCache(root=shared, engine_key=WasmtimeCli.locate().engine_key(EngineFlags()), max_bytes=1 << 30)
    cache.store(digest, b"\x7fELF truncated by a crash elsewhere")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/hello")])
    with start_host(tmp_path, "--desired", str(desired), "--compile-cache", str(shared),
                    "--fast-tier-above", "off") as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=60)
        assert host.get("/hello").status_code == 200
        assert "does not load" in log_text(host) and "compiling again" in log_text(host)
        assert compiled_by_tier(host) == {"winch": 0, "cranelift": 1}
        assert cache.path_for(digest).read_bytes()[:4] == b"\x7fELF" and cache.path_for(digest).stat().st_size > 1000


def test_eviction_keeps_builds_in_use_and_compiles_each_key_once_across_threads(tmp_path: Path) -> None:
    cache = CompiledCache(root=tmp_path, engine_key="test engine", max_bytes=150)
    compiles: list[str] = []

    def compile_as(key: str) -> Any:
        def compile_to(out: Path) -> None:
            compiles.append(key)
            time.sleep(0.05)  # long enough for the other threads to queue on the lock
            out.write_bytes(key[-1].encode() * 100)
        return compile_to

    a, b = (f"sha256:{ch * 64}" for ch in "ab")
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(cache.obtain(a, compile=compile_as(a))))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert compiles == [a] and sum(r.compiled for r in results) == 1 and sum(r.waited for r in results) == 3
    in_use = results[0]
    for r in results[1:]:
        r.close()
    with cache.obtain(b, compile=compile_as(b)):  # 200 > 150 bytes, but a is still open: nothing evicted
        assert cache.path_for(a).exists() and cache.path_for(b).exists()
    in_use.close()
    # what a host that died while compiling left: swept once older than any compile may take
    stale, fresh = cache.dir / "sha256-c.cwasm.tmp1.2", cache.dir / "sha256-d.cwasm.tmp3.4"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    cache.evict()  # now a (least recently used, unused) goes
    assert not cache.path_for(a).exists() and cache.path_for(b).exists()
    assert not stale.exists() and fresh.exists()
