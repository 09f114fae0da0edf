"""Where the reconciler may send what Git asks it to: the operator's outbound allow-list.

A webhook (``spec.notifications[].url``) or a commit-status API (``spec.commitStatus[].url``) named in
Git is called only when its URL starts with one of the prefixes the operator allows
(``driftless reconcile --outbound-allow URL_PREFIX``, repeatable) or one of the defaults, the public
commit-status APIs (:data:`DEFAULTS`). A prefix matches by parts, never as text: the same scheme,
host and port, and a path that is the prefix's or below it at a ``/`` (``https://ci.example.com/hooks``
allows ``https://ci.example.com/hooks/a``, not ``https://ci.example.com/hooksmith`` nor
``https://ci.example.com.evil.example/hooks``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from shared.errors import UsageError

DEFAULTS = ("https://api.github.com/", "https://gitlab.com/api/v4/")  # the public commit-status APIs
HINT = "--outbound-allow https://HOST[:PORT][/PATH] (repeatable): the URL prefix Git may name"


@dataclass(frozen=True, slots=True)
class Prefix:
    scheme: str
    host: str
    port: int
    path: str  # ends with "/"

    def __str__(self) -> str:
        default = {"https": 443, "http": 80}[self.scheme]
        return f"{self.scheme}://{self.host}{'' if self.port == default else f':{self.port}'}{self.path}"


def _parts(url: str) -> Prefix | None:
    try:
        u = httpx.URL(url)
    except Exception:
        return None
    if u.scheme not in ("http", "https") or not u.host:
        return None
    port = u.port or (443 if u.scheme == "https" else 80)
    path = u.path or "/"
    if any(segment in (".", "..") for segment in path.split("/")):
        return None  # a server may resolve them (even %2e%2e) out from under the prefix
    return Prefix(u.scheme, u.host.lower(), port, path if path.endswith("/") else path + "/")


def parse_prefix(text: str) -> Prefix:
    """A prefix of ``--outbound-allow``; UsageError when it is not an http(s) URL prefix."""
    if "@" in text:  # never quoted: it may hold a password
        raise UsageError("an --outbound-allow prefix must not carry credentials (user:password@)", hint=HINT)
    if any(c in text for c in "?#") or any(c.isspace() for c in text):
        raise UsageError(f"--outbound-allow {text!r} must be a URL prefix without query or fragment", hint=HINT)
    found = _parts(text)
    if found is None:
        raise UsageError(f"--outbound-allow {text!r} is not an http:// or https:// URL", hint=HINT)
    return found


class OutboundAllowList:
    """The URLs taken from Git that the reconciler may call: the defaults and the operator's prefixes."""

    def __init__(self, prefixes: Iterable[str] = ()) -> None:
        self.prefixes = tuple(dict.fromkeys(parse_prefix(p) for p in (*DEFAULTS, *prefixes)))

    def allows(self, url: str) -> bool:
        u = _parts(url)
        if u is None:
            return False
        return any(u.scheme == p.scheme and u.host == p.host and u.port == p.port and u.path.startswith(p.path)
                   for p in self.prefixes)

    def __str__(self) -> str:
        return ", ".join(map(str, self.prefixes))
