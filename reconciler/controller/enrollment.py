"""What a host may be, fixed when it enrolls (Kubernetes bootstrap tokens, wasmCloud's host
labels policy): the label values it may carry, the environments it may serve, where its ingress
may be. Pure data and checks; :mod:`.enrollments` keeps them in the state store.

- **Bounds** are named by an enrollment (``driftless hosts enroll``, ``POST /api/v1/enrollments``)
  or, for the reconciler's ``--token-file`` join token, by the operator's ``--join-label``,
  ``--join-environments`` and ``--join-ingress`` options (none given: unbounded, as ``driftless up``
  runs it on one machine).
- **Labels**: every label key a host registers must be one the bounds name, with one of its allowed
  values. The automatic labels (:data:`AUTOMATIC_LABELS`: os, arch, platform, driftless.dev/version)
  are facts of the machine: allowed with any value unless the bounds name them too.
- **Environments**: the planner gives a host instances of the environments its bounds allow only
  (``HostInfo.environments``), and publishing checks it again.
- **Ingress URL**: http or https, no credentials in it, never a link-local or cloud metadata
  address (:func:`ingress_problem`), and under the bounds' ``ingress`` prefix when they pin one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from wire.control import HostRegistration

AUTOMATIC_LABELS = frozenset({"os", "arch", "platform", "driftless.dev/version"})
JOIN_TOKEN_ID = "join-token"  # the binding of hosts that registered with --token-file's join token
ANY = "*"  # environments: ["*"] allows every environment (said on purpose, never a default of an enrollment)

# cloud metadata endpoints (AWS/GCP/Azure/OpenStack 169.254.169.254, AWS IPv6, Alibaba) and their names
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                                ipaddress.ip_address("100.100.100.200")})
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal"})
_ID = re.compile(r"^enr-[0-9a-f]{8}$")


def valid_id(text: str) -> bool:
    return bool(_ID.match(text))


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """What a host may be. ``None`` fields are unbounded (only the operator's join token may be)."""

    labels: Mapping[str, tuple[str, ...]] | None = None  # key -> allowed values
    environments: tuple[str, ...] | None = None  # environments the host may serve; ("*",) every one
    ingress: str | None = None  # the host's ingressUrl must be this URL or under it (a path prefix)

    @property
    def unbounded(self) -> bool:
        return self.labels is None and self.environments is None and self.ingress is None

    def environment_set(self) -> frozenset[str] | None:
        """The environments allowed, None for every one (what :class:`HostInfo` carries)."""
        if self.environments is None or ANY in self.environments:
            return None
        return frozenset(self.environments)

    def allows_env(self, env: str) -> bool:
        allowed = self.environment_set()
        return allowed is None or env in allowed

    def label_problems(self, labels: Mapping[str, str]) -> list[str]:
        if self.labels is None:
            return []
        out = []
        for key, value in sorted(labels.items()):
            allowed = self.labels.get(key)
            if allowed is None:
                if key in AUTOMATIC_LABELS:
                    continue
                named = ", ".join(sorted(self.labels)) or "none"
                out.append(f"label {key}={value} is not allowed (the enrollment allows the label keys: {named})")
            elif value not in allowed:
                out.append(f"label {key}={value} is not allowed ({key} may be {' or '.join(allowed)})")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"labels": {k: list(v) for k, v in sorted(self.labels.items())} if self.labels is not None else None,
                "environments": list(self.environments) if self.environments is not None else None,
                "ingress": self.ingress}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Bounds:
        labels = d.get("labels")
        envs = d.get("environments")
        return cls(labels={str(k): tuple(str(x) for x in v) for k, v in labels.items()} if labels is not None else None,
                   environments=tuple(str(e) for e in envs) if envs is not None else None,
                   ingress=d.get("ingress"))

    def describe(self) -> str:
        labels = "any labels" if self.labels is None else \
            ("labels " + ", ".join(f"{k}={'|'.join(v)}" for k, v in sorted(self.labels.items())) if self.labels
             else "no labels but the automatic ones")
        envs = "every environment" if self.environment_set() is None else \
            ("environments " + ", ".join(self.environments or ()) if self.environments else "no environment")
        ingress = f", ingress under {self.ingress}" if self.ingress else ""
        return f"{labels}; {envs}{ingress}"


def parse_bounds(*, labels: Any, environments: Any, ingress: Any, where: str) -> Bounds:
    """Bounds from a request or options (``labels``: {key: value | [values]}); ValueError naming the problem."""
    if not isinstance(labels, Mapping):
        raise ValueError(f"{where}: labels must be a mapping of label key to an allowed value or a list of them")
    parsed: dict[str, tuple[str, ...]] = {}
    for key, value in labels.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(key, str) or not key or not isinstance(values, list) or not values or \
                not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"{where}: labels.{key} must be a non-empty value or list of values")
        parsed[key] = tuple(dict.fromkeys(values))
    if not isinstance(environments, list) or not environments or \
            not all(isinstance(e, str) and e for e in environments):
        raise ValueError(f"{where}: environments must be a non-empty list of environment names (or [\"*\"] for every "
                         "one, said on purpose)")
    if ingress is not None:
        if not isinstance(ingress, str) or not ingress:
            raise ValueError(f"{where}: ingress must be a URL prefix such as https://edge-1.example.com/")
        problem = ingress_problem(ingress, allowed=None)
        if problem:
            raise ValueError(f"{where}: ingress {ingress}: {problem}")
    return Bounds(labels=parsed, environments=tuple(dict.fromkeys(environments)), ingress=ingress)


