#!/usr/bin/env python
"""Failover of replicated reconcilers on PostgreSQL (figures go to hack/bench/RESULTS.md, "## Reconciler
failover"): a private PostgreSQL cluster, two reconcilers on one database (lease 3 s, renewed every
second), a registry, a bare Git repository and two real hosts given both reconciler URLs, running 8
instances. Each round kills the leader with SIGKILL and measures

  elected   kill -> the other reconciler answers /healthz as the leader
  hosts     kill -> every host has reported to the new leader (its report written to the shared state)

then starts the killed one again (it follows) and waits until the platform is Healthy. At the end it
checks that no instance restarted (ids, start times and restart counts the hosts report).

    python hack/bench/failover.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.procs import wait_until  # noqa: E402
from tests.support.replicated import LEASE, Replicated  # noqa: E402


def one_round(r: Replicated) -> tuple[str, str, float, float]:
    """Kill the leader; (killed, new leader, seconds to elect, seconds until every host reports to it)."""
    names = list(r.urls)
    leader = next(n for n in names if r.role(n) == "leader")
    other = next(n for n in names if n != leader)
    wait_until(lambda: r.role(other) == "follower", timeout=30, what="a follower")
    time.sleep(1.0)  # mid-lease, like any moment
    killed_at, wall = time.monotonic(), time.time()
    r.p.kill(leader)
    wait_until(lambda: r.role(other) == "leader", timeout=30, interval=0.02, what="a new leader")
    elected = time.monotonic() - killed_at
    wait_until(lambda: r.reported_to(other, wall), timeout=30, interval=0.05, what="hosts report to the new leader")
    hosts = time.monotonic() - killed_at
    r.p.restart(leader)
    wait_until(lambda: r.role(leader) == "follower", timeout=30, what="the restarted one follows")
    wait_until(lambda: r.healthy(other), timeout=30, what="Healthy")
    return leader, other, elected, hosts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    server = PostgresServer()
    server.start()
    elected: list[float] = []
    hosts: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="driftless-failover-") as tmp:
            r = Replicated(Path(tmp), server.new_database())
            try:
                r.start()
                names = list(r.urls)
                wait_until(lambda: r.healthy(names[0]), timeout=60, what="every app Healthy")
                time.sleep(1.0)
                before = r.running(names[0])
                for round_ in range(1, args.rounds + 1):
                    leader, other, took_elected, took_hosts = one_round(r)
                    elected.append(took_elected)
                    hosts.append(took_hosts)
                    print(f"round {round_}: {leader} killed; {other} leads after {took_elected:.2f} s, "
                          f"every host reports to it after {took_hosts:.2f} s", flush=True)
                after = r.running(next(n for n in names if r.role(n) == "leader"))
                restarted = sorted(k for k in before if after.get(k) != before[k])
            finally:
                r.p.stop()
    finally:
        server.stop()
        server.remove()
    print(f"\nlease {LEASE:g} s, {args.rounds} leader kills (SIGKILL), 2 reconcilers, 2 hosts, {len(before)} instances")
    for what, xs in (("new leader elected", elected), ("every host reports to it", hosts)):
        print(f"  {what:26} median {statistics.median(xs):.2f} s   min {min(xs):.2f} s   max {max(xs):.2f} s")
    print(f"  instances restarted: {len(restarted)} of {len(before)}" + (f" {restarted}" if restarted else ""))
    return 1 if restarted else 0


if __name__ == "__main__":
    sys.exit(main())
