"""The one platform of the end-to-end tests: ``driftless up``'s own machinery (``driftless.platform.Platform``:
registry, bare Git repository with its post-receive hook, reconciler and host agents as processes),
on free ports of 127.0.0.1, with a fast heartbeat and every process's log printed when a test fails.

    p = local_platform(tmp_path, hosts={"aws-1": {"cloud": "aws"}}, reconciler_args=["--grace", "3"])
    p.up(tree={"prod/environment.yaml": environment("prod"), ...}, components={"demo/hello:1.0.0": wasm})
    try:
        p.git.push({"prod/apps/a.yaml": application(...)}, "a change")   # an error if nothing changed
        p.reconciler.app("prod", "a"); p.registry.push("demo/hello:2.0.0", other); p.kill("host-aws-1")
    finally:
        p.stop()

Every step of ``up`` is also callable alone (``prepare``, ``start_registry``, ``seed``, ``start_reconciler``,
``start_hosts``) for the tests that need the platform in pieces (a repository that appears later, a
reconciler without hosts, ...). Manifest paths are relative to the repository's ``manifests/`` folder.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from driftless.platform import HostPlan, Platform
from tests.support.procs import DriftlessProcess, free_port

# what the tests' reconcilers run with unless a test says otherwise: Git polled rarely (the hook and
# explicit syncs drive them), a short grace before a converging instance counts as drift
RECONCILER_ARGS = ("--interval", "30", "--grace", "3")
HEARTBEAT = 0.5
ADMIN = "driftless-test"  # the admin user of the tests' users files
PUSHED_AT = "2025-01-01T00:00:00Z"  # the artifacts' creation time: pushing the same bytes again changes nothing


def with_custom_section(wasm: bytes, payload: bytes) -> bytes:
    """The same component with a custom section appended: same behaviour, another digest."""
    name = b"driftless-test"
    body = bytes([len(name)]) + name + payload
    size, out = len(body), bytearray()
    while True:
        byte = size & 0x7F
        size >>= 7
        out.append(byte | (0x80 if size else 0))
        if not size:
            break
    return wasm + b"\x00" + bytes(out) + body


def write_tree(root: Path, files: dict[str, str | None]) -> None:
    """Write (or, for None, delete) ``files`` under ``root``; texts are dedented."""
    for rel, text in files.items():
        path = root / rel
        if text is None:
            if path.exists():
                path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


class NothingToCommit(AssertionError):
    """A push that changes nothing: the test would test nothing."""


class GitRepo:
    """A working clone of the platform's bare repository (what the reconciler watches) to commit and push from."""

    def __init__(self, bare: Path, work: Path) -> None:
        self.bare, self.work = bare, work
        if not (work / ".git").exists():
            subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
            self._git("symbolic-ref", "HEAD", "refs/heads/main")  # an empty clone: commit onto main
        self._git("config", "user.email", "test@driftless.dev")
        self._git("config", "user.name", "Driftless Test")

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.work), *args], check=True, capture_output=True, text=True).stdout

    def write(self, files: dict[str, str | None]) -> None:
        write_tree(self.work / "manifests", files)

    def changed(self) -> bool:
        """Whether the working clone's manifests differ from the last commit."""
        return bool(self._git("status", "--porcelain", "manifests").strip())

    def head(self) -> str:
        return self._git("rev-parse", "HEAD").strip()

    def sync(self) -> None:
        """Catch up with what others pushed (the reconciler's promotions and rollbacks)."""
        if self._git("ls-remote", "origin", "main").strip():
            self._git("pull", "-q", "--rebase", "--autostash", "origin", "main")

    def push(self, files: dict[str, str | None], message: str) -> str:
        """Commit ``files`` and push; the new revision. Raises NothingToCommit when nothing changes."""
        self.sync()
        self.write(files)
        self._git("add", "-A", "manifests")
        if not self._git("status", "--porcelain", "manifests").strip():
            raise NothingToCommit(f"push {message!r}: the files change nothing in {self.bare}")
        self._git("commit", "-q", "-m", message)
        self._git("push", "-q", "origin", "HEAD:main")
        return self.head()


