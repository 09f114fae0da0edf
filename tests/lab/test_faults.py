"""Faults on the multi-site lab (hack/lab, docs/lab.md), one lab for the module, each fault on its
own site or link; figures go to hack/lab/RESULTS.md.

1. the edge site cut off from everything (its router link down) for LAB_CUT_SECONDS: it keeps serving
   its last desired state (same host process, same instance), shows Lost then Ready, and converges to
   a commit pushed meanwhile right after the heal;
2. a site that cannot reach the registry keeps running what it has; a new digest waits there with a
   clear condition and lands after the heal; the other cloud site is not held up;
3. the leader cut off from PostgreSQL (not from its hosts) steps down, the other leads, hosts follow,
   nothing restarts, no commit is made twice;
4. a canary step in progress while its only host is cut off waits (never completes on the reports
   sent before the cut) and runs its step again in full after the heal;
5. clock skew (faketime): a skewed follower wins no election, a skewed leader keeps its lease, a
   skewed host is neither Lost while it reports nor Ready once cut off.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hack.lab import netns, scenario
from hack.lab.lab import HOSTS, PG, RECONCILER_SITES, RECONCILERS, REGISTRIES, Lab, subnet
from hack.lab.probe import Probe
from hack.lab.results import Results
from tests.lab.conftest import CUT_SECONDS

# the lab's start (about 15 s; a minute more when the wheel's venv is built) counts in the first test
pytestmark = pytest.mark.timeout(420)

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
    return {i["id"]: (i.get("startedAt"), i.get("restarts"), i.get("digest"), i.get("status")) for i in items}


def settled(lab: Lab, host: Any) -> dict[str, tuple[Any, ...]]:
    """The host's instances once each runs its current spec (a started time, Running)."""
    return lab.wait(lambda: (lambda got: got if got and all(v[0] and v[3] == "Running" for v in got.values())
                             else None)(instances(lab, host)), what=f"{host.name} settled")  # fmt: skip


def state(lab: Lab, name: str) -> str | None:
    try:
        return lab.host(name)["state"]  # type: ignore[no-any-return]
    except Exception:
        return None


def test_an_edge_site_cut_off_keeps_serving_and_converges_after_the_heal(lab: Lab, results: Results) -> None:
    url = f"{EDGE.ingress}/edge/web"
    lab.wait(lambda: lab.http("edge", "GET", url).text.startswith("edge v1"), what="the edge serves v1")
    lab.wait(lambda: state(lab, EDGE.name) == "Ready", what="edge-1 Ready")
    pid, before = lab.procs.running[f"host-{EDGE.name}"].pid, settled(lab, EDGE)
    probe = Probe("edge", url)
    time.sleep(1.0)
    try:
        cut_at = time.monotonic()
        lab.cut("edge")
        lab.wait(lambda: state(lab, EDGE.name) == "Lost", what="edge-1 Lost", timeout=20)
        detected = time.monotonic() - cut_at
        # a commit while the site is away: the edge must get it after the heal
        lab.commit({"edge/apps/web.yaml": scenario.application("web", image="demo/hello:1.0.0",
                                                               greeting="edge v2")}, "edge v2")
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
    # the host has its new document within a heartbeat of being Ready again; pulling, compiling and
    # starting the new digest on a busy 2-CPU machine adds seconds (the figure goes to RESULTS.md)
    assert converged <= ready + 2 * lab.heartbeat + 5.0, f"converged {converged:.1f}s after the heal, Ready at {ready:.1f}s"


