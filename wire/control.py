"""Public types of the control API between the reconciler and its hosts (wire format: JSON, camelCase).

Hosts connect OUT to the reconciler (works behind NAT), level-triggered like the kubelet:

    host                                   reconciler
     | POST /api/v1/hosts/register  HostRegistration ->  | (bearer join token, or the host's own
     |   <- HostRegistered {"heartbeatSeconds": 3,       |  credential when it registers again)
     |        "generation": G, "credential": "..."}      |
     | GET  /api/v1/hosts/{name}/desired?after=G&wait=30 | long-poll: answers at once with the whole
     |   <- 200 HostDesiredState (generation > G)         | HostDesiredState when its generation > G,
     |   <- 204 after `wait` seconds with nothing newer   | else 204 when the wait runs out
     | POST /api/v1/hosts/{name}/report  HostReport ->    | every heartbeat and at once after a change
     |   <- 200 {"generation": G_current}                 |
     | desired/report take the host credential only (bearer): 401 for the join token or an unknown
     | credential, 403 for another host's credential, 404 unknown host: the host registers again.
     | register: 409 when the name is held by another host that is not Lost.

Host identity: the join token only bootstraps. Registering returns the host's credential (random,
stored by the reconciler as a SHA-256 hash bound to the name); the host keeps it and presents it on
desired/report and when it registers again (a restart keeps its name; nobody else can take it).

A desired state is always the whole document: a host that missed some generations just
converges to the newest one. Instance ids are stable across generations
("<env>/<app>/<component>/<ordinal>"), so a host can tell update from add/remove.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.interfaces import WASI_HTTP_HANDLER, unversioned
from wire.traffic import DigestTraffic, TrafficSplit

PREFIX = "/api/v1"
SECRET_PREFIX = "secret:"


def secret_fingerprint(name: str, value: str) -> str:
    """What stands for a secret's value everywhere but the host's own long-poll answer:
    ``secret:<name>:sha256:<first 16 hex of sha256(value)>`` (a new value, a new fingerprint)."""
    return f"{SECRET_PREFIX}{name}:sha256:{hashlib.sha256(value.encode()).hexdigest()[:16]}"


def secret_name(fingerprint: str) -> str | None:
    """The secret's name in a fingerprint, None when ``fingerprint`` is not one."""
    if not fingerprint.startswith(SECRET_PREFIX):
        return None
    name, sep, _ = fingerprint[len(SECRET_PREFIX):].rpartition(":sha256:")
    return name if sep and name else None


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceLimits:
    memory_bytes: int | None = None
    fuel: int | None = None
    timeout_ms: int | None = None
    max_concurrency: int | None = None

    def to_json(self) -> dict[str, Any]:
        return _clean(
            {
                "memoryBytes": self.memory_bytes,
                "fuel": self.fuel,
                "timeoutMs": self.timeout_ms,
                "maxConcurrency": self.max_concurrency,
            }
        )

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InstanceLimits:
        return cls(
            memory_bytes=d.get("memoryBytes"),
            fuel=d.get("fuel"),
            timeout_ms=d.get("timeoutMs"),
            max_concurrency=d.get("maxConcurrency"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceLink:
    """A link from this instance to another component of its env/app.

    Typed links (an interface such as ``driftless:demo/greeter``) are function calls between
    in-process components on one host. HTTP links (``wasi:http/incoming-handler``) reach the target
    wherever it runs: ``endpoints`` are the ingress URLs of the hosts that run it (this host's
    included), kept current by the reconciler; the component sees one stable URL on its own host.
    """

    interface: str  # WIT interface the target exports, e.g. "driftless:demo/greeter"
    to_component: str
    endpoints: tuple[str, ...] = ()  # HTTP links: ingress URLs of the hosts running the target
    # HTTP links: the token the caller's host presents when it forwards a call to another host
    # (host/link_auth.py); only in the host's own long-poll answer, like a secret's value
    token: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"interface": self.interface, "to": self.to_component}
        if self.endpoints:
            d["endpoints"] = list(self.endpoints)
        if self.token:
            d["token"] = self.token
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InstanceLink:
        return cls(interface=d["interface"], to_component=d["to"], endpoints=tuple(d.get("endpoints") or ()),
                   token=d.get("token") or None)

    @property
    def is_http(self) -> bool:
        return unversioned(self.interface) == WASI_HTTP_HANDLER


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceGrants:
    """What a component may reach at run time, whatever it imports (Spin-style grants).

    No directories are ever granted; sockets only when ``sockets``; outbound HTTP only to
    ``outbound_hosts`` (``host``, ``host:port`` or ``*.domain``); its environment is its config.
    """

    outbound_hosts: tuple[str, ...] = ()
    sockets: bool = False

    def to_json(self) -> dict[str, Any]:
        return _clean({"outboundHosts": list(self.outbound_hosts) or None, "sockets": self.sockets or None})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InstanceGrants:
        return cls(outbound_hosts=tuple(d.get("outboundHosts") or ()), sockets=bool(d.get("sockets", False)))


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSpec:
    """One component instance a host must run."""

    id: str  # "<env>/<app>/<component>/<ordinal>", stable across generations
    env: str
    app: str
    component: str
    image: str  # fully qualified and pinned: "127.0.0.1:5000/demo/hello@sha256:..."
    digest: str  # manifest digest, "sha256:..."
    config: Mapping[str, str] = field(default_factory=dict)
    limits: InstanceLimits = field(default_factory=InstanceLimits)
    capabilities: tuple[str, ...] = ()
    route: str | None = None  # full HTTP path prefix on the ingress (env prefix + expose), or None
    links: tuple[InstanceLink, ...] = ()
    grants: InstanceGrants = field(default_factory=InstanceGrants)
    idle_after_ms: int | None = None  # scale to zero: stop after this long without requests; None: always on
    # the config keys whose values are secrets: their config value is the secret's fingerprint
    # (secret_fingerprint) in every document but the host's own long-poll answer, which carries the
    # value and, in ``fingerprints``, each secret key's fingerprint (what the host reports instead)
    secrets: tuple[str, ...] = ()
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    traffic: TrafficSplit | None = None  # a canary rollout: how its component's traffic splits (wire.traffic)
    # the token other hosts present to forward an HTTP link call to this component (host/link_auth.py);
    # only in the host's own long-poll answer
    link_token: str | None = None

    def reported_config(self) -> dict[str, str]:
        """The config as the host reports and shows it: a secret key's fingerprint, never its value."""
        out = dict(self.config)
        for key in self.secrets:
            value = out.get(key)
            if value is None:
                continue
            name = secret_name(self.fingerprints.get(key, ""))
            if name is None and secret_name(value) is not None:
                continue  # a published document: the value is already the fingerprint
            out[key] = secret_fingerprint(name or key, value)
        return out

    def to_json(self) -> dict[str, Any]:
        return _clean(
            {
                "id": self.id,
                "env": self.env,
                "app": self.app,
                "component": self.component,
                "image": self.image,
                "digest": self.digest,
                "config": dict(self.config),
                "limits": self.limits.to_json(),
                "capabilities": list(self.capabilities),
                "route": self.route,
                "links": [link.to_json() for link in self.links],
                "grants": self.grants.to_json() or None,
                "idleAfterMs": self.idle_after_ms,
                "secrets": list(self.secrets) or None,
                "secretFingerprints": dict(self.fingerprints) or None,
                "traffic": self.traffic.to_json() if self.traffic is not None else None,
                "linkToken": self.link_token,
            }
        )

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InstanceSpec:
        return cls(
            id=d["id"],
            env=d["env"],
            app=d["app"],
            component=d["component"],
            image=d["image"],
            digest=d["digest"],
            config=dict(d.get("config") or {}),
            limits=InstanceLimits.from_json(d.get("limits") or {}),
            capabilities=tuple(d.get("capabilities") or ()),
            route=d.get("route"),
            links=tuple(InstanceLink.from_json(x) for x in d.get("links") or ()),
            grants=InstanceGrants.from_json(d.get("grants") or {}),
            idle_after_ms=d.get("idleAfterMs"),
            secrets=tuple(d.get("secrets") or ()),
            fingerprints=dict(d.get("secretFingerprints") or {}),
            traffic=TrafficSplit.from_json(d["traffic"]) if d.get("traffic") else None,
            link_token=d.get("linkToken") or None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HostDesiredState:
    host: str
    generation: int
    revision: str | None = None  # Git revision the plan came from
    instances: tuple[InstanceSpec, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "apiVersion": "driftless.dev/v1alpha1",
            "kind": "HostDesiredState",
            "host": self.host,
            "generation": self.generation,
            "revision": self.revision,
            "instances": [i.to_json() for i in self.instances],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HostDesiredState:
        return cls(
            host=d["host"],
            generation=int(d["generation"]),
            revision=d.get("revision"),
            instances=tuple(InstanceSpec.from_json(x) for x in d.get("instances") or ()),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HostCapacity:
    memory_bytes: int
    max_instances: int

    def to_json(self) -> dict[str, Any]:
        return {"memoryBytes": self.memory_bytes, "maxInstances": self.max_instances}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HostCapacity:
        return cls(memory_bytes=int(d["memoryBytes"]), max_instances=int(d["maxInstances"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class HostRegistration:
    name: str
    labels: Mapping[str, str]  # user labels plus automatic: os, arch, driftless.dev/version, platform
    capacity: HostCapacity
    interfaces: tuple[str, ...] = ()  # interfaces the host provides to components
    ingress_url: str | None = None  # where the host serves exposed components
    version: str = ""
    features: tuple[str, ...] = ()  # what this agent can do, e.g. wire.traffic.FEATURE_TRAFFIC_SPLIT

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "labels": dict(self.labels),
            "capacity": self.capacity.to_json(),
            "interfaces": list(self.interfaces),
            "ingressUrl": self.ingress_url,
            "version": self.version,
            "features": list(self.features),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HostRegistration:
        return cls(
            name=d["name"],
            labels=dict(d.get("labels") or {}),
            capacity=HostCapacity.from_json(d["capacity"]),
            interfaces=tuple(d.get("interfaces") or ()),
            ingress_url=d.get("ingressUrl"),
            version=d.get("version", ""),
            features=tuple(d.get("features") or ()),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HostRegistered:
    """The reconciler's answer to a registration."""

    heartbeat_seconds: float
    generation: int = 0  # the generation published for this host (0: none yet)
    credential: str | None = None  # this host's credential: present it as the bearer from now on

    def to_json(self) -> dict[str, Any]:
        return _clean({"heartbeatSeconds": self.heartbeat_seconds, "generation": self.generation,
                       "credential": self.credential})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HostRegistered:
        return cls(heartbeat_seconds=float(d["heartbeatSeconds"]), generation=int(d.get("generation") or 0),
                   credential=d.get("credential"))


# Instance status values a host reports.
STARTING = "Starting"  # pulling / compiling / instantiating
RUNNING = "Running"  # ready to serve
FAILED = "Failed"  # could not start (bad digest, not a component, missing import...): see last_error
BACKOFF = "BackOff"  # trapped repeatedly; waiting before the next restart
STOPPING = "Stopping"  # draining in-flight calls
COMPLETED = "Completed"  # a job (wasi:cli/run) that finished successfully
IDLE = "Idle"  # scaled to zero: compiled and ready, started by its next request
UP = frozenset({RUNNING, IDLE})  # statuses that count as ready: an idle instance is not missing


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceStatus:
    id: str
    env: str
    app: str
    component: str
    digest: str
    status: str
    restarts: int = 0
    last_error: str | None = None
    config: Mapping[str, str] = field(default_factory=dict)  # what it actually runs with
    route: str | None = None
    managed: bool = True  # False: started out of band (admin API), not from a desired state
    started_at: float | None = None  # unix seconds
    runtime: str | None = None  # "in-process" (wasmtime-py) or "wasmtime-serve" (a supervised process)
    warnings: tuple[str, ...] = ()  # e.g. a grant this host cannot enforce

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return _clean(
            {
                "id": d["id"],
                "env": d["env"],
                "app": d["app"],
                "component": d["component"],
                "digest": d["digest"],
                "status": d["status"],
                "restarts": d["restarts"],
                "lastError": d["last_error"],
                "config": dict(self.config),
                "route": d["route"],
                "managed": d["managed"],
                "startedAt": d["started_at"],
                "runtime": d["runtime"],
                "warnings": list(self.warnings) or None,
            }
        )

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InstanceStatus:
        return cls(
            id=d["id"],
            env=d.get("env", ""),
            app=d.get("app", ""),
            component=d.get("component", ""),
            digest=d.get("digest", ""),
            status=d["status"],
            restarts=int(d.get("restarts", 0)),
            last_error=d.get("lastError"),
            config=dict(d.get("config") or {}),
            route=d.get("route"),
            managed=bool(d.get("managed", True)),
            started_at=d.get("startedAt"),
            runtime=d.get("runtime"),
            warnings=tuple(d.get("warnings") or ()),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HostReport:
    name: str
    observed_generation: int
    instances: tuple[InstanceStatus, ...] = ()
    traffic: tuple[DigestTraffic, ...] = ()  # per-digest counters of components under a traffic split

    def to_json(self) -> dict[str, Any]:
        d = {
            "name": self.name,
            "observedGeneration": self.observed_generation,
            "instances": [i.to_json() for i in self.instances],
        }
        if self.traffic:
            d["traffic"] = [t.to_json() for t in self.traffic]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HostReport:
        return cls(
            name=d["name"],
            observed_generation=int(d.get("observedGeneration", 0)),
            instances=tuple(InstanceStatus.from_json(x) for x in d.get("instances") or ()),
            traffic=tuple(DigestTraffic.from_json(x) for x in d.get("traffic") or ()),
        )
