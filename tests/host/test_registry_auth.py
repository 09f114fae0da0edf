"""Pulls from the project's registry with basic auth (`driftless registry serve --htpasswd`):
credentials come from --registry-user and $DRIFTLESS_REGISTRY_PASSWORD; without them the instance
fails with an error that says what to set."""

from __future__ import annotations

import os
from pathlib import Path

import bcrypt

from shared import registry_client as client
from tests.host.conftest import instance, start_host, write_desired
from tests.support.components import build
from tests.support.procs import DriftlessProcess, free_port


def test_pull_with_and_without_credentials(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("puller:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode() + "\n")
    port = free_port()
    with DriftlessProcess(
        ["registry", "serve", "--root", str(tmp_path / "reg"), "--listen", f"127.0.0.1:{port}", "--htpasswd", str(htpasswd)],
        log_dir=tmp_path, name="registry", ready_url=f"http://127.0.0.1:{port}/v2/",
    ):  # fmt: skip
        ref = f"127.0.0.1:{port}/demo/hello:1.0.0"
        digest = client.push_component(ref, build("hello"), credentials=client.Credentials("puller", "s3cret"))
        image = f"127.0.0.1:{port}/demo/hello@{digest}"
        desired = tmp_path / "desired.json"
        write_desired(desired, 1, [instance(image, component="web", route="/hello")])

        with start_host(tmp_path, "--desired", str(desired), data=tmp_path / "anon") as host:
            status = host.wait_status("dev/demo/web/0", "Failed")
            assert "refused manifest (401)" in status["lastError"]
            assert "--registry-user" in status["lastError"] and "--registry-credentials" in status["lastError"]

        os.environ["DRIFTLESS_REGISTRY_PASSWORD"] = "s3cret"  # inherited by the host process
        try:
            with start_host(tmp_path, "--desired", str(desired), "--registry", f"http://127.0.0.1:{port}",
                            "--registry-user", "puller", data=tmp_path / "authed") as host:
                host.wait_status("dev/demo/web/0", "Running")
                assert host.get("/hello").text == "hello from /hello"
        finally:
            del os.environ["DRIFTLESS_REGISTRY_PASSWORD"]
