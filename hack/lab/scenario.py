"""What the lab deploys: a "cloud" environment spread over the two cloud sites and an "edge"
environment on the edge site, both serving the example component hello (its GREETING answers)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.components import build, variant


def environment(name: str, selector: dict[str, str]) -> str:
    return json.dumps({"apiVersion": "driftless.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name},
                       "spec": {"hostSelector": {"matchLabels": selector}, "ingress": {"pathPrefix": f"/{name}"},
                                "sync": {"prune": True, "mode": "heal"}}}, indent=2) + "\n"  # fmt: skip


def application(name: str, *, image: str, greeting: str, extra: dict[str, Any] | None = None) -> str:
    # one instance on every host of the environment (a daemon): each site serves it, whatever order
    # the hosts registered in
    component = {"name": "web", "image": image, "config": {"GREETING": greeting}, "expose": f"/{name}",
                 "placement": {"daemon": {"perHost": 1}}}  # fmt: skip
    spec: dict[str, Any] = {"components": [component], **(extra or {})}
    return json.dumps({"apiVersion": "driftless.dev/v1alpha1", "kind": "Application", "metadata": {"name": name},
                       "spec": spec}, indent=2) + "\n"  # fmt: skip


CANARY_PAUSE = "15s"


def canary_app(image: str) -> str:
    """An edge app rolled out by canary: half the traffic on the new digest for CANARY_PAUSE, then all."""
    return application("shop", image=image, greeting="shop", extra={"rollout": {
        "strategy": "canary", "steps": [{"weight": 50, "pause": CANARY_PAUSE}, {"weight": 100}],
        "abortWhen": {"errorRate": "> 50%"}}})


def tree() -> dict[str, str]:
    return {
        "cloud/environment.yaml": environment("cloud", {"tier": "cloud"}),
        "cloud/apps/web.yaml": application("web", image="demo/hello:1.0.0", greeting="cloud v1"),
        "edge/environment.yaml": environment("edge", {"tier": "edge"}),
        "edge/apps/web.yaml": application("web", image="demo/hello:1.0.0", greeting="edge v1"),
        "edge/apps/shop.yaml": canary_app("demo/hello:1.0.0"),
    }


def components() -> dict[str, bytes]:
    return {"demo/hello:1.0.0": build("hello"), "demo/hello:2.0.0": variant("hello", "2.0.0")}
