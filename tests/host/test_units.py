"""Small pure pieces of the host: automatic labels, loopback detection, sizes, route matching."""

from __future__ import annotations

import argparse

import pytest

from driftless.commands.host import parse_listen, parse_size
from host.labels import host_labels
from host.puller import is_loopback
from host.supervisor import _route_matches
from shared import __version__


def test_automatic_labels_and_kubernetes_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    labels = host_labels({"cloud": "aws"})
    assert labels["cloud"] == "aws"
    assert labels["driftless.dev/version"] == __version__
    assert labels["os"] == "linux" and labels["arch"]
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert host_labels({})["platform"] == "kubernetes"
    assert host_labels({"os": "custom"})["os"] == "custom"  # the user's --label wins


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [("127.0.0.1:5000", True), ("127.9.9.9", True), ("localhost:5000", True), ("[::1]:5000", True),
     ("ghcr.io", False), ("10.0.0.5:5000", False), ("registry.local:443", False)],
)  # fmt: skip
def test_loopback_registries_use_plain_http(registry: str, loopback: bool) -> None:
    assert is_loopback(registry) is loopback


def test_sizes_and_listen_addresses() -> None:
    assert parse_size("512Mi") == 512 << 20
    assert parse_size("1Gi") == 1 << 30
    assert parse_size("1000") == 1000
    assert parse_size("2G") == 2_000_000_000
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_size("lots")
    assert parse_listen("127.0.0.1:8081") == ("127.0.0.1", 8081)
    assert parse_listen("[::1]:8081") == ("::1", 8081)
    with pytest.raises(argparse.ArgumentTypeError, match="not HOST:PORT"):
        parse_listen("8081:")


def test_routes_match_at_segment_boundaries() -> None:
    assert _route_matches("/hello", "/hello")
    assert _route_matches("/hello", "/hello/x")
    assert _route_matches("/hello/", "/hello/x")
    assert not _route_matches("/hello", "/hellox")
    assert _route_matches("/", "/anything")
    assert _route_matches("hello", "/hello/x")  # a route without its leading slash still works
