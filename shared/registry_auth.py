"""Which credential goes to which registry: the platform registry's only to it, another registry's
only to that one, and none to a registry nobody configured (a manifest naming ``evil.example`` must
not harvest a password).

    auth = RegistryAuth(platform="http://127.0.0.1:5000", platform_credentials=Credentials("ci", "pw"),
                        configured=load_credentials_file(Path("/etc/driftless/registries.yaml")))
    auth.for_url("http://127.0.0.1:5000")   # Credentials("ci", "pw")
    auth.for_url("https://evil.example")    # None: ask anonymously

The platform registry is matched by its exact ``host:port`` and the same scheme (its credential never
goes over plain http to a registry reached over https, nor to another port). Other registries get the
credential configured for them on the operator's side, in a ``--registry-credentials FILE`` (the host
agent's and the reconciler's), mode 0600 (refused when group or others may read it), in either form:

    # YAML: host[:port] exactly as images name the registry
    ghcr.io:
      username: robot
      password: s3cret
    registry.internal:5000: {username: puller, password: pw}

    # or a docker config.json (what `docker login` writes): "auths" with "auth" (base64 user:password)
    # or "username"/"password"; credential helpers (credsStore, credHelpers) are not run
    {"auths": {"ghcr.io": {"auth": "cm9ib3Q6czNjcmV0"}}}
"""

from __future__ import annotations

import base64
import binascii
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.errors import UsageError
from shared.registry_client import Credentials


def split_registry(url_or_host: str) -> tuple[str | None, str]:
    """``(scheme, host[:port])`` of a registry URL, or ``(None, host[:port])`` of a bare registry host,
    lowercased (hosts are case-insensitive, and ``Host`` and ``host`` are one registry)."""
    if "://" in url_or_host:
        parts = urllib.parse.urlsplit(url_or_host)
        return parts.scheme.lower(), parts.netloc.lower()
    return None, url_or_host.strip().rstrip("/").split("/", 1)[0].lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryAuth:
    """The credentials of one process (a host agent, the reconciler) and where each may go."""

    platform: str | None = None  # the platform registry's URL (scheme://host[:port]); None: none known
    platform_credentials: Credentials | None = None
    configured: Mapping[str, Credentials] = field(default_factory=dict)  # host[:port] -> its credential

    def for_url(self, base_url: str) -> Credentials | None:
        """The credential to send to the registry at ``base_url`` (``scheme://host[:port]``), or None."""
        scheme, host = split_registry(base_url)
        if self.platform is not None and self.platform_credentials is not None:
            platform_scheme, platform_host = split_registry(self.platform)
            if host == platform_host:
                # the same registry over another scheme (https downgraded to http) gets nothing
                return self.platform_credentials if scheme == (platform_scheme or scheme) else None
        return self.configured.get(host)


def load_credentials_file(path: Path) -> dict[str, Credentials]:
    """``host[:port] -> Credentials`` from a ``--registry-credentials`` file (see the module's doc)."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--registry-credentials {path}: {exc.strerror or exc}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"--registry-credentials {path} may be read by others (mode {stat.S_IMODE(st.st_mode):04o}): it holds "
            "passwords, so it must be readable by its owner alone",
            hint=f"chmod 600 {path}",
        )
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # where the broken construct starts (an unclosed bracket), else where the parser noticed it
        mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise UsageError(f"--registry-credentials {where}: not valid YAML or JSON "
                         f"({getattr(exc, 'problem', None) or exc})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UsageError(f"--registry-credentials {path}: must be a mapping of host[:port] to "
                         "{username, password}, or a docker config.json with \"auths\"")
    if "auths" in doc or "credsStore" in doc or "credHelpers" in doc:
        return _docker_config(doc, path=path)
    out: dict[str, Credentials] = {}
    for key, entry in doc.items():
        host = _registry_key(key, path=path)
        if not isinstance(entry, dict) or not isinstance(entry.get("username"), str) or not entry["username"] \
                or not isinstance(entry.get("password"), str):
            raise UsageError(f"--registry-credentials {path}: entry {key!r} needs username and password (strings)",
                             hint=f"write it as  {key}: {{username: NAME, password: SECRET}}")
        unknown = sorted(set(entry) - {"username", "password"})
        if unknown:
            raise UsageError(f"--registry-credentials {path}: entry {key!r} has unknown field(s) {', '.join(unknown)}",
                             hint="an entry has username and password only")
        out[host] = Credentials(entry["username"], entry["password"])
    return out


def _registry_key(key: Any, *, path: Path) -> str:
    if not isinstance(key, str) or not key.strip():
        raise UsageError(f"--registry-credentials {path}: {key!r} is not a registry host[:port]")
    return split_registry(key)[1]


def _docker_config(doc: dict[str, Any], *, path: Path) -> dict[str, Credentials]:
    if doc.get("credsStore") or doc.get("credHelpers"):
        raise UsageError(f"--registry-credentials {path}: credential helpers (credsStore, credHelpers) are not run",
                         hint="write the credentials in \"auths\" of a file of their own")
    auths = doc.get("auths") or {}
    if not isinstance(auths, dict):
        raise UsageError(f"--registry-credentials {path}: \"auths\" must be an object")
    out: dict[str, Credentials] = {}
    for key, entry in auths.items():
        host = _registry_key(key, path=path)
        if not isinstance(entry, dict):
            raise UsageError(f"--registry-credentials {path}: auths[{key!r}] must be an object")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, sep, password = "", "", ""
            if not sep or not user:
                raise UsageError(f"--registry-credentials {path}: auths[{key!r}].auth is not base64 of user:password")
            out[host] = Credentials(user, password)
        elif isinstance(entry.get("username"), str) and entry["username"]:
            out[host] = Credentials(entry["username"], str(entry.get("password") or ""))
        else:
            raise UsageError(f"--registry-credentials {path}: auths[{key!r}] has no auth or username",
                             hint="`docker login` writes \"auth\": base64 of user:password")
    return out
