"""Out-of-band changes through the host-local admin API and `driftless host exec`: they last until
the next desired generation arrives, which makes the instance set exactly the desired one again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.host.conftest import Host, Registry, instance, start_host, write_desired
from tests.support.components import variant
from tests.support.procs import wait_until


def _exec(host: Host, *args: str, token_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftless", "host", "exec", "--admin", host.admin,
         "--token-file", str(token_file or host.admin_token_file), *args],
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
        # `run` returns once the instance runs: it serves at once
        assert "started dev/demo/extra/oob-1 (Running)" in r.stdout
        assert host.get("/extra").text == "oob from /extra"
        extra = host.instances()["dev/demo/extra/oob-1"]
        assert extra["status"] == "Running" and extra["managed"] is False

        # an image the registry does not have: `run` says it did not start, with the host's reason
        missing = images["hello"].split("@")[0] + "@sha256:" + "0" * 64
        r = _exec(host, "run", missing, "--env", "dev", "--app", "demo", "--component", "ghost")
        assert r.returncode == 1
        assert "did not start (Failed)" in r.stderr and "Traceback" not in r.stderr
        _exec(host, "stop", "dev/demo/ghost/oob-2")

        r = _exec(host, "set-config", "dev/demo/web/0", "GREETING=changed")
        assert r.returncode == 0, r.stderr
        wait_until(lambda: host.get("/web").text == "changed from /web", timeout=10, what="config changed")
        assert host.instances()["dev/demo/web/0"]["config"] == {"GREETING": "changed"}

        r = _exec(host, "ls")
        assert r.returncode == 0
        assert "dev/demo/extra/oob-1" in r.stdout and "(unmanaged)" in r.stdout
        listed = json.loads(_exec(host, "--json", "ls").stdout)
        assert listed["observedGeneration"] == 1
        # every action prints text by default and JSON with -o json
        text = _exec(host, "status").stdout
        assert text.startswith("host ") and "generation    1" in text and "{" not in text, text
        assert json.loads(_exec(host, "-o", "json", "status").stdout)["observedGeneration"] == 1
        assert json.loads(_exec(host, "-o", "json", "ls").stdout)["observedGeneration"] == 1
        stopped = _exec(host, "-o", "json", "stop", "dev/demo/extra/oob-1")
        assert stopped.returncode == 0 and isinstance(json.loads(stopped.stdout), dict), stopped.stdout

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
        wrong = tmp_path / "wrong-token"
        wrong.write_text("wrong\n")
        r = _exec(host, "ls", token_file=wrong)
        assert r.returncode == 1
        assert "401" in r.stderr and "admin token" in r.stderr and "Traceback" not in r.stderr
        auth = {"Authorization": f"Bearer {host.admin_token}"}
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


def test_exec_finds_the_admin_token_of_a_local_driftless_up(tmp_path: Path) -> None:
    with start_host(tmp_path) as host:
        token_file = tmp_path / "token"
        token_file.write_text(host.token + "\n")
        data = tmp_path / "up-data"
        data.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLESS_")}
        env["DRIFTLESS_DATA"] = str(data)

        def status(up: dict[str, object]) -> subprocess.CompletedProcess[str]:
            (data / "up.json").write_text(json.dumps(up))
            return subprocess.run(
                [sys.executable, "-m", "driftless", "host", "exec", "--admin", host.admin, "status"],
                capture_output=True, text=True, timeout=30, env=env,
            )  # fmt: skip

        # the join token of up.json is no admin credential
        r = status({"tokenFile": str(token_file)})
        assert r.returncode == 1 and "401" in r.stderr, r.stderr
        r = status({"tokenFile": str(token_file),
                    "hosts": [{"name": "h1", "admin": host.admin, "adminTokenFile": str(host.admin_token_file)}]})
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("host          h1 "), r.stdout  # text by default


def test_the_join_token_changes_nothing_on_the_admin_api(tmp_path: Path, images: dict[str, str]) -> None:
    """The admin API has its own credential (DATA/admin-token, 0600, made by the host): the join token
    (and no token) get 401 on every endpoint, and the host runs exactly what it ran."""
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(images["hello"], component="web", route="/web")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running")
        assert host.admin_token_file.stat().st_mode & 0o777 == 0o600
        assert host.admin_token and host.admin_token != host.token
        before = host.instances()
        spec = {"env": "dev", "app": "demo", "component": "evil", "image": images["hello"],
                "digest": images["hello"].rpartition("@")[2], "route": "/evil"}
        for headers in ({"Authorization": f"Bearer {host.token}"}, {}):
            attempts = [
                httpx.get(host.admin + "/api/v1/instances", headers=headers),
                httpx.get(host.admin + "/api/v1/status", headers=headers),
                httpx.post(host.admin + "/api/v1/instances", headers=headers, json=spec),
                httpx.delete(host.admin + "/api/v1/instances", headers=headers, params={"id": "dev/demo/web/0"}),
                httpx.patch(host.admin + "/api/v1/instances", headers=headers, params={"id": "dev/demo/web/0"},
                            json={"config": {"GREETING": "pwned"}}),
            ]
            assert [r.status_code for r in attempts] == [401] * 5, [r.text for r in attempts]
            assert "admin token" in attempts[0].json()["error"]
        assert host.instances() == before
        assert host.get("/web").status_code == 200 and host.get("/evil").status_code == 404
    # an admin token file others may read is refused at start, with the fix
    loose = tmp_path / "loose-token"
    loose.write_text("x" * 32)
    loose.chmod(0o644)
    r = subprocess.run([sys.executable, "-m", "driftless", "host", "--name", "h2", "--listen", "127.0.0.1:0",
                        "--admin-listen", "127.0.0.1:0", "--admin-token-file", str(loose), "--data",
                        str(tmp_path / "h2")], capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode != 0 and "readable by group or others" in r.stderr and f"chmod 600 {loose}" in r.stderr


def _patch(host: Host, instance_id: str, body: object) -> httpx.Response:
    return httpx.patch(host.admin + "/api/v1/instances", params={"id": instance_id}, json=body,
                       headers={"Authorization": f"Bearer {host.admin_token}"}, timeout=10)  # fmt: skip


def test_set_image_replaces_rolling_and_lasts_until_the_next_generation(
    tmp_path: Path, registry: Registry, images: dict[str, str]
) -> None:
    from shared.registry_client import push_component

    hotfix = push_component(f"{registry.host}/demo/slow:hotfix", variant("slow", "hotfix"))
    declared = instance(images["slow"], component="web", route="/web", config={"WORK": "4000"})
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [declared])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running")
        in_flight: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: in_flight.append(httpx.get(host.url + "/web", timeout=60)))
        caller.start()
        wait_until(lambda: host.admin_get("/api/v1/status")["inflight"] == 1, timeout=10, what="call in flight")

        # a tag is resolved to its digest through the registry, then the instance is replaced rolling
        r = _exec(host, "set-image", "dev/demo/web/0", f"{registry.host}/demo/slow:hotfix")
        assert r.returncode == 0, r.stderr
        assert f"resolved {registry.host}/demo/slow:hotfix to {hotfix}" in r.stdout
        assert f"replacing dev/demo/web/0 with {registry.host}/demo/slow@{hotfix}" in r.stdout
        status = wait_until(
            lambda: (i := host.instances()["dev/demo/web/0"])["digest"] == hotfix and i["status"] == "Running" and i,
            timeout=15, what="the hotfix digest running",
        )  # fmt: skip
        assert status["managed"] is True and status["config"] == {"WORK": "4000"}  # only the image changed
        caller.join(60)
        assert (in_flight[0].status_code, in_flight[0].text) == (200, "done")  # the old version finished its call
        assert host.get("/web", params={"x": "1"}).text == "done"

        # image and config in one replacement, from another repository, through the API
        resp = _patch(host, "dev/demo/web/0", {"image": images["hello"], "digest": images["hello"].rpartition("@")[2],
                                               "config": {"GREETING": "patched"}})  # fmt: skip
        assert resp.status_code == 200, resp.text
        assert resp.json()["instance"]["image"] == images["hello"]
        wait_until(lambda: host.get("/web").text == "patched from /web", timeout=15, what="hello patched in")

        # nothing reverts it between generations; the next generation brings the declared spec back
        assert host.instances()["dev/demo/web/0"]["digest"] == images["hello"].rpartition("@")[2]
        write_desired(desired, 2, [declared])
        wait_until(
            lambda: (i := host.instances()["dev/demo/web/0"])["digest"] == declared["digest"]
            and i["status"] == "Running" and i["config"] == {"WORK": "4000"},
            timeout=15, what="the declared digest back",
        )  # fmt: skip


def test_set_image_refuses_unclear_input_and_keeps_what_runs(
    tmp_path: Path, registry: Registry, images: dict[str, str]
) -> None:
    hello, digest = images["hello"], images["hello"].rpartition("@")[2]
    repo = hello.rpartition("@")[0]  # 127.0.0.1:PORT/demo/hello
    other = "sha256:" + "0" * 64
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(hello, component="web", route="/web")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running")
        refused = {
            "not pinned": {"image": f"{repo}:1.0.0"},
            "does not match the digest of image": {"image": hello, "digest": other},
            "must be fully qualified": {"image": f"demo/hello@{digest}"},
            "digest needs the image": {"digest": digest},
            "unknown field(s) replicas": {"image": hello, "replicas": 2},
            'body must give "config", "image"': {},
            "image: repository": {"image": f"127.0.0.1:5000/Demo/Hello@{digest}"},
            "config must be": {"config": {"WORK": 4}},
        }
        for expected, body in refused.items():
            resp = _patch(host, "dev/demo/web/0", body)
            assert resp.status_code == 400, (body, resp.text)
            assert expected in resp.json()["error"], (body, resp.json())
        resp = _patch(host, "dev/demo/nope/0", {"image": hello})
        assert (resp.status_code, resp.json()["error"]) == (404, "no instance dev/demo/nope/0 on this host")

        r = _exec(host, "set-image", "dev/demo/web/0", f"{repo}:no-such-tag")
        assert r.returncode == 1 and "has no demo/hello:no-such-tag" in r.stderr, r.stderr
        r = _exec(host, "set-image", "dev/demo/web/0", "demo/hello:1.0.0")
        assert r.returncode == 2 and "must be fully qualified" in r.stderr
        r = _exec(host, "set-image", "dev/demo/nope/0", hello)
        assert r.returncode == 1 and "404" in r.stderr and "no instance dev/demo/nope/0" in r.stderr
        assert "Traceback" not in r.stderr
        status = host.instances()["dev/demo/web/0"]
        assert (status["digest"], status["status"]) == (digest, "Running")  # nothing changed

        # a well-formed digest the registry does not have: Failed, and the previous version keeps serving
        r = _exec(host, "set-image", "dev/demo/web/0", f"{repo}@{other}")
        assert r.returncode == 0, r.stderr
        failed = host.wait_status("dev/demo/web/0", "Failed")
        assert "not found" in failed["lastError"] and "still serving the previous version" in failed["lastError"]
        assert host.get("/web").text == "hello from /web"
        r = _exec(host, "--json", "set-image", "dev/demo/web/0", hello)
        assert r.returncode == 0, r.stderr
        answered = json.loads(r.stdout)["instance"]
        assert (answered["id"], answered["image"], answered["digest"]) == ("dev/demo/web/0", hello, digest)
        assert host.wait_status("dev/demo/web/0", "Running")["digest"] == digest
