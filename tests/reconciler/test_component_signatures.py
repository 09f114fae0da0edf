"""Only signed code runs where the operator's policy says (``driftless reconcile --signature-policy``),
against real processes: the registry over HTTP, the reconciler, two real hosts (one per environment)
and real key pairs. dev accepts the CI key; prod needs the CI key and the release key."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import signing
from shared.signature_store import sign_image
from tests.support.components import variant
from tests.support.platform import LocalPlatform, application, environment, local_platform
from tests.support.procs import wait_until

HOSTS = {"dev-1": {"env": "dev"}, "prod-1": {"env": "prod"}}
SIG_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"


def web(tag: str) -> dict[str, Any]:
    return {"name": "web", "image": f"demo/hello:{tag}", "expose": "/hello", "placement": {"spread": {"replicas": 1}}}


def tree(dev: str, prod: str) -> dict[str, str | None]:
    return {
        "dev/environment.yaml": environment("dev", prefix="/dev", selector={"env": "dev"}),
        "dev/apps/hello.yaml": application("hello", [web(dev)]),
        "prod/environment.yaml": environment("prod", prefix="/prod", selector={"env": "prod"}),
        "prod/apps/hello.yaml": application("hello", [web(prod)]),
    }


class World:
    """both: 1.0.0 signed by ci and release; ci-only: 2.0.0; unsigned: 3.0.0; copied: 4.0.0 carries a
    copy of 1.0.0's signatures (subject and tag rewritten to 4.0.0's digest, payload untouched)."""

    def __init__(self, root: Path) -> None:
        self.keys = {}
        for name, algorithm in (("ci", "ecdsa-p256"), ("release", "ed25519")):
            key = signing.generate(algorithm)
            signing.write_key_pair(key, private_path=root / f"{name}.key")
            self.keys[name] = key
        policy = root / "policy.yaml"
        policy.write_text("environments:\n  dev: {keys: [ci.pub], require: any}\n"
                          "  prod: {keys: [ci.pub, release.pub], require: all}\n")
        self.p: LocalPlatform = local_platform(root / "platform", hosts=HOSTS,
                                               reconciler_args=["--signature-policy", str(policy)])
        self.p.prepare()
        self.p.start_registry()
        reg = self.p.registry
        self.digest = {tag: reg.push(f"demo/hello:{tag}", variant("hello", f"sig-{tag}"))
                       for tag in ("1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0")}
        self.sign("1.0.0", "ci", "release")
        self.sign("2.0.0", "ci")
        self.copy_signatures("1.0.0", "4.0.0")
        self.first = self.p.seed(tree(dev="2.0.0", prod="1.0.0"))
        self.p.start_reconciler()
        self.p.start_hosts()
        self.git = self.p.git

    def sign(self, tag: str, *names: str) -> None:
        for name in names:
            sign_image(f"{self.p.registry_host}/demo/hello:{tag}", self.keys[name])

    def copy_signatures(self, source: str, target: str) -> None:
        url, a, b = self.p.registry_url, self.digest[source], self.digest[target]
        with httpx.Client(base_url=url, timeout=10) as http:
            accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
            size = len(http.get(f"/v2/demo/hello/manifests/{b}", headers=accept).content)
            for ref in http.get(f"/v2/demo/hello/referrers/{a}").json()["manifests"]:
                manifest = http.get(f"/v2/demo/hello/manifests/{ref['digest']}", headers=accept).json()
                manifest["subject"] = {**manifest["subject"], "digest": b, "size": size}
                body = json.dumps(manifest).encode()
                r = http.put(f"/v2/demo/hello/manifests/{signing.blob_digest(body)}", content=body,
                             headers={"Content-Type": manifest["mediaType"]})
                assert r.status_code == 201, r.text
            tagged = http.get(f"/v2/demo/hello/manifests/{signing.signature_tag(a)}", headers=accept)
            r = http.put(f"/v2/demo/hello/manifests/{signing.signature_tag(b)}", content=tagged.content,
                         headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            assert r.status_code == 201, r.text

    def serves(self, host: str, env: str) -> bool:
        try:
            return httpx.get(f"{self.p.ingress(host)}/{env}/hello", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def env(self, name: str) -> dict[str, Any]:
        return self.p.reconciler.get(f"/api/v1/environments/{name}")

    def rejected(self, revision: str) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            rej = self.env("prod")["rejected"]
            return rej["errors"] if rej and rej["revision"] == revision else None

        return wait_until(found, timeout=30, what=f"revision {revision[:12]} rejected")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("signatures"))
    try:
        wait_until(lambda: w.serves("dev-1", "dev") and w.serves("prod-1", "prod"), timeout=60, what="both serve")
        yield w
    finally:
        w.p.stop()


def test_signed_digests_run_and_status_shows_who_signed(world: World) -> None:
    w = world
    wait_until(lambda: w.serves("dev-1", "dev") and w.serves("prod-1", "prod"), timeout=60, what="both serve")
    apps = {e: w.p.reconciler.get(f"/api/v1/environments/{e}/apps")["apps"][0] for e in ("dev", "prod")}
    assert apps["prod"]["components"][0]["signedBy"] == ["ci", "release"]
    assert apps["dev"]["components"][0]["signedBy"] == ["ci"]
    # the host received the prod requirement with the desired state (public keys, never a private one)
    host = w.p.reconciler.host("prod-1")
    spec = next(i for i in host["desired"]["instances"] if i["env"] == "prod")
    assert spec["signature"]["require"] == "all" and [k["name"] for k in spec["signature"]["keys"]] == ["ci", "release"]
    assert "PRIVATE" not in json.dumps(host)
    out = subprocess.run(["driftless", "status", "--control", w.p.control_url], capture_output=True, text=True,
                         timeout=30, env={"NO_COLOR": "1", "PATH": __import__("os").environ["PATH"],
                                          "DRIFTLESS_TOKEN": w.p.admin_token()})
    assert out.returncode == 0, out.stderr
    assert "SIGNED BY" in out.stdout and "ci, release" in out.stdout, out.stdout


@pytest.mark.parametrize("tag,reason", [
    ("2.0.0", "release"),  # a dev-only key: runs in dev, rejected in prod
    ("3.0.0", "the digest has no signature at all"),  # unsigned
    ("4.0.0", "made for another digest"),  # a signature copied from another digest
])
def test_prod_refuses_digests_not_signed_as_it_requires(world: World, tag: str, reason: str) -> None:
    w = world
    revision = w.git.push({"prod/apps/hello.yaml": application("hello", [web(tag)])}, f"prod runs {tag}")
    errors = w.rejected(revision)
    assert errors and all(e["file"].startswith("manifests/prod/") or e["file"].startswith("prod/") for e in errors), errors
    text = errors[0]["text"]
    assert "hello.yaml:" in text and "environment prod" in text and w.digest[tag] in text, text
    assert "all of ci, release" in text and reason in text, text
    assert errors[0]["code"] == "unsigned-digest"
    # nothing changed in prod: the last good digest still serves
    assert w.env("prod")["revision"] != revision
    assert w.serves("prod-1", "prod")
    host = w.p.reconciler.host("prod-1")
    assert all(i["digest"] == w.digest["1.0.0"] for i in host["desired"]["instances"] if i["env"] == "prod")
    # back to the good state for the next test
    good = w.git.push({"prod/apps/hello.yaml": application("hello", [web("1.0.0")])}, "prod back to 1.0.0")
    wait_until(lambda: w.env("prod")["revision"] == good, timeout=30, what="good revision applied")


def test_a_revision_refused_for_signatures_applies_once_the_digest_is_signed(world: World) -> None:
    w = world
    revision = w.git.push({"prod/apps/hello.yaml": application("hello", [web("5.0.0")])}, "prod runs 5.0.0")
    assert "no signature at all" in w.rejected(revision)[0]["text"]
    w.sign("5.0.0", "ci")
    assert w.p.reconciler.post("/api/v1/sync").status_code == 202
    # one of two signatures is not enough for prod: still rejected, now for the release key alone
    still = wait_until(lambda: (e := w.rejected(revision)) and "ci (ecdsa" not in e[0]["text"] and e, timeout=30,
                       what="the rejection re-checked after the sync")
    assert "release (ed25519" in still[0]["text"] and w.env("prod")["revision"] != revision, still
    w.sign("5.0.0", "release")
    assert w.p.reconciler.post("/api/v1/sync").status_code == 202
    wait_until(lambda: w.env("prod")["revision"] == revision, timeout=30, what="applied once signed")
    wait_until(lambda: any(i["digest"] == w.digest["5.0.0"] and i["status"] == "Running" for i in
                           (w.p.reconciler.host("prod-1")["report"] or {}).get("instances") or []),
               timeout=30, what="prod-1 runs 5.0.0")
    good = w.git.push({"prod/apps/hello.yaml": application("hello", [web("1.0.0")])}, "prod back to 1.0.0")
    wait_until(lambda: w.env("prod")["revision"] == good, timeout=30, what="good revision applied")


def test_the_host_refuses_a_digest_whose_signature_was_removed_after_placement(world: World) -> None:
    w = world
    digest = w.digest["2.0.0"]  # dev runs it, signed by ci
    assert w.serves("dev-1", "dev")
    with httpx.Client(base_url=w.p.registry_url, timeout=10) as http:
        for ref in http.get(f"/v2/demo/hello/referrers/{digest}").json()["manifests"]:
            assert http.delete(f"/v2/demo/hello/manifests/{ref['digest']}").status_code == 202
        assert http.delete(f"/v2/demo/hello/manifests/{signing.signature_tag(digest)}").status_code == 202
    try:
        w.p.stop_process("host-dev-1")
        w.p.restart("host-dev-1")  # its compiled cache holds the digest: the check must not be skipped

        def refused() -> str | None:
            for inst in (w.p.reconciler.host("dev-1").get("report") or {}).get("instances") or []:
                if inst.get("env") == "dev" and inst.get("status") == "Failed" and "refusing" in (inst.get("lastError") or ""):
                    return str(inst["lastError"])
            return None

        error = wait_until(refused, timeout=60, what="dev-1 refuses the digest")
        assert digest in error and "ci (ecdsa-p256 sha256:" in error and "no signature at all" in error, error
        assert not w.serves("dev-1", "dev")
        # the reconciler's status says it too (the app is not healthy, the component names the refusal)
        app = wait_until(lambda: (a := w.p.reconciler.app("dev", "hello"))["components"][0]["errors"] and a,
                         timeout=30, what="the refusal in the app status")
        assert any("refusing" in e and digest in e for e in app["components"][0]["errors"]), app
        assert app["health"] != "Healthy"
    finally:
        w.sign("2.0.0", "ci")  # signed again: the host's retry checks again and runs it
    wait_until(lambda: w.serves("dev-1", "dev"), timeout=60, what="dev-1 runs it again once signed")


def test_the_requirement_travels_in_the_desired_state_and_old_documents_still_parse() -> None:
    from host.supervisor import fingerprint
    from shared.signatures import Requirement, trusted
    from wire.control import InstanceSpec, SignatureRequirement

    key = signing.generate("ed25519")
    requirement = Requirement(keys=(trusted("release", signing.public_pem(key.public_key())),), require="all")
    wire = SignatureRequirement.from_json(requirement.to_wire())
    old = {"id": "prod/a/web/0", "env": "prod", "app": "a", "component": "web",
           "image": "127.0.0.1:5000/demo/hello@sha256:" + "a" * 64, "digest": "sha256:" + "a" * 64}
    spec = InstanceSpec.from_json(old)  # a document from before signatures: no requirement
    assert spec.signature is None and "signature" not in spec.to_json()
    signed = InstanceSpec.from_json({**old, "signature": wire.to_json()})
    assert signed.signature == wire and InstanceSpec.from_json(signed.to_json()) == signed
    assert Requirement.from_wire(signed.to_json()["signature"]).keys[0].key_id == requirement.keys[0].key_id
    assert fingerprint(signed) != fingerprint(spec)  # a new requirement restarts the instance: checked again


def test_a_promotion_checks_the_targets_signature_policy(world: World) -> None:
    """dev runs 2.0.0, signed by the CI key alone: promoting it to prod (which needs CI and release)
    is refused by the ``signed`` gate, which names who signed and what prod wants."""
    w = world
    wait_until(lambda: w.serves("dev-1", "dev"), timeout=60, what="dev serves")
    r = w.p.reconciler.post("/api/v1/promote", {"app": "hello", "from": "dev", "to": "prod", "dryRun": True},
                            token=w.p.admin_token())
    body = r.json()
    gates = {g["name"]: g for g in body.get("gates") or []}
    assert "signed" in gates, body
    assert not gates["signed"]["passed"], gates["signed"]
    assert "prod requires signatures" in gates["signed"]["message"] and "release" in gates["signed"]["message"]
    assert w.digest["2.0.0"][:19] in json.dumps(body) or "release (ed25519" in gates["signed"]["message"], body