def test_a_site_that_cannot_reach_the_registry_keeps_running_and_the_others_go_on(lab: Lab,
                                                                                results: Results) -> None:
    url = "/cloud/web"
    for h in (CLOUD1, CLOUD2):
        lab.wait(lambda h=h: lab.http(h.site, "GET", f"{h.ingress}{url}").text.startswith("cloud v1"),
                 what=f"{h.name} serves cloud v1")  # fmt: skip
    pid, before = lab.procs.running[f"host-{CLOUD2.name}"].pid, settled(lab, CLOUD2)
    probe1, probe2 = Probe("cloud1", f"{CLOUD1.ingress}{url}"), Probe("cloud2", f"{CLOUD2.ingress}{url}")
    cut = [(subnet("cloud2"), f"{address}/32") for address in REGISTRIES.values()]
    try:
        for src, dst in cut:
            netns.block(src, dst)
        cut_at = time.monotonic()
        lab.commit({"cloud/apps/web.yaml": scenario.application("web", image="demo/hello:2.0.0",
                                                                greeting="cloud v2")}, "cloud v2")
        lab.wait(lambda: probe1.first("cloud v2", cut_at), what="cloud1 serves the new digest", timeout=30)
        other_site = (probe1.first("cloud v2", cut_at) or 0) - cut_at
        # cloud2 cannot pull it: it says so, and keeps serving v1
        leader = lab.leader() or "reconciler-a"

        def waiting() -> str:
            app = lab.get(leader, "/api/v1/environments/cloud/apps/web")
            ready = next(c for c in app["conditions"] if c["type"] == "Ready")
            message = ready["message"]
            clear = (ready["status"] == "False" and f"on {CLOUD2.name}" in message and "not reachable" in message
                     and "still serving the previous version" in message)  # fmt: skip
            return message if clear else ""

        said = lab.wait(waiting, what="the app says cloud2 cannot pull", timeout=90)
        detected = time.monotonic() - cut_at
        time.sleep(3.0)
        assert probe2.first("cloud v2", cut_at) is None
        assert lab.procs.running[f"host-{CLOUD2.name}"].pid == pid
        heal_at = time.monotonic()
    finally:
        for src, dst in cut:
            netns.unblock(src, dst)
    try:
        lab.wait(lambda: probe2.first("cloud v2", heal_at), what="cloud2 serves the new digest after the heal",
                 timeout=60)
        landed = (probe2.first("cloud v2", heal_at) or 0) - heal_at
    finally:
        probe1.stop()
        samples = probe2.stop()
    failed2 = len(probe2.failed(cut_at))
    results.add("cloud2 cannot reach the registry (iptables DROP in the router); a new digest committed",
                detect=f"the app names cloud2's failed pull {detected:.1f} s after the commit",
                recover=f"cloud1 served it {other_site:.1f} s after the commit; cloud2 {landed:.1f} s after the heal",
                failed=f"cloud2: {failed2} of {len(samples)}; cloud1: {len(probe1.failed(cut_at))}",
                notes=f"cloud2 served v1 with the same host pid throughout; Ready=False: {said[:160]}")
    assert failed2 == 0 and not probe1.failed(cut_at)
    assert before  # it ran v1 before; it ran v1 during (the probe) and v2 after


def test_a_leader_cut_off_from_postgresql_steps_down_and_the_other_leads(lab: Lab, results: Results) -> None:
    old = lab.wait(lab.leader, what="a leader")
    new = next(n for n in RECONCILERS if n != old)
    lab.wait(lambda: lab.role(new) == "follower", what=f"{new} follows")
    for h in HOSTS:
        lab.wait(lambda h=h: state(lab, h.name) == "Ready", what=f"{h.name} Ready")
    running = {h.name: settled(lab, h) for h in HOSTS}
    pids = {n: p.pid for n, p in lab.procs.running.items()}
    commits = lab.git_log()
    probes = {h.name: Probe(h.site, f"{h.ingress}/{'edge' if h.site == 'edge' else 'cloud'}/web") for h in HOSTS}
    try:
        netns.block(subnet(RECONCILER_SITES[old]), f"{PG}/32")
        cut_at = time.monotonic()
        lab.wait(lambda: lab.role(old) != "leader", what=f"{old} steps down", timeout=30, interval=0.05)
        stepped_down = time.monotonic() - cut_at
        lab.wait(lambda: lab.role(new) == "leader", what=f"{new} leads", timeout=30, interval=0.05)
        elected = time.monotonic() - cut_at
        since = time.time()
        lab.wait(lambda: all((lab.get(new, f"/api/v1/hosts/{h.name}").get("reportedAt") or 0) > since
                             for h in HOSTS), what="every host reports to the new leader", timeout=30)  # fmt: skip
        followed = time.monotonic() - cut_at
        time.sleep(2.0)
        assert lab.role(old) != "leader"
    finally:
        netns.unblock(subnet(RECONCILER_SITES[old]), f"{PG}/32")
    try:
        lab.wait(lambda: lab.role(old) == "follower", what=f"{old} follows after the heal", timeout=30)
        assert lab.role(new) == "leader"
    finally:
        samples = {name: p.stop() for name, p in probes.items()}
    assert {h.name: instances(lab, h) for h in HOSTS} == running, "an instance restarted"
    assert {n: p.pid for n, p in lab.procs.running.items()} == pids, "a process restarted"
    assert lab.git_log() == commits, "a reconciler committed"
    failed = {name: len([s for s in ss if s.at >= cut_at and not s.ok]) for name, ss in samples.items()}
    results.add(f"leader ({old}) cut off from PostgreSQL (iptables DROP in the router), not from hosts",
                detect=f"stepped down after {stepped_down:.1f} s",
                recover=f"{new} led after {elected:.1f} s; every host reported to it after {followed:.1f} s",
                failed=", ".join(f"{n}: {c} of {len(samples[n])}" for n, c in failed.items()),
                notes="no instance, host or reconciler restarted; no commit made")
    assert not any(failed.values()), failed


