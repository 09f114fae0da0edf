"""Secrets kept in Git, encrypted with age (``{age: CIPHERTEXT}``; ``driftless reconcile
--age-identity-file``), against real processes: the platform's reconciler and one real ``driftless
host`` (tests/support/platform.py), the values encrypted by the Debian ``age`` CLI and by ``driftless
secrets encrypt``.

Only the reconciler decrypts (pyrage). The value reaches the component (hello answers with its
GREETING) and appears nowhere else: every API response, event, log file, ``state.db``, the host's
admin API and the command lines only show its fingerprint. A value the reconciler cannot decrypt
rejects the revision at its file:line and keeps the last good state running.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from model.loader import load_tree
from reconciler.controller.secrets import SecretStore, decrypt_age, read_age_identities
from reconciler.planner.diff import diff_tree
from shared.errors import UsageError
from tests.support.components import build
from tests.support.fingerprints import fingerprint, unkeyed
from tests.support.platform import LocalPlatform, environment, local_platform
from tests.support.procs import wait_until

HOST = "aws-1"


def keygen(path: Path) -> str:
    """A new age identity at ``path`` (age-keygen, 0600); its recipient."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()


def age_encrypt(value: str, recipient: str) -> str:
    """What a user does: ``printf %s VALUE | age -a -r RECIPIENT``."""
    return subprocess.run(["age", "-a", "-r", recipient], input=value.encode(), check=True,
                          capture_output=True).stdout.decode()


def app_yaml(ciphertext: str) -> str:
    """hello with GREETING kept encrypted, written as a user writes it: a YAML block scalar."""
    armored = "".join(f"              {line}\n" for line in ciphertext.strip().splitlines())
    return ("apiVersion: driftless.dev/v1alpha1\n"
            "kind: Application\n"
            "metadata:\n"
            "  name: hello\n"
            "spec:\n"
            "  components:\n"
            "    - name: web\n"
            "      image: demo/hello:1.0.0\n"
            "      expose: /hello\n"
            "      config:\n"
            "        MODE: plain\n"
            "        GREETING:\n"
            "          age: |\n"
            f"{armored}")


def age_fingerprint(state_db: Path, ciphertext: str, value: str) -> str:
    name = "age-" + hashlib.sha256(ciphertext.encode()).hexdigest()[:16]
    fp = fingerprint(state_db, name, value)
    assert fp != unkeyed(name, value)  # keyed: no offline guessing
    return fp


class World:
    def __init__(self, root: Path) -> None:
        self.identity = root / "reconciler-age.key"
        self.recipient = keygen(self.identity)
        self.value = "ag3-" + secrets.token_hex(8)
        self.seen = [self.value]  # every plaintext the tests used
        self.ciphertext = age_encrypt(self.value, self.recipient)
        self.p: LocalPlatform = local_platform(root / "platform", hosts={HOST: {"cloud": "aws"}},
                                               reconciler_args=["--age-identity-file", str(self.identity)])
        self.p.up(tree={"prod/environment.yaml": environment("prod"), "prod/apps/hello.yaml": app_yaml(self.ciphertext)},
                  components={"demo/hello:1.0.0": build("hello")})  # fmt: skip

    def greeting(self) -> str:
        r = httpx.get(f"{self.p.ingress(HOST)}/hello", timeout=5)
        return r.text if r.status_code == 200 else ""

    def assert_nowhere_else(self) -> None:
        paths = ["/api/v1/environments", "/api/v1/environments/prod", "/api/v1/environments/prod/apps",
                 "/api/v1/environments/prod/apps/hello", "/api/v1/hosts", f"/api/v1/hosts/{HOST}",
                 "/api/v1/drift", "/api/v1/events?limit=10000", "/api/v1/plan-inputs", "/api/v1/history",
                 "/metrics"]  # fmt: skip
        for path in paths:
            r = httpx.get(f"{self.p.control_url}{path}", headers=self.p.read_headers, timeout=10)
            assert r.status_code == 200, (path, r.text)
            assert all(v not in r.text for v in self.seen), f"{path} shows a secret value"
        r = httpx.get(f"{self.p.admin(HOST)}/api/v1/instances", headers=self.p.host_admin_headers(HOST), timeout=5)
        assert r.status_code == 200 and all(v not in r.text for v in self.seen), "the host's admin API shows it"
        for log in (self.p.data / "logs").iterdir():
            text = log.read_text(errors="replace")
            assert all(v not in text for v in self.seen), f"{log.name} logs a secret value"
        for f in (self.p.data / "reconciler").rglob("*"):
            if f.is_file():
                raw = f.read_bytes()
                assert all(v.encode() not in raw for v in self.seen), f"{f} holds a secret value"
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        assert all(v not in ps for v in self.seen), "a command line carries a secret value"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("age"))
    try:
        wait_until(lambda: w.value in w.greeting(), timeout=60, what="hello answering with the decrypted value")
        yield w
    finally:
        w.p.stop()


