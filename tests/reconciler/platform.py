"""A real platform for the reconciler's end-to-end tests: registry, bare Git repo + working clone,
the reconciler process, and host processes. Everything on 127.0.0.1, random ports.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.procs import DriftlessProcess, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


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


class Registry:
    """The project's registry when its command exists, else CNCF distribution (docker-registry)."""

    def __init__(self, root: Path, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        if (REPO_ROOT / "driftless" / "commands" / "registry.py").exists():
            args = ["registry", "serve", "--root", str(root), "--listen", self.host]
            self.proc: Any = DriftlessProcess(args, log_dir=log_dir, ready_url=f"{self.url}/v2/", name="registry")
        else:
            config = root / "config.yml"
            config.write_text(textwrap.dedent(f"""\
                version: 0.1
                log: {{level: error}}
                storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}
                http: {{addr: {self.host}}}
                """))
            self.proc = _External(["/usr/bin/docker-registry", "serve", str(config)], log_dir / "docker-registry.log",
                                  ready_url=f"{self.url}/v2/")

    def start(self) -> Registry:
        self.proc.start()
        return self

    def stop(self) -> None:
        self.proc.stop()

    def push(self, ref: str, wasm: bytes) -> str:
        """Push ``wasm`` as ``ref`` (e.g. demo/hello:1.0.0) with oras-py; the manifest digest."""
        import oras.client

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "component.wasm"
            path.write_bytes(wasm)
            config = Path(tmp) / "config.json"
            config.write_text(json.dumps({"architecture": "wasm", "os": "wasip2"}))
            client = oras.client.OrasClient(hostname=self.host, insecure=True)
            try:
                client.push(target=f"{self.host}/{ref}", files=[f"{path}:application/wasm"],
                            manifest_config=f"{config}:application/vnd.wasm.config.v0+json",
                            disable_path_validation=True, quiet=True)
            finally:
                client.session.close()
        return self.digest(ref)

    def digest(self, ref: str) -> str:
        repo, _, tag = ref.rpartition(":")
        req = urllib.request.Request(f"{self.url}/v2/{repo}/manifests/{tag}", method="HEAD", headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return str(r.headers["Docker-Content-Digest"])


class _External:
    def __init__(self, argv: list[str], log: Path, *, ready_url: str) -> None:
        self.argv, self.log, self.ready_url = argv, log, ready_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(self.argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: _http_status(self.ready_url) == 200, timeout=20, what=f"{self.argv[0]} ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        e.close()
        return e.code
    except OSError:
        return 0


class GitRepo:
    """A bare repository (what the reconciler watches) and a working clone we commit and push from."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "manifests.git"
        self.work = root / "work"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(self.work)], check=True)
        self._git("config", "user.email", "test@driftless.dev")
        self._git("config", "user.name", "Driftless Test")
        self._git("remote", "add", "origin", str(self.bare))

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.work), *args], check=True, capture_output=True, text=True).stdout

    def write(self, files: dict[str, str | None]) -> None:
        for rel, text in files.items():
            path = self.work / "manifests" / rel
            if text is None:
                if path.exists():
                    path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))

    def changed(self) -> bool:
        """Whether the working clone's manifests differ from the last commit."""
        return bool(self._git("status", "--porcelain", "manifests").strip())

    def head(self) -> str:
        return self._git("rev-parse", "HEAD").strip()

    def push(self, files: dict[str, str | None], message: str) -> str:
        self.write(files)
        self._git("add", "-A", "manifests")
        self._git("commit", "-q", "--allow-empty", "-m", message)
        self._git("push", "-q", "origin", "main")
        return self.head()


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


class Reconciler:
    def __init__(self, *, repo: Path, registry: str, data: Path, log_dir: Path, token_file: Path,
                 heartbeat: float = 0.5, interval: float = 30.0, extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["reconcile", "--repo", str(repo), "--listen", f"127.0.0.1:{self.port}", "--data", str(data),
                     "--registry", registry, "--token-file", str(token_file), "--heartbeat", str(heartbeat),
                     "--interval", str(interval), "--grace", "3", *(extra or [])]
        self.log_dir = log_dir
        self.proc: DriftlessProcess | None = None

    def start(self) -> Reconciler:
        self.proc = DriftlessProcess(self.args, log_dir=self.log_dir, ready_url=f"{self.url}/healthz",
                                     name="reconciler").start()
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            e.close()  # an HTTPError holds the socket open
            raise

    def app(self, env: str, app: str) -> dict[str, Any]:
        return self.get(f"/api/v1/environments/{env}/apps/{app}")  # type: ignore[no-any-return]

    def host(self, name: str) -> dict[str, Any]:
        return self.get(f"/api/v1/hosts/{name}")  # type: ignore[no-any-return]


def new_token(path: Path) -> Path:
    path.write_text(secrets.token_urlsafe(24))
    return path


def host_command_available() -> bool:
    return (REPO_ROOT / "driftless" / "commands" / "host.py").exists()


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
