#!/usr/bin/env python
"""10,000 hosts on one reconciler (figures go to hack/bench/RESULTS.md under "## Control plane").

    python hack/bench/control_plane.py [--hosts 10000] [--clients 2] [--apps 500] [--replicas 20]
                                       [--heartbeat 10] [--measure 60] [--profile 20] [--record]

One real `driftless reconcile` process follows a bare Git repository (applications spread over the
hosts) and a real registry. ``--clients`` client processes (asyncio + aiohttp) simulate the hosts
between them; each simulated host does what `driftless host` does on the control channel:

- registers with the join token and keeps the per-host credential it gets back;
- long-polls ``GET /api/v1/hosts/{name}/desired?after=G&wait=30`` with that credential, one
  connection per host (the reconciler holds one open request per host);
- reports ``POST /api/v1/hosts/{name}/report`` every heartbeat (start times spread over the first
  heartbeat) and at once after each new desired state, echoing the desired instances as Running.
  Reports share a pool of keep-alive connections per client process (``--report-connections``):
  with one more connection per host the reconciler would need 2 x hosts descriptors, past this
  machine's hard RLIMIT_NOFILE of 20000 (see "limits" in the output).
  Each client process freezes its objects once a second (``gc.freeze``), as the reconciler does: a
  full collection over 5,000 simulated hosts' state would stall the client and count as latency.

Measured: registration time of all hosts; in steady state, report round trips on the client side
(p50/p99/max over ``--measure`` seconds) and the reconciler's CPU (utime+stime from /proc) and RSS;
then one `git push` that changes every application (so every host with an instance gets a new
generation): the wake latency from the start of the push to each host receiving its new document,
and the report latency while that storm is served. ``--profile N`` also records N seconds of the
reconciler with py-spy (steady state) and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

WAIT = 30  # long-poll wait asked by the simulated hosts (seconds)


# ------------------------------------------------------------------------------------------ client side
def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(_pct(values, 50) * 1000, 2), "p90_ms": round(_pct(values, 90) * 1000, 2),
            "p99_ms": round(_pct(values, 99) * 1000, 2), "max_ms": round(max(values) * 1000, 2) if values else 0.0}


class Sim:
    """The simulated hosts of one client process."""

    def __init__(self, url: str, token: str, names: list[str], heartbeat: float, report_connections: int,
                 max_instances: int) -> None:
        self.url, self.token, self.names, self.heartbeat = url, token, names, heartbeat
        self.max_instances = max_instances
        self.ready_timeout = 300.0  # registration and first documents; past it the driver reports a collapse
        self.report_connections = report_connections
        self.credentials: dict[str, str] = {}
        self.generation: dict[str, int] = dict.fromkeys(names, 0)
        self.instances: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        self.received: dict[str, float] = {}  # host -> time its latest document arrived
        self.report_times: list[tuple[float, float]] = []  # (sent at, round trip)
        self.errors: collections.Counter[str] = collections.Counter()
        self.marked: dict[str, int] | None = None
        self.expected: set[str] = set()
        self.received_after: dict[str, float] = {}  # host -> when its first document newer than "mark" came
        self.stop = asyncio.Event()

    async def run(self, control: asyncio.Queue[str]) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=WAIT + 60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as polls, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.report_connections),
                                      timeout=timeout) as reports:
            t0 = time.perf_counter()
            sem = asyncio.Semaphore(16)  # registrations in flight per client process (a fleet coming up)

            async def host(name: str) -> None:  # as `driftless host` does: register, then long-poll and report
                await self._register(reports, name, sem)
                await asyncio.gather(self._poll(polls, reports, name), self._beat(reports, name))

            tasks = [asyncio.create_task(host(n)) for n in self.names]
            while len(self.credentials) < len(self.names) and time.perf_counter() - t0 < self.ready_timeout:
                await asyncio.sleep(0.1)
            registered = time.perf_counter() - t0
            while len(self.received) < len(self.names) and time.perf_counter() - t0 < self.ready_timeout:
                await asyncio.sleep(0.1)
            _say({"event": "ready", "registered_s": round(registered, 2), "first_doc_s": round(time.perf_counter() - t0, 2),
                  "without_document": len(self.names) - len(self.received), "errors": dict(self.errors)})
            while True:
                line = await control.get()
                cmd, _, arg = line.partition(" ")
                if cmd == "mark":  # remember the generations now: the wake phase waits for newer ones
                    self.marked = dict(self.generation)
                    self.expected = {n for n in self.names if self.instances[n]}  # hosts a change of every app reaches
                    self.report_times.clear()
                    self.received_after = {}
                    _say({"event": "marked"})
                elif cmd == "stats":
                    since, until = (float(x) for x in arg.split())
                    rtts = [rtt for at, rtt in self.report_times if since <= at <= until]
                    _say({"event": "stats", "reports": rtts, "errors": dict(self.errors)})
                elif cmd == "wake":  # print when every host has a newer generation than at "mark"
                    deadline = time.time() + float(arg)
                    while time.time() < deadline and not self.expected <= set(self.received_after):
                        await asyncio.sleep(0.05)
                    _say({"event": "woken", "received": list(self.received_after.values()),
                          "missing": len(self.expected - set(self.received_after)),
                          "without_instances": len(self.names) - len(self.expected)})
                elif cmd == "stop":
                    break
            self.stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _register(self, session: Any, name: str, sem: asyncio.Semaphore) -> None:
        i = int(name[1:])
        body = {"name": name, "labels": {"cloud": ("aws", "gcp")[i % 2], "zone": f"z{i % 8}"},
                "capacity": {"memoryBytes": 1 << 32, "maxInstances": self.max_instances}, "interfaces": [], "version": "sim"}
        async with sem:
            for attempt in range(20):
                try:
                    async with session.post(f"{self.url}/api/v1/hosts/register", json=body,
                                            headers={"Authorization": f"Bearer {self.token}"}) as r:
                        if r.status == 200:
                            self.credentials[name] = (await r.json())["credential"]
                            return
                        self.errors[f"register {r.status}"] += 1
                except Exception as exc:
                    self.errors[f"register {type(exc).__name__}"] += 1
                await asyncio.sleep(0.2 * (attempt + 1))
        raise SystemExit(f"host {name} could not register")

    def _headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credentials[name]}"}

    async def _report(self, session: Any, name: str) -> None:
        body = {"name": name, "observedGeneration": self.generation[name], "instances": self.instances[name]}
        sent = time.time()
        t0 = time.perf_counter()
        try:
            async with session.post(f"{self.url}/api/v1/hosts/{name}/report", json=body,
                                    headers=self._headers(name)) as r:
                await r.read()
                if r.status != 200:
                    self.errors[f"report {r.status}"] += 1
                    return
        except Exception as exc:
            self.errors[f"report {type(exc).__name__}"] += 1
            return
        self.report_times.append((sent, time.perf_counter() - t0))

    async def _beat(self, session: Any, name: str) -> None:
        await asyncio.sleep(random.uniform(0, self.heartbeat))
        while not self.stop.is_set():
            started = time.monotonic()
            await self._report(session, name)
            await asyncio.sleep(max(0.0, self.heartbeat - (time.monotonic() - started)))

    async def _poll(self, polls: Any, reports: Any, name: str) -> None:
        while not self.stop.is_set():
            url = f"{self.url}/api/v1/hosts/{name}/desired?after={self.generation[name]}&wait={WAIT}"
            try:
                async with polls.get(url, headers=self._headers(name)) as r:
                    if r.status == 204:
                        continue
                    if r.status != 200:
                        self.errors[f"desired {r.status}"] += 1
                        await asyncio.sleep(1)
                        continue
                    doc = await r.json()
            except Exception as exc:
                self.errors[f"desired {type(exc).__name__}"] += 1
                await asyncio.sleep(1)
                continue
            now = time.time()
            self.generation[name] = doc["generation"]
            self.instances[name] = [
                {"id": i["id"], "env": i["env"], "app": i["app"], "component": i["component"], "digest": i["digest"],
                 "status": "Running", "config": i.get("config", {}), "route": i.get("route"), "startedAt": now}
                for i in doc["instances"]]
            self.received[name] = now
            marked = self.marked
            if marked is not None and doc["generation"] > marked.get(name, 0):
                self.received_after.setdefault(name, now)
            await self._report(reports, name)


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def client_main(args: argparse.Namespace) -> int:
    names = [f"h{i:05d}" for i in range(args.index, args.hosts, args.of)]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def pump() -> None:
            while line := await reader.readline():
                await queue.put(line.decode().strip())
            await queue.put("stop")

        async def freeze() -> None:  # the simulator's own full GC pauses (5,000 hosts' state) would count as latency
            while True:
                await asyncio.sleep(1.0)
                gc.freeze()

        pumping = asyncio.create_task(pump())
        freezing = asyncio.create_task(freeze())
        await Sim(args.url, Path(args.token_file).read_text().strip(), names, args.heartbeat,
                  args.report_connections, args.max_instances).run(queue)
        pumping.cancel()
        freezing.cancel()

    asyncio.run(main())
    return 0


# ------------------------------------------------------------------------------------------ driver
class Client:
    def __init__(self, args: argparse.Namespace, index: int, url: str, token_file: Path, log: Path) -> None:
        cmd = [sys.executable, __file__, "--client", "--index", str(index), "--of", str(args.clients),
               "--hosts", str(args.hosts), "--url", url, "--token-file", str(token_file),
               "--heartbeat", str(args.heartbeat), "--report-connections", str(args.report_connections),
               "--max-instances", str(args.max_instances)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "wb"))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def read(self, event: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"a client exited ({self.proc.wait()}) before {event!r}")
            msg = json.loads(line)
            if msg.get("event") == event:
                return msg  # type: ignore[no-any-return]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def profile(pid: int, seconds: int, out: Path) -> list[tuple[str, float]]:
    """py-spy record (raw collapsed stacks) for ``seconds``: the share of samples in each function (self)
    and, separately, under each of our own functions (inclusive)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    subprocess.run([spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "100", "-f", "raw", "-o", str(out),
                    "--nonblocking"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            fn = frame.split(" (")[0] + " " + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1].rstrip(")")
            if fn not in seen:
                seen.add(fn)
                inclusive[fn] += n
    return [(fn, round(100 * n / total, 1)) for fn, n in inclusive.most_common(40)] if total else []


def drive(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from tests.reconciler.platform import GitRepo, Reconciler, Registry, application, environment, new_token
    from tests.support.components import build

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-control-"))
    work.mkdir(parents=True, exist_ok=True)
    registry = Registry(work / "registry", work).start()
    rec = None
    clients: list[Client] = []
    result: dict[str, Any] = {"hosts": args.hosts, "clients": args.clients, "apps": args.apps,
                              "instances": args.apps * args.replicas, "heartbeat_s": args.heartbeat,
                              "report_connections_per_client": args.report_connections}
    try:
        registry.push("demo/hello:1.0.0", build("hello"))
        git = GitRepo(work / "git")
        token = new_token(work / "token")

        def apps(greeting: str) -> dict[str, str | None]:
            files: dict[str, str | None] = {"prod/environment.yaml": environment("prod")}
            for a in range(args.apps):
                comp = {"name": "web", "image": "demo/hello:1.0.0", "expose": f"/a{a}",
                        "config": {"GREETING": greeting}, "placement": {"spread": {"replicas": args.replicas}}}
                files[f"prod/apps/a{a:04d}.yaml"] = application(f"a{a:04d}", [comp])
            return files

        git.push(apps("hello"), f"{args.apps} applications")
        rec = Reconciler(repo=git.bare, registry=registry.url, data=work / "rec", log_dir=work, token_file=token,
                         heartbeat=args.heartbeat).start()
        assert rec.proc is not None and rec.proc.proc is not None
        pid = rec.proc.proc.pid
        result["reconciler_idle"] = memory_mib(pid)
        t0 = time.perf_counter()
        cpu0 = cpu_seconds(pid)
        clients = [Client(args, i, rec.url, token, work / f"client-{i}.log") for i in range(args.clients)]
        ready = [c.read("ready") for c in clients]
        if any(r["without_document"] for r in ready):  # hosts Lost faster than they register: say so, stop
            result["collapsed"] = {"hosts_without_document": sum(r["without_document"] for r in ready),
                                   "after_s": round(time.perf_counter() - t0, 1),
                                   "client_errors": [r["errors"] for r in ready]}
            return result
        result["all_registered_s"] = max(r["registered_s"] for r in ready)
        result["all_first_document_s"] = round(time.perf_counter() - t0, 2)
        result["startup_reconciler_cpu_s"] = round(cpu_seconds(pid) - cpu0, 1)
        time.sleep(args.heartbeat * 2)  # the reports that followed the first documents settle

        # steady state
        for c in clients:
            c.send("mark")
            c.read("marked")
        load0 = os.getloadavg()[0]
        since, cpu0, ccpu0, t0 = time.time(), cpu_seconds(pid), [cpu_seconds(c.proc.pid) for c in clients], time.time()
        if args.profile:
            top = profile(pid, args.profile, work / "profile.txt")
            result["profile_top"] = top
            time.sleep(max(0.0, args.measure - args.profile))
        else:
            time.sleep(args.measure)
        until, elapsed = time.time(), time.time() - t0
        result["steady"] = {
            "reconciler_cpu_percent": round(100 * (cpu_seconds(pid) - cpu0) / elapsed, 1),
            "clients_cpu_percent": round(100 * sum(cpu_seconds(c.proc.pid) - x for c, x in zip(clients, ccpu0, strict=True))
                                         / elapsed, 1),
            "reconciler_memory_mib": memory_mib(pid), "reconciler_open_fds": open_fds(pid),
            "load_average_1m": [round(load0, 2), round(os.getloadavg()[0], 2)], "seconds": round(elapsed, 1),
        }
        rtts: list[float] = []
        errors: collections.Counter[str] = collections.Counter()
        for c in clients:
            c.send(f"stats {since} {until}")
            s = c.read("stats")
            rtts += s["reports"]
            errors.update(s["errors"])
        result["steady"]["reports"] = summary_ms(rtts)
        result["steady"]["reports_per_s"] = round(len(rtts) / elapsed, 1)
        print(json.dumps({"steady": result["steady"]}), file=sys.stderr, flush=True)

        # one push that changes every application: every host with an instance gets a new generation
        for c in clients:
            c.send("mark")
            c.read("marked")
        cpu0 = cpu_seconds(pid)
        t_push = time.time()
        git.push(apps("hello again"), "new greeting everywhere")
        pushed = time.time()
        for c in clients:
            c.send("wake 120")
        woken = [c.read("woken") for c in clients]
        done = time.time()
        received = [t - t_push for w in woken for t in w["received"]]
        settle = max(received) if received else 0.0
        time.sleep(args.heartbeat)  # the reports after the new documents
        wake_until = time.time()
        wake_rtts: list[float] = []
        for c in clients:
            c.send(f"stats {t_push} {wake_until}")
            s = c.read("stats")
            wake_rtts += s["reports"]
            errors.update(s["errors"])
        env = httpx.get(f"{rec.url}/api/v1/environments", timeout=120, headers=rec.p.read_headers).json()
        result["wake"] = {
            "git_push_s": round(pushed - t_push, 3),
            "hosts_woken": len(received), "missing": sum(w["missing"] for w in woken),
            "hosts_without_instances": sum(w["without_instances"] for w in woken),
            "latency": summary_ms(received), "all_woken_s": round(settle, 2),
            "last_reconcile_s": round(env["source"]["lastReconcile"]["seconds"], 3),
            "reconciler_cpu_s": round(cpu_seconds(pid) - cpu0, 1), "waited_s": round(done - t_push, 1),
            "reports_during": summary_ms(wake_rtts),
            "reconciler_memory_mib": memory_mib(pid),
        }
        result["errors"] = dict(errors)
        result["limits"] = {"RLIMIT_NOFILE": resource.getrlimit(resource.RLIMIT_NOFILE), "cpus": os.cpu_count()}
        return result
    finally:
        for c in clients:
            try:
                c.send("stop")
            except OSError:
                pass
        for c in clients:
            try:
                c.proc.wait(30)
            except subprocess.TimeoutExpired:
                c.proc.kill()
        if rec:
            rec.stop()
        registry.stop()
        if not args.work and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=2, help="client processes simulating the hosts")
    ap.add_argument("--apps", type=int, default=500)
    ap.add_argument("--replicas", type=int, default=20, help="spread replicas per application")
    ap.add_argument("--heartbeat", type=float, default=10.0, help="seconds between reports of each host")
    ap.add_argument("--max-instances", type=int, default=2,
                    help="capacity.maxInstances of each host (low: the instances spread over the hosts as they register)")
    ap.add_argument("--measure", type=float, default=60.0, help="seconds of steady state measured")
    ap.add_argument("--report-connections", type=int, default=256, help="keep-alive connections per client for reports")
    ap.add_argument("--profile", type=int, default=0, help="seconds of py-spy on the reconciler in steady state")
    ap.add_argument("--work", help="work directory (kept); default a temporary one, removed")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work directory (logs, profile)")
    ap.add_argument("--record", action="store_true", help="append the figures to hack/bench/RESULTS.md")
    # internal: one client process
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--of", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--token-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        return client_main(args)
    result = drive(args)
    print(json.dumps(result, indent=1))
    if "collapsed" in result:
        print("collapsed: hosts were declared Lost faster than the fleet came up (see the reconciler log)", file=sys.stderr)
        return 1
    if args.record:
        record(args, result)
    return 0


def record(args: argparse.Namespace, r: dict[str, Any]) -> None:
    import platform

    s, w = r["steady"], r["wake"]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cmd = " ".join(sys.argv[1:])
    lines = [
        f"\n### {stamp} — `python hack/bench/control_plane.py {cmd}`\n",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other work (load average "
        f"{s['load_average_1m'][0]} at the start of the steady window, {s['load_average_1m'][1]} at its end), "
        f"Python {platform.python_version()}",
        f"- {r['hosts']} simulated hosts in {r['clients']} client processes, {r['apps']} applications x "
        f"{args.replicas} replicas = {r['instances']} instances, heartbeat {r['heartbeat_s']:g} s",
        "",
        "| measure | value |",
        "|---|---|",
        f"| all hosts registered / all have their first document | {r['all_registered_s']} s / {r['all_first_document_s']} s |",
        f"| reports handled, steady state | {s['reports_per_s']} /s |",
        f"| **report round trip p50 / p99 / max (client side, steady)** | **{s['reports']['p50_ms']} / "
        f"{s['reports']['p99_ms']} / {s['reports']['max_ms']} ms** |",
        f"| reconciler CPU, steady | {s['reconciler_cpu_percent']} % of one CPU |",
        f"| client processes' CPU, steady | {s['clients_cpu_percent']} % |",
        f"| reconciler RSS (idle before hosts → steady, peak) | {r['reconciler_idle']['VmRSS']} → "
        f"{s['reconciler_memory_mib']['VmRSS']} MiB, peak {w['reconciler_memory_mib']['VmHWM']} MiB |",
        f"| reconciler open descriptors, steady | {s['reconciler_open_fds']} |",
        f"| git push → host has its new document: p50 / p99 / all | {w['latency']['p50_ms']} / "
        f"{w['latency']['p99_ms']} ms / {w['all_woken_s']} s ({w['hosts_woken']} hosts, {w['missing']} missing) |",
        f"| the reconcile of that push | {w['last_reconcile_s']} s |",
        f"| report round trip p50 / p99 / max during that publish | {w['reports_during']['p50_ms']} / "
        f"{w['reports_during']['p99_ms']} / {w['reports_during']['max_ms']} ms |",
        f"| client errors | {r['errors'] or 'none'} |",
    ]
    with open(ROOT / "hack" / "bench" / "RESULTS.md", "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
