"""Secrets (``driftless reconcile --secrets-file``) against real processes: the platform's reconciler and
one real ``driftless host`` (tests/support/platform.py).

A config value ``{secretRef: NAME}`` reaches the component (hello answers with its GREETING) while the
value appears nowhere else: every API response, the logs, ``state.db``, the host's admin API and the
command lines only ever show its fingerprint. Changing the value rolls out a new one; a reference to a
missing secret rejects the revision at its file:line and keeps the last good state.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from model.types import SecretRef
from reconciler.controller.secrets import SecretStore, read_secrets
from reconciler.planner.placement import HostInfo, plan
from shared.errors import UsageError
from tests.support.components import build
from tests.support.fingerprints import fingerprint, unkeyed
from tests.support.platform import LocalPlatform, application, environment, local_platform
from tests.support.procs import wait_until
from wire.control import HostDesiredState, InstanceSpec, InstanceStatus, secret_fingerprint

HOST = "aws-1"


def web(greeting: Any) -> dict[str, Any]:
    return {"name": "web", "image": "demo/hello:1.0.0", "config": {"GREETING": greeting, "MODE": "plain"},
            "expose": "/hello"}




def write_secrets(path: Path, values: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f'{k}: "{v}"\n' for k, v in values.items()))
    os.replace(tmp, path)


class World:
    def __init__(self, root: Path) -> None:
        self.secrets_file = root / "secrets.yaml"
        self.values = {"greeting": "s3cr3t-" + secrets.token_hex(8)}  # what the file holds now
        self.seen: list[str] = list(self.values.values())  # every value a secret had
        write_secrets(self.secrets_file, self.values)
        self.p: LocalPlatform = local_platform(root / "platform", hosts={HOST: {"cloud": "aws"}},
                                               reconciler_args=["--secrets-file", str(self.secrets_file)])
        self.p.up(tree={"prod/environment.yaml": environment("prod"),
                        "prod/apps/hello.yaml": application("hello", [web({"secretRef": "greeting"})])},
                  components={"demo/hello:1.0.0": build("hello")})  # fmt: skip

    def set_secrets(self, values: dict[str, str]) -> None:
        self.values = values
        self.seen.extend(v for v in values.values() if v not in self.seen)
        write_secrets(self.secrets_file, values)

    def fingerprint(self, name: str, value: str) -> str:
        return fingerprint(self.p.data / "reconciler" / "state.db", name, value)

    def greeting(self) -> str:
        r = httpx.get(f"{self.p.ingress(HOST)}/hello", timeout=5)
        return r.text if r.status_code == 200 else ""

    def api_texts(self) -> dict[str, str]:
        """Every read endpoint of the reconciler's API, as text."""
        paths = ["/api/v1/environments", "/api/v1/environments/prod", "/api/v1/environments/prod/apps",
                 "/api/v1/environments/prod/apps/hello", "/api/v1/hosts", f"/api/v1/hosts/{HOST}",
                 "/api/v1/drift", "/api/v1/events?limit=10000", "/api/v1/plan-inputs", "/api/v1/history",
                 "/metrics"]  # fmt: skip
        out = {}
        for path in paths:
            r = httpx.get(f"{self.p.control_url}{path}", headers=self.p.read_headers, timeout=10)
            assert r.status_code == 200, (path, r.text)
            out[path] = r.text
        return out

    def admin_instances(self) -> dict[str, Any]:
        r = httpx.get(f"{self.p.admin(HOST)}/api/v1/instances", timeout=5,
                      headers=self.p.host_admin_headers(HOST))
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def assert_nowhere_else(self) -> None:
        for path, text in self.api_texts().items():
            for value in self.seen:
                assert value not in text, f"{path} shows a secret value"
        admin = self.admin_instances()
        assert all(v not in str(admin) for v in self.seen)
        logs = self.p.data / "logs"
        for log in logs.iterdir():
            text = log.read_text(errors="replace")
            assert all(v not in text for v in self.seen), f"{log.name} logs a secret value"
        for f in (self.p.data / "reconciler").glob("state.db*"):
            raw = f.read_bytes()
            assert all(v.encode() not in raw for v in self.seen), f"{f.name} holds a secret value"
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        assert all(v not in ps for v in self.seen), "a command line carries a secret value"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("secrets"))
    try:
        wait_until(lambda: w.values["greeting"] in w.greeting(), timeout=60, what="hello answering with the secret")
        yield w
    finally:
        w.p.stop()