class Reconciler:
    """The platform's reconciler process and reads of its API."""

    def __init__(self, p: LocalPlatform) -> None:
        self.p = p

    @property
    def url(self) -> str:
        return self.p.control_url

    @property
    def port(self) -> int:
        return self.p.control_port

    @property
    def proc(self) -> DriftlessProcess | None:
        return self.p.running.get("reconciler")

    def start(self) -> Reconciler:
        if "reconciler" in self.p.commands:
            self.p.restart("reconciler")
        else:
            self.p.start_reconciler()
        return self

    def stop(self) -> None:
        if "reconciler" in self.p.procs:
            self.p.stop_process("reconciler")

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.url}{path}", timeout=5, headers=self.p.read_headers)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any = None, *, token: str | None = None) -> httpx.Response:
        """POST as the platform's admin (or with the bearer ``token`` given; "" for none); the response as is."""
        bearer = self.p.admin_token() if token is None else token
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return httpx.post(f"{self.url}{path}", json=body if body is not None else {}, headers=headers, timeout=60)

    def app(self, env: str, app: str) -> dict[str, Any]:
        return self.get(f"/api/v1/environments/{env}/apps/{app}")  # type: ignore[no-any-return]

    def host(self, name: str) -> dict[str, Any]:
        return self.get(f"/api/v1/hosts/{name}")  # type: ignore[no-any-return]


class Registry:
    """The platform's registry: push components, read digests."""

    def __init__(self, p: LocalPlatform) -> None:
        self.p = p

    @property
    def url(self) -> str:
        return self.p.registry_url

    @property
    def host(self) -> str:
        return self.p.registry_host

    def push(self, ref: str, wasm: bytes) -> str:
        """Push ``wasm`` as ``ref`` (e.g. demo/hello:1.0.0); the manifest digest, the same for the same bytes."""
        from shared.registry_client import push_component

        return push_component(f"{self.host}/{ref}", wasm, created=PUSHED_AT)

    def digest(self, ref: str) -> str | None:
        from shared.registry_client import resolve

        return resolve(f"{self.host}/{ref}")

    def tag(self, ref: str, digest: str) -> None:
        """Point the tag of ``ref`` (repo:tag) at the manifest ``digest`` again (its bytes, unchanged)."""
        repo, _, tag = ref.rpartition(":")
        accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
        got = httpx.get(f"{self.url}/v2/{repo}/manifests/{digest}", headers=accept, timeout=5)
        got.raise_for_status()
        put = httpx.put(f"{self.url}/v2/{repo}/manifests/{tag}", content=got.content, timeout=5,
                        headers={"Content-Type": got.headers["Content-Type"]})
        put.raise_for_status()
        assert self.digest(ref) == digest, ref


class Process:
    """One process of the platform by name (``registry``, ``reconciler``, ``host-NAME``): kill it, start it again."""

    def __init__(self, p: LocalPlatform, name: str) -> None:
        self.p, self.name = p, name

    @property
    def proc(self) -> Process:
        return self

    def alive(self) -> bool:
        return self.p.alive(self.name)

    def kill(self) -> None:
        self.p.kill(self.name)

    def stop(self) -> None:
        self.p.stop_process(self.name)

    def start(self) -> Process:
        self.p.restart(self.name)
        return self

    def log(self) -> str:
        return self.p.running[self.name].log()


