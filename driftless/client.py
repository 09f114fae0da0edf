"""A small synchronous JSON client of the reconciler's API, for the CLI (httpx through shared.http).

    client = ReconcilerClient.from_args(args)      # default: driftless.endpoints.default_control_url()
    client.get("/api/v1/drift", env="prod")             # -> parsed JSON
    client.post("/api/v1/promote", {"app": "hello", ...})

A server that does not answer raises :class:`~shared.errors.NotReachable` naming the URL; an
answer >= 400 raises :class:`ApiError` (a ``Refused``) carrying the server's own message and status.
The bearer credential sent (``Authorization: Bearer <token>``) is, first found: the token given,
the file given (``--token-file``), ``$DRIFTLESS_TOKEN_FILE``, ``$DRIFTLESS_TOKEN``, the admin
credential ``driftless up`` created (``credentialFile`` in up.json); never the join token (it only registers hosts).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from driftless.endpoints import default_control_url, load_up_json
from shared import http
from shared.control_urls import listed_url
from shared.errors import NotReachable, Refused, UsageError


class ApiError(Refused):
    """The reconciler answered with an error status."""

    def __init__(self, message: str, *, status: int, body: Any = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.body = body


def read_token_file(path: Path, *, what: str) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror or exc}") from None
    if not token:
        raise UsageError(f"{what} {path} is empty")
    return token


def default_token(token_file: Path | None = None) -> str | None:
    if token_file is not None:
        return read_token_file(token_file, what="--token-file")
    env_file = os.environ.get("DRIFTLESS_TOKEN_FILE")
    if env_file:
        return read_token_file(Path(env_file), what="$DRIFTLESS_TOKEN_FILE")
    token = os.environ.get("DRIFTLESS_TOKEN")
    if token:
        return token.strip()
    up = load_up_json()
    for key in ("credentialFile",):
        path = up.get(key)
        if path:
            try:
                found = Path(path).read_text().strip()
            except OSError:
                continue
            if found:
                return found
    return None


FAILOVER_WAIT = 15.0  # seconds a client of replicated reconcilers waits for a leader


def _leader_named(response: httpx.Response | None) -> str | None:
    if response is None or response.status_code != 503:
        return None
    try:
        leader = response.json().get("leader")
    except (ValueError, AttributeError):
        return None
    return leader.rstrip("/") if isinstance(leader, str) and leader else None


class ReconcilerClient:
    def __init__(
        self, *, base_url: str | None = None, token: str | None = None, token_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        # replicated reconcilers: --control URL1,URL2 (a follower answers 503 naming the leader; one
        # that does not answer is skipped); requests go to the leader, reads to whichever answers
        self.base_urls = [u.strip().rstrip("/") for u in (base_url or default_control_url()).split(",") if u.strip()]
        self.base_url = self.base_urls[0]
        self.token = token if token is not None else default_token(token_file)
        self.timeout = timeout

    @classmethod
    def from_args(cls, args: Any) -> ReconcilerClient:
        """The client of a command's ``--control`` and ``--token-file``."""
        return cls(base_url=getattr(args, "control", None), token_file=getattr(args, "token_file", None))

    def get(self, path: str, **params: str | None) -> Any:
        query = {k: v for k, v in params.items() if v not in (None, "")}
        return self._send("GET", path, params=query)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._send("POST", path, body=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"})

    def _send(self, method: str, path: str, *, params: Mapping[str, str | None] | None = None,
              body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        all_headers = {"Accept": "application/json", **(headers or {})}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        response = self._failover(method, path, params=params, body=body, headers=all_headers)
        if response.status_code >= 400:
            raise self._api_error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise NotReachable(
                f"{response.url} did not answer with JSON; is {self.base_url} a Driftless reconciler?",
                hint="pass --control URL of the reconciler",
            ) from None

    def _failover(self, method: str, path: str, *, params: Mapping[str, str | None] | None, body: bytes | None,
                  headers: dict[str, str]) -> httpx.Response:
        """Send to the current reconciler; with several (--control URL1,URL2), go to the leader a follower
        names (503) when it is one of them with the same scheme, or on to the next when one does not
        answer, for up to FAILOVER_WAIT seconds (an election). A write sent again this way is safe: promote, rollback and sync change nothing the
        second time (the target already declares the digests, the files are already restored)."""
        deadline = time.monotonic() + FAILOVER_WAIT
        tried = 0
        while True:
            url = self.base_url
            try:
                with http.client(timeout=self.timeout) as client:
                    response = client.request(method, url + path, params=params, content=body, headers=headers)
            except httpx.TransportError as exc:
                if len(self.base_urls) < 2 or time.monotonic() > deadline:
                    raise http.not_reachable(
                        exc, url=url, what="the reconciler at",
                        hint="start the platform with `driftless up`, or pass --control URL (or set $DRIFTLESS_CONTROL)",
                    ) from None
                response = None
            if response is not None and (response.status_code != 503 or len(self.base_urls) < 2
                                         or time.monotonic() > deadline):
                return response
            leader = listed_url(_leader_named(response), listed=self.base_urls)  # never an address not in --control
            if leader and leader != url:
                self.base_url = leader
                continue
            position = self.base_urls.index(url) if url in self.base_urls else -1
            self.base_url = self.base_urls[(position + 1) % len(self.base_urls)]
            tried += 1
            if tried % len(self.base_urls) == 0:  # each answered nothing useful: an election, wait a little
                time.sleep(0.3)

    def _api_error(self, response: httpx.Response) -> ApiError:
        try:
            body = json.loads(response.content or b"null")
        except ValueError:
            body = None
        status = response.status_code
        message = body.get("error") if isinstance(body, dict) else None
        hint = body.get("hint") if isinstance(body, dict) else None
        if status == 401 and not hint:
            hint = ("pass --token-file FILE (or set $DRIFTLESS_TOKEN_FILE) with a credential of the reconciler's "
                    "--users-file; `driftless up` writes one to DATA/admin-token")
        leader = _leader_named(response)
        if status == 503 and leader and listed_url(leader, listed=self.base_urls) is None:
            hint = (f"the leader is {leader}, which is not one of --control {','.join(self.base_urls)}: the CLI "
                    "follows only the URLs given; add it to --control if it is yours")
        if status == 403 and not hint:
            hint = "ask an admin for a credential whose role allows it (docs/reconciler.md, Authentication and roles)"
        if status == 404 and not message:
            message = f"{response.url} not found: is {self.base_url} a Driftless reconciler of this version?"
        return ApiError(
            message or f"{response.url} answered {status} {response.reason_phrase}", status=status, body=body,
            hint=hint,
        )