def test_an_age_value_from_git_reaches_the_component_and_nowhere_else(world: World) -> None:
    w = world
    fp = age_fingerprint(w.p.data / "reconciler" / "state.db", w.ciphertext, w.value)
    wait_until(lambda: w.p.reconciler.host(HOST)["desired"]["instances"][0]["config"]["GREETING"] == fp,
               timeout=20, what="the fingerprint published")
    spec = w.p.reconciler.host(HOST)["desired"]["instances"][0]
    assert spec["config"] == {"GREETING": fp, "MODE": "plain"} and spec["secrets"] == ["GREETING"], spec
    wait_until(lambda: (w.p.reconciler.host(HOST)["report"] or {"instances": [{}]})["instances"][0].get("config")
               == {"GREETING": fp, "MODE": "plain"}, timeout=20, what="the host reporting the fingerprint")
    wait_until(lambda: w.p.reconciler.app("prod", "hello")["sync"] == "Synced", timeout=20, what="Synced")
    wait_until(lambda: w.p.reconciler.get("/api/v1/drift")["counted"] == 0, timeout=20, what="no drift")
    w.assert_nowhere_else()
    # the reconciler printed its recipient (a public key) for users to encrypt to
    assert any(w.recipient in log.read_text() for log in (w.p.data / "logs").glob("reconciler*.log"))


