"""What the registry accepts as a repository name, a digest and a tag, and the digests it computes."""

from __future__ import annotations

import hashlib
from typing import Any

from registry.errors import RegistryError
from shared.reference import DIGEST_RE, REPOSITORY_RE, TAG_RE

MAX_NAME_LENGTH = 255
HASHERS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


def check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not REPOSITORY_RE.match(name):
        raise RegistryError(
            "NAME_INVALID",
            f"repository name {name[:300]!r} is invalid: use lowercase path components of letters and digits "
            f"separated by '.', '_', '__' or '-', joined by '/', at most {MAX_NAME_LENGTH} characters",
        )
    return name


def check_digest(text: str) -> str:
    if not DIGEST_RE.match(text):
        raise RegistryError(
            "DIGEST_INVALID",
            f"digest {text[:200]!r} is invalid: use sha256:<64 lowercase hex> or sha512:<128 lowercase hex>",
        )
    return text


def is_digest_like(reference: str) -> bool:
    return ":" in reference


def check_tag(tag: str, *, code: str = "MANIFEST_INVALID") -> str:
    if not TAG_RE.match(tag):
        raise RegistryError(
            code, f"tag {tag[:200]!r} is invalid: use letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-'"
        )
    return tag


def new_hasher(digest: str) -> Any:
    return HASHERS[digest.split(":", 1)[0]]()


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{HASHERS[algorithm](data).hexdigest()}"
