"""Tag resolution's old home: it lives in the one registry client now (:mod:`shared.registry_client`).

Kept as names only, so ``from shared import tags; tags.resolve(images, registry_url=...)`` keeps
working; new code imports from ``shared.registry_client``.
"""

from __future__ import annotations

from shared.registry_client import RegistryUnreachable, UnknownImage, registry_host
from shared.registry_client import resolve_tags as resolve

__all__ = ["RegistryUnreachable", "UnknownImage", "registry_host", "resolve"]
