"""Standard components on a real host: wasi:http/proxy components (built from WAT with wasm-tools,
and by componentize-py and componentize-js) served through ``wasmtime serve`` behind the ingress,
with limits, config as environment, links, scale to zero, and crash recovery."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.host.conftest import Registry, instance, start_host, write_desired
from tests.support.procs import wait_until
from tests.support.standard import standard_component


def push(registry: Registry, name: str, *, tag: str = "1.0.0") -> str:
    return registry.push(name, standard_component(name).read_bytes(), tag=tag)


def test_a_wasi_http_component_serves_with_its_config_as_environment(tmp_path: Path, registry: Registry) -> None:
    image = push(registry, "http-hello-wat")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/hello", config={"GREETING": "bonjour"})])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        status = host.wait_status("dev/demo/web/0", "Running", timeout=60)
        assert status["runtime"] == "wasmtime-serve"
        r = host.get("/hello/there")
        assert r.status_code == 200
        assert "bonjour" in r.text
        # the value travels in the child's environment, never on a command line
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in os.listdir("/proc") if pid.isdigit()
                    and Path(f"/proc/{pid}/cmdline").exists()]
        serving = [c for c in cmdlines if b"wasmtime" in c and b"serve" in c]
        assert serving, "no wasmtime serve process found"
        assert not any(b"bonjour" in c for c in serving)
        assert any(b"GREETING" in c for c in serving)


def test_a_runaway_request_gets_a_reason_and_the_instance_lives_on(tmp_path: Path, registry: Registry) -> None:
    spin, hello = push(registry, "http-spin-wat"), push(registry, "http-hello-wat")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [
        instance(spin, component="spin", route="/spin", limits={"timeoutMs": 300}),
        instance(hello, component="hello", route="/hello"),
    ])  # fmt: skip
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/spin/0", "Running", timeout=60)
        host.wait_status("dev/demo/hello/0", "Running", timeout=60)
        started = time.monotonic()
        r = host.get("/spin")
        assert r.status_code == 503
        assert r.json()["reason"] == "deadline"
        assert "deadline of 300 ms" in r.json()["error"]
        assert time.monotonic() - started < 5
        assert host.get("/hello").status_code == 200  # the host lives on
        again = host.get("/spin")
        assert again.json()["reason"] == "deadline"  # and so does the instance
        status = host.wait_status("dev/demo/spin/0", "Running")
        assert status["restarts"] >= 2 and "deadline" in status["lastError"]


def test_memory_limit(tmp_path: Path, registry: Registry) -> None:
    hog = push(registry, "http-hog-wat")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(hog, component="hog", route="/hog", limits={"memoryBytes": 4 << 20})])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/hog/0", "Running", timeout=60)
        r = host.get("/hog")
        assert r.status_code == 503
        assert r.json()["reason"] == "memory", r.json()
        assert "memory capped at 4194304 bytes" in r.json()["error"]


def test_a_killed_process_is_restarted_with_backoff(tmp_path: Path, registry: Registry) -> None:
    image = push(registry, "http-hello-wat")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/hello")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=60)
        pids = [pid for pid in os.listdir("/proc") if pid.isdigit() and _is_serve_of(pid, host.data)]
        assert len(pids) == 1
        os.kill(int(pids[0]), 9)
        status = wait_until(lambda: (i := host.instances()["dev/demo/web/0"])["restarts"] >= 1 and i, timeout=10,
                            what="restart counted")
        assert "exited" in status["lastError"]
        wait_until(lambda: host.get("/hello").status_code == 200, timeout=15, what="served again")
        # by one process: the restart and the request that woke it must not both have started one (the
        # second ran on after the host stopped)
        time.sleep(0.5)
        assert len([pid for pid in os.listdir("/proc") if pid.isdigit() and _is_serve_of(pid, host.data)]) == 1


def test_scale_to_zero_starts_on_the_first_request_and_stops_when_idle(tmp_path: Path, registry: Registry) -> None:
    image = push(registry, "http-hello-wat")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/hello", idleAfterMs=1500)])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Idle", timeout=60)
        assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_serve_of(p, host.data)]
        started = time.monotonic()
        r = host.get("/hello")
        first = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert first < 2.0
        host.wait_status("dev/demo/web/0", "Running")
        host.wait_status("dev/demo/web/0", "Idle", timeout=10)  # after 1.5 s without requests
        assert host.get("/hello").status_code == 200  # and wakes again


def _is_serve_of(pid: str, data: Path) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"serve" in cmd and str(data).encode() in cmd


@pytest.mark.parametrize("name", ["py-hello", "js-hello"])
def test_components_built_by_standard_toolchains_serve(tmp_path: Path, registry: Registry, name: str) -> None:
    image = push(registry, name)
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/app", config={"GREETING": "hi there"})])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=120)
        r = httpx.get(host.url + "/app", timeout=30)  # the app routes on the path below its route
        assert r.status_code == 200, r.text
        assert r.text == f"hello from {name.split('-')[0].replace('py', 'python').replace('js', 'js')}: hi there"
        if name == "py-hello":  # it imports wasi:config/store: the same config, read from the environment
            got = httpx.get(host.url + "/app/config/GREETING", timeout=30)
            assert (got.status_code, got.text) == (200, "hi there")
            assert httpx.get(host.url + "/app/config/nothing", timeout=30).status_code == 404
            serving = [pid for pid in os.listdir("/proc") if pid.isdigit() and _is_serve_of(pid, host.data)]
            assert serving
            cmdline = Path(f"/proc/{serving[0]}/cmdline").read_bytes()
            assert b"hi there" not in cmdline and b"config-var" not in cmdline


def test_command_components_run_as_jobs_with_their_exit_status(tmp_path: Path, registry: Registry) -> None:
    ok, fail = push(registry, "cli-job-wat"), push(registry, "cli-fail-wat")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(ok, component="ok"), instance(fail, component="fail")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/ok/0", "Completed")
        failed = host.wait_status("dev/demo/fail/0", "Failed")
        assert failed["lastError"] == "dev/demo/fail job exited with code 1 (run returned an error)"
        assert host.get("/").status_code == 404  # jobs serve nothing; the host lives on


def test_a_wrong_wasmtime_cli_fails_its_instances_clearly_and_the_rest_serves(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.components import build

    fake = tmp_path / "wasmtime"
    fake.write_text("#!/bin/sh\necho 'wasmtime 12.0.0 (old)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("DRIFTLESS_WASMTIME", str(fake))  # the host process inherits it
    standard, own = push(registry, "http-hello-wat"), registry.push("hello", build("hello"))
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(standard, component="std", route="/std"),
                               instance(own, component="own", route="/own")])  # fmt: skip
    with start_host(tmp_path, "--desired", str(desired)) as host:
        failed = host.wait_status("dev/demo/std/0", "Failed", timeout=60)
        assert "is wasmtime 12.0.0; this host needs wasmtime 49.x" in failed["lastError"]
        host.wait_status("dev/demo/own/0", "Running")
        assert host.get("/own").status_code == 200
        time.sleep(2)  # no tight retry loop: still one failure, nothing restarted
        assert host.instances()["dev/demo/std/0"]["restarts"] == 0
        assert host.proc.log().count("this host needs wasmtime 49.x") <= 2
