"""Rolling replacement and graceful drain with real processes: in-flight calls finish."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx

from tests.host.conftest import Registry, instance, start_host, write_desired
from tests.support.components import variant
from tests.support.procs import wait_until


def _call_in_background(url: str) -> tuple[threading.Thread, list[httpx.Response]]:
    out: list[httpx.Response] = []
    t = threading.Thread(target=lambda: out.append(httpx.get(url, timeout=60)))
    t.start()
    return t, out


def test_digest_change_serves_the_new_version_while_the_old_drains(
    tmp_path: Path, registry: Registry, images: dict[str, str]
) -> None:
    new_hello = registry.push("hello", variant("hello", "v2"), tag="2.0.0")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(images["slow"], component="web", route="/web", config={"WORK": "4000"})])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running")
        t, out = _call_in_background(host.url + "/web")
        wait_until(lambda: host.admin_get("/api/v1/status")["inflight"] == 1, timeout=10, what="call in flight")
        write_desired(desired, 2, [instance(new_hello, component="web", route="/web")])
        wait_until(lambda: host.get("/web").text == "hello from /web", timeout=15, what="new version serving")
        status = host.instances()["dev/demo/web/0"]
        assert status["digest"] == new_hello.rpartition("@")[2]
        assert status["status"] == "Running"
        t.join(60)
        assert (out[0].status_code, out[0].text) == (200, "done")  # the old version finished its call


def test_sigterm_drains_in_flight_calls(tmp_path: Path, images: dict[str, str]) -> None:
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(images["slow"], component="slow", route="/slow", config={"WORK": "4000"})])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/slow/0", "Running")
        t, out = _call_in_background(host.url + "/slow")
        wait_until(lambda: host.admin_get("/api/v1/status")["inflight"] == 1, timeout=10, what="call in flight")
        host.proc.signal(signal.SIGTERM)
        t.join(60)
        assert (out[0].status_code, out[0].text) == (200, "done")
        assert host.proc.proc is not None
        assert host.proc.proc.wait(20) == 0
        assert "draining in-flight calls" in host.proc.log()


def test_a_failed_replacement_keeps_the_previous_version_serving(
    tmp_path: Path, registry: Registry, images: dict[str, str]
) -> None:
    broken = registry.push("broken", b"this is not wasm at all")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(images["hello"], component="web", route="/web")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running")
        write_desired(desired, 2, [instance(broken, component="web", route="/web")])
        status = host.wait_status("dev/demo/web/0", "Failed")
        assert "not WebAssembly" in status["lastError"]
        assert "still serving the previous version" in status["lastError"]
        assert status["digest"] == broken.rpartition("@")[2]  # what it should run, not what it runs
        assert host.get("/web").text == "hello from /web"
