"""The native data plane's configuration generator (host/dataplane/config.py): pure, so checked as text
here and by HAProxy itself (``haproxy -c``) on the text it would run."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from host.dataplane import config as cfg
from host.traffic import client_bucket


def _plane(tmp_path: Path, routes: tuple[cfg.Route, ...]) -> cfg.Plane:
    return cfg.Plane(listen=("127.0.0.1", 18080), python_port=18081, secret="s3cret", routes=routes,
                     max_body_bytes=1 << 20, server_timeout_ms=35_000, run_dir=str(tmp_path))


def _backend(name: str, route: str, *servers: cfg.Server, track: str | None = None) -> cfg.Backend:
    return cfg.Backend(name=name, route=route, servers=servers, track=track)


def _server(name: str, port: int = 40001, *, ready: bool = True) -> cfg.Server:
    return cfg.Server(name=name, port=port, ready=ready, max_conn=16)


def test_routes_longest_first_python_for_in_process_and_a_canary_split(tmp_path: Path) -> None:
    plane = _plane(tmp_path, (
        cfg.Route(prefix="/", stable=_backend("route2_stable", "/", _server("root-1"))),
        cfg.Route(prefix="/api", stable=_backend("route1_stable", "/api", _server("s-1"), track="stable"),
                  canary=_backend("route1_canary", "/api", _server("c-1", 40002), track="canary"), weight=30,
                  shadow_sample=0.05),
        cfg.Route(prefix="/api/in-process"),
    ))
    text = cfg.render(plane)
    lines = text.splitlines()
    # longest prefix first: /api/in-process, then /api, then /
    assert lines.index("  acl r0 path -m str /api/in-process") < lines.index("  acl r1 path -m str /api") \
        < lines.index("  acl r2 always_true")
    assert "  use_backend python if m0" in lines  # in-process: the Python ingress
    # the split: crc32 of the client id mod 10000 against weight x 100, track header and shadow to Python
    assert "  http-request set-var(txn.bucket) var(txn.cid),crc32,mod(10000) if { var(txn.cid) -m found }" in lines
    assert "  use_backend route1_canary if m1 { var(txn.bucket) -m int lt 3000 }" in lines
    assert "  use_backend python if m1 { req.hdr(x-driftless-track) -m found }" in lines
    assert f"  http-request set-header {cfg.SHADOW_HEADER} 1 if m1 {{ rand(10000) lt 500 }}" in lines
    assert lines.index("  use_backend python if m1 { req.hdr(x-driftless-track) -m found }") \
        < lines.index("  use_backend route1_canary if m1 { var(txn.bucket) -m int lt 3000 }") \
        < lines.index("  use_backend route1_stable if m1")
    # a served backend: no private header reaches the component, the route and the path below it do
    backend = text[text.index("\nbackend route1_stable"):text.index("\nbackend route1_canary")]
    assert "http-request del-header ^x-driftless- -m reg" in backend
    assert "set-header x-driftless-route /api" in backend and "pathq,bytes(4)" in backend
    assert "http-response set-header x-driftless-track stable" in backend
    assert "server s-1 127.0.0.1:40001 maxconn 16\n" in backend
    assert "server python 127.0.0.2:18081 backup" in backend  # wake-from-idle and errors: the Python path
    # the agent's secret goes to the Python ingress only, and a client's copy is dropped at the door
    assert f"  http-request del-header {cfg.INTERNAL_HEADER}" in lines
    assert text.count("s3cret") == 1 and "backend python\n  http-request set-header x-driftless-internal s3cret" in text


def test_idle_or_stopped_servers_are_in_maint_and_states_are_not_structure(tmp_path: Path) -> None:
    idle = _plane(tmp_path, (cfg.Route(prefix="/a", stable=_backend("route0_stable", "/a", _server("x-1", 0, ready=False))),))
    running = _plane(tmp_path, (cfg.Route(prefix="/a", stable=_backend("route0_stable", "/a", _server("x-1", 41000))),))
    assert "server x-1 127.0.0.1:1 maxconn 16 disabled" in cfg.render(idle)
    assert "server x-1 127.0.0.1:41000 maxconn 16\n" in cfg.render(running)
    # a port or a state changes through the runtime API, without a reload
    assert cfg.structure(idle) == cfg.structure(running)
    assert cfg.server_states(idle) == {("route0_stable", "x-1"): (0, False)}
    assert cfg.server_states(running) == {("route0_stable", "x-1"): (41000, True)}
    weighted = _plane(tmp_path, (cfg.Route(prefix="/a", stable=_backend("route0_stable", "/a", _server("x-1")),
                                           canary=_backend("route0_canary", "/a", _server("y-1")), weight=10),))
    assert cfg.structure(weighted) != cfg.structure(running)


def test_names_and_routes_the_config_cannot_carry() -> None:
    name = cfg.server_name("dev/demo/web/0")
    assert name.startswith("dev_demo_web_0-") and name != cfg.server_name("dev_demo/web/0")
    assert cfg.routable("/api/v1") and cfg.routable("/")
    assert not cfg.routable("/a b") and not cfg.routable("/a\"b") and not cfg.routable("/a//b")


def test_the_sticky_bucket_is_crc32_in_both_paths() -> None:
    for client in ("ada", "grace", "client-42", "ünïcode"):
        assert client_bucket(client) == zlib.crc32(client.encode()) % 10_000


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="HAProxy is not installed (apt-get install haproxy)")
def test_haproxy_accepts_the_generated_text(tmp_path: Path) -> None:
    plane = _plane(tmp_path, (
        cfg.Route(prefix="/api", stable=_backend("route0_stable", "/api", _server("s-1"), track="stable"),
                  canary=_backend("route0_canary", "/api", _server("c-1", 0, ready=False), track="canary"),
                  weight=5, shadow_sample=1.0),
        cfg.Route(prefix="/", stable=_backend("route1_stable", "/", _server("r-1"))),
    ))
    for name, text in {**cfg.error_files(plane), "trap.lua": cfg.lua_action(plane)}.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg.render(plane))
    done = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_the_proxy_leaves_the_cores_to_the_components(tmp_path: Path) -> None:
    assert [cfg.proxy_threads(n) for n in (1, 2, 4, 7, 16)] == [1, 1, 1, 1, 4]
    assert "  nbthread 1\n" in cfg.render(_plane(tmp_path, ()))
