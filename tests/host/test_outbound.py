"""Outbound HTTP of standard components on a real host, deny by default: a WAT wasi:http component
that makes one outbound call per request (examples/standard/http-call-wat) runs under
``wasmtime serve`` with the outbound policy composed in. Capture servers on loopback stand in for
the granted API and for an attacker's endpoint; the metadata address stands for the VM's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host.conftest import Registry, instance, start_host, write_desired
from tests.support.http_server import PathCapture as Capture
from tests.support.procs import wait_until
from tests.support.standard import standard_component

DENIED = "error 15\n"  # the component's report of error-code.HTTP-request-denied



@pytest.fixture
def api() -> Iterator[Capture]:
    server = Capture()
    yield server
    server.close()


@pytest.fixture
def attacker() -> Iterator[Capture]:
    server = Capture()
    yield server
    server.close()


def serve_commands(host_pid: int) -> list[list[bytes]]:
    """The command lines of the `wasmtime serve` processes started by the host process ``host_pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == host_pid and b"serve" in args:
            found.append(args)
    return found


def push(registry: Registry, name: str) -> str:
    return registry.push(name, standard_component(name).read_bytes())


def test_outbound_http_reaches_only_granted_hosts(tmp_path: Path, registry: Registry, api: Capture,
                                                  attacker: Capture) -> None:
    call = push(registry, "http-call-wat")
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [
        instance(call, component="granted", route="/granted", grants={"outboundHosts": [f"127.0.0.1:{api.port}"]}),
        instance(call, component="ungranted", route="/ungranted"),
    ])  # fmt: skip
    with start_host(tmp_path, "--desired", str(desired)) as host:
        status = host.wait_status("dev/demo/granted/0", "Running", timeout=60)
        host.wait_status("dev/demo/ungranted/0", "Running", timeout=60)
        assert not status.get("warnings")  # enforced, so nothing to warn about

        # the granted host answers
        assert host.get(f"/granted/http/127.0.0.1:{api.port}/orders?id=1").text == "status 200\n"
        assert api.paths == ["/orders?id=1"]
        # the same grant does not open another port, nor the same server under another name
        assert host.get(f"/granted/http/127.0.0.1:{attacker.port}/exfil").text == DENIED
        assert host.get(f"/granted/http/localhost:{api.port}/by-name").text == DENIED
        # nor the cloud metadata endpoint, in any spelling
        for target in ("169.254.169.254", "169.254.169.254:80", "2852039166", "[fd00:ec2::254]"):
            assert host.get(f"/granted/http/{target}/latest/meta-data/").text == DENIED, target

        # a component granted nothing reaches nothing, not even what another component may reach
        assert host.get(f"/ungranted/http/127.0.0.1:{api.port}/orders").text == DENIED
        assert host.get(f"/ungranted/http/127.0.0.1:{attacker.port}/exfil").text == DENIED
        assert host.get("/ungranted/http/169.254.169.254/latest/meta-data/").text == DENIED

        assert attacker.paths == []
        assert api.paths == ["/orders?id=1"]
        # the operator sees each refusal in the host's log, tagged with the instance
        line = f"[dev/demo/granted] outbound HTTP to 127.0.0.1:{attacker.port} refused: not in grants.outboundHosts"
        wait_until(lambda: line in host.proc.log(), timeout=10, what="the refusal in the host's log")
        assert "[dev/demo/ungranted] outbound HTTP to 169.254.169.254 refused" in host.proc.log()
        # sockets are a grant of their own, off here: no wasi:sockets way around the policy
        serving = serve_commands(host.proc.pid)
        assert len(serving) == 2
        for args in serving:
            for flag in (b"tcp=n", b"udp=n", b"allow-ip-name-lookup=n"):
                assert flag in args
            assert b"inherit-network=y" not in args


def test_a_declared_http_link_still_works_and_opens_nothing_else(tmp_path: Path, registry: Registry,
                                                                 attacker: Capture) -> None:
    call, hello = push(registry, "http-call-wat"), push(registry, "http-hello-wat")
    desired = tmp_path / "desired.json"
    link = [{"interface": "wasi:http/incoming-handler@0.2.0", "to": "api"}]
    write_desired(desired, 1, [
        instance(call, component="front", route="/front", links=link),
        instance(hello, component="api", config={"GREETING": "linked"}),
    ])  # fmt: skip
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/front/0", "Running", timeout=60)
        host.wait_status("dev/demo/api/0", "Running", timeout=60)
        ingress = host.url.removeprefix("http://")
        # the link opens this host's ingress to the component (the adapter lets the call out: the
        # ingress answers, here 403 as the path carries no link credential; the call with the
        # credential the host hands the instance is tests/host/test_side_doors.py's), and nothing beyond it
        r = host.get(f"/front/http/{ingress}/.driftless/links/dev/demo/api/ping")
        assert r.text == "status 403\n"
        assert host.get(f"/front/http/{ingress}/front/http/x").text != DENIED
        assert host.get(f"/front/http/127.0.0.1:{attacker.port}/exfil").text == DENIED
        assert host.get("/front/http/169.254.169.254/latest/meta-data/").text == DENIED
        assert attacker.paths == []


def test_a_grant_given_and_taken_back_is_followed(tmp_path: Path, registry: Registry, api: Capture) -> None:
    call = push(registry, "http-call-wat")
    desired = tmp_path / "desired.json"
    granted = {"outboundHosts": [f"127.0.0.1:{api.port}"]}
    write_desired(desired, 1, [instance(call, component="web", route="/web")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running", timeout=60)
        target = f"/web/http/127.0.0.1:{api.port}/x"
        assert host.get(target).text == DENIED
        # the rules are baked into the compiled component: each policy is compiled and cached on its own
        write_desired(desired, 2, [instance(call, component="web", route="/web", grants=granted)])
        wait_until(lambda: host.get(target).text == "status 200\n", timeout=30, what="the grant followed")
        write_desired(desired, 3, [instance(call, component="web", route="/web")])
        wait_until(lambda: host.get(target).text == DENIED, timeout=30, what="the grant taken back")
        assert api.paths and set(api.paths) == {"/x"}
        calls_while_granted = len(api.paths)
        assert host.get(target).text == DENIED
        assert len(api.paths) == calls_while_granted
