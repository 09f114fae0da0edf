"""A real bare Git repository seeded with a small manifests tree (staging -> prod), for promotion tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

STAGING_ENV = """\
apiVersion: driftless.dev/v1alpha1
kind: Environment
metadata: {name: staging}
spec:
  hostSelector: {matchLabels: {}}
  registries: ["127.0.0.1:5000"]
  ingress: {pathPrefix: /staging}
  sync: {mode: heal}
"""

PROD_ENV = """\
apiVersion: driftless.dev/v1alpha1
kind: Environment
metadata:
  name: prod
spec:
  hostSelector:
    matchLabels: {}
  registries:
  - 127.0.0.1:5000
  sync: {prune: true, mode: report}
  promotion:
    from: staging
    minSoak: 30s
    requireApproval: true
"""

# comments, flow and block styles, quoting, odd spacing: promotion must keep every byte but the images
PROD_HELLO = """\
# hello in prod: owned by team web
apiVersion: driftless.dev/v1alpha1
kind: Application
metadata:
  name: hello      # the example app
  labels: {team: web}
spec:
  components:
  - name: web
    image: demo/hello:1.0.0   # bumped by promotion
    config:
      GREETING: "hello from prod"
    placement:
      spread: {replicas: 2}
    expose: /hello
  - {name: greeter, image: "127.0.0.1:5000/demo/greeter:1.0.0", config: {LANG: en}}
  links:
  - {from: web, to: greeter, interface: driftless:demo/greeter}
"""

PROD_OTHER = """\
apiVersion: driftless.dev/v1alpha1
kind: Application
metadata: {name: other}
spec:
  components:
  - name: api
    image: 'demo/api:2.0.0'
"""

STAGING_HELLO = PROD_HELLO.replace("prod", "staging")
STAGING_OTHER = PROD_OTHER

TREE = {
    "manifests/staging/environment.yaml": STAGING_ENV,
    "manifests/staging/apps/hello.yaml": STAGING_HELLO,
    "manifests/staging/apps/other.yaml": STAGING_OTHER,
    "manifests/prod/environment.yaml": PROD_ENV,
    "manifests/prod/apps/hello.yaml": PROD_HELLO,
    "manifests/prod/apps/other.yaml": PROD_OTHER,
}


def sh(*args: str, cwd: Path | None = None) -> str:
    r = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, f"git {' '.join(args)}: {r.stderr}"
    return r.stdout


def seed_bare_repo(root: Path, files: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A bare repo at root/remote.git and a clone at root/work with ``files`` committed and pushed."""
    remote = root / "remote.git"
    work = root / "work"
    sh("init", "-q", "--bare", "--initial-branch=main", str(remote))
    sh("clone", "-q", str(remote), str(work))
    sh("checkout", "-q", "-b", "main", cwd=work)
    for rel, text in (files or TREE).items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sh("add", "-A", cwd=work)
    sh("commit", "-q", "-m", "seed", cwd=work)
    sh("push", "-q", "origin", "HEAD:main", cwd=work)
    return remote, work


def remote_file(remote: Path, rel: str, revision: str = "main") -> str:
    return sh("show", f"{revision}:{rel}", cwd=remote)


def remote_log(remote: Path, fmt: str = "%s") -> list[str]:
    return sh("log", f"--format={fmt}", "main", cwd=remote).splitlines()


def commit_file(work: Path, rel: str, text: str, message: str) -> str:
    (work / rel).parent.mkdir(parents=True, exist_ok=True)
    (work / rel).write_text(text)
    sh("add", "-A", cwd=work)
    sh("commit", "-q", "-m", message, cwd=work)
    sh("push", "-q", "origin", "HEAD:main", cwd=work)
    return sh("rev-parse", "HEAD", cwd=work).strip()
