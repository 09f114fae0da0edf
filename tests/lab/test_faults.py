"""Faults on the multi-site lab (hack/lab, docs/lab.md), one lab for the module, each fault on its
own site or link; figures go to hack/lab/RESULTS.md.

1. the edge site cut off from everything (its router link down) for LAB_CUT_SECONDS: it keeps serving
   its last desired state (same host process, same instance), shows Lost then Ready, and converges to
   a commit pushed meanwhile right after the heal;
2. a site that cannot reach the registry keeps running what it has; a new digest waits there with a
   clear condition and lands after the heal; the other cloud site is not held up;
3. the leader cut off from PostgreSQL (not from its hosts) steps down, the other leads, hosts follow,
   nothing restarts, no commit is made twice.
"""

from __future__ import annotations

import time
from typing import Any

from hack.lab import netns, scenario
from hack.lab.lab import HOSTS, PG, RECONCILERS, REGISTRIES, Lab, subnet
from hack.lab.probe import Probe
from hack.lab.results import Results
from tests.lab.conftest import CUT_SECONDS

EDGE = next(h for h in HOSTS if h.site == "edge")
CLOUD1 = next(h for h in HOSTS if h.site == "cloud1")
CLOUD2 = next(h for h in HOSTS if h.site == "cloud2")


def instances(lab: Lab, host: Any) -> dict[str, tuple[Any, ...]]:
    """What the host itself says it runs (its admin API, asked from inside its site)."""
    token = (lab.root / "hosts" / host.name / "admin-token").read_text().strip()
    r = lab.http(host.site, "GET", f"http://{host.address}:{host.admin_port}/api/v1/instances",
                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    r.raise_for_status()
    body = r.json()
    items = body["instances"] if isinstance(body, dict) else body
    return {i["id"]: (i.get("startedAt"), i.get("restarts"), i.get("digest")) for i in items}


def state(lab: Lab, name: str) -> str | None:
    try:
        return lab.host(name)["state"]  # type: ignore[no-any-return]
    except Exception:
        return None


def test_an_edge_site_cut_off_keeps_serving_and_converges_after_the_heal(lab: Lab, results: Results) -> None:
    url = f"{EDGE.ingress}/edge/web"
    lab.wait(lambda: lab.http("edge", "GET", url).text.startswith("edge v1"), what="the edge serves v1")
    lab.wait(lambda: state(lab, EDGE.name) == "Ready", what="edge-1 Ready")
    pid, before = lab.procs.running[f"host-{EDGE.name}"].pid, instances(lab, EDGE)
    probe = Probe("edge", url)
    time.sleep(1.0)
    try:
        cut_at = time.monotonic()
        lab.cut("edge")
        lab.wait(lambda: state(lab, EDGE.name) == "Lost", what="edge-1 Lost", timeout=20)
        detected = time.monotonic() - cut_at
        # a commit while the site is away: the edge must get it after the heal
        lab.commit({"edge/apps/web.yaml": scenario.application("web", image="demo/hello:1.0.0",
                                                               greeting="edge v2", replicas=1)}, "edge v2")
        time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))
        assert lab.procs.running[f"host-{EDGE.name}"].pid == pid and lab.procs.running[f"host-{EDGE.name}"].alive()
        assert instances(lab, EDGE) == before, "an instance restarted while the site was cut off"
        heal_at = time.monotonic()
        lab.heal("edge")
        lab.wait(lambda: state(lab, EDGE.name) == "Ready", what="edge-1 Ready again", timeout=30)
        ready = time.monotonic() - heal_at
        lab.wait(lambda: probe.first("edge v2", heal_at), what="the edge serves the commit made meanwhile",
                 timeout=30)
        converged = (probe.first("edge v2", heal_at) or 0) - heal_at
        time.sleep(0.5)
    finally:
        netns.heal_site("edge")
        samples = probe.stop()
    during = [s for s in samples if cut_at <= s.at <= heal_at]
    assert during and all(s.ok and s.body.startswith("edge v1") for s in during), \
        [s for s in during if not s.ok][:5]
    assert lab.procs.running[f"host-{EDGE.name}"].pid == pid, "the host process restarted"
    failed = len(probe.failed(cut_at))
    results.add(f"edge site cut off {CUT_SECONDS:.0f} s (router link down)", detect=f"Lost after {detected:.1f} s",
                recover=f"Ready {ready:.1f} s after the heal; commit made meanwhile served {converged:.1f} s after",
                failed=f"{failed} of {len([s for s in samples if s.at >= cut_at])}",
                notes="same host pid and instance (startedAt, restarts) through the cut")
    assert failed == 0
    assert converged <= ready + 2 * lab.heartbeat, f"converged {converged:.1f}s after the heal, Ready at {ready:.1f}s"
