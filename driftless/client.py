"""A small synchronous JSON client of the reconciler's API, for the CLI (httpx through shared.http).

    client = ReconcilerClient(base_url=args.control)      # default: driftless.endpoints.default_control_url()
    client.get("/api/v1/drift", env="prod")             # -> parsed JSON
    client.post("/api/v1/promote", {"app": "hello", ...})

A server that does not answer raises :class:`~shared.errors.NotReachable` naming the URL; an
answer >= 400 raises :class:`ApiError` (a ``Refused``) carrying the server's own message and status.
A bearer token is sent when given, or from ``$DRIFTLESS_TOKEN``, or from the ``tokenFile`` that
``driftless up`` records (reconcilers started with a read token require it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from driftless.endpoints import default_control_url, load_up_json
from shared import http
from shared.errors import NotReachable, Refused


class ApiError(Refused):
    """The reconciler answered with an error status."""

    def __init__(self, message: str, *, status: int, body: Any = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.body = body


def default_token() -> str | None:
    token = os.environ.get("DRIFTLESS_TOKEN")
    if token:
        return token.strip()
    path = load_up_json().get("tokenFile")
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError:
            return None
    return None


class ReconcilerClient:
    def __init__(
        self, *, base_url: str | None = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = (base_url or default_control_url()).rstrip("/")
        self.token = token if token is not None else default_token()
        self.timeout = timeout

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
        try:
            with http.client(timeout=self.timeout) as client:
                response = client.request(method, self.base_url + path, params=params, content=body,
                                          headers=all_headers)
        except httpx.TransportError as exc:
            raise http.not_reachable(
                exc, url=self.base_url, what="the reconciler at",
                hint="start the platform with `driftless up`, or pass --control URL (or set $DRIFTLESS_CONTROL)",
            ) from None
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

    def _api_error(self, response: httpx.Response) -> ApiError:
        try:
            body = json.loads(response.content or b"null")
        except ValueError:
            body = None
        status = response.status_code
        message = body.get("error") if isinstance(body, dict) else None
        hint = body.get("hint") if isinstance(body, dict) else None
        if status == 401 and not hint:
            hint = "set $DRIFTLESS_TOKEN to the reconciler's read token"
        if status == 404 and not message:
            message = f"{response.url} not found: is {self.base_url} a Driftless reconciler of this version?"
        return ApiError(
            message or f"{response.url} answered {status} {response.reason_phrase}", status=status, body=body,
            hint=hint,
        )
