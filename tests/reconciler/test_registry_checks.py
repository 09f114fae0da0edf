"""A Driftless registry that cannot describe an image (an error answer, not a refused connection) is
transient: the commit is not rejected, and it applies once the registry answers again."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.reconciler.platform import GitRepo, Reconciler, application, environment, new_token
from tests.support.procs import wait_until

DIGEST = "sha256:" + "ab" * 32
COMPONENT = {"kind": "component", "imports": [], "exports": ["driftless:http/handler"]}


class FlakyRegistry(BaseHTTPRequestHandler):
    """Resolves demo/hello:1.0.0 and describes it by digest; by tag it answers 503 while ``down``."""

    down = threading.Event()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: object | None, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def do_HEAD(self) -> None:  # noqa: N802
        if self.path == "/v2/demo/hello/manifests/1.0.0":
            self._send(200, None, {"Docker-Content-Digest": DIGEST})
        else:
            self._send(404, None)

    def do_GET(self) -> None:  # noqa: N802
        prefix = "/v2/_driftless/components/demo/hello/"
        if self.path == prefix + DIGEST:
            self._send(200, COMPONENT)
        elif self.path == prefix + "1.0.0":
            if self.down.is_set():
                self._send(503, {"errors": [{"code": "UNAVAILABLE", "message": "registry is restarting"}]})
            else:
                self._send(200, COMPONENT)
        else:
            self._send(404, {"errors": [{"code": "NAME_UNKNOWN", "message": "no such repository"}]})


@pytest.fixture
def registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_registry_error_on_component_check_is_retried_not_rejected(tmp_path: Path, registry: str) -> None:
    FlakyRegistry.down.set()
    git = GitRepo(tmp_path / "git")
    rev = git.push({"prod/environment.yaml": environment("prod"),
                    "prod/apps/a.yaml": application("a", [{"name": "w", "image": "demo/hello:1.0.0",
                                                           "placement": {"spread": {"replicas": 1}}}])}, "first")
    rec = Reconciler(repo=git.bare, registry=registry, data=tmp_path / "rec", log_dir=tmp_path,
                     token_file=new_token(tmp_path / "token"), interval=60).start()
    try:
        source = wait_until(lambda: (s := rec.get("/api/v1/environments")["source"])["lastError"] and s,
                            timeout=15, what="the component check failing")
        assert "registry is restarting" in source["lastError"] or "503" in source["lastError"], source
        assert source["rejected"] is None and source["applied"] is None  # not the commit's fault
        FlakyRegistry.down.clear()
        urllib.request.urlopen(urllib.request.Request(f"{rec.url}/api/v1/sync", method="POST",
                                                      headers=rec.p.admin_headers()), timeout=5).close()
        env = wait_until(lambda: rec.get("/api/v1/environments")["source"]["applied"], timeout=15,
                         what="the same commit applied once the registry answers")
        assert env["revision"] == rev
    finally:
        rec.stop()
        FlakyRegistry.down.clear()
