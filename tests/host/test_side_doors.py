"""No side doors in a real host's ingress: the link path serves only the links an application
declares, called with the URL its instance was given; metrics need a credential (on the admin
listener); ``x-driftless-track`` forces the canary only for a caller with the host's track token."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from tests.host.conftest import Registry, instance, start_host, write_desired
from tests.support.components import build, variant
from tests.support.procs import wait_until
from tests.support.standard import standard_component

HTTP_LINK = "wasi:http/incoming-handler@0.2.0"


def _link(to: str) -> dict[str, str]:
    return {"interface": HTTP_LINK, "to": to}


def _requests_of(metrics: str, component: str) -> float:
    """Requests the host counted for ``component`` (any env, app, digest): 0 when it was never called."""
    return sum(float(m[1]) for m in re.finditer(
        rf'driftless_host_requests_total{{[^}}]*component="{component}"[^}}]*}} (\S+)', metrics))


def test_the_link_path_serves_only_declared_links_of_local_instances(tmp_path: Path, registry: Registry) -> None:
    py = registry.push("py-hello", standard_component("py-hello").read_bytes())
    wat = registry.push("http-hello-wat", standard_component("http-hello-wat").read_bytes())
    desired = tmp_path / "desired.json"
    specs: list[dict[str, Any]] = [
        # demo: front links to api; api and vault have no route (no `expose`); nobody links to vault
        instance(py, component="front", route="/front", links=[_link("api")], config={"GREETING": "f"}),
        instance(wat, component="api", config={"GREETING": "demo api"}),
        instance(wat, component="vault", config={"GREETING": "the vault"}, idleAfterMs=60_000),
        # another app: its caller declares a link to its own api only
        instance(py, component="caller", app="other", route="/other", links=[_link("api")]),
        instance(wat, component="api", app="other", config={"GREETING": "other api"}),
    ]
    write_desired(desired, 1, specs)
    with start_host(tmp_path, "--desired", str(desired)) as host:
        for iid in ("dev/demo/front/0", "dev/demo/api/0", "dev/other/caller/0", "dev/other/api/0"):
            host.wait_status(iid, "Running", timeout=90)
        host.wait_status("dev/demo/vault/0", "Idle", timeout=60)

        # the instance's link URL: its own credential and the component, no env/app to rewrite
        api_url = host.get("/front/env", timeout=30).json()["API_URL"]
        m = re.fullmatch(rf"{re.escape(host.url)}/\.driftless/links/([A-Za-z0-9_-]{{32}})/api", api_url)
        assert m, api_url
        credential = m[1]
        assert credential not in host.proc.log(), "a link credential reached the host's log"
        assert credential not in httpx.get(host.admin + "/api/v1/instances", timeout=5,
                                           headers={"Authorization": f"Bearer {host.admin_token}"}).text

        # the declared link works: front -> its host's ingress -> api (which has no route)
        r = host.get("/front/call", params={"url": f"{api_url}/ping?x=1"}, timeout=30)
        assert (r.status_code, r.text) == (200, "via python: hello from wat: demo api path=/ping?x=1\n"), r.text

        # front's credential opens only front's links: not vault, though it runs on this host
        vault_url = api_url.removesuffix("/api") + "/vault"
        r = host.get("/front/call", params={"url": f"{vault_url}/"}, timeout=30)
        assert r.status_code == 502 and "declares no HTTP link from dev/demo/front/0 to vault" in r.text, r.text

        # another application's instance: its credential names its own app, never demo's
        other_url = host.get("/other/env", timeout=30).json()["API_URL"]
        assert other_url != api_url
        r = host.get("/other/call", params={"url": f"{other_url}/"}, timeout=30)
        assert r.text == "via python: hello from wat: other api path=/\n", r.text
        for tried in (other_url.removesuffix("/api") + "/front", other_url.removesuffix("/api") + "/vault",
                      f"{host.url}/.driftless/links/dev/demo/api/x"):
            r = host.get("/other/call", params={"url": tried}, timeout=30)
            assert r.status_code == 502 and "link refused" in r.text, (tried, r.text)

        # from outside: the old path, a made-up credential, a hop without the reconciler's token
        refused = [
            host.get("/.driftless/links/dev/demo/vault/"),
            host.get("/.driftless/links/dev/demo/api/x"),
            host.get("/.driftless/links/" + "A" * 32 + "/vault/"),
            host.get("/.driftless/links/dev/demo/vault/", headers={"x-driftless-link-hop": "1"}),
            host.get("/.driftless/links/dev/demo/vault/",
                     headers={"x-driftless-link-hop": "1", "x-driftless-link-token": "guess"}),
            httpx.post(f"{host.url}/.driftless/links/dev/demo/vault/x", content=b"hi", timeout=10),
        ]
        assert [r.status_code for r in refused] == [403] * len(refused), [r.text for r in refused]
        assert all(r.json()["reason"] == "link-refused" for r in refused)
        assert "A" * 32 not in refused[2].text  # what was tried as a credential is not echoed
        # ... and the vault was never called: still scaled to zero, no request counted
        assert host.instances()["dev/demo/vault/0"]["status"] == "Idle"
        metrics = host.metrics()
        assert _requests_of(metrics, "vault") == 0, metrics
        assert _requests_of(metrics, "api") == 2  # demo's api once, other's api once

        # a stopped instance's credential stops working with it
        write_desired(desired, 2, [s for s in specs if s["component"] != "front"])
        wait_until(lambda: "dev/demo/front/0" not in host.instances(), timeout=30, what="front gone")
        assert host.get(f"/.driftless/links/{credential}/api/ping").status_code == 403


def test_metrics_need_a_credential_on_the_admin_listener(tmp_path: Path, images: dict[str, str]) -> None:
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [instance(images["hello"], component="web", route="/web")])
    with start_host(tmp_path, "--desired", str(desired)) as host:
        host.wait_status("dev/demo/web/0", "Running")
        assert host.get("/web/x").status_code == 200
        # not on the ingress any more (a component at "/" would not see the path either)
        old = host.get("/.driftless/metrics")
        assert old.status_code == 404 and "admin listener" in old.json()["hint"]
        assert "driftless_host_requests_total" not in old.text
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {host.token}"}):
            r = httpx.get(host.admin + "/metrics", headers=headers, timeout=5)
            assert r.status_code == 401 and "metrics token" in r.json()["error"], r.text
            assert "driftless_host" not in r.text
        # the metrics token is read-only: it opens /metrics and nothing else
        assert httpx.get(host.admin + "/api/v1/instances", timeout=5,
                         headers={"Authorization": f"Bearer {host.metrics_token}"}).status_code == 401
        assert host.metrics_token != host.admin_token
        assert (host.data / "metrics-token").stat().st_mode & 0o077 == 0
        assert 'driftless_host_requests_total{app="demo",component="web"' in host.metrics()
        admin = httpx.get(host.admin + "/metrics", headers={"Authorization": f"Bearer {host.admin_token}"}, timeout=5)
        assert admin.status_code == 200 and "driftless_host_requests_total" in admin.text


def test_the_canary_is_forced_only_with_the_track_token(tmp_path: Path, registry: Registry) -> None:
    stable = registry.push("hello", build("hello"), tag="track-1")
    canary = registry.push("hello", variant("hello", "track-2"), tag="track-2")
    split = {"stable": stable.rpartition("@")[2], "canary": canary.rpartition("@")[2], "weight": 0}
    s = instance(stable, component="web", route="/web", traffic=split)
    c = instance(canary, component="web", route="/web", traffic=split)
    c["id"] = "dev/demo/web/canary-0"
    desired = tmp_path / "desired.json"
    write_desired(desired, 1, [s, c])
    token_file = tmp_path / "track-token"
    with start_host(tmp_path, "--desired", str(desired), "--track-token-file", str(token_file)) as host:
        host.wait_status("dev/demo/web/canary-0", "Running")
        token = token_file.read_text().strip()
        assert token and token_file.stat().st_mode & 0o077 == 0  # made by the host, 0600

        # weight 0: nobody lands on the canary unless a trusted caller forces it
        assert _sides(host.url, {}) == {"stable"}
        assert _sides(host.url, {"x-driftless-track": "canary"}) == {"stable"}
        assert _sides(host.url, {"x-driftless-track": "canary", "x-driftless-track-token": "guess"}) == {"stable"}
        assert _sides(host.url, {"x-driftless-track": "canary", "x-driftless-track-token": token}) == {"canary"}
        d = canary.rpartition("@")[2]
        assert f'component="web",digest="{d}",env="dev"}} 10.0' in host.metrics()
    # a host without --track-token-file never honours the header
    write_desired(desired, 2, [s, c], host="h2")
    with start_host(tmp_path, "--desired", str(desired), name="h2") as host:
        host.wait_status("dev/demo/web/canary-0", "Running")
        assert _sides(host.url, {"x-driftless-track": "canary", "x-driftless-track-token": token}) == {"stable"}


def _sides(url: str, headers: dict[str, str]) -> set[str]:
    """The sides that answered 10 requests (the answer's x-driftless-track)."""
    with httpx.Client(timeout=10) as client:
        return {client.get(f"{url}/web/{i}", headers=headers).headers["x-driftless-track"] for i in range(10)}
