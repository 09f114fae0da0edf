"""Out-of-band changes through the host-local admin API and `driftless host exec`: they last until
the next desired generation arrives, which makes the instance set exactly the desired one again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.host.conftest import Host, instance, start_host, write_desired
from tests.support.procs import wait_until


def _exec(host: Host, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftless", "host", "exec", "--admin", host.admin, "--token", token or host.token, *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_out_of_band_changes_last_until_the_next_generation(tmp_path: Path, images: dict[str, str]) -> None:
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(images["hello"], component="web", route="/web")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running")

        r = _exec(host, "run", images["hello"], "--env", "dev", "--app", "demo", "--component", "extra",
                  "--route", "/extra", "--config", "GREETING=oob")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "started dev/demo/extra/oob-1" in r.stdout
        extra = host.wait_status("dev/demo/extra/oob-1", "Running")
        assert extra["managed"] is False
        assert host.get("/extra").text == "oob from /extra"

        r = _exec(host, "set-config", "dev/demo/web/0", "GREETING=changed")
        assert r.returncode == 0, r.stderr
        wait_until(lambda: host.get("/web").text == "changed from /web", timeout=10, what="config changed")
        assert host.instances()["dev/demo/web/0"]["config"] == {"GREETING": "changed"}

        r = _exec(host, "ls")
        assert r.returncode == 0
        assert "dev/demo/extra/oob-1" in r.stdout and "(unmanaged)" in r.stdout
        listed = json.loads(_exec(host, "--json", "ls").stdout)
        assert listed["observedGeneration"] == 1

        # nothing reverts them between generations...
        assert host.get("/web").text == "changed from /web"
        # ...until the next generation: exactly the desired set again
        write_desired(desired, 2, [instance(images["hello"], component="web", route="/web")])
        wait_until(lambda: set(host.instances()) == {"dev/demo/web/0"}, timeout=15, what="unmanaged removed")
        wait_until(lambda: host.get("/web").text == "hello from /web", timeout=15, what="config restored")
        assert host.get("/extra").status_code == 404

        r = _exec(host, "stop", "dev/demo/web/0")
        assert r.returncode == 0
        wait_until(lambda: host.get("/web").status_code == 404, timeout=10, what="stopped")


def test_admin_api_wants_the_token_and_clear_input(tmp_path: Path, images: dict[str, str]) -> None:
    with start_host(tmp_path) as host:
        r = _exec(host, "ls", token="wrong")
        assert r.returncode == 1
        assert "401" in r.stderr and "token" in r.stderr and "Traceback" not in r.stderr
        auth = {"Authorization": f"Bearer {host.token}"}
        r = httpx.post(host.admin + "/api/v1/instances", headers=auth, json={"image": images["hello"]})
        assert r.status_code == 400
        assert "digest" in r.json()["error"] and "env" in r.json()["error"]
        r = httpx.post(host.admin + "/api/v1/instances", headers=auth, content=b"{nope")
        assert (r.status_code, r.json()["error"]) == (400, "body is not JSON")
        r = httpx.delete(host.admin + "/api/v1/instances", headers=auth, params={"id": "no/such/thing/0"})
        assert r.status_code == 404
        r = _exec(host, "run", "demo/hello:1.0.0", "--env", "e", "--app", "a", "--component", "c")
        assert r.returncode == 2 and "pinned" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "driftless", "host", "exec", "--admin", "http://127.0.0.1:9", "ls"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 1 and "not reachable" in r.stderr


def test_exec_finds_the_token_of_a_local_driftless_up(tmp_path: Path) -> None:
    with start_host(tmp_path) as host:
        token_file = tmp_path / "token"
        token_file.write_text(host.token + "\n")
        data = tmp_path / "up-data"
        data.mkdir()
        (data / "up.json").write_text(json.dumps({"tokenFile": str(token_file)}))
        env = {k: v for k, v in os.environ.items() if k != "DRIFTLESS_TOKEN"}
        r = subprocess.run(
            [sys.executable, "-m", "driftless", "host", "exec", "--admin", host.admin, "status"],
            capture_output=True, text=True, timeout=30, env={**env, "DRIFTLESS_DATA": str(data)},
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["name"] == "h1"
