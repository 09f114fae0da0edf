#!/usr/bin/env python3
"""Benchmark the Driftless registry against CNCF distribution (Debian ``docker-registry``).

Starts both on loopback with filesystem storage in a temp dir and measures, in the same run:
blob push and pull throughput (1 MiB and 64 MiB blobs) and manifest GET/HEAD requests per second
at 16 concurrent clients. Prints a table of ours/distribution ratios and, with ``--record``, appends
the figures to ``hack/bench/RESULTS.md`` under ``## Registry``.

    python hack/bench/registry.py [--seconds 4] [--record]

Load: pushes use one Python ``http.client`` connection (POST + monolithic PUT, what oras and docker
do); pulls and manifest GETs use ``wrk`` (``apt-get install wrk``) when installed, else a lean
asyncio raw-socket client; manifest HEADs always use the asyncio client (wrk hangs on HEAD). The same
client measures both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from _processes import free_port, wait_ready  # hack/bench/_processes.py (scripts run from hack/bench)

REPO_ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "/usr/bin/docker-registry"
MIB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"






def start_ours(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftless", "registry", "serve", "--root", str(tmp / "ours"), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT,
    )
    wait_ready(f"http://127.0.0.1:{port}/v2/", proc)
    return proc, port


def start_distribution(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = tmp / "distribution.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        # as distribution's own shipped config: the in-memory blob descriptor cache is on
        f"storage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {tmp / 'distribution'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([DISTRIBUTION, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/v2/", proc)
    return proc, port


# --- pushes ----------------------------------------------------------------------------------------


def push_blob(conn: http.client.HTTPConnection, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    conn.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", headers={"Content-Length": "0"})
    r = conn.getresponse()
    r.read()
    assert r.status == 202, r.status
    location = r.headers["Location"]
    if "://" in location:
        location = "/" + location.split("/", 3)[3]
    sep = "&" if "?" in location else "?"
    conn.request("PUT", f"{location}{sep}digest={digest}", body=data,
                 headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
    r = conn.getresponse()
    r.read()
    assert r.status == 201, (r.status, r.read())
    return digest


def measure_push(port: int, size: int, seconds: float, tag: str) -> tuple[float, list[str]]:
    """MiB/s pushing distinct blobs of ``size`` for about ``seconds``; returns the digests too."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    seed = os.urandom(size)
    digests = []
    total = 0
    started = time.perf_counter()
    i = 0
    while True:
        data = i.to_bytes(8, "big") + seed[8:]  # distinct content, no deduplication
        digests.append(push_blob(conn, f"bench/{tag}", data))
        total += len(data)
        i += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and i >= 1:
            break
    conn.close()
    return total / MIB / elapsed, digests


# --- loads with wrk or asyncio ---------------------------------------------------------------------


def wrk(url: str, *, method: str, connections: int, seconds: float, headers: dict[str, str]) -> tuple[float, float]:
    """(requests/s, bytes/s) from wrk."""
    script = ""
    if method != "GET":
        script = f'wrk.method = "{method}"\n'
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        lua = f.name
    args = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "-s", lua]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    done = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 30)
    os.unlink(lua)
    out = done.stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise SystemExit(f"wrk failed on {url}: {done.stdout} {done.stderr}")
    rps = float(found.group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    units = {"B": 1, "KB": 1024, "MB": MIB, "GB": 1024 * MIB}
    bps = float(m.group(1)) * units.get(m.group(2), 1) if m else 0.0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise SystemExit(f"wrk saw {non2xx.group(1)} error responses from {url}")
    return rps, bps


async def _raw_load(port: int, path: str, *, method: str, connections: int, seconds: float,
                    headers: dict[str, str]) -> tuple[float, float]:
    request = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    deadline = time.perf_counter() + seconds
    counts = [0, 0]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            length = int(m.group(1)) if m and method != "HEAD" else 0
            if length:
                await reader.readexactly(length)
            counts[0] += 1
            counts[1] += len(head) + length
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return counts[0] / elapsed, counts[1] / elapsed


def load(port: int, path: str, *, method: str = "GET", connections: int, seconds: float,
         headers: dict[str, str] | None = None) -> tuple[float, float]:
    # wrk waits for a body after HEAD (its parser is not told about HEAD), so HEAD uses the asyncio client
    if shutil.which("wrk") and method != "HEAD":
        return wrk(f"http://127.0.0.1:{port}{path}", method=method, connections=connections, seconds=seconds,
                   headers=headers or {})
    return asyncio.run(_raw_load(port, path, method=method, connections=connections, seconds=seconds,
                                 headers=headers or {}))


def push_manifest(port: int, repo: str, layer_digest: str, layer_size: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    config = push_blob(conn, repo, b"{}")
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                    "size": layer_size}],
        "annotations": {"org.opencontainers.image.title": "bench"},
    }).encode()
    conn.request("PUT", f"/v2/{repo}/manifests/v1", body=manifest, headers={"Content-Type": OCI_MANIFEST})
    r = conn.getresponse()
    r.read()
    assert r.status == 201, r.status
    conn.close()
    return "v1"


