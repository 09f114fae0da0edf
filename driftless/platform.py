"""``driftless up``: the whole platform on one machine, in one process tree, on loopback.

Data directory layout (``--data``, default ``~/.driftless``)::

    DATA/
      up.json                 endpoints: registry, reconciler, git remote, hosts (written when ready)
      token                   join token shared by the reconciler and the hosts (0600)
      admin-token             the local user's admin credential for the API (0600; the CLI sends it)
      users.yaml              the reconciler's users (--users-file): the admin's token SHA-256, role admin
      hook-token              the post-receive hook's credential (0600): the webhook secret, and user git-hook (viewer)
      age-identity            the reconciler's age key (0600; --age-identity-file): decrypts {age: ...} values
      registry/               registry storage root
      git/manifests.git       bare repository users clone and push to (pre-receive hook: an invalid push is
                              refused, under driftless up; post-receive hook -> reconciler)
      reconciler/             reconciler state (SQLite, git mirror)
      hosts/<name>/           each host's state (desired state, component info, admin-token: its admin API credential)
      compiled/               the compiled-component cache all hosts share (--compile-cache): one compile per component
      logs/<process>.log      one log per process

Started again on the same data directory it resumes: nothing is re-seeded, the registry keeps its
content, the reconciler its state, the hosts their desired state.

The same machinery starts the platform of the end-to-end tests (``tests/support/platform.py``): the
options below default to what ``driftless up`` does and let a caller choose the hosts (names, labels,
ports), the heartbeat, extra reconciler and host flags, another manifests tree, an external registry
or TLS on the control API, and stop, kill or restart any one process.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.errors import DriftlessError, NotReachable

# the example manifests and component sources (symlinks into the checkout; copied into wheels)
BUNDLED = Path(__file__).resolve().parent / "bundled"
EXAMPLE_TAG = "1.0.0"
# The components the example manifests use; pushed as demo/<name>:1.0.0 on first start.
EXAMPLE_COMPONENTS = ("hello", "greeter", "frontend")
# examples built by a standard toolchain (examples/standard/<source>, cached by source hash):
# pushed as demo/<name>:1.0.0 when this is a checkout that can build them
STANDARD_EXAMPLES = {"hello-py": "py-hello"}
STANDARD_BUILD = BUNDLED.resolve().parent.parent / "examples" / "standard" / "build.py"


@dataclass(frozen=True, slots=True)
class HostPlan:
    name: str
    labels: dict[str, str]
    port: int
    admin_port: int


# Three places: two clouds and an edge box. More hosts repeat the pattern.
PLACES: tuple[tuple[str, dict[str, str]], ...] = (
    ("aws-us-east-1", {"cloud": "aws", "region": "us-east-1"}),
    ("gcp-europe-west1", {"cloud": "gcp", "region": "europe-west1"}),
    ("edge-1", {"tier": "edge"}),
)


def host_plans(count: int, *, first_port: int, first_admin_port: int) -> list[HostPlan]:
    plans = []
    for i in range(count):
        name, labels = PLACES[i % len(PLACES)]
        if i >= len(PLACES):
            name = f"{name}-{i // len(PLACES) + 1}"
        plans.append(HostPlan(name, dict(labels), first_port + i, first_admin_port + i))
    return plans


@dataclass
class Platform:
    data: Path
    registry_port: int = 5000
    control_port: int = 8080
    host_count: int = 3
    first_host_port: int = 8081
    first_admin_port: int = 9081
    heartbeat: float = 2.0
    say: Callable[[str], None] = print
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # -- options (the defaults are `driftless up`'s) ---------------------------------------------
    host_list: Sequence[HostPlan] | None = None  # the hosts, given; default: host_count over PLACES
    manifests: Path | None = None  # the tree seed_git commits (its manifests/ folder); default: the examples
    seed_message: str = "Seed manifests from the driftless repository"
    reconciler_args: Sequence[str] = ()  # extra `driftless reconcile` flags (last wins)
    host_args: Sequence[str] = ()  # extra `driftless host` flags, for every host
    external_registry: str | None = None  # a registry URL that runs elsewhere (start_registry is not used)
    tls: tuple[Path, Path] | None = None  # (certificate, key): the control API serves HTTPS, hosts trust it
    repo: Path | None = None  # a repository of the caller's to follow; default DATA/git/manifests.git
    token_path: Path | None = None  # a join-token file of the caller's; default DATA/token
    commands: dict[str, list[str]] = field(default_factory=dict)  # process name -> its `driftless` args
    admin_name: str | None = None  # the admin user of users.yaml; default: the local user
    extra_users: Sequence[dict[str, Any]] = ()  # more users for users.yaml (its format), written with the admin
    open_reads: bool = False  # the reconciler serves reads without a credential (--open-reads)
    unavailable_examples: dict[str, str] = field(default_factory=dict)  # example name -> why it was not pushed
    refuse_invalid_pushes: bool = False  # a pre-receive hook refuses a push to main that does not validate

    # -- derived endpoints -------------------------------------------------------------------
    @property
    def registry_url(self) -> str:
        return self.external_registry or f"http://127.0.0.1:{self.registry_port}"

    @property
    def registry_host(self) -> str:
        return self.registry_url.split("://", 1)[1].rstrip("/")

    @property
    def control_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.control_port}"

    @property
    def git_dir(self) -> Path:
        return self.repo or self.data / "git" / "manifests.git"

    @property
    def token_file(self) -> Path:
        return self.token_path or self.data / "token"

    @property
    def admin_token_file(self) -> Path:
        return self.data / "admin-token"

    @property
    def users_file(self) -> Path:
        return self.data / "users.yaml"

    def host_admin_token_file(self, name: str) -> Path:
        """The credential of host ``name``'s admin API (the host creates it, 0600, in its data directory)."""
        return self.data / "hosts" / name / "admin-token"

    def admin_token(self) -> str:
        return self.admin_token_file.read_text().strip()

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token()}"}

    @property
    def age_identity_file(self) -> Path:
        return self.data / "age-identity"

    def age_recipient(self) -> str:
        """The public key of DATA/age-identity (made at the first start): what users encrypt secrets to."""
        from pyrage import x25519

        if not self.age_identity_file.exists():
            identity = x25519.Identity.generate()
            fd = os.open(self.age_identity_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"# public key: {identity.to_public()}\n{identity}\n")
        line = next(x for x in self.age_identity_file.read_text().splitlines() if x.startswith("AGE-SECRET-KEY-"))
        return str(x25519.Identity.from_str(line.strip()).to_public())

    @property
    def hook_token_file(self) -> Path:
        return self.data / "hook-token"

    def ensure_admin_credential(self) -> None:
        """DATA/admin-token (0600) for the local user and DATA/users.yaml naming it admin (first start only:
        a users.yaml of the user's, edited since, is kept), plus the post-receive hook's viewer credential
        DATA/hook-token (user git-hook, added to users.yaml when missing: the join token reads nothing)."""
        from reconciler.api.auth import dump_users, load_users, token_sha256

        self.data.mkdir(parents=True, exist_ok=True)
        for path in (self.admin_token_file, self.hook_token_file):
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(32))
        hook = {"name": "git-hook", "role": "viewer", "tokenSha256": token_sha256(self.hook_token_file.read_text().strip())}
        if self.users_file.exists():
            users = load_users(self.users_file)
            if any(u.name == hook["name"] for u in users):
                return
            entries = [{"name": u.name, "email": u.email, "role": u.role, "tokenSha256": u.token_sha256,
                        **({"environments": list(u.environments)} if u.environments is not None else {})}
                       for u in users]  # fmt: skip
        else:
            name = self.admin_name or _local_user()
            entries = [{"name": name, "email": _local_email(name), "role": "admin",
                        "tokenSha256": token_sha256(self.admin_token())}, *self.extra_users]
        tmp = self.users_file.with_suffix(".tmp")
        tmp.write_text(dump_users([*entries, hook]))
        os.replace(tmp, self.users_file)

    @property
    def hosts(self) -> list[HostPlan]:
        if self.host_list is not None:
            return list(self.host_list)
        return host_plans(self.host_count, first_port=self.first_host_port, first_admin_port=self.first_admin_port)

    def host_plan(self, name: str) -> HostPlan:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    # -- steps --------------------------------------------------------------------------------
    def prepare(self) -> None:
        for sub in ("registry", "git", "reconciler", "hosts", "logs"):
            (self.data / sub).mkdir(parents=True, exist_ok=True)
        if not self.token_file.exists():
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        self.ensure_admin_credential()
        self._ensure_ports_free()

    def _ensure_ports_free(self) -> None:
        import socket

        wanted = [] if self.external_registry else [("registry", self.registry_port)]
        wanted += [("reconciler", self.control_port)]
        wanted += [(f"host {h.name}", h.port) for h in self.hosts]
        wanted += [(f"host {h.name} admin", h.admin_port) for h in self.hosts]
        for what, port in wanted:
            with socket.socket() as s:
                # like the servers themselves: connections of a previous run in TIME_WAIT are no conflict
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise DriftlessError(
                        f"port {port} for the {what} is already in use",
                        hint="stop what uses it (another `driftless up`?) or choose other ports: "
                        "driftless up --registry-port/--control-port/--host-port",
                    ) from None

    def token(self) -> str:
        return self.token_file.read_text().strip()

    def start_registry(self) -> None:
        self._spawn(
            "registry",
            ["registry", "serve", "--root", str(self.data / "registry"), "--listen", self.registry_host],
        )
        _wait_http(f"{self.registry_url}/v2/", what="registry", proc=self.procs["registry"])

    def init_git(self) -> bool:
        """Create the bare repository, empty (first start only)."""
        if (self.git_dir / "HEAD").exists():
            return False
        self.git_dir.parent.mkdir(parents=True, exist_ok=True)
        _git("init", "--bare", "--initial-branch=main", "-q", str(self.git_dir))
        return True

    def seed_git(self) -> bool:
        """Create the bare repository from this checkout's manifests/ (or ``manifests``), first start only:
        while it has no main branch (it may exist empty, made by :meth:`init_git`)."""
        if (self.git_dir / "HEAD").exists() and _has_branch(self.git_dir, "main"):
            return False
        source = self.manifests or BUNDLED / "manifests"
        if not source.is_dir():
            raise DriftlessError(f"cannot seed the Git repository: {source} not found")
        self.init_git()
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "work"
            _git("clone", "-q", str(self.git_dir), str(work))
            shutil.copytree(source, work / "manifests")
            for name, why in self.unavailable_examples.items():
                for app in sorted((work / "manifests").glob("*/apps/*.yaml")):
                    if f"image: demo/{name}:" in app.read_text():
                        app.unlink()  # its component could not be built here: seed the rest
                        self.say(f"not seeding {app.relative_to(work)}: {why}")
            _git("-C", str(work), "add", "-A")
            _git("-C", str(work), "commit", "-q", "-m", self.seed_message)
            _git("-C", str(work), "push", "-q", "origin", "HEAD:main")
        return True

    def install_hook(self) -> None:
        """post-receive: tell the reconciler at once (it also watches the repository itself), then tell
        the pusher whether the revision was applied or rejected, with file:line (driftless/push_feedback.py,
        up to 10 s; git shows it as ``remote: ...``). The hook never fails the push; the pre-receive hook
        (:meth:`install_pre_receive`, with ``refuse_invalid_pushes``) is what refuses an invalid one."""
        import shlex

        hook = self.git_dir / "hooks" / "post-receive"
        ca = f"--cacert {shlex.quote(str(self.tls[0]))} " if self.tls else ""
        token = shlex.quote(str(self.hook_token_file))  # the webhook secret, and the viewer git-hook
        hook.write_text(
            "#!/bin/sh\n"
            "# installed by driftless up: a push triggers an immediate reconcile, and the pusher sees its outcome\n"
            "refs=$(cat)\n"
            f'curl -fsS -m 2 {ca}-X POST -H "Authorization: Bearer $(cat {token})" '
            f"{self.control_url}/hooks/generic >/dev/null 2>&1 || true\n"
            f'printf \'%s\\n\' "$refs" | {shlex.quote(sys.executable)} -m driftless.push_feedback '
            f"--url {self.control_url} --token-file {token} --branch main {ca}2>/dev/null || true\n"
            "exit 0\n"
        )
        hook.chmod(0o755)
        self.install_pre_receive()

    def install_pre_receive(self) -> None:
        """With ``refuse_invalid_pushes``: a pre-receive hook (driftless/pre_receive.py) that refuses a
        push to main whose manifests do not validate, with every problem at its file:line, so the commit
        never lands; without, no such hook (a push is reported on after the fact, by post-receive)."""
        import shlex

        hook = self.git_dir / "hooks" / "pre-receive"
        if not self.refuse_invalid_pushes:
            hook.unlink(missing_ok=True)
            return
        # the running reconciler checks the pushed tree (milliseconds); the hook loads the model itself
        # only when it does not answer (a second or two of every push, on a busy machine)
        ca = f" --cacert {shlex.quote(str(self.tls[0]))}" if self.tls else ""
        hook.write_text(
            "#!/bin/sh\n"
            "# installed by driftless up: a push to main whose manifests do not validate is refused\n"
            f"exec {shlex.quote(sys.executable)} -m driftless.pre_receive --branch main --subdir manifests "
            f"--url {self.control_url} --token-file {shlex.quote(str(self.hook_token_file))}{ca}\n"
        )
        hook.chmod(0o755)

    def push_examples(self) -> list[str]:
        """Push the example components the manifests use, unless the registry has them already."""
        import wasmtime

        from shared import registry_client as client

        pushed = []
        for name in EXAMPLE_COMPONENTS:
            ref = f"{self.registry_host}/demo/{name}:{EXAMPLE_TAG}"
            if client.resolve(ref) is not None:
                continue
            wat = BUNDLED / "components" / f"{name}.wat"
            if not wat.is_file():
                raise DriftlessError(f"example component source {wat} not found")
            client.push_component(ref, bytes(wasmtime.wat2wasm(wat.read_text())))
            pushed.append(ref)
        for name, source in STANDARD_EXAMPLES.items():
            ref = f"{self.registry_host}/demo/{name}:{EXAMPLE_TAG}"
            if client.resolve(ref) is not None:
                continue
            built = _standard_example(source)
            if isinstance(built, str):
                self.unavailable_examples[name] = built
                continue
            client.push_component(ref, built.read_bytes())
            pushed.append(ref)
        return pushed

    def reconciler_command(self) -> list[str]:
        """The ``driftless`` arguments of this platform's reconciler."""
        tls = ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])] if self.tls else []
        self.ensure_admin_credential()
        self.age_recipient()  # DATA/age-identity exists
        return [
            "reconcile",
            "--repo", str(self.git_dir),
            "--branch", "main",
            "--path", "manifests",
            "--listen", f"127.0.0.1:{self.control_port}",
            "--data", str(self.data / "reconciler"),
            "--registry", self.registry_url,
            "--token-file", str(self.token_file),
            "--heartbeat", str(self.heartbeat),
            "--users-file", str(self.users_file),
            "--webhook-secret-file", str(self.hook_token_file),  # the post-receive hook's
            "--age-identity-file", str(self.age_identity_file),
            *(["--open-reads"] if self.open_reads else []),
            *tls,
            *self.reconciler_args,
        ]  # fmt: skip

    def start_reconciler(self, *, wait: bool = True) -> None:
        self._spawn("reconciler", self.reconciler_command())
        if wait:
            self.wait_reconciler()

    def wait_reconciler(self) -> None:
        _wait_http(f"{self.control_url}/healthz", what="reconciler", proc=self.procs["reconciler"],
                   verify=ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else True)  # fmt: skip

    def start_hosts(self) -> None:
        """Start every host, then wait until each listens (its ingress opens before its admin API):
        a resumed platform is "up" only once the hosts serve again, not when the reconciler's saved
        state says the apps are Healthy."""
        for h in self.hosts:
            self.start_host(h)
        self.wait_hosts()

    def wait_hosts(self) -> None:
        """Wait until every host listens (its admin API answers)."""
        for h in self.hosts:
            _wait_http(f"http://127.0.0.1:{h.admin_port}/healthz", what=f"host {h.name}",
                       proc=self.procs[f"host-{h.name}"])

    def start_host(self, h: HostPlan) -> None:
        args = [
            "host",
            "--control", self.control_url,
            "--token-file", str(self.token_file),
            "--name", h.name,
            "--listen", f"127.0.0.1:{h.port}",
            "--admin-listen", f"127.0.0.1:{h.admin_port}",
            "--data", str(self.data / "hosts" / h.name),
            "--compile-cache", str(self.data / "compiled"),  # one compile per component for all hosts
            "--heartbeat", str(self.heartbeat),
            "--registry", self.registry_url,  # where a $DRIFTLESS_REGISTRY_USER credential may go
        ]  # fmt: skip
        if self.tls:
            args += ["--control-ca", str(self.tls[0])]
        for k, v in h.labels.items():
            args += ["--label", f"{k}={v}"]
        self._spawn(f"host-{h.name}", [*args, *self.host_args])

    def write_up_json(self) -> dict[str, Any]:
        info = {
            "registry": self.registry_url,
            "reconciler": self.control_url,
            "git": str(self.git_dir),
            "tokenFile": str(self.token_file),
            "credentialFile": str(self.admin_token_file),
            "usersFile": str(self.users_file),
            "ageRecipient": self.age_recipient(),  # `driftless secrets encrypt` encrypts to it
            "data": str(self.data),
            "pid": os.getpid(),
            "hosts": [
                {
                    "name": h.name,
                    "labels": h.labels,
                    "ingress": f"http://127.0.0.1:{h.port}",
                    "admin": f"http://127.0.0.1:{h.admin_port}",
                    "adminTokenFile": str(self.host_admin_token_file(h.name)),
                }
                for h in self.hosts
            ],
        }
        tmp = self.data / "up.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, self.data / "up.json")
        return info

    # -- process tree -------------------------------------------------------------------------
    def _spawn(self, name: str, args: Sequence[str]) -> None:
        self.commands[name] = list(args)
        self.procs[name] = self._popen(name, self.commands[name])

    def _popen(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start ``driftless ARGS`` with its output appended to ``logs/NAME.log``."""
        log = open(self.data / "logs" / f"{name}.log", "ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "driftless", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            log.close()

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def stop_process(self, name: str, timeout: float = 10.0) -> int | None:
        """SIGTERM one process (a graceful stop) and wait; SIGKILL it if it lingers."""
        p = self.procs[name]
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    def kill(self, name: str) -> None:
        """SIGKILL one process: a crash, no cleanup."""
        p = self.procs[name]
        if p.poll() is None:
            p.kill()
            p.wait(10)

    def restart(self, name: str) -> None:
        """Start a stopped (or killed) process again with the same arguments and data directory."""
        if self.alive(name):
            raise DriftlessError(f"{name} still runs")
        self.procs[name] = self._popen(name, self.commands[name])
        if name == "reconciler":
            self.wait_reconciler()
        elif name == "registry":
            _wait_http(f"{self.registry_url}/v2/", what="registry", proc=self.procs[name])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM everything (hosts first, so they drain), then wait; SIGKILL what lingers."""
        order = sorted(self.procs, key=lambda n: (not n.startswith("host-"), n != "reconciler"))
        for name in order:
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in order:
            p = self.procs[name]
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        try:
            (self.data / "up.json").unlink()
        except FileNotFoundError:
            pass


def _local_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "admin"


def _local_email(name: str) -> str:
    r = subprocess.run(["git", "config", "--get", "user.email"], capture_output=True, text=True)
    email = r.stdout.strip()
    return email if r.returncode == 0 and email and " " not in email and "<" not in email else f"{name}@localhost"


def _has_branch(git_dir: Path, branch: str) -> bool:
    r = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
                       capture_output=True, text=True)
    return r.returncode == 0


