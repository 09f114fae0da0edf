"""A small synchronous JSON client of the reconciler's API, for the CLI.

    client = ControlClient(base_url=args.control)      # default: driftless.endpoints.default_control_url()
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
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from driftless.endpoints import default_control_url, load_up_json
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


class ControlClient:
    def __init__(
        self, *, base_url: str | None = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = (base_url or default_control_url()).rstrip("/")
        self.token = token if token is not None else default_token()
        self.timeout = timeout

    def get(self, path: str, **params: str | None) -> Any:
        query = {k: v for k, v in params.items() if v not in (None, "")}
        url = self.base_url + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        return self._send(urllib.request.Request(url, method="GET"))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method="POST")
        request.add_header("Content-Type", "application/json")
        return self._send(request)

    def _send(self, request: urllib.request.Request) -> Any:
        request.add_header("Accept", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._api_error(exc) from None
        except (OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NotReachable(
                f"the reconciler at {self.base_url} did not answer ({reason})",
                hint="start the platform with `driftless up`, or pass --control URL (or set $DRIFTLESS_CONTROL)",
            ) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise NotReachable(
                f"{request.full_url} did not answer with JSON; is {self.base_url} a Driftless reconciler?",
                hint="pass --control URL of the reconciler",
            ) from None

    def _api_error(self, exc: urllib.error.HTTPError) -> ApiError:
        try:
            body = json.loads(exc.read() or b"null")
        except ValueError:
            body = None
        message = body.get("error") if isinstance(body, dict) else None
        hint = body.get("hint") if isinstance(body, dict) else None
        if exc.code == 401 and not hint:
            hint = "set $DRIFTLESS_TOKEN to the reconciler's read token"
        if exc.code == 404 and not message:
            message = f"{exc.url} not found: is {self.base_url} a Driftless reconciler of this version?"
        return ApiError(
            message or f"{exc.url} answered {exc.code} {exc.reason}", status=exc.code, body=body, hint=hint
        )