def _is_metadata(host: str) -> str | None:
    """Why ``host`` (a URL's host name or address) must never be an ingress, or None."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_NAMES:
        return f"{name} is a cloud metadata endpoint"
    try:
        ip = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is link-local (169.254.0.0/16, fe80::/10)"
    if ip.is_unspecified or ip.is_multicast:
        return f"{ip} is not an address other hosts can reach it at (start the host with --advertise URL)"
    return None


def ingress_problem(url: str, *, allowed: str | None) -> str | None:
    """Why ``url`` may not be a host's ingress URL (other hosts forward user requests to it), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'}: is not allowed: only http:// and https://"
    if not parts.hostname:
        return "it names no host"
    if parts.username is not None or parts.password is not None:
        return "it carries credentials (user:password@): they would be sent by every host that forwards to it"
    why = _is_metadata(parts.hostname)
    if why:
        return why
    if allowed is not None:
        prefix = allowed.rstrip("/")
        if url.rstrip("/") != prefix and not url.startswith(prefix + "/"):
            return f"it is not under {allowed}, the ingress the enrollment allows"
    return None


def registration_problems(reg: HostRegistration, bounds: Bounds) -> list[str]:
    """Everything wrong with ``reg`` for a host enrolled with ``bounds``."""
    out = bounds.label_problems(reg.labels)
    if reg.ingress_url is not None:
        why = ingress_problem(reg.ingress_url, allowed=bounds.ingress)
        if why:
            out.append(f"ingressUrl {reg.ingress_url} is refused: {why}")
    return out  # a host without an ingress serves no link: nothing to check


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrollment:
    """An admin's permission for hosts to join, within ``bounds``. Its token is shown once, at creation;
    only its SHA-256 is kept."""

    id: str  # enr-<8 hex>, the token's first part
    bounds: Bounds
    token_sha256: str
    created_at: float
    created_by: str
    description: str = ""
    host: str | None = None  # only a host of this name may use it
    expires_at: float | None = None  # joining refused after (hosts enrolled before keep working)
    max_uses: int | None = None  # registrations with the token (each issues a host credential)
    uses: int = 0
    revoked_at: float | None = None
    hosts: tuple[str, ...] = field(default=())  # hosts enrolled with it (kept in the bindings, shown in lists)

    def to_json(self, *, stored: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id, **self.bounds.to_json(), "description": self.description, "host": self.host,
            "createdAt": self.created_at, "createdBy": self.created_by, "expiresAt": self.expires_at,
            "maxUses": self.max_uses, "uses": self.uses, "revokedAt": self.revoked_at,
        }
        if stored:
            d["tokenSha256"] = self.token_sha256
        else:
            d["hosts"] = list(self.hosts)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Enrollment:
        return cls(id=d["id"], bounds=Bounds.from_json(d), token_sha256=d["tokenSha256"],
                   created_at=float(d["createdAt"]), created_by=str(d.get("createdBy", "")),
                   description=str(d.get("description") or ""), host=d.get("host"), expires_at=d.get("expiresAt"),
                   max_uses=d.get("maxUses"), uses=int(d.get("uses") or 0), revoked_at=d.get("revokedAt"))

    def refusal(self, *, name: str, now: float) -> str | None:
        """Why this enrollment's token cannot register ``name`` now, or None."""
        if self.revoked_at is not None:
            return f"enrollment {self.id} was revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return f"enrollment {self.id} expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return f"enrollment {self.id} was used {self.uses} time(s), its limit"
        if self.host is not None and name != self.host:
            return f"enrollment {self.id} is for host {self.host!r} only, not {name!r}"
        return None


def join_bounds(*, labels: Sequence[str], environments: str | None, ingress: str | None) -> Bounds:
    """The join token's bounds from the reconciler's options (``--join-label KEY=V1,V2`` repeated,
    ``--join-environments dev,staging``, ``--join-ingress PREFIX``); each one not given stays
    unbounded. ValueError naming the option."""
    parsed: dict[str, tuple[str, ...]] | None = None
    if labels:
        parsed = {}
        for item in labels:
            key, sep, values = item.partition("=")
            found = tuple(v.strip() for v in values.split(",") if v.strip())
            if not sep or not key or not found:
                raise ValueError(f"--join-label {item!r}: expected KEY=VALUE[,VALUE...]")
            parsed[key] = tuple(dict.fromkeys(parsed.get(key, ()) + found))
    envs: tuple[str, ...] | None = None
    if environments is not None:
        envs = tuple(e.strip() for e in environments.split(",") if e.strip())
        if not envs:
            raise ValueError("--join-environments: expected ENV[,ENV...] (or * for every environment)")
    if ingress is not None and (why := ingress_problem(ingress, allowed=None)):
        raise ValueError(f"--join-ingress {ingress}: {why}")
    return Bounds(labels=parsed, environments=envs, ingress=ingress)
