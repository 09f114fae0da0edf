"""The native data plane (HAProxy, host/dataplane) with a real host: it comes back when killed, a
configuration HAProxy refuses is an event and the last good one keeps serving, and HAProxy's canary
side for a sticky client is the one the Python path computes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from host.traffic import client_bucket
from tests.host.conftest import Registry, instance, start_host, write_desired
from tests.host.test_standard import push
from tests.rollout.test_host_split import _pair, _split, variant_bytes
from tests.support.components import build, variant
from tests.support.procs import wait_until
from tests.support.standard import standard_component


def _plane(host: object) -> dict:  # type: ignore[type-arg]
    return host.admin_get("/api/v1/status")["dataPlane"]  # type: ignore[attr-defined,no-any-return]


def test_a_killed_data_plane_comes_back_and_routes_serve(tmp_path: Path, registry: Registry) -> None:
    image = push(registry, "http-hello-wat")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/hello")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=60)
        wait_until(lambda: host.get("/hello").status_code == 200, timeout=10, what="served")
        before = _plane(host)
        assert before["kind"] == "haproxy" and before["pid"]
        os.kill(before["pid"], signal.SIGKILL)  # the master; its worker follows it
        after = wait_until(lambda: (p := _plane(host))["pid"] not in (None, before["pid"]) and p, timeout=15,
                           what="HAProxy started again")
        assert after["restarts"] == 1
        assert any(e["reason"] == "DataPlaneExited" for e in after["events"]), after
        wait_until(lambda: host.get("/hello").status_code == 200, timeout=10, what="served again")
        assert "hello" in host.get("/hello").text.lower()


def test_a_worker_killed_alone_also_comes_back(tmp_path: Path, registry: Registry) -> None:
    image = push(registry, "http-hello-wat")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/hello")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=60)
        master = _plane(host)["pid"]
        workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(p) == master]
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: _serves(host.url + "/hello"), timeout=20, what="served again after the worker died")


def _ppid(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _serves(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_refused_configuration_is_an_event_and_the_last_good_routes_serve(tmp_path: Path, registry: Registry,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    real = shutil.which("haproxy")
    assert real, "apt-get install haproxy"
    refuse = tmp_path / "refuse-next-config"
    wrapper = tmp_path / "haproxy"  # HAProxy, except that it refuses every configuration while `refuse` exists
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ] && [ -e {refuse} ]; then echo "[ALERT] refused for the '
                       f'test" >&2; exit 1; fi\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("DRIFTLESS_HAPROXY", str(wrapper))
    hello = push(registry, "http-hello-wat")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(hello, component="web", route="/hello")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=60)
        reloads = wait_until(lambda: _plane(host)["reloads"], timeout=10, what="the route configured")
        refuse.touch()
        write_desired(desired, 2, [instance(hello, component="web", route="/hello"),
                                   instance(hello, component="other", route="/other")])
        host.wait_status("dev/demo/other/0", "Running", timeout=60)
        plane = wait_until(lambda: (p := _plane(host))["events"] and p, timeout=10, what="an event")
        refused = [e for e in plane["events"] if e["reason"] == "ConfigRefused"]
        assert refused and "refused for the test" in refused[-1]["message"], plane
        assert "keeping the last good one" in plane["lastError"]
        assert plane["reloads"] == reloads
        # the last good routes keep serving natively; the new route is served by the Python path meanwhile
        assert host.get("/hello").status_code == 200
        assert host.get("/other").status_code == 200
        refuse.unlink()
        write_desired(desired, 3, [instance(hello, component="other", route="/other")])
        wait_until(lambda: _plane(host)["reloads"] > reloads, timeout=20, what="the next configuration applied")
        wait_until(lambda: host.get("/hello").status_code == 404, timeout=10, what="the removed route gone")
        assert host.get("/other").status_code == 200


def test_native_and_python_paths_put_a_sticky_client_on_the_same_side(tmp_path: Path, registry: Registry) -> None:
    wasm = standard_component("http-hello-wat").read_bytes()
    served_stable = registry.push("http-hello-wat", wasm, tag="sticky-1")
    served_canary = registry.push("http-hello-wat", variant_bytes(wasm, "sticky-2"), tag="sticky-2")
    own_stable = registry.push("hello", build("hello"), tag="sticky-1")
    own_canary = registry.push("hello", variant("hello", "sticky-2"), tag="sticky-2")
    served = _pair(served_stable, served_canary, _split(served_stable, served_canary, 30))
    own = [dict(i, component="own", route="/own", id=i["id"].replace("/web/", "/own/"))
           for i in _pair(own_stable, own_canary, _split(own_stable, own_canary, 30))]
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [*served, *own])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        for i in ("dev/demo/web/0", "dev/demo/web/canary-0", "dev/demo/own/0", "dev/demo/own/canary-0"):
            host.wait_status(i, "Running", timeout=60)
        # served natively once the split is configured: HAProxy answers with wasmtime's headers, without the
        # Python ingress's Server header
        wait_until(lambda: "server" not in host.get("/web/x").headers, timeout=10, what="the split served natively")
        clients = [f"client-{n}" for n in range(60)]
        expected = {c: "canary" if client_bucket(c) < 3000 else "stable" for c in clients}
        assert set(expected.values()) == {"canary", "stable"}
        with httpx.Client(timeout=10) as client:
            answers = {c: client.get(f"{host.url}/web/x", headers={"x-driftless-client": c}) for c in clients}
            assert not any("server" in r.headers for r in answers.values())  # none through the Python path
            native = {c: r.headers["x-driftless-track"] for c, r in answers.items()}
            python = {c: client.get(f"{host.url}/own/x", headers={"cookie": f"driftless-client={c}"})
                      .headers["x-driftless-track"] for c in clients}
            cookie = {c: client.get(f"{host.url}/web/x", headers={"cookie": f"other=1; driftless-client={c}"})
                      .headers["x-driftless-track"] for c in clients[:20]}
        assert native == expected  # HAProxy's crc32 converter
        assert python == expected  # the Python ingress (in-process components)
        assert cookie == {c: expected[c] for c in clients[:20]}


def test_a_body_over_the_limit_is_refused_with_or_without_a_length(tmp_path: Path, registry: Registry) -> None:
    """HAProxy refuses a declared length over the limit itself; a streamed (chunked) body, which has no
    length to check up front, goes to the Python ingress, which counts it against the same limit."""
    image = push(registry, "http-hello-wat")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(image, component="web", route="/hello")])
    too_big = (16 << 20) + 1  # the host's default --max-body (16 MiB)
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=60)
        declared = httpx.post(host.url + "/hello", content=b"x" * too_big, timeout=30)
        assert declared.status_code == 413, declared.text

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(17):
                yield b"x" * (1 << 20)

        streamed = httpx.post(host.url + "/hello", content=chunks(), timeout=30)
        assert streamed.status_code == 413, (streamed.status_code, streamed.text[:200])
        assert host.get("/hello").status_code == 200  # and the route still serves
