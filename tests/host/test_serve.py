"""A real `driftless host` (standalone, --desired file) pulls from a real registry and serves components."""

from __future__ import annotations

from pathlib import Path

from tests.host.conftest import instance, start_host, write_desired
from tests.support.procs import wait_until


def test_serves_hello_with_config_and_a_linked_frontend(tmp_path: Path, images: dict[str, str]) -> None:
    desired = tmp_path / "desired.json"
    write_desired(
        desired,
        1,
        [
            instance(images["hello"], component="web", route="/dev/hello", config={"GREETING": "hi"}),
            instance(images["greeter"], component="greeter"),
            instance(
                images["frontend"],
                component="frontend",
                route="/dev/front",
                links=[{"interface": "driftless:demo/greeter", "to": "greeter"}],
            ),
        ],
    )
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running")
        host.wait_status("dev/demo/frontend/0", "Running")
        r = host.get("/dev/hello/world")
        assert r.status_code == 200
        assert r.text == "hi from /dev/hello/world"
        assert r.headers["content-type"] == "text/plain"
        r = host.get("/dev/front/ada")
        assert (r.status_code, r.text) == (200, "Hello, ada!")
        r = host.get("/dev/front/ada?lang=fr")  # the query string is not part of the name
        assert (r.status_code, r.text) == (200, "Hello, ada!")
        r = host.get("/healthz")  # the ingress's own, whatever is exposed
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        # longest prefix wins; unknown paths get a JSON 404
        r = host.get("/nothing/here")
        assert r.status_code == 404
        assert r.json()["path"] == "/nothing/here"
        assert "error" in r.json()
        report = host.instances()
        web = report["dev/demo/web/0"]
        assert web["digest"] == images["hello"].rpartition("@")[2]
        assert web["config"] == {"GREETING": "hi"}
        assert web["route"] == "/dev/hello"
        assert web["managed"] is True
        assert web["restarts"] == 0
        assert host.admin_get("/api/v1/instances")["observedGeneration"] == 1


def test_a_link_to_a_component_that_is_not_running_answers_503(tmp_path: Path, images: dict[str, str]) -> None:
    desired = tmp_path / "desired.json"
    link = [{"interface": "driftless:demo/greeter", "to": "greeter"}]
    write_desired(desired, 1, [instance(images["frontend"], component="frontend", route="/f", links=link)])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/frontend/0", "Running")
        r = host.get("/f/ada")
        assert r.status_code == 503
        assert r.json()["reason"] == "link"
        assert "no running greeter instance" in r.json()["error"]
        # the greeter arrives with the next generation: the same frontend now answers
        write_desired(desired, 2, [instance(images["frontend"], component="frontend", route="/f", links=link),
                                   instance(images["greeter"], component="greeter")])  # fmt: skip
        wait_until(lambda: host.get("/f/ada").text == "Hello, ada!", timeout=15, what="link served")


def test_config_change_in_the_desired_file_replaces_the_instance(tmp_path: Path, images: dict[str, str]) -> None:
    desired = tmp_path / "desired.yaml"
    image = images["hello"]
    desired.write_text(  # YAML, with host and generation left to their defaults (--name, 1)
        "instances:\n"
        "  - id: dev/demo/web/0\n    env: dev\n    app: demo\n    component: web\n"
        f"    image: {image}\n    digest: {image.rpartition('@')[2]}\n    route: /h\n"
    )
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running")
        assert host.get("/h").text == "hello from /h"
        write_desired(desired, 2, [instance(images["hello"], component="web", route="/h", config={"GREETING": "hey"})])
        wait_until(lambda: host.get("/h").text == "hey from /h", timeout=15, what="new config served")
        assert host.admin_get("/api/v1/instances")["observedGeneration"] == 2
        # an invalid file is reported in the log and the last good state keeps serving
        desired.write_text("instances: [ {id: broken")
        wait_until(lambda: "not valid YAML" in host.proc.log(), timeout=10, what="error logged")
        assert host.get("/h").text == "hey from /h"