def test_a_secret_reaches_the_component_and_nowhere_else(world: World) -> None:
    w = world
    value = w.values["greeting"]
    wait_until(lambda: value in w.greeting(), timeout=30, what="hello answering with the secret")
    fp = w.fingerprint("greeting", value)
    assert fp != unkeyed("greeting", value)
    wait_until(lambda: w.p.reconciler.host(HOST)["desired"]["instances"][0]["config"]["GREETING"] == fp,
               timeout=20, what="the fingerprint published")
    host = w.p.reconciler.host(HOST)
    spec = host["desired"]["instances"][0]
    assert spec["config"] == {"GREETING": fp, "MODE": "plain"} and spec["secrets"] == ["GREETING"], spec
    wait_until(lambda: (w.p.reconciler.host(HOST)["report"] or {"instances": [{}]})["instances"][0].get("config")
               == {"GREETING": fp, "MODE": "plain"}, timeout=20, what="the host reporting the fingerprint")
    assert [i["config"] for i in w.admin_instances()["instances"]] == [{"GREETING": fp, "MODE": "plain"}]
    app = w.p.reconciler.app("prod", "hello")
    wait_until(lambda: w.p.reconciler.app("prod", "hello")["sync"] == "Synced", timeout=20, what="Synced")
    assert app["health"] in ("Healthy", "Progressing")
    wait_until(lambda: w.p.reconciler.get("/api/v1/drift")["counted"] == 0, timeout=20, what="no drift")
    w.assert_nowhere_else()
    # the host's desired-state file holds the value: only its owner may read it
    desired = w.p.data / "hosts" / HOST / "desired.json"
    assert desired.stat().st_mode & 0o077 == 0, oct(desired.stat().st_mode)


def test_a_changed_secret_rolls_out(world: World) -> None:
    w = world
    before = w.p.reconciler.host(HOST)["generation"]
    new = "r0tated-" + secrets.token_hex(8)
    w.set_secrets({**w.values, "greeting": new})
    assert w.p.reconciler.post("/api/v1/sync").status_code == 202
    wait_until(lambda: new in w.greeting(), timeout=60, what="the new value served")
    host = w.p.reconciler.host(HOST)
    assert host["generation"] > before
    assert host["desired"]["instances"][0]["config"]["GREETING"] == w.fingerprint("greeting", new)
    events = w.p.reconciler.get("/api/v1/events?limit=10000")["events"]
    assert any(e["reason"] == "SecretsReloaded" for e in events)
    wait_until(lambda: w.p.reconciler.app("prod", "hello")["sync"] == "Synced", timeout=20, what="Synced")
    w.assert_nowhere_else()


def test_a_missing_secret_rejects_the_revision_at_its_line(world: World) -> None:
    w = world
    serving = w.greeting()
    applied = w.p.reconciler.get("/api/v1/environments")["source"]["applied"]["revision"]
    revision = w.p.git.push({"prod/apps/hello.yaml": application("hello", [web({"secretRef": "nope"})])},
                            "a secret nobody added")

    def rejected() -> dict[str, Any] | None:
        found: dict[str, Any] | None = w.p.reconciler.get("/api/v1/environments")["source"]["rejected"]
        return found if found and found["revision"] == revision else None

    found = wait_until(rejected, timeout=30, what="the revision rejected")
    assert found is not None
    errors = found["errors"]
    assert [e["code"] for e in errors] == ["unknown-secret"], errors
    assert errors[0]["file"] == "prod/apps/hello.yaml" and errors[0]["line"] > 1, errors
    assert "'nope'" in errors[0]["text"] and "--secrets-file" in errors[0]["text"]
    assert errors[0]["text"].startswith(f"prod/apps/hello.yaml:{errors[0]['line']}:")
    # the last good state stays, and still serves
    assert w.p.reconciler.get("/api/v1/environments")["source"]["applied"]["revision"] == applied
    assert w.greeting() == serving
    # adding the secret applies the revision
    value = "added-" + secrets.token_hex(8)
    w.set_secrets({**w.values, "nope": value})
    wait_until(lambda: value in w.greeting(), timeout=60, what="the revision applied once the secret exists")
    w.assert_nowhere_else()
    # back to the baseline: the app references the secret "greeting" again
    w.p.git.push({"prod/apps/hello.yaml": application("hello", [web({"secretRef": "greeting"})])}, "baseline")
    wait_until(lambda: w.values["greeting"] in w.greeting(), timeout=60, what="the baseline served")


