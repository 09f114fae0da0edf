"""Host-to-host link tokens: what lets one host forward an HTTP link call to another.

A host forwards a call of a local instance to a link target running elsewhere (one hop,
``x-driftless-link-hop``); the receiving host must know the hop is one the reconciler placed, not
anyone on the network. So each host's long-poll answer carries, per HTTP link of its instances, the
target's token (``InstanceLink.token``), and per instance it runs, the token callers of that
component present (``InstanceSpec.link_token``). A token is HMAC-SHA256 of env/app/component under a
key only the reconciler holds (kept in its state store, so replicated reconcilers agree): a host gets
the tokens of the link targets of the instances placed on it and of its own instances, no others.
Like a secret's value, tokens appear only in the host's own answer, never in stored or shown documents.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import replace

from reconciler.controller.state import StateStore
from wire.control import HostDesiredState

KEY_NAME = "link-token-key"


def link_key(store: StateStore) -> bytes:
    """The reconciler's link-token key: from the state store, created (random) on first use."""
    value = store.get(KEY_NAME)
    if not isinstance(value, str) or not value:
        value = secrets.token_hex(32)
        store.put(KEY_NAME, value)
    return bytes.fromhex(value)


def link_token(key: bytes, *, env: str, app: str, component: str) -> str:
    """The token that opens HTTP links to ``env/app/component`` between hosts."""
    return hmac.new(key, f"driftless-link\0{env}\0{app}\0{component}".encode(), hashlib.sha256).hexdigest()


def with_link_tokens(doc: HostDesiredState, *, key: bytes) -> HostDesiredState:
    """``doc`` with the link tokens of its instances: for the long-poll answer of its own host only."""
    if not doc.instances:
        return doc
    instances = []
    for spec in doc.instances:
        links = tuple(
            replace(link, token=link_token(key, env=spec.env, app=spec.app, component=link.to_component))
            if link.is_http else link
            for link in spec.links
        )
        instances.append(replace(spec, links=links,
                                 link_token=link_token(key, env=spec.env, app=spec.app, component=spec.component)))
    return replace(doc, instances=tuple(instances))

