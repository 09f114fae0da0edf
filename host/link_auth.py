"""Who may use the ingress's link path (``/.driftless/links/...``): no side doors.

Two kinds of caller, two credentials:

- **A local instance** calling its own declared HTTP link. Each ``wasmtime serve`` instance gets a
  random credential (held in memory only, never on disk, never in a report) inside its link URLs:
  ``<COMPONENT>_URL = http://<ingress>/.driftless/links/<credential>/<component>``. The credential
  names the instance's env, app and the components its application declared links to; any other
  component is refused, and so is a credential from a caller that is not on this host. In-process
  components make no HTTP calls (their links are typed function calls on the host, restricted to
  declared links when they are wired): they hold no credential.
- **Another host** forwarding a link call (one hop, ``x-driftless-link-hop``) to
  ``/.driftless/links/<env>/<app>/<component>/...`` with ``x-driftless-link-token``: the token the
  reconciler put in the caller's desired state for that link target. The receiving host accepts it
  when its own desired state names the same token for an instance of that component it runs
  (:func:`reconciler.controller.link_tokens`: HMAC of env/app/component under a key only the
  reconciler holds), so a host holds tokens only for the link targets of the instances placed on it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from wire.control import HostDesiredState, InstanceSpec

HOP_HEADER = "x-driftless-link-hop"  # one hop between hosts: never forwarded again
HOP_TOKEN_HEADER = "x-driftless-link-token"  # the reconciler's token for the link target (host to host)

Target = tuple[str, str, str]  # env, app, component


@dataclass(frozen=True, slots=True)
class LinkGrant:
    """What one instance's link credential opens: HTTP links to ``targets`` of its env/app."""

    instance: str
    env: str
    app: str
    targets: frozenset[str]


def _key(credential: str) -> bytes:
    # looked up by hash: a dict probe on the secret itself would compare it byte by byte
    return hashlib.sha256(credential.encode()).digest()


class LinkCredentials:
    """The link credentials of the instances on this host (thread-safe: instances start in workers)."""

    def __init__(self) -> None:
        self._grants: dict[bytes, LinkGrant] = {}
        self._lock = threading.Lock()

    def issue(self, spec: InstanceSpec) -> str:
        """A new credential for ``spec``'s declared HTTP links (revoke it when the instance stops)."""
        credential = secrets.token_urlsafe(24)
        grant = LinkGrant(instance=spec.id, env=spec.env, app=spec.app,
                          targets=frozenset(link.to_component for link in spec.links if link.is_http))
        with self._lock:
            self._grants[_key(credential)] = grant
        return credential

    def revoke(self, credential: str) -> None:
        with self._lock:
            self._grants.pop(_key(credential), None)

    def grant(self, credential: str) -> LinkGrant | None:
        with self._lock:
            return self._grants.get(_key(credential))

    def __len__(self) -> int:
        with self._lock:
            return len(self._grants)


def is_local_caller(remote: str | None, *, own_hosts: Iterable[str]) -> bool:
    """Whether a connection from ``remote`` comes from this machine: loopback, or an address the
    ingress itself is reached at by its instances (an ingress bound to one address)."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if address.is_loopback:
        return True
    return any(remote == h.strip("[]") for h in own_hosts)


class HopTokens:
    """The hop tokens of the newest desired state: the one to present for a link target elsewhere
    (from this host's callers' links) and the ones this host accepts (from the instances it runs).
    Rebuilt when the desired state changes, read on every hop."""

    def __init__(self) -> None:
        self._doc: HostDesiredState | None = None
        self._send: dict[Target, str] = {}
        self._accept: dict[Target, frozenset[str]] = {}

    def _refresh(self, desired: HostDesiredState | None) -> None:
        if desired is self._doc:
            return
        send: dict[Target, str] = {}
        accept: dict[Target, set[str]] = {}
        for spec in desired.instances if desired is not None else ():
            if spec.link_token:
                accept.setdefault((spec.env, spec.app, spec.component), set()).add(spec.link_token)
            for link in spec.links:
                if link.is_http and link.token:
                    send[(spec.env, spec.app, link.to_component)] = link.token
        self._doc, self._send = desired, send
        self._accept = {k: frozenset(v) for k, v in accept.items()}

    def to_send(self, desired: HostDesiredState | None, target: Target) -> str | None:
        self._refresh(desired)
        return self._send.get(target)

    def accepts(self, desired: HostDesiredState | None, target: Target, token: str) -> bool:
        self._refresh(desired)
        given = token.encode()
        # every candidate compared, in constant time each
        return bool(token) and any([hmac.compare_digest(given, t.encode()) for t in self._accept.get(target, ())])
