"""Hosts and the CLI follow a leader a follower names (503 ``{"leader": URL}``) only when that URL is one of
their --control URLs with the same scheme: a follower naming another address, or an https reconciler named
as http, is not followed, and no credential reaches that address (a capture server on loopback)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web

from driftless import client as cli_client
from driftless.client import ReconcilerClient
from shared.errors import DriftlessError
from tests.host.conftest import start_host
from tests.support.http_server import ThreadedServer
from tests.support.procs import wait_until


class Follower:
    """A reconciler that is not the leader: 503 to everything, naming ``leader`` (None: none known).
    ``seen`` holds the Authorization header of every request it got."""

    def __init__(self, leader: str | None = None) -> None:
        self.leader = leader
        self.ok = False  # answer 200 instead (a leader)
        self.seen: list[str | None] = []
        self._lock = threading.Lock()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self.server = ThreadedServer(app)

    async def _answer(self, request: web.Request) -> web.Response:
        with self._lock:
            self.seen.append(request.headers.get("Authorization"))
        if self.ok:
            return web.json_response({})
        return web.json_response({"error": "a follower", "leader": self.leader}, status=503)

    @property
    def url(self) -> str:
        return self.server.url

    def count(self) -> int:
        with self._lock:
            return len(self.seen)


@contextmanager
def servers(n: int) -> Iterator[list[Follower]]:
    made = [Follower() for _ in range(n)]
    try:
        yield made
    finally:
        for f in made:
            f.server.close()


def test_a_host_follows_only_listed_leaders_with_the_same_scheme(tmp_path: Path) -> None:
    with servers(3) as (follower, capture, other):
        # a follower names an address that is not in --control: not followed, nothing sent there
        follower.leader = capture.url
        with start_host(tmp_path, "--control", follower.url, data=tmp_path / "a"):
            wait_until(lambda: follower.count() >= 3, timeout=20, what="the host to ask its own reconciler again")
        assert capture.seen == []

        # https named as http (a downgrade of a listed URL): not followed; the https one gets no plain request
        https_capture = capture.url.replace("http://", "https://")
        follower.leader = capture.url
        with start_host(tmp_path, "--control", f"{follower.url},{https_capture}", data=tmp_path / "b"):
            wait_until(lambda: follower.count() >= 6, timeout=20, what="the host to come back to the follower")
        assert capture.seen == []

        # a listed leader is followed at once: the next URL of the list (other) is skipped
        follower.leader = capture.url
        with start_host(tmp_path, "--control", f"{follower.url},{other.url},{capture.url}", data=tmp_path / "c"):
            wait_until(lambda: capture.count() >= 1, timeout=20, what="the host to follow the listed leader")
        assert capture.seen[0] == "Bearer test-token"  # the join token: it registers there
        assert other.seen == []


def test_the_cli_follows_only_listed_leaders_with_the_same_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_client, "FAILOVER_WAIT", 1.0)
    with servers(4) as (first, second, capture, other):
        first.leader = second.leader = capture.url  # unlisted
        c = ReconcilerClient(base_url=f"{first.url},{second.url}", token="user-token")
        with pytest.raises(DriftlessError) as refused:
            c.post("/api/v1/sync", {})
        assert "not one of --control" in str(refused.value.hint)
        assert capture.seen == [] and first.seen and second.seen

        first.leader = capture.url  # https listed, named as http
        c = ReconcilerClient(base_url=f"{first.url},{capture.url.replace('http://', 'https://')}", token="user-token")
        with pytest.raises(DriftlessError):
            c.post("/api/v1/sync", {})
        assert capture.seen == []

        first.leader, capture.ok = capture.url, True  # listed: followed at once (`other` is skipped)
        c = ReconcilerClient(base_url=f"{first.url},{other.url},{capture.url}", token="user-token")
        assert c.post("/api/v1/sync", {}) == {}
        assert capture.seen == ["Bearer user-token"] and other.seen == []