def test_a_secrets_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text("greeting: hi\n")
    path.chmod(0o644)
    with pytest.raises(UsageError, match="readable by group or others") as caught:
        read_secrets(path)
    assert caught.value.hint == f"chmod 600 {path}"
    token = tmp_path / "token"
    token.write_text("t" * 32)
    r = subprocess.run([sys.executable, "-m", "driftless", "reconcile", "--repo", str(tmp_path), "--data",
                        str(tmp_path / "data"), "--registry", "http://127.0.0.1:9", "--token-file", str(token),
                        "--secrets-file", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "readable by group or others" in r.stderr and "chmod 600" in r.stderr, r.stderr
    assert "hi" not in r.stderr.replace("hint", "")
    path.chmod(0o600)
    assert read_secrets(path) == {"greeting": "hi"}


def test_the_planner_puts_fingerprints_and_the_long_poll_answer_the_value(tmp_path: Path) -> None:
    from model.types import Application, Component, Environment, ManifestTree

    comp = Component(name="web", image="demo/hello@sha256:" + "a" * 64,
                     config={"GREETING": SecretRef(name="greeting"), "MODE": "plain"})
    tree = ManifestTree(environments={"prod": Environment(name="prod")},
                        applications={"prod": {"hello": Application(name="hello", env="prod", components=(comp,))}})
    key = b"k" * 32
    fp = secret_fingerprint("greeting", "hi", key=key)
    assert fp.startswith("secret:greeting:hmac-sha256:") and fp != unkeyed("greeting", "hi")
    assert secret_fingerprint("greeting", "hi", key=b"x" * 32) != fp  # another key, another fingerprint
    result = plan(tree=tree, digests={}, hosts=[HostInfo(name="h")], previous={}, registry="r:5000",
                  secrets={"greeting": fp})
    (spec,) = result.desired["h"]
    assert spec.config == {"GREETING": fp, "MODE": "plain"} and spec.secrets == ("GREETING",)
    # without the secret the component is not placed (the controller rejects such a revision first)
    missing = plan(tree=tree, digests={}, hosts=[HostInfo(name="h")], previous={}, registry="r:5000")
    assert missing.desired["h"] == () and "greeting" in missing.unplaced[0].reason
    path = tmp_path / "s.yaml"
    write_secrets(path, {"greeting": "hi"})
    store = SecretStore(path, fingerprint_key=key)
    doc = store.reveal(HostDesiredState(host="h", generation=1, instances=(spec,)))
    (shown,) = doc.instances
    assert shown.config == {"GREETING": "hi", "MODE": "plain"} and shown.fingerprints == {"GREETING": fp}
    back = InstanceSpec.from_json(shown.to_json())
    # the host reports the fingerprint it was given: it has no key to compute one
    assert back == shown and back.reported_config() == {"GREETING": fp, "MODE": "plain"}
    # a value that came without its fingerprint is reported as unknown: never itself, never a hash of it
    changed = InstanceSpec.from_json({**shown.to_json(), "config": {"GREETING": "other", "MODE": "plain"},
                                      "secretFingerprints": None})
    assert changed.reported_config()["GREETING"] == "secret:GREETING:hmac-sha256:unknown"
    status = InstanceStatus(id=spec.id, env="prod", app="hello", component="web", digest=spec.digest,
                            status="Running", config=changed.reported_config())
    assert "other" not in str(status.to_json())