# --- the run ---------------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; load average {load:.1f} at the end (machine shared with other work)")


def _distribution_version() -> str:
    try:
        out = subprocess.run([DISTRIBUTION, "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.split()[-1] if out.split() else "unknown version"
    except OSError:
        return "unknown version"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="duration of each measurement per server (default 6), split into --rounds slices")
    parser.add_argument("--rounds", type=int, default=3, help="alternating slices per measurement (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent clients for manifests (default 16)")
    parser.add_argument("--record", action="store_true", help="append the figures to hack/bench/RESULTS.md")
    args = parser.parse_args()
    if not os.access(DISTRIBUTION, os.X_OK):
        raise SystemExit(f"{DISTRIBUTION} not found: apt-get install docker-registry")

    rows: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="driftless-bench-") as tmp_name:
        tmp = Path(tmp_name)
        servers = {}
        procs = []
        try:
            for name, start in (("ours", start_ours), ("distribution", start_distribution)):
                proc, port = start(tmp)
                procs.append(proc)
                servers[name] = port
            results: dict[str, dict[str, float]] = {name: {} for name in servers}
            digests: dict[str, dict[int, list[str]]] = {name: {} for name in servers}

            def each(label: str, fn: Callable[[str, int, float], float]) -> None:
                # alternate short slices between the servers so both see the same machine conditions
                # (other work on a shared machine drifts over seconds); report the mean over the slices
                sums = {name: 0.0 for name in servers}
                for _ in range(args.rounds):
                    for name, port in servers.items():
                        sums[name] += fn(name, port, args.seconds / args.rounds)
                for name in servers:
                    results[name][label] = sums[name] / args.rounds

            for size, label in ((MIB, "1 MiB"), (64 * MIB, "64 MiB")):
                def push(name: str, port: int, seconds: float, size: int = size) -> float:
                    mibs, ds = measure_push(port, size, seconds, f"s{size}")
                    digests[name].setdefault(size, []).extend(ds)
                    return mibs

                each(f"blob push {label} (MiB/s)", push)

                def pull(name: str, port: int, seconds: float, size: int = size) -> float:
                    digest = digests[name][size][0]
                    _, bps = load(port, f"/v2/bench/s{size}/blobs/{digest}", connections=4, seconds=seconds)
                    return bps / MIB

                each(f"blob pull {label} (MiB/s, 4 clients)", pull)

            tags: dict[str, str] = {}
            for name, port in servers.items():
                tags[name] = push_manifest(port, f"bench/s{MIB}", digests[name][MIB][0], MIB)
            for method in ("GET", "HEAD"):
                def manifests(name: str, port: int, seconds: float, method: str = method) -> float:
                    rps, _ = load(port, f"/v2/bench/s{MIB}/manifests/{tags[name]}", method=method,
                                  connections=args.connections, seconds=seconds,
                                  headers={"Accept": OCI_MANIFEST})
                    return rps

                each(f"manifest {method} (req/s, {args.connections} clients)", manifests)
            for label in results["ours"]:
                rows.append((label, "", results["ours"][label], results["distribution"][label]))
        finally:
            for proc in procs:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()

    width = max(len(r[0]) for r in rows)
    lines = [f"| {'measure':<{width}} | {'ours':>10} | {'distribution':>12} | {'ratio':>6} |",
             f"|{'-' * (width + 2)}|{'-' * 12}|{'-' * 14}|{'-' * 8}|"]
    for label, _, ours, dist in rows:
        lines.append(f"| {label:<{width}} | {ours:>10.1f} | {dist:>12.1f} | {ours / dist:>6.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.record:
        results_md = REPO_ROOT / "hack" / "bench" / "RESULTS.md"
        command = "python hack/bench/registry.py " + " ".join(sys.argv[1:])
        load_tool = ("wrk (GET), asyncio raw-socket client (HEAD)" if shutil.which("wrk")
                     else "an asyncio raw-socket client")
        entry = (
            f"\n### {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}\n\n"
            f"- machine: {machine()}\n- command: `{command.strip()}`\n"
            f"- load: pushes with one http.client connection; pulls and manifests with {load_tool}; "
            f"distribution = `{DISTRIBUTION}` ({_distribution_version()}) with filesystem storage; "
            f"each figure is the mean of {args.rounds} alternating slices of {args.seconds / args.rounds:.0f} s per server\n\n{table}\n"
        )
        text = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
        if "## Registry" not in text:
            text = text.rstrip("\n") + "\n\n## Registry\n\nRatio = ours / distribution; at least 1.0 is the goal.\n"
        # keep our entries together under ## Registry, before the next section of another area
        head, _, tail = text.partition("## Registry")
        nxt = re.search(r"\n## (?!Registry)", tail)
        if nxt:
            tail = tail[: nxt.start()].rstrip("\n") + "\n" + entry + tail[nxt.start():]
        else:
            tail = tail.rstrip("\n") + "\n" + entry
        results_md.write_text(head + "## Registry" + tail)
        print(f"recorded in {results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
