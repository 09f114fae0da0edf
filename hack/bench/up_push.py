"""The platform-level cold starts of hack/bench/coldstart.py --up: `driftless up` on a fresh data directory
until its example answers, and a git push of a new component to it until the component answers, each
step timed from the processes' own logs.

    up = start_up(work / "up-0")                  # fresh data dir, free ports (never the fixed 5000/8080-...)
    ready = wait_up(up, route="/dev/py")          # spawn -> "Driftless is up" and -> /dev/py 200 at a host
    steps = push_new(up, wasm, name="hello-js", route="/js", work=work)   # driftless push, git push -> 200
    stop_up(up)

What a push goes through (the keys of push_new's result, seconds): ``registry`` (driftless push of the
.wasm), then from the start of ``git push``: ``checked`` (the ref moved: the pre-receive hook's check),
``applied`` (the reconciler fetched, loaded, resolved and applied it: post-receive hook), ``published``
(the plan's desired states saved and the long-polls woken), ``converging`` (the first host took its
generation), ``pulled`` (by the first host that needs its bytes, to inspect or compile it; a host that finds both
done by another never pulls it),
``compile_started`` (inspect + compose done), ``compiled`` (the Winch build, by
whichever host compiled it), ``spawned`` (`wasmtime serve` listening), ``first_200`` (at the first host's
ingress), ``all_200`` (every host answered), ``git_returned`` (git push returned: the post-receive
feedback waits for the outcome).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support.procs import port_is_free  # noqa: E402

HOSTS = ("aws-us-east-1", "gcp-europe-west1", "edge-1")


@dataclass
class Up:
    data: Path
    log: Path
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    spawned: float  # time.time() of the spawn

    def ingress(self, i: int) -> int:
        return self.ports["host"] + i

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.ports['registry']}"




def _run_of_ports(n: int, avoid: set[int]) -> int:
    """A first port with n free consecutive ports (and none of ``avoid``)."""
    for start in range(20000, 60000, 97):
        wanted = set(range(start, start + n))
        if not wanted & avoid and all(port_is_free(p) for p in wanted):
            return start
    raise RuntimeError("no run of free ports")


def start_up(data: Path, *, hosts: int = 3) -> Up:
    taken: set[int] = set()
    ports: dict[str, int] = {}
    for key, n in (("registry", 1), ("control", 1), ("host", hosts), ("admin", hosts)):
        ports[key] = _run_of_ports(n, taken)
        taken |= set(range(ports[key], ports[key] + n))
    data.parent.mkdir(parents=True, exist_ok=True)
    log = data.parent / f"{data.name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLESS_")}
    args = [sys.executable, "-m", "driftless", "up", "--data", str(data), "--hosts", str(hosts),
            "--registry-port", str(ports["registry"]), "--control-port", str(ports["control"]),
            "--host-port", str(ports["host"]), "--admin-port", str(ports["admin"]), "--timeout", "300"]
    with open(log, "ab") as out:
        spawned = time.time()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                                start_new_session=True, env={**env, "PYTHONUNBUFFERED": "1"})
    return Up(data=data, log=log, proc=proc, ports=ports, spawned=spawned)


def _get(port: int, path: str) -> int:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            return r.status
        finally:
            conn.close()
    except OSError:
        return 0


def wait_200(port: int, path: str, *, timeout: float, interval: float = 0.005) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _get(port, path) == 200:
            return time.time()
        time.sleep(interval)
    raise TimeoutError(f"127.0.0.1:{port}{path} did not answer 200 within {timeout:.0f} s")


def wait_up(up: Up, *, route: str, timeout: float = 300) -> dict[str, float]:
    """Seconds from the spawn of `driftless up` to: it says it is up; ``route`` answers 200 at the first host."""
    deadline = time.monotonic() + timeout
    said = None
    while said is None:
        if "Driftless is up" in up.log.read_text(errors="replace"):
            said = time.time()
        elif up.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"driftless up did not come up:\n{up.log.read_text(errors='replace')[-3000:]}")
        else:
            time.sleep(0.01)
    answered = wait_200(up.ingress(0), route, timeout=max(1.0, deadline - time.monotonic()))
    return {"said_up": said - up.spawned, "example_200": answered - up.spawned}


def stop_up(up: Up) -> None:
    if up.proc.poll() is None:
        up.proc.send_signal(signal.SIGINT)
        try:
            up.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.proc.pid, signal.SIGKILL)
            up.proc.wait(10)


APP = """apiVersion: driftless.dev/v1alpha1
kind: Application
metadata:
  name: {name}