def test_an_undecryptable_value_rejects_the_revision_at_its_line_and_a_new_one_rolls_out(world: World) -> None:
    w = world
    serving = w.greeting()
    applied = w.p.reconciler.get("/api/v1/environments")["source"]["applied"]["revision"]
    generation = w.p.reconciler.host(HOST)["generation"]
    stranger = keygen(w.p.data / "stranger.key")
    foreign = "f0reign-" + secrets.token_hex(8)
    w.seen.append(foreign)
    revision = w.p.git.push({"prod/apps/hello.yaml": app_yaml(age_encrypt(foreign, stranger))},
                            "GREETING encrypted to somebody else's key")

    def rejected() -> dict[str, Any] | None:
        found: dict[str, Any] | None = w.p.reconciler.get("/api/v1/environments")["source"]["rejected"]
        return found if found and found["revision"] == revision else None

    found = wait_until(rejected, timeout=30, what="the revision rejected")
    assert found is not None
    (error,) = found["errors"]
    assert error["code"] == "undecryptable-secret" and error["file"] == "prod/apps/hello.yaml", error
    assert error["line"] == 13 and error["text"].startswith("prod/apps/hello.yaml:13:"), error
    assert "cannot be decrypted" in error["text"] and w.recipient in error["text"]
    # the last good state stays, and still serves
    assert w.p.reconciler.get("/api/v1/environments")["source"]["applied"]["revision"] == applied
    assert w.p.reconciler.host(HOST)["generation"] == generation
    assert w.greeting() == serving
    # a new value encrypted with `driftless secrets encrypt` to the reconciler's key rolls out
    rotated = "r0tated-" + secrets.token_hex(8)
    w.seen.append(rotated)
    r = subprocess.run([sys.executable, "-m", "driftless", "secrets", "encrypt", "--recipient", w.recipient],
                       input=rotated + "\n", capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("age: |\n"), r.stderr
    ciphertext = "\n".join(line.strip() for line in r.stdout.splitlines()[1:]) + "\n"
    w.p.git.push({"prod/apps/hello.yaml": app_yaml(ciphertext)}, "GREETING rotated")
    wait_until(lambda: rotated in w.greeting(), timeout=60, what="the new value served")
    assert w.p.reconciler.host(HOST)["desired"]["instances"][0]["config"]["GREETING"] == \
        age_fingerprint(w.p.data / "reconciler" / "state.db", ciphertext, rotated)
    w.ciphertext, w.value = ciphertext, rotated  # what runs now (the tests may run in any order)
    wait_until(lambda: w.p.reconciler.app("prod", "hello")["sync"] == "Synced", timeout=20, what="Synced")
    w.assert_nowhere_else()


def test_a_restarted_reconciler_decrypts_again_and_changes_nothing(world: World) -> None:
    w = world
    wait_until(lambda: w.p.reconciler.app("prod", "hello")["sync"] == "Synced", timeout=30, what="Synced")
    before = w.p.reconciler.host(HOST)
    w.p.reconciler.stop()
    w.p.reconciler.start()
    wait_until(lambda: w.p.reconciler.host(HOST)["state"] == "Ready", timeout=30, what="the host back")
    wait_until(lambda: w.p.reconciler.app("prod", "hello")["sync"] == "Synced", timeout=30, what="Synced again")
    after = w.p.reconciler.host(HOST)
    assert after["generation"] == before["generation"], "a restart republished: the age value was not restored"
    assert after["desired"]["instances"][0]["config"] == before["desired"]["instances"][0]["config"]
    assert w.value in w.greeting()
    w.assert_nowhere_else()


def test_keys_and_refusals_without_processes(tmp_path: Path) -> None:
    # keygen writes a 0600 identity the reconciler reads, prints its public key, never overwrites it
    key = tmp_path / "id.key"
    r = subprocess.run([sys.executable, "-m", "driftless", "secrets", "keygen", "--out", str(key)],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("public key: age1"), r.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    recipient = r.stdout.split()[-1]
    assert subprocess.run(["age-keygen", "-y", str(key)], capture_output=True, text=True).stdout.strip() == recipient
    r = subprocess.run([sys.executable, "-m", "driftless", "secrets", "keygen", "--out", str(key)],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 2 and "never overwritten" in r.stderr
    # an identity file others may read is refused, with the fix
    key.chmod(0o640)
    with pytest.raises(UsageError, match="readable by group or others") as caught:
        read_age_identities(key)
    assert caught.value.hint == f"chmod 600 {key}"
    key.chmod(0o600)
    # a reconciler without an identity rejects an age value at its line, saying what is missing
    root = tmp_path / "tree"
    (root / "prod" / "apps").mkdir(parents=True)
    (root / "prod" / "environment.yaml").write_text(environment("prod"))
    (root / "prod" / "apps" / "hello.yaml").write_text(app_yaml(age_encrypt("x", recipient)))
    tree = load_tree(root)
    assert tree.ok, tree.problems
    (error,) = SecretStore(None).decrypt(tree)
    assert error["line"] == 13 and "--age-identity-file" in error["message"], error
    store = SecretStore(None, age_identity_file=key)
    assert store.decrypt(tree) == [] and store.age_recipients == [recipient]
    # `driftless diff` on a working copy: a value the reconciler has not decrypted yet is a change, not unplaced
    result = diff_tree(tree=tree, inputs={"hosts": [{"name": "h1", "labels": {}}], "published": {},
                                          "registry": "127.0.0.1:5000"},
                       resolve=lambda images: {i: "sha256:" + "1" * 64 for i in images})  # fmt: skip
    (change,) = result.changes
    assert change.action == "start" and change.id == "prod/hello/web/0" and result.unplaced == (), result
    # a damaged ciphertext fails the schema (not armored age) at its line
    (root / "prod" / "apps" / "hello.yaml").write_text(app_yaml("not age at all"))
    bad = load_tree(root)
    assert not bad.ok and any(p.line == 13 for p in bad.errors), bad.problems
    env = {k: v for k, v in os.environ.items() if k != "DRIFTLESS_AGE_RECIPIENT"}
    env["DRIFTLESS_DATA"] = str(tmp_path / "up")
    r = subprocess.run([sys.executable, "-m", "driftless", "secrets", "encrypt"], input="v", capture_output=True,
                       text=True, timeout=30, env=env)  # fmt: skip
    assert r.returncode == 2 and "--recipient" in r.stderr
    # with a local `driftless up`, encrypt finds the reconciler's public key in up.json
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "up.json").write_text(json.dumps({"ageRecipient": recipient}))
    r = subprocess.run([sys.executable, "-m", "driftless", "secrets", "encrypt", "--key", "TOKEN"], input="v\n",
                       capture_output=True, text=True, timeout=30, env=env)  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("TOKEN:\n  age: |\n    -----BEGIN AGE ENCRYPTED FILE-----")
    assert decrypt_age(yaml.safe_load(r.stdout)["TOKEN"]["age"], read_age_identities(key)) == "v"