@dataclass
class LocalPlatform(Platform):
    """``driftless up``'s Platform whose processes are DriftlessProcess (their logs shown on failure)."""

    running: dict[str, DriftlessProcess] = field(default_factory=dict)
    _git_repo: GitRepo | None = None

    @property
    def read_headers(self) -> dict[str, str]:
        """The admin credential (``driftless up``'s DATA/admin-token), for reads and writes alike."""
        return self.admin_headers() if self.admin_token_file.exists() else {}

    def _popen(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        proc = DriftlessProcess(args, log_dir=self.data / "logs", name=name).start()
        self.running[name] = proc
        assert proc.proc is not None
        return proc.proc

    # -- the parts ------------------------------------------------------------------------------
    @property
    def reconciler(self) -> Reconciler:
        return Reconciler(self)

    @property
    def registry(self) -> Registry:
        return Registry(self)

    @property
    def git(self) -> GitRepo:
        """A working clone of the bare repository (made at the first use)."""
        if self._git_repo is None:
            self.init_git()
            self.install_hook()
            self._git_repo = GitRepo(self.git_dir, self.data / "work")
        return self._git_repo

    def ingress(self, host: str) -> str:
        return f"http://127.0.0.1:{self.host_plan(host).port}"

    def admin(self, host: str) -> str:
        return f"http://127.0.0.1:{self.host_plan(host).admin_port}"

    def host_admin_headers(self, host: str) -> dict[str, str]:
        """The credential of ``host``'s admin API (DATA/hosts/NAME/admin-token, made by the host)."""
        return {"Authorization": f"Bearer {self.host_admin_token_file(host).read_text().strip()}"}

    def process(self, name: str) -> Process:
        """The process ``registry``, ``reconciler`` or ``host-NAME``."""
        return Process(self, name)

    # -- steps ------------------------------------------------------------------------------------
    def seed(self, tree: dict[str, str | None], message: str = "seed") -> str:
        """Create the bare repository with ``tree`` (paths under manifests/) in one commit; its revision."""
        with tempfile.TemporaryDirectory() as tmp:
            write_tree(Path(tmp), tree)
            self.manifests, self.seed_message = Path(tmp), message
            try:
                if not self.seed_git():
                    raise AssertionError(f"{self.git_dir} is already seeded")
            finally:
                self.manifests = None
        self.install_hook()
        return subprocess.run(["git", "--git-dir", str(self.git_dir), "rev-parse", "main"], check=True,
                              capture_output=True, text=True).stdout.strip()

    def up(self, *, tree: dict[str, str | None] | None = None, message: str = "seed",
           components: dict[str, bytes] | None = None, hosts: bool = True) -> dict[str, str]:
        """What ``driftless up`` does, with this platform's options: registry (``components`` pushed),
        the repository (seeded with ``tree``), the reconciler, the hosts. The digests pushed, by ref."""
        self.prepare()
        if not self.external_registry:
            self.start_registry()
        digests = {ref: self.registry.push(ref, wasm) for ref, wasm in (components or {}).items()}
        if tree is not None:
            self.seed(tree, message)
        self.start_reconciler()
        if hosts:
            self.start_hosts()
        return digests


def local_platform(
    root: Path,
    *,
    hosts: dict[str, dict[str, str]] | None = None,
    heartbeat: float = HEARTBEAT,
    reconciler_args: tuple[str, ...] | list[str] = (),
    host_args: tuple[str, ...] | list[str] = (),
    external_registry: str | None = None,
    tls: tuple[Path, Path] | None = None,
    repo: Path | None = None,
    token_path: Path | None = None,
    admin_name: str = ADMIN,
    users: list[dict[str, Any]] | None = None,
    open_reads: bool | None = None,
) -> LocalPlatform:
    """A platform in ``root`` on free ports: ``hosts`` maps host names to their labels (none: no hosts).

    Like ``driftless up`` the reconciler runs with a users file (DATA/users.yaml): an admin named
    ``admin_name`` whose token is DATA/admin-token (``p.admin_token()``), plus ``users`` (users-file
    entries, :func:`user`). Reads are open (``--open-reads``, for the tests that read with a plain GET)
    unless ``open_reads=False`` or the reconciler is given ``--read-token-file``.
    """
    plans = [HostPlan(name, dict(labels), free_port(), free_port()) for name, labels in (hosts or {}).items()]
    if open_reads is None:
        open_reads = "--read-token-file" not in reconciler_args
    return LocalPlatform(
        data=root, registry_port=free_port(), control_port=free_port(), host_list=plans, heartbeat=heartbeat,
        reconciler_args=[*RECONCILER_ARGS, *reconciler_args], host_args=list(host_args),
        external_registry=external_registry, tls=tls, repo=repo, token_path=token_path, say=lambda _: None,
        admin_name=admin_name, extra_users=list(users or []), open_reads=open_reads,
    )  # fmt: skip


def user(name: str, token: str, role: str, *, environments: list[str] | None = None,
         email: str | None = None) -> dict[str, Any]:
    """A users-file entry for ``token`` (stored as its SHA-256)."""
    from reconciler.api.auth import token_sha256

    entry: dict[str, Any] = {"name": name, "email": email or f"{name}@example.com", "role": role,
                             "tokenSha256": token_sha256(token)}
    if environments is not None:
        entry["environments"] = environments
    return entry


def environment(name: str, *, prefix: str = "", selector: dict[str, str] | None = None, prune: bool = True,
                mode: str = "heal") -> str:
    labels = json.dumps(selector or {})
    return f"""\
        apiVersion: driftless.dev/v1alpha1
        kind: Environment
        metadata:
          name: {name}
        spec:
          hostSelector:
            matchLabels: {labels}
          ingress:
            pathPrefix: "{prefix}"
          sync:
            prune: {'true' if prune else 'false'}
            mode: {mode}
        """


def application(name: str, components: list[dict[str, Any]]) -> str:
    """An Application manifest; components are dicts in YAML spelling (JSON is valid YAML)."""
    body = {"apiVersion": "driftless.dev/v1alpha1", "kind": "Application", "metadata": {"name": name},
            "spec": {"components": components}}
    return json.dumps(body, indent=2) + "\n"
