"""Resolve image tags to manifest digests through the registry (``HEAD /v2/<name>/manifests/<tag>``)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable
from urllib.parse import urlsplit

from shared.reference import parse

ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


class UnknownImage(Exception):
    """The registry answered that the repository or tag does not exist (the commit is wrong)."""

    def __init__(self, image: str, message: str) -> None:
        super().__init__(message)
        self.image = image


class RegistryUnreachable(Exception):
    """The registry did not answer (transient: retried)."""


def registry_host(url: str) -> str:
    """``http://127.0.0.1:5000`` -> ``127.0.0.1:5000``."""
    return urlsplit(url if "://" in url else f"http://{url}").netloc


def _base_url(host: str, platform_url: str) -> str:
    if host == registry_host(platform_url):
        return platform_url.rstrip("/") if "://" in platform_url else f"http://{platform_url}"
    scheme = "http" if host.split(":")[0] in ("127.0.0.1", "localhost", "::1") else "https"
    return f"{scheme}://{host}"


def resolve(images: Iterable[str], *, registry_url: str, timeout: float = 5.0) -> dict[str, str]:
    """Digest of every tagged image (as written); pinned images map to their own digest."""
    out: dict[str, str] = {}
    for image in sorted(set(images)):
        ref = parse(image)
        if ref.digest:
            out[image] = ref.digest
            continue
        host = ref.registry or registry_host(registry_url)
        url = f"{_base_url(host, registry_url)}/v2/{ref.repository}/manifests/{ref.identifier}"
        req = urllib.request.Request(url, method="HEAD", headers={"Accept": ACCEPT})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                digest = resp.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise UnknownImage(image, f"image {image}: tag {ref.identifier!r} not found in {host}") from exc
            if exc.code in (401, 403):
                raise UnknownImage(image, f"image {image}: registry {host} refused access ({exc.code})") from exc
            raise RegistryUnreachable(f"registry {host} answered {exc.code} for {image}") from exc
        except OSError as exc:
            raise RegistryUnreachable(f"registry {host} not reachable for {image}: {exc}") from exc
        if not digest:
            raise RegistryUnreachable(f"registry {host} gave no Docker-Content-Digest for {image}")
        out[image] = digest
    return out
