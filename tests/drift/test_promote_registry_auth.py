"""Credentials per registry on the reconciler: with images on registries other than the platform's (capture
servers on loopback forwarding to the real registry), neither the hosts' pulls, the reconciler's tag
resolution, nor the compatibility review of a promotion dry run send the platform's credential there; a
registry given a credential in --registry-credentials receives that one, and no other registry does."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.drift.test_promote_review import math
from tests.support.platform import application, environment, local_platform
from tests.support.procs import wait_until
from tests.support.registry_proxy import RecordingProxy

PLATFORM_SECRET = "platform-s3cret"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_foreign_registries_get_only_their_own_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLESS_REGISTRY_USER", "platform-user")  # the reconciler's and the hosts'
    monkeypatch.setenv("DRIFTLESS_REGISTRY_PASSWORD", PLATFORM_SECRET)
    creds = tmp_path / "registries.yaml"
    p = local_platform(tmp_path / "p", hosts={"h1": {"cloud": "aws"}},
                       reconciler_args=("--registry-credentials", str(creds)))
    with RecordingProxy(upstream=p.registry_url) as evil, RecordingProxy(upstream=p.registry_url) as configured:
        creds.write_text(f'"{configured.host}": {{username: robot, password: robot-pw}}\n')
        creds.chmod(0o600)

        def env(name: str, promotion: str = "") -> str:
            return (environment(name, prefix=f"/{name}").rstrip(" ")
                    + f'          registries: ["{evil.host}", "{configured.host}"]\n' + promotion)

        def apps(env_name: str, tag: str) -> dict[str, str]:
            return {f"{env_name}/apps/{app}.yaml": application(app, [{"name": "math", "image": f"{where}/demo/math:{tag}"}])
                    for app, where in (("calc", evil.host), ("calc2", configured.host))}

        try:
            p.up(tree={"staging/environment.yaml": env("staging"), **apps("staging", "1.0.0"),
                       "prod/environment.yaml": env("prod", "          promotion:\n            from: staging\n"),
                       **apps("prod", "1.0.0")},
                 components={"demo/math:1.0.0": math(), "demo/math:1.1.0": math(imports=True)})  # fmt: skip
            newer = p.registry.digest("demo/math:1.1.0")

            def runs(env_name: str, app: str, digest: str | None = None) -> bool:
                a = p.reconciler.app(env_name, app)
                return a["health"] == "Healthy" and (digest is None or a["components"][0]["digest"] == digest)

            wait_until(lambda: all(runs(e, a) for e in ("staging", "prod") for a in ("calc", "calc2")), timeout=90,
                       what="calc and calc2 Healthy in staging and prod")
            p.git.push(apps("staging", "1.1.0"), "staging: math 1.1.0")
            wait_until(lambda: runs("staging", "calc", newer) and runs("staging", "calc2", newer), timeout=60,
                       what="staging runs 1.1.0")
            for app in ("calc", "calc2"):
                r = p.reconciler.post("/api/v1/promote", {"app": app, "from": "staging", "to": "prod", "dryRun": True})
                gates = {g["name"] for g in r.json()["gates"]}
                assert "compatible" in gates, r.json()  # the review asked the registry about both digests
            for proxy in (evil, configured):
                assert any(path.startswith("/v2/_driftless/components/") for path in proxy.paths())  # the review
                # a host's pull, or its access check when the machine's compile cache already has the digest
                assert any(f"/manifests/{newer}" in path for path in proxy.paths())
        finally:
            p.stop()
    assert evil.authorizations() == []  # nothing from the hosts, the tag resolution or the review
    assert set(configured.authorizations()) == {basic("robot", "robot-pw")}
