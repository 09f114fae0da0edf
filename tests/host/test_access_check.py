"""A host runs a digest from the machine's shared compile cache only if its registry lets this host pull
it (host/access_check.py), and an unreachable registry is forgiven only for what this host proved before."""

from __future__ import annotations

from pathlib import Path

from shared import registry_client as client
from tests.host.conftest import instance, start_host, write_desired
from tests.support.components import build
from tests.support.procs import DriftlessProcess, free_port, wait_until


def test_a_cached_build_runs_offline_only_on_the_host_that_pulled_it(tmp_path: Path) -> None:
    port = free_port()
    registry = DriftlessProcess(["registry", "serve", "--root", str(tmp_path / "reg"), "--listen", f"127.0.0.1:{port}"],
                                log_dir=tmp_path, name="registry", ready_url=f"http://127.0.0.1:{port}/v2/")
    shared_cache = tmp_path / "machine-cache"
    desired = tmp_path / "desired.json"
    with registry:
        digest = client.push_component(f"127.0.0.1:{port}/demo/hello:1.0.0", build("hello"))
        write_desired(desired, 1, [instance(f"127.0.0.1:{port}/demo/hello@{digest}", component="web", route="/web")])
        with start_host(tmp_path, "--desired", str(desired), "--compile-cache", str(shared_cache),
                        data=tmp_path / "puller") as host:
            host.wait_status("dev/demo/web/0", "Running")
    # the registry is gone: the host that pulled it restarts and serves; a newcomer sharing the machine's
    # compile cache (which holds the build) never proved its access and does not run it
    with start_host(tmp_path, "--desired", str(desired), "--compile-cache", str(shared_cache),
                    data=tmp_path / "puller") as host:
        host.wait_status("dev/demo/web/0", "Running")
        assert host.get("/web").status_code == 200
    with start_host(tmp_path, "--desired", str(desired), "--compile-cache", str(shared_cache),
                    data=tmp_path / "newcomer") as newcomer:
        waiting = wait_until(lambda: (i := newcomer.instances().get("dev/demo/web/0")) and i.get("lastError") and i,
                             timeout=30, what="the newcomer's instance says why it does not run")
        assert waiting["status"] in ("Backoff", "Failed") and "not reachable" in waiting["lastError"], waiting
