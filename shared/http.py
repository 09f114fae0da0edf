"""Outbound HTTP for all of Driftless: the httpx clients and what a server that does not answer becomes.

    from shared import http
    with http.client(timeout=5) as c:                                    # httpx.Client
        r = c.get(url)
    async with http.async_client(timeout=http.timeout(45, connect=5), ca_file=ca) as c:   # httpx.AsyncClient
        ...
    except httpx.TransportError as exc:
        raise http.not_reachable(exc, url=url, what="registry") from None  # a NotReachable naming the URL

Every client sends ``User-Agent: driftless/<version>``, does not follow redirects unless asked
(a caller that follows them relies on httpx dropping ``Authorization`` when a redirect leaves the
origin), and verifies TLS against the system's trust store, or only ``ca_file`` when given.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Mapping

import httpx

from shared import __version__
from shared.errors import NotReachable

USER_AGENT = f"driftless/{__version__}"
DEFAULT_TIMEOUT = 30.0

# httpx logs every request at INFO: a host long-polling and reporting every heartbeat would fill
# its log with them. Our own log lines say what failed; httpx's debug stays available at DEBUG.
logging.getLogger("httpx").setLevel(logging.WARNING)


def timeout(seconds: float, *, connect: float | None = None) -> httpx.Timeout:
    """``seconds`` for each read, write and pool wait; ``connect`` (default: the same) to connect."""
    return httpx.Timeout(seconds, connect=seconds if connect is None else connect)


@functools.cache
def _trust(ca_file: str | None) -> ssl.SSLContext:
    # the system store (as urllib and aiohttp used), not certifi's: a CA the operator installed
    # keeps working. Cached: loading a store costs milliseconds and a context is safe to share.
    return ssl.create_default_context(cafile=ca_file)


def tls(*, verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext | bool:
    """What to pass as httpx's ``verify``: False (no verification), or a context trusting
    ``ca_file`` alone when given, else the system's CAs."""
    return _trust(ca_file) if verify else False


def _headers(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {"User-Agent": USER_AGENT, **(extra or {})}


def client(*, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, verify: bool = True, ca_file: str | None = None,
           follow_redirects: bool = False, headers: Mapping[str, str] | None = None) -> httpx.Client:
    """A synchronous client; use it in a ``with`` block so its connections are closed."""
    return httpx.Client(timeout=timeout, verify=tls(verify=verify, ca_file=ca_file),
                        follow_redirects=follow_redirects, headers=_headers(headers))


def async_client(*, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, verify: bool = True,
                 ca_file: str | None = None, follow_redirects: bool = False,
                 headers: Mapping[str, str] | None = None) -> httpx.AsyncClient:
    """An asyncio client; use it in an ``async with`` block so its connections are closed."""
    return httpx.AsyncClient(timeout=timeout, verify=tls(verify=verify, ca_file=ca_file),
                             follow_redirects=follow_redirects, headers=_headers(headers))


def worth_retrying(status: int) -> bool:
    """Whether an HTTP error answer may succeed if sent again: a server error or 429; any other refusal
    (a wrong token, an unknown repository, a body the receiver rejects) would only be refused again."""
    return status >= 500 or status == 429


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, for logs: a path or query may carry a credential (a Slack
    webhook's does), userinfo always does."""
    try:
        u = httpx.URL(url)
    except Exception:
        return "<invalid url>"
    return f"{u.scheme}://{u.host}{':' + str(u.port) if u.port else ''}"


def reason(exc: BaseException) -> str:
    """Why a request got no answer, as one short phrase (httpx's timeouts often have no text)."""
    text = str(exc).strip()
    if text:
        return text
    return "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__


def not_reachable(exc: BaseException, *, url: str, what: str, verb: str = "did not answer", hint: str | None = None,
                  error: type[NotReachable] = NotReachable) -> NotReachable:
    """``{what} {url} {verb}: {reason}`` as a :class:`NotReachable` (or the subclass ``error``)."""
    return error(f"{what} {url} {verb}: {reason(exc)}", hint=hint)
