"""OCI image references: ``[registry/]repository[:tag][@algorithm:hex]``.

One parser for the whole project (manifests, registry client, reconciler, promotion).
A reference without a registry host (``demo/hello:1.0.0``) is *short*: it resolves against
the platform registry the reconciler or host was started with, which keeps manifests
portable between machines and ports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

# distribution-spec grammar for repository names
REPOSITORY_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


class ReferenceError(ValueError):
    """The text is not a valid image reference; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class Reference:
    registry: str | None  # "127.0.0.1:5000"; None for a short reference
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def is_pinned(self) -> bool:
        return self.digest is not None

    @property
    def identifier(self) -> str:
        """What goes after /manifests/ in the API: the digest if pinned, else the tag."""
        if self.digest:
            return self.digest
        return self.tag or "latest"

    def with_registry(self, registry: str) -> Reference:
        return self if self.registry else replace(self, registry=registry)

    def pinned(self, digest: str) -> Reference:
        """The same reference pinned to ``digest`` (the tag is dropped: a digest says it all)."""
        return replace(self, tag=None, digest=digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}" if self.registry else self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


def parse(text: str) -> Reference:
    """Parse ``text``; raise :class:`ReferenceError` naming the bad part."""
    if not text or text != text.strip():
        raise ReferenceError(f"image reference {text!r} is empty or has surrounding spaces")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise ReferenceError(f"digest {digest!r} in {text!r} is not sha256:<64 hex> or sha512:<128 hex>")
    registry = None
    first, _, remainder = rest.partition("/")
    if remainder and _looks_like_host(first):
        registry, rest = first, remainder
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not TAG_RE.match(tag):
            raise ReferenceError(f"tag {tag!r} in {text!r} is not valid (letters, digits, '._-', at most 128)")
    if not REPOSITORY_RE.match(rest):
        raise ReferenceError(
            f"repository {rest!r} in {text!r} is not valid: use lowercase letters, digits and separators '._-/'"
        )
    return Reference(registry=registry, repository=rest, tag=tag, digest=digest)
