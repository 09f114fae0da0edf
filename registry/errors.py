"""Registry errors: the OCI error codes in one table, serialised in one place.

Every client mistake raises :class:`RegistryError` with one of the codes below; the server turns it
into ``{"errors": [{"code", "message", "detail"}]}`` with the code's HTTP status (or an explicit one,
e.g. 416 for an out-of-order chunk). Nothing else in the package builds an error body.
"""

from __future__ import annotations

import json
from typing import Any

from shared.errors import DriftlessError

# code -> (HTTP status, message), as worded by the OCI Distribution Spec v1.1
CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (404, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    # as distribution answers a storage outage (not in the OCI spec's table)
    "UNAVAILABLE": (503, "service unavailable"),
}


class RegistryError(DriftlessError):
    """An OCI error: ``code`` from :data:`CODES`, a ``detail`` saying what is wrong and how to fix it."""

    def __init__(self, code: str, detail: Any = None, *, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unknown OCI error code {code!r}")
        default_status, message = CODES[code]
        super().__init__(f"{code}: {detail}" if detail else f"{code}: {message}")
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status or default_status
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.code, self.detail)


def error_body(code: str, detail: Any = None) -> bytes:
    """The one serialisation of an OCI error body."""
    entry = {"code": code, "message": CODES[code][1], "detail": detail if detail is not None else {}}
    return json.dumps({"errors": [entry]}).encode()


class StorageCorrupt(DriftlessError):
    """fsck found blobs whose content does not match their digest."""
