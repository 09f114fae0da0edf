"""Where everything lives in storage: one function, :func:`key`, maps content to storage keys.

Keys are ``/``-separated and relative to the storage root; the filesystem driver maps them 1:1 to
paths under ``--root``::

    ROOT/
      blobs/<alg>/<hex[:2]>/<hex>                          content (blobs and manifests), shared by all repositories
      repositories/<name>/_layers/<alg>/<hex>              a blob linked into the repository (empty file)
      repositories/<name>/_manifests/revisions/<alg>/<hex> a manifest of the repository; content: its media type
      repositories/<name>/_manifests/tags/<tag>            a tag; content: the manifest digest
      repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex2>
                                                           manifest <hex2> has subject <hex>; content: its descriptor
      uploads/<id>/data                                    bytes of an upload session received so far
      uploads/<id>/state.json                              {"repository", "size", "started"}: what is committed
      uploads/<id>/closed                                  the session completed or was cancelled (empty file)
      uploads/_secret                                      key that signs upload ids (a session with no bytes
                                                           yet lives only in its signed id: POST writes nothing)
      components/<alg>/<hex>.json                          wasm inspection (kind, imports, exports) of layer <hex>
      quarantine/<alg>-<hex>                               corrupt blobs moved aside by fsck
      replicas/<id>.json                                   a serving process on shared (S3) storage, refreshed
                                                           every 10 s: gc refuses while a writable one is alive
      _tmp/                                                temp files, renamed into place (same filesystem)

Repository names and tags never start with ``_``, so ``_layers``, ``_manifests`` and ``_referrers``
cannot clash with a nested repository name; names, tags, digests and upload ids are validated before
they reach this function, so no key can escape the root.
"""

from __future__ import annotations


def key(kind: str, *, repo: str = "", digest: str = "", tag: str = "", upload: str = "", subject: str = "") -> str:
    """The storage key of ``kind`` (see the module docstring for the picture)."""
    alg, _, hexpart = digest.partition(":")
    match kind:
        case "blob":
            return f"blobs/{alg}/{hexpart[:2]}/{hexpart}"
        case "blobs":
            return "blobs"
        case "repositories":
            return "repositories"
        case "repository":
            return f"repositories/{repo}"
        case "layer-link":
            return f"repositories/{repo}/_layers/{alg}/{hexpart}"
        case "layer-links":
            return f"repositories/{repo}/_layers"
        case "revision":
            return f"repositories/{repo}/_manifests/revisions/{alg}/{hexpart}"
        case "revisions":
            return f"repositories/{repo}/_manifests/revisions"
        case "tag":
            return f"repositories/{repo}/_manifests/tags/{tag}"
        case "tags":
            return f"repositories/{repo}/_manifests/tags"
        case "referrers":
            s_alg, _, s_hex = subject.partition(":")
            return f"repositories/{repo}/_referrers/{s_alg}/{s_hex}"
        case "referrer":
            s_alg, _, s_hex = subject.partition(":")
            return f"repositories/{repo}/_referrers/{s_alg}/{s_hex}/{alg}-{hexpart}"
        case "upload":
            return f"uploads/{upload}"
        case "upload-data":
            return f"uploads/{upload}/data"
        case "upload-state":
            return f"uploads/{upload}/state.json"
        case "upload-closed":
            return f"uploads/{upload}/closed"
        case "upload-secret":
            return "uploads/_secret"
        case "uploads":
            return "uploads"
        case "component":
            return f"components/{alg}/{hexpart}.json"
        case "quarantine":
            return f"quarantine/{alg}-{hexpart}"
    raise ValueError(f"unknown storage key kind {kind!r}")
