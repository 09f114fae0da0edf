"""Which reconciler URLs a host or the CLI may talk to: the ones configured (``--control URL1,URL2``),
nothing else. A follower's 503 names the leader; that name is followed only when it is one of the
configured URLs with the same scheme, so a follower (or whoever answers in its place) cannot send a
host's or a user's credential to another address, nor downgrade https to http.

    listed_url("http://10.0.0.6:8080/", listed=["https://10.0.0.5:8080", "https://10.0.0.6:8080"])  # None
    listed_url("https://10.0.0.6:8080", listed=[...])                                  # "https://10.0.0.6:8080"
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx


def _key(url: str) -> tuple[str, str, int | None, str] | None:
    try:
        u = httpx.URL(url)
    except Exception:
        return None
    if u.scheme not in ("http", "https") or not u.host or u.userinfo:
        return None
    port = u.port or (443 if u.scheme == "https" else 80)
    return u.scheme, u.host.lower(), port, u.path.rstrip("/")


def listed_url(named: str | None, *, listed: Sequence[str]) -> str | None:
    """The entry of ``listed`` that ``named`` is (same scheme, host, port and path), or None."""
    if not named:
        return None
    key = _key(named)
    if key is None:
        return None
    return next((url for url in listed if _key(url) == key), None)