def _git(*args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "driftless"),
        "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "driftless@localhost"),
        "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "driftless"),
        "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "driftless@localhost"),
    }
    r = subprocess.run(["git", *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise DriftlessError(f"git {' '.join(args[:2])} failed: {r.stderr.strip()}")


def _wait_http(
    url: str, *, what: str, proc: subprocess.Popen[bytes], timeout: float = 30.0, verify: ssl.SSLContext | bool = True
) -> None:
    """Wait until ``url`` answers anything but a server error (the process is up and serving)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1, verify=verify) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DriftlessError(f"the {what} exited with code {proc.returncode} while starting; see its log")
            try:
                if client.get(url).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise NotReachable(f"the {what} did not answer at {url} within {timeout:.0f}s")


def _standard_example(source: str) -> Path | str:
    """The built example component ``source`` (built now if needed), or why it is not available."""
    if not STANDARD_BUILD.is_file():
        return "its source is not here (an installed package, not a checkout)"
    import importlib.util

    spec = importlib.util.spec_from_file_location("driftless_standard_build", STANDARD_BUILD)
    if spec is None or spec.loader is None:
        return f"cannot load {STANDARD_BUILD}"
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    try:
        spec.loader.exec_module(module)
        path: Path = module.build(source).path
    except Exception as exc:  # a missing toolchain: the rest of the platform still comes up
        return f"building {source} failed ({exc}); run python hack/build-standard-components.py --only {source}"
    return path
