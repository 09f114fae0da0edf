"""Feedback where people look: webhooks the environments declare (signed, retried, never in the
reconcile's way) and the outcome of a push printed by the post-receive hook (``remote: ...``).

The receivers are real aiohttp servers on 127.0.0.1; the platform is ``driftless up``'s own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from model.types import Notification
from reconciler.controller.notify import SIGNATURE_HEADER, commit_event
from tests.support.components import build
from tests.support.http_server import ThreadedServer
from tests.support.platform import LocalPlatform, application, environment, local_platform
from tests.support.procs import wait_until

SECRET = "s3cret-for-tests"
BROKEN = application("bad", [{"name": "web", "image": "demo/hello:1.0.0", "replicas": 3}])  # unknown field
GOOD = application("bad", [{"name": "web", "image": "demo/hello:1.0.0"}])


class Receiver:
    """An HTTP server recording each POST (headers, body); answers 503 to the first ``fail`` of them."""

    def __init__(self, *, fail: int = 0) -> None:
        self.fail = fail
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answered: list[int] = []
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._server = ThreadedServer(app)

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        status = 503 if len(self.requests) <= self.fail else 200
        self.answered.append(status)
        return web.Response(status=status, text="ok" if status == 200 else "try again")

    @property
    def url(self) -> str:
        return f"{self._server.url}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made = {"generic": Receiver(), "slack": Receiver(), "flaky": Receiver(fail=2)}
    try:
        yield made
    finally:
        for r in made.values():
            r.close()


def env_with_notifications(receivers: dict[str, Receiver]) -> str:
    return environment("prod").rstrip(" ") + f"""\
          notifications:
          - url: {receivers['generic'].url}
            secretName: ci
          - url: {receivers['slack'].url}
            format: slack
            events: [Rejected, AppDegraded]
          - url: {receivers['flaky'].url}
            events: [Rejected]
        """


def started(tmp_path: Path, receivers: dict[str, Receiver] | None = None) -> LocalPlatform:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"ci: {{value: {SECRET}, environments: [prod]}}\n")
    secrets.chmod(0o600)
    allowed = [arg for r in (receivers or {}).values() for arg in ("--outbound-allow", r.url)]
    p = local_platform(tmp_path / "platform", reconciler_args=["--secrets-file", str(secrets), *allowed])
    tree = {"prod/environment.yaml": env_with_notifications(receivers) if receivers else environment("prod")}
    p.up(tree=tree, components={"demo/hello:1.0.0": build("hello")}, hosts=False)
    wait_until(lambda: p.reconciler.get("/api/v1/environments")["source"]["applied"], timeout=20,
               what="the seed applied")
    return p


def test_a_rejected_push_is_sent_signed_to_every_receiver_and_retried(tmp_path: Path,
                                                                       receivers: dict[str, Receiver]) -> None:
    p = started(tmp_path, receivers)
    try:
        revision = p.git.push({"prod/apps/bad.yaml": BROKEN}, "a broken app")
        wait_until(lambda: receivers["generic"].requests and receivers["slack"].requests
                   and 200 in receivers["flaky"].answered, timeout=20, what="every receiver notified")
    finally:
        p.stop()

    # generic: the event as JSON, signed with the secret named in Git (the secret itself never is)
    (headers, body), = receivers["generic"].requests
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected
    event = json.loads(body)
    assert event["reason"] == event["event"] == "Rejected" and event["type"] == "Warning"
    assert event["revision"] == revision and event["env"] == "prod" and event["time"].endswith("Z")
    assert re.search(r"prod/apps/bad\.yaml:\d+:\d+: error: .*replicas", event["message"]), event["message"]

    # slack: {"text": ...}, unsigned (no secretName)
    (headers, _), = receivers["slack"].requests
    assert SIGNATURE_HEADER not in headers
    text = receivers["slack"].bodies()[0]["text"]
    assert "Rejected" in text and revision[:12] in text and "prod/apps/bad.yaml:" in text

    # failing twice, then answering: the same delivery on the third try
    assert receivers["flaky"].answered == [503, 503, 200]
    bodies = [body for _, body in receivers["flaky"].requests]
    assert bodies[0] == bodies[1] == bodies[2] and json.loads(bodies[2])["reason"] == "Rejected"


def _push(p: LocalPlatform, files: dict[str, str | None], message: str) -> str:
    """Commit and ``git push`` as a person would; the push's stderr (where ``remote:`` lines go)."""
    repo = p.git
    repo.sync()
    repo.write(files)
    work = str(repo.work)
    subprocess.run(["git", "-C", work, "add", "-A", "manifests"], check=True, capture_output=True)
    subprocess.run(["git", "-C", work, "commit", "-q", "-m", message], check=True, capture_output=True)
    done = subprocess.run(["git", "-C", work, "push", "origin", "HEAD:main"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr  # the hook never fails the push
    return done.stderr


def test_the_push_shows_whether_its_revision_was_applied_or_rejected(tmp_path: Path) -> None:
    p = started(tmp_path)
    try:
        err = _push(p, {"prod/apps/bad.yaml": BROKEN}, "a broken app")
        assert re.search(r"remote: driftless: revision [0-9a-f]{12} rejected \(1 error\(s\)\); [0-9a-f]{12} stays "
                         r"applied", err), err
        assert re.search(r"remote: driftless: +manifests/prod/apps/bad\.yaml:\d+:\d+: error: .*replicas", err), err
        err = _push(p, {"prod/apps/bad.yaml": GOOD}, "fixed")
        assert re.search(r"remote: driftless: revision [0-9a-f]{12} applied", err), err
        assert "rejected" not in err
    finally:
        p.stop()


def test_the_pre_receive_hook_refuses_an_invalid_push_with_file_line(tmp_path: Path) -> None:
    """`driftless up`'s default for its own repository: a push to main that does not validate fails
    (git push exits non-zero), the commit does not land, and the pusher reads every problem at its
    file:line, per environment; a valid push still goes through."""
    p = started(tmp_path)
    try:
        p.refuse_invalid_pushes = True
        p.install_hook()
        git_dir = str(p.git_dir)

        def main() -> str:
            return subprocess.run(["git", "--git-dir", git_dir, "rev-parse", "main"], check=True,
                                  capture_output=True, text=True).stdout.strip()

        before = main()
        repo = p.git
        repo.sync()
        repo.write({"prod/apps/bad.yaml": BROKEN, "prod/apps/worse.yaml": "kind: Application\nbad: [unclosed\n"})
        work = str(repo.work)
        subprocess.run(["git", "-C", work, "add", "-A", "manifests"], check=True, capture_output=True)
        subprocess.run(["git", "-C", work, "commit", "-q", "-m", "two broken apps"], check=True, capture_output=True)
        done = subprocess.run(["git", "-C", work, "push", "origin", "HEAD:main"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode != 0, done.stderr
        err = done.stderr
        assert re.search(r"remote: driftless: push refused: revision [0-9a-f]{12} has 2 error\(s\) in prod", err), err
        assert "remote: driftless: prod:" in err
        assert re.search(r"remote: driftless: +manifests/prod/apps/bad\.yaml:\d+:\d+: error: .*replicas", err), err
        assert re.search(r"remote: driftless: +manifests/prod/apps/worse\.yaml:3:1: error: YAML syntax error", err), err
        assert "pre-receive hook declined" in err
        assert main() == before  # the commit did not land
        subprocess.run(["git", "-C", work, "reset", "-q", "--hard", "origin/main"], check=True)
        err = _push(p, {"prod/apps/bad.yaml": GOOD}, "a good app")
        assert "push refused" not in err and main() != before
    finally:
        p.stop()


def test_a_refusal_lists_the_problems_per_environment() -> None:
    from driftless.pre_receive import refusal
    from model.types import Problem

    def problem(file: str, level: str = "error") -> Problem:
        return Problem(level=level, file=file, line=3, column=5, path="spec", message="wrong", code="invalid")  # type: ignore[arg-type]

    lines = refusal([problem("staging/apps/a.yaml"), problem("dev/apps/b.yaml"), problem("dev/x.yaml", "warning"),
                     problem("dev/environment.yaml")], revision="a" * 40, subdir="manifests")
    assert lines[0].startswith("driftless: push refused: revision aaaaaaaaaaaa has 3 error(s) in dev, staging;")
    assert lines[1:] == [
        "driftless: dev:",
        "driftless:   manifests/dev/apps/b.yaml:3:5: error: wrong at spec",
        "driftless:   manifests/dev/environment.yaml:3:5: error: wrong at spec",
        "driftless: staging:",
        "driftless:   manifests/staging/apps/a.yaml:3:5: error: wrong at spec",
    ]
    assert refusal([problem("dev/x.yaml", "warning")], revision="a" * 40, subdir="manifests") == []


def test_which_events_a_webhook_wants_and_what_commits_mean() -> None:
    every = Notification(url="http://x")
    assert every.wants("Rejected") and every.wants("DriftMissing")
    drift = Notification(url="http://x", events=("Drift", "Promoted"))
    assert drift.wants("DriftTagMoved") and drift.wants("Promoted") and not drift.wants("Rejected")
    assert commit_event("promote(shop): staging -> prod") == (
        "Promoted", "prod", "shop", "shop promoted from staging to prod")
    assert commit_event("rollback(shop): prod to 0123456789ab")[:3] == ("RolledBack", "prod", "shop")  # type: ignore[index]
    assert commit_event("a change") is None
