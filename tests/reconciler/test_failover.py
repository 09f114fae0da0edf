"""Replicated reconcilers on PostgreSQL, with real processes: a private PostgreSQL cluster, two
reconcilers on one database, one bare Git repository, a real registry and two real hosts given both
reconciler URLs.

- kill -9 of the leader while a promotion is in flight, sent again with the CLI given both URLs: the follower leads
  within 5 s, no component restarts on any host (instance ids, start times and restart counts from the
  hosts' reports), generations go on from the shared database, and Git has exactly one promotion commit;
- SIGSTOP of the leader past its lease: the other takes over; after SIGCONT the old one pushes nothing
  (a promotion sent to it just before it was paused is refused) and publishes nothing;
- a follower serves reads, refuses host calls and writes with 503 naming the leader; status shows who leads;
- PostgreSQL stopped: the leader steps down, hosts keep serving; started again: a leader again, nothing restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.postgres import PostgresServer
from tests.support.procs import wait_until
from tests.support.replicated import HOSTS, LEASE, Replicated


@pytest.fixture
def replicated(tmp_path: Path, postgres: PostgresServer) -> Iterator[Replicated]:
    r = Replicated(tmp_path, postgres.new_database())
    try:
        r.start()
        yield r
    finally:
        for name in ("reconciler", "reconciler-b"):  # a paused process never stops
            proc = r.p.procs.get(name)
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        r.p.stop()


def test_failover_and_fencing(replicated: Replicated, postgres: PostgresServer) -> None:
    r = replicated
    a, b = "reconciler", "reconciler-b"
    wait_until(lambda: r.healthy(a), timeout=30, what="every app Healthy")
    wait_until(lambda: r.healthy(b), timeout=10, what="the follower sees them Healthy too")

    # --- a follower: reads from the shared state, 503 naming the leader for host calls and writes
    assert r.get(b, "/api/v1/environments")["source"]["leadership"]["leader"]["url"] == r.urls[a]
    refused = httpx.post(f"{r.urls[b]}/api/v1/sync", headers=r.p.admin_headers(), timeout=5)
    assert refused.status_code == 503 and refused.json()["leader"] == r.urls[a]
    assert refused.headers["X-Driftless-Leader"] == r.urls[a]
    token = r.p.token_file.read_text().strip()
    poll = httpx.get(f"{r.urls[b]}/api/v1/hosts/aws-1/desired", params={"after": "0"}, timeout=5,
                     headers={"Authorization": f"Bearer {token}"})
    assert poll.status_code == 503
    assert r.get(b, "/api/v1/history?env=prod")["history"] and r.get(b, "/api/v1/events")["events"]
    status = subprocess.run([sys.executable, "-m", "driftless", "status", "--control", r.urls[b], "--token-file",
                             str(r.p.admin_token_file)], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "NO_COLOR": "1"})
    assert status.returncode == 0 and f"leader {r.urls[a]}" in status.stdout, status.stdout + status.stderr

    time.sleep(1.0)  # a heartbeat more: the reports are current
    before, gens = r.running(a), r.generations(a)
    assert len(before) == 8 and all(v[3] == "Running" for v in before.values()), before
    commits = len(r.git_log())

    # --- kill -9 the leader while a promotion is in flight (its gates, clone, commit or push)
    answers: list[Any] = []

    def promote_on_a() -> None:
        try:
            answers.append(httpx.post(f"{r.urls[a]}/api/v1/promote", json={"app": "hello", "from": "dev", "to": "prod"},
                                      headers=r.p.admin_headers(), timeout=30).status_code)
        except httpx.HTTPError as exc:
            answers.append(exc)

    in_flight = threading.Thread(target=promote_on_a)
    in_flight.start()
    time.sleep(0.15)
    killed_at = time.monotonic()
    r.p.kill(a)
    in_flight.join(30)
    assert answers and isinstance(answers[0], httpx.TransportError), answers  # the leader died under it
    # the user sends it again, to both reconcilers: the CLI finds the new leader (waiting for the election)
    cli = r.promote("hello", f"{r.urls[a]},{r.urls[b]}")
    wait_until(lambda: r.role(b) == "leader", timeout=10, interval=0.05, what="the follower leads")
    took = time.monotonic() - killed_at
    assert took < 5.0, f"the follower led {took:.1f}s after the kill"
    out, err = cli.communicate(timeout=40)
    assert cli.returncode == 0, out + err
    promotions = [c for c in r.git_log() if "promote(hello)" in c]
    assert len(promotions) == 1, r.git_log()
    assert len(r.git_log()) == commits + 1
    # the new leader applies it (prod pins the digest dev runs); the hosts report to it
    wait_until(lambda: r.get(b, "/api/v1/environments/prod/apps/hello")["components"][0]["image"].startswith(
        "demo/hello@sha256:"), timeout=15, what="the promotion applied by the new leader")
    now = time.time()
    wait_until(lambda: r.reported_to(b, now), timeout=15, what="hosts report to the new leader")
    wait_until(lambda: r.healthy(b), timeout=15, what="Healthy under the new leader")
    # same digest, pinned: nothing to restart; every instance is the one that ran before
    assert r.running(b) == before
    assert r.generations(b) == gens  # the same documents: no generation published anew, none reset
    events = r.get(b, "/api/v1/events?limit=500")["events"]
    assert [e for e in events if e["reason"] == "LeaderElected"][-1]["message"].startswith(f"reconciler {r.urls[b]}")
    assert len([e for e in events if e["reason"] == "Promoted"]) == 1

    # --- the old leader comes back as a follower
    r.p.restart(a)
    wait_until(lambda: r.role(a) == "follower", timeout=15, what="the restarted one follows")

    # --- SIGSTOP the leader (b) past its lease; a promotion sent to it just before
    paused = r.promote("greet", r.urls[b])  # only b: the pause decides what happens to it
    time.sleep(0.2)
    r.p.procs[b].send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    wait_until(lambda: r.role(a) == "leader", timeout=10, interval=0.05, what="a takes over from the paused b")
    assert time.monotonic() - stopped_at < 5.0
    taken = time.time()
    wait_until(lambda: r.reported_to(a, taken), timeout=20, what="hosts report to a")
    time.sleep(max(0.0, LEASE + 1.0 - (time.monotonic() - stopped_at)))  # well past b's lease
    head, gens, log_size = r.git_log(), r.generations(a), len(r.log(b))
    r.p.procs[b].send_signal(signal.SIGCONT)
    out, err = paused.communicate(timeout=30)
    wait_until(lambda: r.role(b) == "follower", timeout=10, what="b knows it follows")
    time.sleep(2.0)  # b's loops had their chance to act
    assert r.git_log() == head, "the deposed leader pushed"
    assert paused.returncode != 0 and "greet" not in " ".join(r.git_log())
    assert "503" in out + err or "does not lead" in out + err or "follower" in out + err, out + err
    assert r.generations(a) == gens
    after_resume = r.log(b)[log_size:]
    assert "event=published" not in after_resume and "event=git_write" not in after_resume, after_resume
    assert "event=leader-stepped-down" in after_resume
    assert r.health(b)["leader"]["url"] == r.urls[a]
    assert r.running(a) == before  # still nothing restarted

    # --- PostgreSQL down: the leader steps down, hosts keep serving what they run; back: a leader again
    postgres.stop()
    down_at = time.monotonic()
    try:
        wait_until(lambda: r.role(a) == "follower", timeout=LEASE + 3, what="the leader steps down")
        assert time.monotonic() - down_at < LEASE + 2
        served = [httpx.get(f"{r.p.ingress(host)}/dev/hello", timeout=5) for host in HOSTS]
        assert any(x.status_code == 200 and "hi from hello" in x.text for x in served), [x.text for x in served]
        seen = r.get(b, "/api/v1/environments/dev/apps/hello")  # the last state it read
        assert seen["health"] == "Healthy", seen
        wait_until(lambda: "databaseError" in r.health(b) and r.health(b)["leader"] is None, timeout=15,
                   what="the follower says the database is away and nobody leads")
    finally:
        postgres.start()
    wait_until(lambda: "leader" in (r.role(a), r.role(b)), timeout=15, what="a leader once the database is back")
    leader, back = (a if r.role(a) == "leader" else b), time.time()
    wait_until(lambda: r.reported_to(leader, back), timeout=20, what="hosts report to it")
    wait_until(lambda: r.healthy(leader), timeout=20, what="Healthy again")
    assert r.running(leader) == before  # nothing restarted, through all of it
