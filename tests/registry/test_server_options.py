"""Serving options: htpasswd basic auth, --anonymous-pull, --read-only, TLS, /metrics, usage errors."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import bcrypt
import httpx
import pytest

from driftless.cli import main
from tests.registry.conftest import Oci, Server, error_code, sha256, start_registry
from tests.support.procs import wait_until


def _htpasswd(path: Path, user: str, password: str) -> Path:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    path.write_text(f"# test users\n{user}:{hashed}\n")
    return path


def test_basic_auth(tmp_path: Path) -> None:
    htpasswd = _htpasswd(tmp_path / "htpasswd", "alice", "s3cret")
    proc, port = start_registry(tmp_path / "root", tmp_path, "--htpasswd", str(htpasswd))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as anon:
            r = anon.get("/v2/")
            assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
            assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert anon.get("/v2/x/tags/list").status_code == 401
            assert anon.get("/v2/", auth=("alice", "wrong")).status_code == 401
            assert anon.get("/v2/", auth=("mallory", "s3cret")).status_code == 401
            assert anon.get("/v2/", headers={"Authorization": "Basic !!!notbase64"}).status_code == 401
        with Oci(f"http://127.0.0.1:{port}", auth=("alice", "s3cret")) as alice:
            assert alice.get("/v2/").status_code == 200
            alice.image("private/app", "v1")
            assert alice.get("/v2/private/app/tags/list").json()["tags"] == ["v1"]
    finally:
        proc.stop()


def test_anonymous_pull_and_read_only(tmp_path: Path) -> None:
    htpasswd = _htpasswd(tmp_path / "htpasswd", "bob", "pw")
    root = tmp_path / "root"
    proc, port = start_registry(root, tmp_path, "--htpasswd", str(htpasswd), "--anonymous-pull")
    try:
        with Oci(f"http://127.0.0.1:{port}", auth=("bob", "pw")) as bob:
            digest, _ = bob.image("public/app", "v1")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as anon:
            assert anon.get("/v2/public/app/manifests/v1").status_code == 200
            assert anon.head(f"/v2/public/app/manifests/{digest}").status_code == 200
            r = anon.post("/v2/public/app/blobs/uploads/")
            assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
            assert anon.delete("/v2/public/app/manifests/v1").status_code == 401
    finally:
        proc.stop()
    proc, port = start_registry(root, tmp_path, "--read-only")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            assert c.get("/v2/public/app/manifests/v1").status_code == 200
            for method, path in (("POST", "/v2/public/app/blobs/uploads/"), ("DELETE", "/v2/public/app/manifests/v1"),
                                 ("PUT", "/v2/public/app/manifests/v2")):
                r = c.request(method, path, content=b"{}")
                assert r.status_code == 405 and error_code(r) == "UNSUPPORTED", (method, path)
                assert "read-only" in r.json()["errors"][0]["detail"]
            assert c.get("/v2/public/app/tags/list").json()["tags"] == ["v1"]
    finally:
        proc.stop()


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    proc, port = start_registry(tmp_path / "root", tmp_path, "--tls-cert", str(cert), "--tls-key", str(key),
                                scheme="https")
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(cert))) as c:
            wait_until(lambda: c.get("/v2/").status_code == 200, timeout=20, what="the TLS registry")
            Oci.image(_OciOver(c), "tls/app", "v1")
            assert c.get("/v2/tls/app/tags/list").json()["tags"] == ["v1"]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as plain, pytest.raises(httpx.HTTPError):
            plain.get("/v2/")
    finally:
        proc.stop()


class _OciOver(Oci):
    def __init__(self, http: httpx.Client) -> None:  # reuse the helpers over an existing client
        self.http = http


def test_metrics(server: Server, oci: Oci) -> None:
    oci.image("metrics/app", "v1")
    oci.get("/v2/metrics/app/manifests/v1")
    oci.get("/v2/metrics/app/manifests/absent")
    blob = oci.push_blob("metrics/app", b"m" * 100_000)
    before = _sent_bytes(oci.get("/metrics").text)
    assert oci.get(f"/v2/metrics/app/blobs/{blob}").status_code == 200
    assert _sent_bytes(oci.get("/metrics").text) - before >= 100_000
    text = oci.get("/metrics").text
    assert 'driftless_registry_requests_total{method="GET",route="manifest",status="200"}' in text
    assert 'driftless_registry_requests_total{method="GET",route="manifest",status="404"}' in text
    assert 'driftless_registry_request_duration_seconds_bucket{le="+Inf",route="manifest",status="404"}' in text
    assert 'driftless_registry_request_duration_seconds_count{route="manifest",status="200"}' in text
    received = [line for line in text.splitlines() if line.startswith("driftless_registry_received_bytes_total ")]
    assert float(received[0].split()[1]) > 0
    storage = [line for line in text.splitlines() if line.startswith("driftless_registry_storage_bytes ")]
    assert float(storage[0].split()[1]) > 0


def _sent_bytes(text: str) -> int:
    [line] = [x for x in text.splitlines() if x.startswith("driftless_registry_sent_bytes_total ")]
    return int(float(line.split()[1]))


@pytest.mark.parametrize("args, needle", [
    (["--listen", "nonsense"], "is not HOST:PORT"),
    (["--tls-cert", "/nonexistent.pem"], "go together"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "no such file"),
    (["--anonymous-pull"], "only makes sense with --htpasswd"),
])
def test_serve_usage_errors(tmp_path: Path, args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "serve", "--root", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_bad_htpasswd_and_busy_port(tmp_path: Path, server: Server) -> None:
    bad = tmp_path / "htpasswd"
    bad.write_text("alice:plaintext\n")
    r = subprocess.run([sys.executable, "-m", "driftless", "registry", "serve", "--root", str(tmp_path),
                        "--htpasswd", str(bad), "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "bcrypt" in r.stderr
    r = subprocess.run([sys.executable, "-m", "driftless", "registry", "serve", "--root", str(tmp_path),
                        "--listen", server.host], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
    assert sha256(b"")  # the running server is untouched
