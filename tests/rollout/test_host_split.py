"""A real host splits a component's traffic between two digests by weight, sticky per client when
asked, mirrors a sample to the canary and compares, and counts per digest (report and the admin
listener's /metrics); for in-process components and for `wasmtime serve` processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.host.conftest import Registry, instance, start_host, write_desired
from tests.rollout.conftest import hello_variant
from tests.support.components import build, variant
from tests.support.standard import standard_component


def _split(stable: str, canary: str, weight: int, **shadow: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"stable": stable.rpartition("@")[2], "canary": canary.rpartition("@")[2], "weight": weight}
    if shadow:
        d["shadow"] = shadow
    return d


def _pair(stable: str, canary: str, traffic: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    s = instance(stable, component="web", route="/web", traffic=traffic, **extra)
    c = instance(canary, component="web", route="/web", traffic=traffic, **extra)
    c["id"] = "dev/demo/web/canary-0"
    return [s, c]


def _tracks(url: str, n: int, **kw: Any) -> list[str]:
    with httpx.Client(timeout=10) as client:
        return [client.get(f"{url}/web/{i}", **kw).headers.get("x-driftless-track", "") for i in range(n)]


def test_in_process_split_by_weight_sticky_and_counted(tmp_path: Path, registry: Registry) -> None:
    stable = registry.push("hello", build("hello"), tag="split-1")
    canary = registry.push("hello", variant("hello", "split-2"), tag="split-2")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, _pair(stable, canary, _split(stable, canary, 30)))
    with start_host(tmp_path, "--desired", str(desired), "--track-token-file", str(tmp_path / "track-token")) as host:
        host.wait_status("dev/demo/web/0", "Running")
        host.wait_status("dev/demo/web/canary-0", "Running")
        tracks = _tracks(host.url, 400)
        share = tracks.count("canary") / len(tracks)
        assert set(tracks) == {"stable", "canary"} and 0.2 < share < 0.4, share
        # sticky: one client id always lands on one side
        for client in ("ada", "grace", "linus", "barbara"):
            sides = set(_tracks(host.url, 20, headers={"x-driftless-client": client}))
            assert len(sides) == 1, (client, sides)
            assert set(_tracks(host.url, 5, headers={"cookie": f"driftless-client={client}"})) == sides
        # a forced side wins, from a trusted caller only (the host's --track-token-file token)
        token = (tmp_path / "track-token").read_text().strip()
        forced = {"x-driftless-track": "canary", "x-driftless-track-token": token}
        assert set(_tracks(host.url, 10, headers=forced)) == {"canary"}
        # without the token the header is ignored: the weight decides (30%: 40 canaries in a row ~ 1e-21)
        assert "stable" in _tracks(host.url, 40, headers={"x-driftless-track": "canary"})
        assert set(_tracks(host.url, 10, headers={"x-driftless-track": "stable", "x-driftless-track-token": token})) \
            == {"stable"}
        # the counters per digest: in the report document and in Prometheus
        metrics = host.metrics()
        for digest in (stable, canary):
            d = digest.rpartition("@")[2]
            assert f'driftless_host_requests_total{{app="demo",component="web",digest="{d}",env="dev"}}' in metrics
            # in-process: the fuel of every request is counted (the same component: the same mean fuel)
            assert f'driftless_host_fuel_per_request{{app="demo",component="web",digest="{d}",env="dev"}}' in metrics
        assert "driftless_host_request_duration_seconds_bucket" in metrics
        assert 'driftless_host_traffic_split_weight{app="demo",canary=' in metrics


def test_served_split_and_shadow_compare(tmp_path: Path, registry: Registry) -> None:
    wasm = standard_component("http-hello-wat").read_bytes()
    stable = registry.push("http-hello-wat", wasm, tag="split-1")
    canary = registry.push("http-hello-wat", variant_bytes(wasm, "split-2"), tag="split-2")
    desired = tmp_path / "desired.json"
    # weight 0 and every request mirrored: the canary answers only shadow copies
    write_desired(desired, 1, _pair(stable, canary, _split(stable, canary, 0, sample=1.0, compare="status")))
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=60)
        host.wait_status("dev/demo/web/canary-0", "Running", timeout=60)
        assert set(_tracks(host.url, 30)) == {"stable"}
        metrics = host.metrics()
        d = canary.rpartition("@")[2]
        line = f'driftless_host_shadow_requests_total{{app="demo",component="web",digest="{d}",env="dev",match="true"}}'
        assert line in metrics, metrics
        # `wasmtime serve` cannot tell the fuel a request consumed: counted as unmeasured, no mean
        assert f'driftless_host_fuel_measured_requests_total{{app="demo",component="web",digest="{d}",env="dev"}} 0.0' \
            in metrics and "driftless_host_fuel_per_request{" not in metrics, metrics


def test_shadow_body_compare_catches_a_changed_answer(tmp_path: Path, registry: Registry) -> None:
    stable = registry.push("hello", build("hello"), tag="body-1")
    canary = registry.push("hello", hello_variant("shouty"), tag="body-2")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, _pair(stable, canary, _split(stable, canary, 0, sample=1.0, compare="body")))
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/canary-0", "Running")
        for i in range(10):
            assert host.get(f"/web/{i}").text == f"hello from /web/{i}"
        d = canary.rpartition("@")[2]
        metrics = host.metrics()
        assert f'digest="{d}",env="dev",match="false"}} 10.0' in metrics, metrics


def variant_bytes(wasm: bytes, label: str) -> bytes:
    from tests.rollout.conftest import _custom_section

    return wasm + _custom_section(label)


def test_a_sticky_client_on_the_canary_stays_there_as_the_weight_grows() -> None:
    from host.traffic import Traffic
    from wire.control import InstanceSpec
    from wire.traffic import TrafficSplit

    def spec(digest: str, weight: int) -> InstanceSpec:
        return InstanceSpec(id=f"dev/demo/web/{digest}", env="dev", app="demo", component="web", image="r/x@" + digest,
                            digest=digest, traffic=TrafficSplit(stable="s", canary="c", weight=weight))

    def sides(weight: int) -> dict[str, str]:
        traffic = Traffic()
        specs = [spec("s", weight), spec("c", weight)]
        traffic.update(specs)

        class Inst:
            def __init__(self, s: InstanceSpec) -> None:
                self.spec = s

        instances = [Inst(s) for s in specs]
        return {client: traffic.choose(instances, headers={"x-driftless-client": client}, cookies={},
                                       pick=lambda found: found[0])[1] or ""
                for client in (f"client-{i}" for i in range(1000))}

    at10, at50 = sides(10), sides(50)
    on_canary = {c for c, side in at10.items() if side == "canary"}
    assert 50 < len(on_canary) < 150  # ~10% of the clients
    assert all(at50[c] == "canary" for c in on_canary)  # and none of them moves back
    assert 400 < sum(1 for side in at50.values() if side == "canary") < 600
