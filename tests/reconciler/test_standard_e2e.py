"""Standard components deployed by ``git push`` on real hosts: a componentize-py frontend on one
host calls a WAT wasi:http API on another through an HTTP link; the API idles at zero (Idle, not
Degraded, and no drift) until the link wakes it; moving the API to the frontend's host is followed
without restarting the frontend; the frontend, granted no outbound hosts, reaches its link and
nothing else."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from tests.support.http_server import PathCapture as Capture
from tests.support.platform import environment, local_platform
from tests.support.procs import wait_until
from tests.support.standard import standard_component

LINK = "wasi:http/incoming-handler@0.2.0"


def shop(api_cloud: str) -> str:
    body: dict[str, Any] = {
        "apiVersion": "driftless.dev/v1alpha1", "kind": "Application", "metadata": {"name": "shop"},
        "spec": {
            "components": [
                {"name": "front", "image": "demo/py-front:1.0.0", "expose": "/shop", "config": {"GREETING": "hi"},
                 "placement": {"spread": {"replicas": 1, "requirements": [{"labels": {"cloud": "aws"}}]}}},
                {"name": "api", "image": "demo/wat-api:1.0.0", "config": {"GREETING": f"api on {api_cloud}"},
                 "placement": {"spread": {"replicas": 1, "requirements": [{"labels": {"cloud": api_cloud}}]}},
                 "scale": {"minReplicas": 0, "idleTimeout": "2s"}},
            ],
            "links": [{"from": "front", "to": "api", "interface": LINK}],
        },
    }  # fmt: skip
    return json.dumps(body, indent=2) + "\n"



def instances(p: Any, host: str) -> dict[str, dict[str, Any]]:
    report = p.reconciler.host(host).get("report") or {"instances": []}
    return {i["id"]: i for i in report["instances"]}


def test_http_link_across_hosts_scale_to_zero_and_a_moved_target(tmp_path: Path) -> None:
    p = local_platform(tmp_path, hosts={"aws-1": {"cloud": "aws"}, "gcp-1": {"cloud": "gcp"}})
    p.up(
        tree={"prod/environment.yaml": environment("prod"), "prod/apps/shop.yaml": shop("gcp")},
        components={"demo/py-front:1.0.0": standard_component("py-hello").read_bytes(),
                    "demo/wat-api:1.0.0": standard_component("http-hello-wat").read_bytes()},
    )  # fmt: skip
    try:
        aws, gcp = p.ingress("aws-1"), p.ingress("gcp-1")
        # the API idles at zero on gcp-1: the app is Healthy, not Degraded, and nothing drifts
        wait_until(lambda: instances(p, "gcp-1").get("prod/shop/api/0", {}).get("status") == "Idle", timeout=120,
                   what="api Idle on gcp-1")
        app = wait_until(lambda: (a := p.reconciler.app("prod", "shop"))["health"] == "Healthy" and a, timeout=120,
                         what="shop Healthy")
        assert app["sync"] == "Synced"
        components = {c["name"]: c for c in app["components"]}
        # outbound HTTP is enforced (front may reach its link, nothing else): nothing to warn about
        assert components["front"]["warnings"] == []
        assert components["api"]["warnings"] == []
        assert p.reconciler.get("/api/v1/drift?env=prod")["items"] == []

        assert httpx.get(f"{aws}/shop", timeout=30).text == "hello from python: hi"
        env = httpx.get(f"{aws}/shop/env", timeout=30).json()
        api_url = env["API_URL"]  # the link's stable URL on the caller's own host, with the instance's credential
        assert re.fullmatch(rf"{re.escape(aws)}/\.driftless/links/[A-Za-z0-9_-]{{32}}/api", api_url), api_url
        # the host-to-host link tokens stay out of what the reconciler stores and shows
        published = json.dumps([p.reconciler.host(h) for h in ("aws-1", "gcp-1")])
        assert '"token"' not in published and "linkToken" not in published
        front_before = instances(p, "aws-1")["prod/shop/front/0"]

        # front has no grants.outboundHosts: an address of its own choosing is refused inside its process
        attacker = Capture()
        try:
            r = httpx.get(f"{aws}/shop/call", params={"url": f"{attacker.url}/exfil"}, timeout=30)
            assert r.text == "via python: error: ErrorCode_HttpRequestDenied()\n"
            assert attacker.paths == []
        finally:
            attacker.close()

        # front (aws-1) -> its host's link proxy -> gcp-1's ingress -> api, started from zero by the call
        r = httpx.get(f"{aws}/shop/call", params={"url": f"{api_url}/ping"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.text == "via python: hello from wat: api on gcp path=/ping\n"
        wait_until(lambda: instances(p, "gcp-1")["prod/shop/api/0"]["status"] == "Running", timeout=10,
                   what="api Running after the call")
        wait_until(lambda: instances(p, "gcp-1")["prod/shop/api/0"]["status"] == "Idle", timeout=20,
                   what="api Idle again after 2s without requests")

        # move the API to aws-1: the caller follows the new endpoint without a restart
        p.git.push({"prod/apps/shop.yaml": shop("aws")}, "api moves to aws")
        wait_until(lambda: "prod/shop/api/0" not in instances(p, "gcp-1"), timeout=60, what="api gone from gcp-1")
        wait_until(lambda: "prod/shop/api/0" in instances(p, "aws-1"), timeout=60, what="api on aws-1")
        r = wait_until(
            lambda: (x := httpx.get(f"{aws}/shop/call", params={"url": f"{api_url}/again"}, timeout=60)).status_code
            == 200 and x, timeout=60, what="the call follows the moved api")
        assert r.text == "via python: hello from wat: api on aws path=/again\n"
        front_after = instances(p, "aws-1")["prod/shop/front/0"]
        assert front_after["startedAt"] == front_before["startedAt"]
        assert front_after["restarts"] == front_before["restarts"] == 0
        # a hop needs the reconciler's token for the link target: none from outside reaches a component
        for url in (aws, gcp):
            r = httpx.get(f"{url}/.driftless/links/prod/shop/api/x", timeout=10, headers={"x-driftless-link-hop": "1"})
            assert r.status_code == 403 and r.json()["reason"] == "link-refused", r.text
    finally:
        p.stop()
