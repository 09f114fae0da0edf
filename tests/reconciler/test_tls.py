"""The control API over TLS: a host that trusts the CA registers; one that does not is refused the
handshake; plain HTTP gets nothing."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.reconciler.platform import GitRepo, Reconciler, application, environment, new_token
from tests.support.procs import DriftlessProcess, free_port, wait_until


def make_cert(root: Path) -> tuple[Path, Path]:
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls_control_api(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    git = GitRepo(tmp_path / "git")
    git.push({"prod/environment.yaml": environment("prod"), "prod/apps/none.yaml": application("none", [])}, "empty")
    token_file = new_token(tmp_path / "token")
    rec = Reconciler(repo=git.bare, registry="http://127.0.0.1:9", data=tmp_path / "rec", log_dir=tmp_path,
                     token_file=token_file, extra=["--tls-cert", str(cert), "--tls-key", str(key)])
    url = rec.url.replace("http://", "https://")
    trusted = ssl.create_default_context(cafile=str(cert))
    proc = DriftlessProcess(rec.args, log_dir=tmp_path, name="reconciler-tls").start()
    try:
        def healthz() -> bool:
            with urllib.request.urlopen(f"{url}/healthz", context=trusted, timeout=2) as r:
                return r.status == 200

        wait_until(healthz, timeout=20, what="TLS healthz")
        body = json.dumps({"name": "h1", "labels": {}, "capacity": {"memoryBytes": 1, "maxInstances": 1}}).encode()
        req = urllib.request.Request(f"{url}/api/v1/hosts/register", data=body, method="POST", headers={
            "Authorization": f"Bearer {token_file.read_text()}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=trusted, timeout=5) as r:
            assert json.loads(r.read())["heartbeatSeconds"] > 0
        # a client that does not trust the certificate fails the handshake
        with socket.create_connection(("127.0.0.1", rec.port), timeout=5) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
        # plain HTTP gets no HTTP answer
        with socket.create_connection(("127.0.0.1", rec.port), timeout=5) as raw:
            raw.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            try:
                answer = raw.recv(100)
            except OSError:
                answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")
        # a real host agent connects over TLS, trusting the reconciler's certificate
        host = DriftlessProcess(["host", "--control", url, "--control-ca", str(cert), "--token-file", str(token_file),
                                 "--name", "tls-host", "--listen", f"127.0.0.1:{free_port()}", "--data",
                                 str(tmp_path / "host"), "--heartbeat", "0.5"], log_dir=tmp_path, name="host-tls")
        host.start()
        try:
            def host_state() -> str:
                try:
                    with urllib.request.urlopen(f"{url}/api/v1/hosts/tls-host", context=trusted, timeout=2) as r:
                        doc = json.loads(r.read())
                except urllib.error.HTTPError as e:
                    e.close()  # 404 until it registers; an HTTPError holds the socket
                    return ""
                return str(doc["state"]) if doc["report"] else ""

            wait_until(lambda: host_state() == "Ready", timeout=20, what="host registered and reporting over TLS")
        finally:
            host.kill()  # nothing to drain; a graceful stop only costs time here
        assert token_file.read_text() not in proc.log()
    finally:
        proc.stop()