def roles_over(lab: Lab, seconds: float) -> set[tuple[str | None, ...]]:
    """Every (role of reconciler-a, role of reconciler-b) seen, sampled for ``seconds``."""
    seen = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.add(tuple(lab.role(n) for n in RECONCILERS))
        time.sleep(0.1)
    return seen


def test_skewed_clocks_neither_win_an_election_nor_give_up_a_lease_nor_mislabel_a_host(lab: Lab,
                                                                                      results: Results) -> None:
    leader = lab.wait(lab.leader, what="a leader")
    follower = next(n for n in RECONCILERS if n != leader)
    names = list(RECONCILERS)
    steady = tuple("leader" if n == leader else "follower" for n in names)
    window = 3 * lab.lease
    for skew in ("+30s", "-30s"):
        # the follower's clock 30 s fast, then 30 s slow: it must not take a lease that is not expired.
        # A clock 30 s slow refuses certificates made less than 30 s ago (not valid yet, as TLS should):
        # the lab's are made at its start, so wait until they are old enough
        made = (lab.creds / "reconciler.crt").stat().st_mtime
        time.sleep(max(0.0, made + 35 - time.time()) if skew.startswith("-") else 0.0)
        lab.procs.restart(follower, skew=skew)
        lab.wait(lambda: lab.role(follower) == "follower", what=f"{follower} ({skew}) follows", timeout=30)
        offset = lab.health(follower)["time"] - time.time()  # its clock, as it tells it
        assert abs(offset - float(skew.rstrip("s"))) < 5, f"faketime {skew} not in effect: {offset:.1f}s"
        seen = roles_over(lab, window)
        assert seen == {steady}, f"with {follower}'s clock {skew}: roles seen {seen}"
    # the skewed (-30 s) follower must still take over when the leader is really gone, and then hold
    # its lease (not give it up early for its clock)
    netns.block(subnet(RECONCILER_SITES[leader]), f"{PG}/32")
    try:
        lab.wait(lambda: lab.role(follower) == "leader", what=f"the skewed {follower} leads", timeout=30)
        took_at = time.monotonic()
        epoch = lab.health(follower)["leadership"]["leader"]["epoch"]
        held = roles_over(lab, window)
        assert all(r[names.index(follower)] == "leader" for r in held), held
        assert lab.health(follower)["leadership"]["leader"]["epoch"] == epoch, "the lease changed hands"
    finally:
        netns.unblock(subnet(RECONCILER_SITES[leader]), f"{PG}/32")
    lab.wait(lambda: lab.role(leader) == "follower", what=f"{leader} follows", timeout=30)
    held_for = time.monotonic() - took_at

    # a host whose clock runs 30 s slow: neither Lost while it reports, nor Ready once it is cut off
    host = CLOUD1
    lab.procs.restart(f"host-{host.name}", skew="-30s")
    try:
        lab.wait(lambda: state(lab, host.name) == "Ready"
                 and settled(lab, host), what=f"{host.name} (-30 s) Ready", timeout=30)  # fmt: skip
        pid = lab.procs.running[f"host-{host.name}"].pid  # faketime itself: the host is its child
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        environ = b"".join(Path(f"/proc/{p}/environ").read_bytes() for p in [str(pid), *children])
        assert b"FAKETIME=-30s" in environ and b"libfaketime" in environ, "the host does not run under faketime"
        states = set()
        end = time.monotonic() + 3 * 3 * lab.heartbeat
        while time.monotonic() < end:
            states.add(state(lab, host.name))
            time.sleep(0.1)
        assert states == {"Ready"}, states
        lab.cut(host.site)
        cut_at = time.monotonic()
        try:
            lab.wait(lambda: state(lab, host.name) == "Lost", what=f"the skewed {host.name} Lost", timeout=20)
            lost = time.monotonic() - cut_at
        finally:
            lab.heal(host.site)
        lab.wait(lambda: state(lab, host.name) == "Ready", what=f"{host.name} Ready again", timeout=30)
    finally:
        lab.procs.restart(f"host-{host.name}")  # its own clock again, for the other tests
    lab.wait(lambda: state(lab, host.name) == "Ready", what=f"{host.name} Ready (clock right)", timeout=30)
    results.add(
        "clock skew (faketime): a follower 30 s fast, then 30 s slow; a host 30 s slow",
        detect=f"the skewed host cut off: Lost after {lost:.1f} s",
        recover=f"the -30 s follower led when the leader lost PostgreSQL and held epoch {epoch} for {held_for:.1f} s",
        failed="-",
        notes=f"no election won by a skewed follower in {window:.0f} s at each skew; the skewed host stayed Ready "
              f"{3 * 3 * lab.heartbeat:.0f} s while reporting",
    )  # fmt: skip
    assert lost < 3 * 3 * lab.heartbeat, f"Lost only {lost:.1f}s after the cut"


