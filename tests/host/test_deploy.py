"""The deploy files: Kubernetes manifests validate against the Kubernetes schemas (offline, shipped
in kubernetes-validate), use the downward API, a Secret for the token (none in the files) and HTTPS
to the reconciler with its CA; the systemd unit runs `driftless host` with options the CLI accepts,
over HTTPS, its credentials from systemd. The documented credentials (deploy/make-credentials.sh)
make a TLS reconciler a real host registers with."""

from __future__ import annotations

import argparse
import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from driftless.commands import host as host_command
from tests.reconciler.platform import GitRepo, Reconciler, application, environment
from tests.support.procs import DriftlessProcess, free_port, wait_until

DEPLOY = Path(__file__).resolve().parent.parent.parent / "deploy"
# every Kubernetes object of deploy/ (kustomization.yaml is kustomize's, not the API server's: checked apart)
MANIFESTS = sorted(p for p in (DEPLOY / "kubernetes").rglob("*.yaml") if p.name != "kustomization.yaml")
HOST_MANIFESTS = sorted((DEPLOY / "kubernetes").glob("host-*.yaml"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _host_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="driftless host")
    host_command.add_arguments(p)
    return p


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifests_are_valid(path: Path) -> None:
    docs = _docs(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_workloads_take_labels_from_the_downward_api_and_the_token_from_a_secret() -> None:
    kinds = set()
    for path in HOST_MANIFESTS:
        for doc in _docs(path):
            if doc["kind"] not in ("Deployment", "DaemonSet"):
                continue
            kinds.add(doc["kind"])
            container = doc["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e for e in container["env"]}
            assert any("fieldRef" in e.get("valueFrom", {}) for e in env.values())
            volumes = doc["spec"]["template"]["spec"]["volumes"]
            assert any(v.get("secret", {}).get("secretName") == "driftless-host-token" for v in volumes)
            args = container["args"]
            assert args[0] == "host"
            # every option is one the CLI accepts ($(VAR) is expanded by the kubelet)
            expanded = [re.sub(r"\$\((\w+)\)", "x", a) for a in args[1:]]
            parsed = _host_parser().parse_args(expanded)
            assert parsed.token_file == Path("/var/run/driftless/token")
            # HTTPS to the reconciler, verified against the CA of the ConfigMap
            assert env["DRIFTLESS_CONTROL"]["value"].startswith("https://")
            assert parsed.control_ca == "/etc/driftless/ca/ca.crt"
            assert any(v.get("configMap", {}).get("name") == "driftless-reconciler-ca" for v in volumes)
            grace = doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert grace > parsed.drain_timeout
    assert kinds == {"Deployment", "DaemonSet"}


def test_no_secret_and_no_plain_http_in_the_deploy_files() -> None:
    for path in [*MANIFESTS, DEPLOY / "systemd" / "driftless-host.service"]:
        text = path.read_text()
        assert "change-me" not in text and "http://" not in text.replace("http://$(POD_IP)", ""), path
        if path.suffix == ".yaml":
            assert all(d["kind"] != "Secret" for d in _docs(path)), f"{path.name} carries a Secret: make it (deploy/README.md)"


def test_systemd_unit_runs_the_host_with_valid_options() -> None:
    text = (DEPLOY / "systemd" / "driftless-host.service").read_text()
    assert "[Service]" in text and "[Install]" in text
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", text, re.M | re.S)
    assert exec_start
    words = exec_start.group(1).replace("\\\n", " ").split()
    assert words[:2] == ["/usr/local/bin/driftless", "host"]
    values = {"${DRIFTLESS_CONTROL}": "http://127.0.0.1:8080", "${CREDENTIALS_DIRECTORY}/token": "/run/token",
              "${CREDENTIALS_DIRECTORY}/reconciler-ca": "/run/ca",
              "%H": "edge-1", "${DRIFTLESS_LISTEN}": "127.0.0.1:8081", "${STATE_DIRECTORY}": "/var/lib/x",
              "$DRIFTLESS_LABELS": "--label=tier=edge"}  # fmt: skip
    parsed = _host_parser().parse_args([values.get(w, w) for w in words[2:]])
    assert parsed.control == "http://127.0.0.1:8080"
    assert ("tier", "edge") in parsed.label
    assert parsed.control_ca == "/run/ca" and parsed.token_file == Path("/run/token")
    assert re.search(r"^Environment=DRIFTLESS_CONTROL=https://", text, re.M)
    assert re.search(r"^LoadCredential=reconciler-ca:", text, re.M) and re.search(r"^LoadCredential=token:", text, re.M)
    stop = int(re.search(r"^TimeoutStopSec=(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    assert stop > parsed.drain_timeout


def test_the_documented_credentials_make_a_tls_reconciler_a_host_registers_with(tmp_path: Path) -> None:
    out = tmp_path / "credentials"
    r = subprocess.run([str(DEPLOY / "make-credentials.sh"), str(out), "localhost", "127.0.0.1"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    modes = {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()}
    assert modes == {"join-token": 0o600, "ca.key": 0o600, "reconciler.key": 0o600,
                     "ca.crt": 0o644, "reconciler.crt": 0o644}, modes
    again = subprocess.run([str(DEPLOY / "make-credentials.sh"), str(out), "localhost"], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert again.returncode == 1 and "never overwritten" in again.stderr
    git = GitRepo(tmp_path / "git")
    git.push({"prod/environment.yaml": environment("prod"), "prod/apps/none.yaml": application("none", [])}, "empty")
    rec = Reconciler(repo=git.bare, registry="http://127.0.0.1:9", data=tmp_path / "rec", token_file=out / "join-token",
                     extra=["--tls-cert", str(out / "reconciler.crt"), "--tls-key", str(out / "reconciler.key")])
    url = rec.url.replace("http://", "https://")
    proc = DriftlessProcess(rec.args, log_dir=tmp_path, name="reconciler").start()
    host = DriftlessProcess(["host", "--control", url, "--control-ca", str(out / "ca.crt"), "--token-file",
                             str(out / "join-token"), "--name", "edge-1", "--listen", f"127.0.0.1:{free_port()}",
                             "--data", str(tmp_path / "host"), "--heartbeat", "0.5"], log_dir=tmp_path, name="host")
    try:
        host.start()
        trusted = ssl.create_default_context(cafile=str(out / "ca.crt"))

        def registered() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/api/v1/hosts/edge-1", context=trusted, timeout=2) as resp:
                    return bool(json.loads(resp.read())["report"])
            except urllib.error.HTTPError as e:
                e.close()
                return False

        wait_until(registered, timeout=30, what="the host registered over TLS with the documented credentials")
        assert (tmp_path / "host" / "host-credential").stat().st_mode & 0o077 == 0
    finally:
        host.kill()
        proc.stop()


def test_the_control_plane_on_kubernetes_is_replicated_probed_and_fenced() -> None:
    docs = [d for path in sorted((DEPLOY / "kubernetes" / "control-plane").glob("*.yaml")) for d in _docs(path)]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    reconcilers = by[("StatefulSet", "driftless-reconciler")]["spec"]
    registry = by[("Deployment", "driftless-registry")]["spec"]
    assert reconcilers["replicas"] == 2 and registry["replicas"] >= 2
    for name in ("driftless-reconciler", "driftless-registry"):
        assert by[("PodDisruptionBudget", name)]["spec"]["minAvailable"] == 1
        assert ("NetworkPolicy", name) in by and ("Service", name) in by
    rec_args = reconcilers["template"]["spec"]["containers"][0]["args"]
    assert any(a.startswith("--state=") for a in rec_args) and any(a.startswith("--tls-cert=") for a in rec_args)
    assert any(a.startswith("--storage=") for a in registry["template"]["spec"]["containers"][0]["args"])
    for spec in (reconcilers, registry):
        pod = spec["template"]["spec"]
        for c in pod["containers"]:
            assert c.get("readinessProbe") and c.get("livenessProbe") and c["resources"]["requests"], c["name"]
            assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]
        assert any(v.get("secret", {}).get("secretName", "").endswith("-tls") for v in pod["volumes"])
    # each reconciler advertises its pod's stable name; hosts list them all (they follow only leaders of their list)
    advertise = next(a for a in rec_args if a.startswith("--advertise="))
    service = by[("Service", "driftless-reconciler-pods")]
    assert service["spec"]["clusterIP"] == "None" and service["metadata"]["name"] in advertise
    for path in HOST_MANIFESTS:
        for doc in _docs(path):
            if doc["kind"] in ("Deployment", "DaemonSet"):
                env = {e["name"]: e for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}
                urls = env["DRIFTLESS_CONTROL"]["value"].split(",")
                assert {f"https://driftless-reconciler-{i}.driftless-reconciler-pods.driftless.svc:8443"
                        for i in range(reconcilers["replicas"])} <= set(urls), path.name