spec:
  components:
    - name: web
      image: demo/{name}:1.0.0
      config:
        GREETING: "pushed just now"
      placement:
        daemon:
          perHost: 1
      expose: {route}
"""


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


def push_new(up: Up, wasm: Path, *, name: str, route: str, work: Path) -> dict[str, float]:
    """driftless push of ``wasm`` as demo/NAME:1.0.0, then git push of a dev app serving it at ``route``
    on every host (a daemon); seconds of each step (see the module's docstring)."""
    bare = up.data / "git" / "manifests.git"
    clone = work / f"clone-{up.data.name}"
    _git("clone", "-q", str(bare), str(clone))
    (clone / "manifests" / "dev" / "apps" / f"{name}.yaml").write_text(APP.format(name=name, route=route))
    _git("add", "-A", cwd=clone)
    _git("commit", "-q", "-m", f"{name}: a new component", cwd=clone)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLESS_")}
    started = time.time()
    subprocess.run([sys.executable, "-m", "driftless", "push", "--registry", f"http://{up.registry}",
                    f"{up.registry}/demo/{name}:1.0.0", str(wasm)], check=True, capture_output=True, cwd=ROOT,
                   env={**env, "DRIFTLESS_DATA": str(up.data)})
    pushed = time.time()
    git_start = time.time()
    git = subprocess.Popen(["git", "-C", str(clone), "push", "-q", "origin", "HEAD:main"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    path = f"/dev{route}/"
    first = wait_200(up.ingress(0), path, timeout=300)
    every = max([first] + [wait_200(up.ingress(i), path, timeout=300) for i in range(1, len(HOSTS))])
    git.communicate(timeout=60)
    returned = time.time()
    ref = bare / "refs" / "heads" / "main"
    checked = ref.stat().st_mtime_ns / 1e9
    steps = {"registry": pushed - started, "checked": checked, **_from_logs(up, name, after=git_start),
             "first_200": first, "all_200": every, "git_returned": returned}
    return {k: (v if k == "registry" else v - git_start) for k, v in steps.items()}


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_COMPILED = re.compile(r"compiled dev/(?P<app>[\w-]+)/web: .* winch in (?P<s>[\d.]+) s")


def _lines(path: Path, after: float) -> list[tuple[float, str]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = _STAMP.match(line)
        if m:
            stamp = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # the logs' local time
            if stamp >= after - 0.002:
                out.append((stamp, line))
    return out


def _first(lines: list[tuple[float, str]], *needles: str) -> float:
    for stamp, line in lines:
        if all(n in line for n in needles):
            return stamp
    return float("nan")


def _from_logs(up: Up, name: str, *, after: float) -> dict[str, float]:
    logs = up.data / "logs"
    rec = _lines(logs / "reconciler.log", after)
    first_host = _lines(logs / f"host-{HOSTS[0]}.log", after)
    every_host = sorted(x for h in HOSTS for x in _lines(logs / f"host-{h}.log", after))
    compiled = float("nan")
    compile_seconds = float("nan")
    for stamp, line in every_host:
        m = _COMPILED.search(line)
        if m and m["app"] == name:
            compiled, compile_seconds = stamp, float(m["s"])
            break
    instance = f"dev/{name}/web/{HOSTS[0]}"
    return {
        "applied": _first(rec, "event=Applied", "env=dev"),
        "published": _first(rec, "event=published", f"host={HOSTS[0]}"),
        "converging": _first(first_host, "converging to generation"),
        "pulled": _first(every_host, f"dev/{name}/web/", "pulled"),  # the first host that needs the bytes
        "compile_started": compiled - compile_seconds,
        "compiled": compiled,
        "spawned": _first(first_host, instance, "ready in"),
    }
