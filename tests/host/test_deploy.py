"""The deploy files: Kubernetes manifests validate against the Kubernetes schemas (offline, shipped
in kubernetes-validate), use the downward API and a Secret for the token, and the systemd unit runs
`driftless host` with options the CLI accepts."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from driftless.commands import host as host_command

DEPLOY = Path(__file__).resolve().parent.parent.parent / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


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
    for path in MANIFESTS:
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
            grace = doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert grace > parsed.drain_timeout
    assert kinds == {"Deployment", "DaemonSet"}


def test_systemd_unit_runs_the_host_with_valid_options() -> None:
    text = (DEPLOY / "systemd" / "driftless-host.service").read_text()
    assert "[Service]" in text and "[Install]" in text
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", text, re.M | re.S)
    assert exec_start
    words = exec_start.group(1).replace("\\\n", " ").split()
    assert words[:2] == ["/usr/local/bin/driftless", "host"]
    values = {"${DRIFTLESS_CONTROL}": "http://127.0.0.1:8080", "${CREDENTIALS_DIRECTORY}/token": "/run/token",
              "%H": "edge-1", "${DRIFTLESS_LISTEN}": "127.0.0.1:8081", "${STATE_DIRECTORY}": "/var/lib/x",
              "$DRIFTLESS_LABELS": "--label=tier=edge"}  # fmt: skip
    parsed = _host_parser().parse_args([values.get(w, w) for w in words[2:]])
    assert parsed.control == "http://127.0.0.1:8080"
    assert ("tier", "edge") in parsed.label
    stop = int(re.search(r"^TimeoutStopSec=(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    assert stop > parsed.drain_timeout
