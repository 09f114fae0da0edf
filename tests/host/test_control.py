"""The control loop against the real reconciler (`driftless reconcile` watching a bare Git repo):
register with automatic labels, receive the desired state, serve, report; keep serving while the
reconciler is down and register again when it is back."""

from __future__ import annotations

from pathlib import Path

from tests.host.conftest import Registry, start_host
from tests.reconciler.platform import GitRepo, Reconciler, application, environment, new_token
from tests.support.procs import DriftlessProcess, wait_until


def test_host_follows_the_reconciler_and_survives_its_outage(
    tmp_path: Path, registry: Registry, images: dict[str, str]
) -> None:
    git = GitRepo(tmp_path / "git")
    web = {"name": "web", "image": "demo/hello:1.0.0", "config": {"GREETING": "howdy"}, "expose": "/hello",
           "placement": {"spread": {"replicas": 1}}}  # fmt: skip
    git.push({"prod/environment.yaml": environment("prod", selector={"cloud": "aws"}),
              "prod/apps/hello.yaml": application("hello", [web])}, "hello")  # fmt: skip
    token_file = new_token(tmp_path / "token")
    reconciler = Reconciler(repo=git.bare, registry=f"http://{registry.host}", data=tmp_path / "rec",
                            log_dir=tmp_path, token_file=token_file, heartbeat=0.5).start()  # fmt: skip
    try:
        with start_host(tmp_path, "--control", reconciler.url, "--label", "cloud=aws", name="aws-1",
                        token_file=token_file) as host:  # fmt: skip
            wait_until(lambda: host.get("/hello").text == "howdy from /hello", timeout=30, what="served")
            view = wait_until(
                lambda: (h := reconciler.host("aws-1"))["report"] and h["report"]["instances"] and h,
                timeout=10, what="report",
            )  # fmt: skip
            labels = view["labels"]
            assert labels["cloud"] == "aws"
            assert {"os", "arch", "driftless.dev/version"} <= set(labels)
            (inst,) = view["report"]["instances"]
            assert inst["status"] == "Running"
            assert inst["digest"] == images["hello"].rpartition("@")[2]
            assert inst["config"] == {"GREETING": "howdy"}
            assert view["report"]["observedGeneration"] == view["generation"]

            reconciler.proc.kill()  # type: ignore[union-attr]
            wait_until(lambda: "unreachable" in host.proc.log(), timeout=10, what="outage noticed")
            assert host.get("/hello").text == "howdy from /hello"  # static stability

            reconciler.start()
            wait_until(lambda: host.proc.log().count("registered with reconciler") >= 2, timeout=15,
                       what="registered again")  # fmt: skip
            wait_until(lambda: reconciler.host("aws-1").get("state") == "Ready", timeout=15, what="Ready")
            assert host.get("/hello").text == "howdy from /hello"
            assert host.proc.stop() == 0
    finally:
        reconciler.stop()


def test_a_wrong_token_is_reported_clearly(tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "git")
    git.push({"prod/environment.yaml": environment("prod")}, "empty")
    reconciler = Reconciler(repo=git.bare, registry="http://127.0.0.1:9", data=tmp_path / "rec", log_dir=tmp_path,
                            token_file=new_token(tmp_path / "token"), heartbeat=0.5).start()  # fmt: skip
    try:
        with start_host(tmp_path, "--control", reconciler.url, name="intruder") as host:
            wait_until(lambda: "rejected the join token (401)" in host.proc.log(), timeout=10, what="clear log line")
            assert host.admin_get("/api/v1/status")["connected"] is False
            assert "Traceback" not in host.proc.log()
            assert host.proc.stop() == 0  # SIGTERM: a prompt, clean exit even while the control loop retries
    finally:
        reconciler.stop()


def test_host_registers_with_a_tls_reconciler_it_trusts(tmp_path: Path) -> None:
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    git = GitRepo(tmp_path / "git")
    git.push({"prod/environment.yaml": environment("prod")}, "empty")
    token_file = new_token(tmp_path / "token")
    reconciler = Reconciler(repo=git.bare, registry="http://127.0.0.1:9", data=tmp_path / "rec", log_dir=tmp_path,
                            token_file=token_file, extra=["--tls-cert", str(cert), "--tls-key", str(key)])  # fmt: skip
    proc = DriftlessProcess(reconciler.args, log_dir=tmp_path, name="reconciler-tls").start()
    url = reconciler.url.replace("http://", "https://")
    try:
        with start_host(tmp_path, "--control", url, "--control-ca", str(cert), name="tls-1",
                        token_file=token_file) as host:  # fmt: skip
            wait_until(lambda: "registered with reconciler" in host.proc.log(), timeout=20, what="registered")
            assert host.admin_get("/api/v1/status")["connected"] is True
        with start_host(tmp_path, "--control", url, name="untrusting", token_file=token_file) as host:
            wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in host.proc.log(), timeout=20, what="refused handshake")
    finally:
        proc.stop()
