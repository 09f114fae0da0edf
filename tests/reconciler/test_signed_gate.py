"""The promotion gate ``signed`` and the ``Signed-By`` trailers (reconciler/gitops/signed_gate.py),
against a real registry over HTTP with real keys: the target environment's requirement decides."""

from __future__ import annotations

from pathlib import Path

from reconciler.controller.signing_policy import SigningPolicy
from reconciler.gitops.signed_gate import check_signed, signer_trailers
from reconciler.gitops.trailers import promotion_message
from reconciler.gitops.working_copy import parse_trailers
from shared import signing
from shared.signature_store import sign_image
from tests.reconciler.platform import Registry
from tests.support.components import variant


def test_the_signed_gate_follows_the_target_environment_and_records_the_signers(tmp_path: Path) -> None:
    keys = {}
    for name, algorithm in (("ci", "ecdsa-p256"), ("release", "ed25519")):
        keys[name] = signing.generate(algorithm)
        signing.write_key_pair(keys[name], private_path=tmp_path / f"{name}.key")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("environments:\n  staging: {keys: [ci.pub]}\n  prod: {keys: [ci.pub, release.pub]}\n")
    registry = Registry(tmp_path / "registry", tmp_path).start()
    try:
        host = registry.url.split("//")[1]
        digest = registry.push("demo/web:1.0.0", variant("hello", "gate"))
        sign_image(f"{host}/demo/web:1.0.0", keys["ci"])
        policy = SigningPolicy(policy_file, registry_url=registry.url, timeout=5)
        images = {"web": "demo/web:1.0.0"}

        staging = check_signed(to_env="staging", digests={"web": digest}, images=images, policy=policy)
        assert staging.passed and staging.name == "signed", staging.message
        assert "web sha256:" in staging.message and "signed by ci" in staging.message
        prod = check_signed(to_env="prod", digests={"web": digest}, images=images, policy=policy)
        assert not prod.passed
        assert digest in prod.message and "release (ed25519" in prod.message and "missing" in prod.message

        sign_image(f"{host}/demo/web@{digest}", keys["release"])  # the release manager signs: prod may have it
        prod = check_signed(to_env="prod", digests={"web": digest}, images=images, policy=policy)
        assert prod.passed and "signed by ci, release (all of ci, release required)" in prod.message, prod.message
        trailers = signer_trailers(prod)
        # the promotion commit's message carries them in its trailer block
        message = promotion_message(app="web", from_env="staging", to_env="prod", revision="abc", changes=[],
                                    digests={"web": digest}, components=["web"], approver=None,
                                    healthy_since=None, now=0.0, trailers=trailers)
        assert parse_trailers(message)["Promoted-Digest"] == [f"web={digest}"]
        parsed = parse_trailers(message)["Signed-By"]
        ids = {n: signing.key_id(k.public_key()) for n, k in keys.items()}
        assert parsed == [f"web={digest} ci {ids['ci']} (ecdsa-p256)", f"web={digest} release {ids['release']} (ed25519)"]

        none = check_signed(to_env="prod", digests={"web": digest}, images=images,
                            policy=SigningPolicy(None, registry_url=registry.url, timeout=5))
        assert none.passed and "not checked" in none.message and signer_trailers(none) == []
    finally:
        registry.stop()