def test_a_canary_whose_host_is_cut_off_never_completes_on_missing_data(lab: Lab, results: Results) -> None:
    url = f"{EDGE.ingress}/edge/shop"
    lab.wait(lambda: lab.http("edge", "GET", url).status_code == 200, what="the edge serves shop")

    def rollout() -> dict[str, Any]:
        return lab.get(lab.leader() or "reconciler-a", "/api/v1/environments/edge/apps/shop")["rollout"] or {}

    probe = Probe("edge", url)  # the traffic the canary is measured on (half of it goes to the new digest)
    try:
        lab.commit({"edge/apps/shop.yaml": scenario.canary_app("demo/hello:2.0.0")}, "shop 2.0.0 by canary")
        lab.wait(lambda: rollout().get("phase") == "Progressing" and rollout().get("stepStartedAt"),
                 what="the canary measures its first step", timeout=60)  # fmt: skip
        pause = rollout()["pauseSeconds"]
        time.sleep(3.0)  # canary requests counted and reported before the cut
        lab.cut("edge")
        cut_at = time.monotonic()
        try:
            lab.wait(lambda: state(lab, EDGE.name) == "Lost", what="edge-1 Lost", timeout=20)
            detected = time.monotonic() - cut_at
            # well past the step's pause: the reconciler has only the data from before the cut
            phases = set()
            end = time.monotonic() + pause + 5
            while time.monotonic() < end:
                r = rollout()
                phases.add((r.get("phase"), r.get("weight")))
                time.sleep(0.2)
            during = rollout()
            assert ("Completed", 100) not in phases, f"the canary completed while its host was cut off: {during}"
            assert during.get("phase") in ("Progressing", "Waiting", "Aborted") and during["weight"] <= 50, \
                str((phases, during, lab.get(lab.leader() or "reconciler-a", "/api/v1/environments/edge/apps/shop")))
        finally:
            lab.heal("edge")
        heal_at = time.monotonic()
        done = lab.wait(lambda: (lambda r: r if r.get("phase") in ("Completed", "Aborted") else None)(rollout()),
                        what="the rollout ends after the heal", timeout=90)  # fmt: skip
        ended = time.monotonic() - heal_at
    finally:
        samples = probe.stop()
    failed = [s for s in samples if s.at >= cut_at and not s.ok]
    results.add(
        f"edge site cut off during a canary step ({pause:.0f} s pause, weight 50)",
        detect=f"Lost after {detected:.1f} s",
        recover=f"rollout {done['phase']} {ended:.1f} s after the heal",
        failed=f"{len(failed)} of {len([s for s in samples if s.at >= cut_at])}",
        notes=f"while cut off: {sorted(map(str, phases))}; condition then: {during['condition']['message'][:140]}",
    )
    assert not failed
    # it waited, and after the heal ran its step again in full on fresh measurements before completing
    assert ("Waiting", 50) in phases and done["phase"] == "Completed" and ended >= pause, (phases, done)
